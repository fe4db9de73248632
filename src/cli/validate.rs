//! `lxd-gitops validate [PATH]`: every problem in the repository, or exit 0.

use super::OutputFormat;
use lxd_gitops::fleet::{self, diagnostic};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The fleet repository (or a folder inside one).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

pub fn run(args: Args) -> ExitCode {
    match fleet::load_and_validate(&args.path) {
        Ok(f) => {
            if args.format == OutputFormat::Json {
                println!("[]");
            } else {
                let n: usize = f.desired.clusters.values().map(|c| c.objects.len() + 1).sum();
                println!(
                    "{}: valid ({} objects in {} files, {} cluster(s))",
                    args.path.display(),
                    n,
                    f.files,
                    f.desired.clusters.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            match args.format {
                OutputFormat::Json => println!("{}", diagnostic::render_json(&diags)),
                OutputFormat::Text => {
                    eprint!("{}", diagnostic::render_text(&diags));
                    eprintln!("{} problem(s) found", diags.len());
                }
            }
            ExitCode::from(1)
        }
    }
}
