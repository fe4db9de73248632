//! The command line: parsing arguments and calling into the library.
//!
//! Owns: the `clap` definitions and one small module per subcommand that turns
//! arguments into library calls and results into output and exit codes. Must not:
//! hold logic the daemon or tests would also need (that lives in the library).

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

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
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(a) => validate::run(a),
    }
}
