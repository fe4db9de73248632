//! The command line: parsing arguments and calling into the library.
//!
//! Owns: the `clap` definitions and one small module per subcommand that turns
//! arguments into library calls and results into output and exit codes. Must not:
//! hold logic the daemon or tests would also need (that lives in the library).

use clap::{Parser, Subcommand, ValueEnum};
use lxd_gitops::fleet::{self, diagnostic, LoadedFleet};
use lxd_gitops::model::DesiredCluster;
use lxd_gitops::serve::config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod apply;
mod import;
mod login;
mod pending;
mod plan;
mod serve;
mod snapshot;
mod validate;

#[derive(Parser, Debug)]
#[command(name = "lxd-gitops", version, about = "GitOps reconciler for LXD clusters")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a fleet repository offline: schema, references, values.
    Validate(validate::Args),
    /// Show what would change: against the live cluster, or a recorded snapshot.
    Plan(plan::Args),
    /// Make the clusters match the fleet (asks first on a terminal).
    Apply(apply::Args),
    /// Record a cluster's live state as JSON, for offline plans.
    Snapshot(snapshot::Args),
    /// Write a fleet repository from a live cluster (adopt an existing cluster).
    Import(import::Args),
    /// Create the reconciler's client certificate and add it to a cluster with a trust token.
    Login(login::Args),
    /// Snap settings written but not in effect yet (reload or reboot pending), per member.
    Pending(pending::Args),
    /// Run the GitOps daemon: watch the repository, apply pushes, correct drift.
    Serve(serve::Args),
}

pub fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Serve(_)) {
        // Warnings (an endpoint failing over, ...) on stderr; RUST_LOG for more.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .without_time()
            .with_target(false)
            .try_init();
    }
    match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Apply(a) => apply::run(a),
        Command::Snapshot(a) => snapshot::run(a),
        Command::Import(a) => import::run(a),
        Command::Login(a) => login::run(a),
        Command::Pending(a) => pending::run(a),
        Command::Serve(a) => serve::run(a),
    }
}

/// Unwraps a step of a command, or returns its exit code (the step already said why).
macro_rules! or_exit {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}
pub(crate) use or_exit;

/// Exit code for errors (bad input, LXD errors, refused plans).
pub const EXIT_ERROR: u8 = 1;

/// Loads and validates the fleet; on problems prints them and returns the exit code.
pub fn load_fleet(path: &Path) -> Result<LoadedFleet, ExitCode> {
    fleet::load_and_validate(path).map_err(|diags| {
        eprint!("{}", diagnostic::render_text(&diags));
        eprintln!("{} problem(s) found; nothing was planned or applied", diags.len());
        ExitCode::from(EXIT_ERROR)
    })
}

/// The clusters a command works on: the one named, or all of them.
pub fn pick_clusters<'f>(fleet: &'f LoadedFleet, name: Option<&str>) -> Result<Vec<&'f DesiredCluster>, ExitCode> {
    match name {
        Some(n) => match fleet.desired.clusters.get(n) {
            Some(c) => Ok(vec![c]),
            None => {
                let known: Vec<&str> = fleet.desired.clusters.keys().map(String::as_str).collect();
                eprintln!("error: no cluster named `{n}` in the fleet (known: {})", known.join(", "));
                Err(ExitCode::from(EXIT_ERROR))
            }
        },
        None => Ok(fleet.desired.clusters.values().collect()),
    }
}

/// Default runtime configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/lxd-gitops/config.yaml";

/// The runtime configuration: the file given, else the default one if it exists.
pub fn runtime_config(path: Option<&PathBuf>) -> Result<Option<Config>, ExitCode> {
    let path = match path {
        Some(p) => p.clone(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok(None),
    };
    Config::load(&path).map(Some).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_ERROR)
    })
}

/// A tokio runtime for commands that talk to LXD.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}
