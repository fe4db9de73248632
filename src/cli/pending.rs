//! `lxd-gitops pending`: snap settings written but not in effect yet, per member.

use super::{or_exit, runtime_config, OutputFormat, EXIT_ERROR};
use lxd_gitops::reconcile::state_dir;
use lxd_gitops::snap::pending::PendingStore;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub cluster: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Runtime configuration (where state is kept).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let config = or_exit!(runtime_config(args.config.as_ref()));
    let file = state_dir(config.as_ref()).join("pending").join(format!("{}.json", args.cluster));
    let store = match PendingStore::load(&file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let list = store.list();
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default()),
        OutputFormat::Text => {
            if list.values().all(Vec::is_empty) {
                println!("cluster {}: nothing pending", args.cluster);
            }
            for (member, keys) in &list {
                for k in keys {
                    println!(
                        "{member}: {} = {} (needs {})",
                        k.key,
                        k.value.as_deref().unwrap_or("<unset>"),
                        serde_json::to_value(k.needs)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    ExitCode::SUCCESS
}
