//! `lxd-gitops import`: write a fleet repository from a live cluster (adoption).

use super::{load_fleet, or_exit, pick_clusters, runtime, runtime_config, EXIT_ERROR};
use lxd_gitops::fleet::export::export;
use lxd_gitops::model::{ClusterObjects, DesiredCluster};
use lxd_gitops::reconcile;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A fleet repository holding the cluster's `kind: Cluster` document (endpoints, pin, credentials).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[arg(long)]
    pub cluster: String,
    /// Folder to write the imported repository into (files there are replaced).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Runtime configuration (credentials folder, snapd access).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let fleet = or_exit!(load_fleet(&args.path));
    let spec = or_exit!(pick_clusters(&fleet, Some(&args.cluster)))[0].spec.clone();
    let config = or_exit!(runtime_config(args.config.as_ref()));
    // Read everything: an empty desired state names no snap keys, so read live as is.
    let desired = DesiredCluster { spec: spec.clone(), objects: ClusterObjects::default() };
    let session = match runtime().block_on(reconcile::open(&desired, config.as_ref())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let files = export(&spec, &session.live);
    for (rel, text) in &files {
        let path = args.output.join(rel);
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("error: cannot create {}: {e}", dir.display());
                return ExitCode::from(EXIT_ERROR);
            }
        }
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_ERROR);
        }
    }
    eprintln!("imported cluster {} into {} ({} files)", spec.name, args.output.display(), files.len());
    ExitCode::SUCCESS
}
