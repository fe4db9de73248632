//! `lxd-gitops snapshot`: a cluster's live state as deterministic JSON.

use super::{load_fleet, or_exit, pick_clusters, runtime, runtime_config, EXIT_ERROR};
use lxd_gitops::reconcile;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The fleet repository (to find the cluster's endpoints and pin).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[arg(long)]
    pub cluster: String,
    /// Write here instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Runtime configuration (credentials folder, snapd access).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let fleet = or_exit!(load_fleet(&args.path));
    let desired = or_exit!(pick_clusters(&fleet, Some(&args.cluster)))[0];
    let config = or_exit!(runtime_config(args.config.as_ref()));
    let session = match runtime().block_on(reconcile::open(desired, config.as_ref())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    // BTreeMaps all the way down: the same state always gives the same bytes.
    let json = serde_json::to_string_pretty(&session.live).expect("live state serializes") + "\n";
    match &args.output {
        Some(f) => {
            if let Err(e) = std::fs::write(f, json) {
                eprintln!("error: cannot write {}: {e}", f.display());
                return ExitCode::from(EXIT_ERROR);
            }
            eprintln!(
                "snapshot of cluster {} written to {} ({} objects, {} requests)",
                args.cluster,
                f.display(),
                session.live.objects.len(),
                session.conn.client.request_count()
            );
        }
        None => print!("{json}"),
    }
    ExitCode::SUCCESS
}
