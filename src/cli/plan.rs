//! `lxd-gitops plan`: what would change, for a terminal, a PR comment or machines.

use super::{load_fleet, or_exit, pick_clusters, runtime, runtime_config, EXIT_ERROR};
use clap::ValueEnum;
use lxd_gitops::model::LiveState;
use lxd_gitops::plan::{self, render, Plan};
use lxd_gitops::reconcile;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The fleet repository.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Plan only this cluster (default: every cluster in the fleet).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Plan against a recorded snapshot (`lxd-gitops snapshot`) instead of the live cluster.
    #[arg(long)]
    pub state: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Exit 0 when there are no changes, 2 when there are, 1 on errors.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Save the plan (JSON) for `apply --plan`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Runtime configuration (credentials folder, snapd access).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let fleet = or_exit!(load_fleet(&args.path));
    let clusters = or_exit!(pick_clusters(&fleet, args.cluster.as_deref()));
    if args.state.is_some() && clusters.len() != 1 {
        eprintln!("error: --state holds one cluster's snapshot: name it with --cluster");
        return ExitCode::from(EXIT_ERROR);
    }
    if args.out.is_some() && clusters.len() != 1 {
        eprintln!("error: --out saves one cluster's plan: name it with --cluster");
        return ExitCode::from(EXIT_ERROR);
    }
    let config = or_exit!(runtime_config(args.config.as_ref()));
    let rt = runtime();
    let mut plans: Vec<Plan> = Vec::new();
    for desired in clusters {
        let plan = match &args.state {
            Some(file) => {
                let live: LiveState = match std::fs::read_to_string(file)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("error: cannot read snapshot {}: {e}", file.display());
                        return ExitCode::from(EXIT_ERROR);
                    }
                };
                if live.cluster != desired.spec.name {
                    eprintln!(
                        "error: snapshot {} is of cluster `{}`, not `{}`",
                        file.display(),
                        live.cluster,
                        desired.spec.name
                    );
                    return ExitCode::from(EXIT_ERROR);
                }
                plan::plan(desired, &live)
            }
            None => match rt.block_on(reconcile::open(desired, config.as_ref())) {
                Ok(session) => reconcile::plan(desired, &session),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_ERROR);
                }
            },
        };
        plans.push(plan);
    }
    if let (Some(out), Some(p)) = (&args.out, plans.first()) {
        if let Err(e) = std::fs::write(out, p.to_json()) {
            eprintln!("error: cannot write {}: {e}", out.display());
            return ExitCode::from(EXIT_ERROR);
        }
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match args.format {
        PlanFormat::Json if plans.len() == 1 => print!("{}", render::json(&plans[0])),
        PlanFormat::Json => {
            let all: Vec<serde_json::Value> =
                plans.iter().map(|p| serde_json::from_str(&render::json(p)).unwrap_or_default()).collect();
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        }
        PlanFormat::Markdown => {
            for p in &plans {
                print!("{}", render::markdown(p, &render::MarkdownOptions::default()));
            }
        }
        PlanFormat::Text => {
            for p in &plans {
                print!("{}", render::text(p, &render::TextOptions { color }));
            }
        }
    }
    if plans.iter().any(|p| p.blocked.is_some()) {
        return ExitCode::from(EXIT_ERROR);
    }
    if args.detailed_exitcode && plans.iter().any(|p| !p.is_empty()) {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
