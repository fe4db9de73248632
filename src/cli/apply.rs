//! `lxd-gitops apply`: show the plan, confirm, execute it in order, check the result.

use super::{load_fleet, or_exit, pick_clusters, runtime, runtime_config, EXIT_ERROR};
use indicatif::{ProgressBar, ProgressStyle};
use lxd_gitops::apply::engine::Outcome;
use lxd_gitops::plan::{render, Plan};
use lxd_gitops::reconcile;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The fleet repository.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Apply only this cluster (default: every cluster in the fleet).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Do not ask for confirmation (needed when not on a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// Apply exactly this saved plan (`plan --out`); refused if the world moved since.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Write the apply report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Runtime configuration (credentials folder, snapd access).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Exit 0 only when every cluster matches the fleet afterwards; 2 when the
    /// apply went through but steps were held or refused (the cluster still
    /// differs, or could not be read completely); 1 on errors.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub fn run(args: Args) -> ExitCode {
    let fleet = or_exit!(load_fleet(&args.path));
    let saved: Option<Plan> = match &args.plan {
        None => None,
        Some(file) => match std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|t| Plan::from_json(&t).map_err(|e| e.to_string()))
        {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: cannot read plan {}: {e}", file.display());
                return ExitCode::from(EXIT_ERROR);
            }
        },
    };
    let cluster = args.cluster.clone().or_else(|| saved.as_ref().map(|p| p.cluster.clone()));
    let clusters = or_exit!(pick_clusters(&fleet, cluster.as_deref()));
    let config = or_exit!(runtime_config(args.config.as_ref()));
    let tty = std::io::stdout().is_terminal();
    if !args.auto_approve && !std::io::stdin().is_terminal() {
        eprintln!("error: not on a terminal: pass --auto-approve to apply without confirmation");
        return ExitCode::from(EXIT_ERROR);
    }
    let rt = runtime();
    let mut failed = false;
    let mut differs = false;
    let mut reports = Vec::new();
    for desired in clusters {
        let name = &desired.spec.name;
        let session = match rt.block_on(reconcile::open(desired, config.as_ref())) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        };
        let fresh = reconcile::plan(desired, &session);
        if let Some(saved) = &saved {
            if let Err(e) = reconcile::check_saved(saved, &fresh) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_ERROR);
            }
        }
        print!("{}", render::text(&fresh, &render::TextOptions { color: tty }));
        if let Some(reason) = &fresh.blocked {
            eprintln!("error: cluster {name}: {reason}; nothing applied");
            failed = true;
            continue;
        }
        if fresh.is_empty() {
            differs |= !fresh.incomplete.is_empty();
            continue;
        }
        if !args.auto_approve && !confirm(name) {
            differs = true;
            eprintln!("cluster {name}: not applied");
            continue;
        }
        let total = fresh.steps().count() as u64;
        let bar = tty.then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        let saved_plan = saved.is_some();
        let auto_approve = args.auto_approve;
        let approve = |p: &Plan| {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            if saved_plan {
                eprintln!("cluster {name}: a saved plan is applied only as reviewed; not planning again");
                return false;
            }
            println!("Cluster {name} changed while applying: planned again from what is live now.");
            print!("{}", render::text(p, &render::TextOptions { color: tty }));
            if let Some(b) = &bar {
                b.reset();
                b.set_length(p.steps().count() as u64);
            }
            auto_approve || confirm(name)
        };
        let done = rt.block_on(reconcile::apply_replanning(
            desired,
            config.as_ref(),
            (session, fresh),
            &args.path,
            approve,
            |r| {
                let line = match &r.outcome {
                    Outcome::Ok => format!("ok      {} {} ({} ms)", r.action, r.object, r.duration_ms),
                    Outcome::Failed(_) if r.conflict => {
                        format!("CONFLICT {} {}: {}", r.action, r.object, r.failure().unwrap_or_default())
                    }
                    Outcome::Failed(_) => {
                        format!("FAILED  {} {}: {}", r.action, r.object, r.failure().unwrap_or_default())
                    }
                    Outcome::Skipped(why) => format!("skipped {} {}: {why}", r.action, r.object),
                };
                match &bar {
                    Some(b) => {
                        b.inc(1);
                        b.println(line);
                    }
                    None => println!("{line}"),
                }
            },
        ));
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        for (i, round) in done.rounds.iter().enumerate() {
            let (ok, bad, skipped) = round.report.counts();
            let conflicts = round.report.conflicts().count();
            println!(
                "Apply to cluster {name}{}: {ok} ok, {bad} failed{}, {skipped} skipped in {:.1} s",
                if done.rounds.len() > 1 { format!(" (round {})", i + 1) } else { String::new() },
                if conflicts > 0 {
                    format!(" ({conflicts} of them conflicts: not overwritten)")
                } else {
                    String::new()
                },
                round.report.duration_ms as f64 / 1000.0
            );
        }
        if let Some(why) = &done.unresolved {
            eprintln!("error: cluster {name}: {why}");
        }
        failed |= !done.succeeded();
        // Read the cluster again: what still differs?
        match rt.block_on(reconcile::open(desired, config.as_ref())) {
            Ok(after) => {
                let residual = reconcile::plan(desired, &after);
                differs |= !(residual.is_empty() && residual.incomplete.is_empty());
                if residual.is_empty() && residual.incomplete.is_empty() {
                    println!("Cluster {name} matches the fleet.");
                } else if residual.is_empty() {
                    println!("{}", lxd_gitops::plan::render::summary(&residual));
                } else {
                    println!("Cluster {name} still differs from the fleet in {} step(s):", residual.steps().count());
                    for s in residual.steps() {
                        let why = s.flags.iter().map(|f| f.label()).collect::<Vec<_>>().join("; ");
                        println!(
                            "  {} {}{}",
                            s.action,
                            s.object,
                            if why.is_empty() { String::new() } else { format!(" ({why})") }
                        );
                    }
                }
            }
            Err(e) => {
                differs = true;
                eprintln!("warning: could not read cluster {name} again after applying: {e}");
            }
        }
        reports.extend(done.rounds.into_iter().map(|r| r.report));
    }
    if let Some(file) = &args.report {
        let json = serde_json::to_string_pretty(&reports).unwrap_or_default();
        if let Err(e) = std::fs::write(file, json) {
            eprintln!("error: cannot write {}: {e}", file.display());
            return ExitCode::from(EXIT_ERROR);
        }
    }
    if failed {
        ExitCode::from(EXIT_ERROR)
    } else if differs && args.detailed_exitcode {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn confirm(cluster: &str) -> bool {
    print!("Apply these changes to cluster {cluster}? Only `yes` is accepted: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes"
}
