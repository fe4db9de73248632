//! `lxd-gitops-snapd-standin`: serves the stand-in snapd (`lxd_gitops::snap::standin`)
//! on a unix socket until interrupted. For demos and tests on machines where snapd
//! cannot run; it is not snapd (no store, no hooks), only its REST API for the LXD
//! snap, with state in memory.

use clap::Parser;
use lxd_gitops::snap::standin::{Standin, StandinOptions, StoreRevision};
use serde_json::{Map, Value};
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
    /// Initial snap config, KEY=VALUE with a dotted key (`daemon.debug=true`);
    /// repeatable. Values are strings, as `snap set` stores them.
    #[arg(long = "conf", value_parser = parse_conf)]
    conf: Vec<(String, String)>,
    /// Make the first change requested end in status `Error` with MESSAGE as its
    /// failed task's error (and no effect), as a failing hook or download would.
    #[arg(long, value_name = "MESSAGE")]
    fail_next_change: Option<String>,
}

fn parse_conf(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.is_empty() || k.split('.').any(str::is_empty) {
        return Err(format!("bad key {k:?} in {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The nested document snapd keeps for dotted keys (`a.b=c` → `{"a":{"b":"c"}}`).
fn conf_doc(pairs: &[(String, String)]) -> Map<String, Value> {
    let mut doc = Map::new();
    for (key, value) in pairs {
        let parts: Vec<&str> = key.split('.').collect();
        let (last, parents) = parts.split_last().expect("split yields one part");
        let mut cur = &mut doc;
        for p in parents {
            let entry = cur.entry(p.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            cur = entry.as_object_mut().expect("just made an object");
        }
        cur.insert(last.to_string(), Value::String(value.clone()));
    }
    doc
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
        conf: conf_doc(&args.conf),
        ..StandinOptions::default()
    });
    if let Some(message) = &args.fail_next_change {
        standin.fail_next_change(message);
    }
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
        let a = <super::Args as clap::Parser>::try_parse_from([
            "x",
            "--socket",
            "/tmp/s",
            "--conf",
            "daemon.debug=true",
            "--conf",
            "daemon.user.group=adm",
            "--conf",
            "ui.enable=",
            "--fail-next-change",
            "hook failed",
        ])
        .unwrap();
        assert_eq!(a.fail_next_change.as_deref(), Some("hook failed"));
        assert_eq!(
            serde_json::Value::Object(super::conf_doc(&a.conf)),
            serde_json::json!({"daemon": {"debug": "true", "user": {"group": "adm"}}, "ui": {"enable": ""}})
        );
        assert!(super::parse_conf("nope").is_err());
        assert!(super::parse_conf("a..b=1").is_err());
    }
}
