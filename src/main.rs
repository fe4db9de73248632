//! The `lxd-gitops` binary: parse the command line, hand over to `cli`.

use clap::Parser;

mod cli;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
