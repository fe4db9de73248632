//! `lxd-gitops serve`: the GitOps daemon.

use super::{DEFAULT_CONFIG, EXIT_ERROR};
use lxd_gitops::serve::config::Config;
use lxd_gitops::serve::pipeline::Pipeline;
use lxd_gitops::serve::{init_logging, Daemon};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runtime configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    let config = match Config::load(&args.config).and_then(|c| c.require_source().map(|_| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    init_logging(config.log_format);
    let rt = super::runtime();
    let result: Result<(), String> = rt.block_on(async {
        let pipeline = Pipeline::new(config.clone())?;
        let daemon = Daemon::bind(&config, pipeline).await.map_err(|e| e.to_string())?;
        daemon.serve().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
