//! `lxd-gitops-snapd-standin`: serves the stand-in snapd (`lxd_gitops::snap::standin`)
//! on a unix socket until interrupted. For demos and tests on machines where snapd
//! cannot run; it is not snapd (no store, no hooks), only its REST API for the LXD
//! snap, with state in memory.

use clap::Parser;
use lxd_gitops::snap::standin::{Standin, StandinOptions, StoreRevision};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(version, about = "Serve a stand-in snapd REST API for the LXD snap on a unix socket")]
struct Args {
    /// Socket path to listen on (a stale socket file there is replaced).
    #[arg(long)]
    socket: PathBuf,
    /// Installed LXD version (`--version` prints this program's version).
    #[arg(long, default_value = "5.0.2-838e1b2")]
    snap_version: String,
    /// Installed revision.
    #[arg(long, default_value_t = 24322)]
    revision: u64,
    /// Channel of the installed revision (and tracking channel).
    #[arg(long, default_value = "5.0/stable")]
    channel: String,
    /// Length of each change step (Do, then Doing) in milliseconds.
    #[arg(long, default_value_t = 200)]
    step_delay_ms: u64,
    /// Pretend store content, CHANNEL=REVISION[:VERSION]; repeatable.
    #[arg(long = "store", value_parser = parse_store)]
    store: Vec<(String, StoreRevision)>,
    /// Start with the snap not installed (every snap request answers 404).
    #[arg(long)]
    not_installed: bool,
}

fn parse_store(s: &str) -> Result<(String, StoreRevision), String> {
    let (channel, rest) = s.split_once('=').ok_or_else(|| format!("expected CHANNEL=REVISION[:VERSION], got {s:?}"))?;
    let (rev, version) = match rest.split_once(':') {
        Some((r, v)) => (r, v.to_string()),
        None => (rest, format!("rev{rest}")),
    };
    let revision = rev.parse().map_err(|e| format!("revision {rev:?} in {s:?}: {e}"))?;
    Ok((channel.to_string(), StoreRevision { revision, version }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let standin = Standin::new(StandinOptions {
        installed: !args.not_installed,
        version: args.snap_version,
        revision: args.revision,
        channel: args.channel,
        step_delay: Duration::from_millis(args.step_delay_ms),
        store: args.store.into_iter().collect(),
        ..StandinOptions::default()
    });
    let server = match standin.serve(&args.socket).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.socket.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("stand-in snapd (not snapd: in-memory LXD snap state) listening on {}", server.socket().display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(server);
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
        let a = <super::Args as clap::Parser>::try_parse_from([
            "x",
            "--socket",
            "/tmp/s",
            "--store",
            "5.21/stable=31333:5.21.3",
            "--store",
            "6/edge=9",
        ])
        .unwrap();
        assert_eq!(a.store[0].1.revision, 31333);
        assert_eq!(a.store[1].1.version, "rev9");
        assert!(super::parse_store("nope").is_err());
    }
}
