//! Test support for the real-LXD lab started by `scripts/lab` (the script's header
//! describes the layout: image server + 3-member cluster, each daemon in its own
//! network namespace on a root-namespace bridge). Only std, serde and serde_json.
//!
//! * `LXD_GITOPS_LAB=<dir>`: use the lab in `<dir>` (started once for the whole suite by
//!   the test script). If `<dir>/lab.json` does not exist yet, the lab is started there.
//! * otherwise a lab is started (or reused) in `<CARGO_TARGET_TMPDIR or /tmp>/lxd-gitops-lab`
//!   under an exclusive `flock(1)` lock on `<same dir>/lxd-gitops-lab.lock`, so all test
//!   binaries share one lab. It is left running; `scripts/lab down <dir>` removes it.
//!   `LAB_SLOT` is passed through (default `auto`: the first free slot).
//!
//! A lab that cannot be started makes every test that asks for it panic with the
//! script's output: tests fail loudly, they never skip.
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// One LXD daemon of the lab.
#[derive(Debug, Clone, Deserialize)]
pub struct Daemon {
    pub name: String,
    /// `LXD_DIR` of the daemon (its unix socket is `lxd_dir/unix.socket`).
    pub lxd_dir: PathBuf,
    /// `ip:port` of `core.https_address`.
    pub address: String,
    /// `https://ip:port`.
    pub endpoint: String,
    /// Network namespace the daemon runs in.
    pub netns: String,
    pub pid: u32,
    /// The daemon's `--logfile`.
    pub log: PathBuf,
    /// Fingerprint of the daemon's own server certificate (image server and spares;
    /// cluster members serve the cluster certificate: `Cluster::fingerprint`).
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub certificate_pem: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Cluster {
    /// Name of the cluster in the product's terms (`lab`).
    pub name: String,
    /// Lowercase hex sha256 of the DER of the cluster certificate (served by all members).
    pub fingerprint: String,
    pub certificate_pem: String,
    /// `$LXD_GITOPS_CREDENTIALS_DIR`; the client pair is in `<credentials_dir>/<credentials>/`.
    pub credentials_dir: PathBuf,
    /// Credentials name (`lab`).
    pub credentials: String,
    /// The `dir` storage pool every member has (`default`).
    pub storage_pool: String,
    /// `node1`, `node2`, `node3`.
    pub members: Vec<Daemon>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Image {
    /// `busybox` (also `busybox/1.35`, see `aliases`) on the image server.
    pub alias: String,
    pub aliases: Vec<String>,
    /// sha256 of the unified tarball (= LXD image fingerprint).
    pub fingerprint: String,
    /// The tarball itself, for upload tests.
    pub tarball: PathBuf,
    pub size: u64,
    /// `os=busybox`, `release=1.35`.
    pub properties: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Client {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub fingerprint: String,
}

/// The content of `lab.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Lab {
    pub dir: PathBuf,
    pub slot: u32,
    /// Root-namespace bridge all daemons hang off.
    pub bridge: String,
    /// Address of the root namespace on that bridge (`10.77.<slot>.1`).
    pub host_address: String,
    /// `LXD_CONF` used for `lxc` (only the unix-socket remote).
    pub lxc_conf: PathBuf,
    /// The `scripts/lab` that started the lab.
    pub script: PathBuf,
    pub cluster: Cluster,
    pub image_server: Daemon,
    pub image: Image,
    pub client: Client,
}

/// A clean standalone daemon on the lab bridge (`scripts/lab spare`), for join tests.
/// It trusts the lab's client certificate, has no storage pool, no network and an
/// untouched default profile. Dropping it removes it from the cluster (if it joined)
/// and stops it; `stop()` does the same but panics on failure.
#[derive(Debug)]
pub struct Spare {
    pub daemon: Daemon,
    script: PathBuf,
    lab_dir: PathBuf,
    node1_dir: PathBuf,
    lxc_conf: PathBuf,
    stopped: bool,
}

impl std::ops::Deref for Spare {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

static LAB: OnceLock<Result<Lab, String>> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The shared lab; starts it on first use. Panics (with the script output) if the lab
/// cannot be started.
pub fn lab() -> &'static Lab {
    match LAB.get_or_init(start_or_attach) {
        Ok(lab) => lab,
        Err(e) => panic!("the LXD test lab is not available:\n{e}"),
    }
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join("lab")
}

fn tmp_root() -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn start_or_attach() -> Result<Lab, String> {
    let dir = match std::env::var_os("LXD_GITOPS_LAB") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => tmp_root().join("lxd-gitops-lab"),
    };
    let json = dir.join("lab.json");
    if std::env::var_os("LXD_GITOPS_LAB").is_some() && json.is_file() {
        return load(&json);
    }
    let root = tmp_root();
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let lock = root.join("lxd-gitops-lab.lock");
    let script = script_path();
    let slot = std::env::var("LAB_SLOT").unwrap_or_else(|_| "auto".to_string());
    // -o: the lock is not inherited by the daemons `up` leaves running.
    let out = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .arg(&script)
        .arg("up")
        .arg(&dir)
        .env("LAB_SLOT", &slot)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run flock {} {} up: {e}", lock.display(), script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} up {}` failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            script.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    load(&json)
}

fn load(json: &Path) -> Result<Lab, String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("read {}: {e}", json.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", json.display()))
}

fn describe(args: &[&str], member: &str, out: &Output) -> String {
    format!(
        "`lxc {}` on {member} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Lab {
    /// A cluster member by name (`node1`..`node3`).
    pub fn member(&self, name: &str) -> &Daemon {
        self.cluster
            .members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no cluster member {name} in the lab"))
    }

    pub fn member_names(&self) -> Vec<&str> {
        self.cluster.members.iter().map(|m| m.name.as_str()).collect()
    }

    /// `LXD_DIR` for `node1..3`, `images` (the image server) or a spare's name.
    pub fn lxd_dir(&self, member: &str) -> PathBuf {
        if let Some(m) = self.cluster.members.iter().find(|m| m.name == member) {
            return m.lxd_dir.clone();
        }
        if member == "images" || member == "image-server" || member == self.image_server.name {
            return self.image_server.lxd_dir.clone();
        }
        let spare = self.dir.join("spares").join(member);
        if spare.is_dir() {
            return spare;
        }
        panic!("no daemon {member} in the lab at {}", self.dir.display())
    }

    /// `lxc ARGS` against one daemon, through its unix socket.
    pub fn lxc(&self, member: &str, args: &[&str]) -> Output {
        Command::new("lxc")
            .args(args)
            .env("LXD_DIR", self.lxd_dir(member))
            .env("LXD_CONF", &self.lxc_conf)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run lxc: {e}"))
    }

    /// Like `lxc`, panics with stdout/stderr unless it succeeds; returns stdout.
    pub fn lxc_ok(&self, member: &str, args: &[&str]) -> String {
        let out = self.lxc(member, args);
        if !out.status.success() {
            panic!("{}", describe(args, member, &out));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// JSON output of `lxc query ...` (args start with "query"), or of
    /// `lxc ARGS --format json` otherwise.
    pub fn lxc_json(&self, member: &str, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        if args.first() != Some(&"query") {
            all.extend(["--format", "json"]);
        }
        let text = self.lxc_ok(member, &all);
        if text.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`lxc {}` on {member}: not JSON ({e}):\n{text}", all.join(" ")))
    }

    /// `lxc query PATH` (GET) as JSON.
    pub fn query(&self, member: &str, path: &str) -> Value {
        self.lxc_json(member, &["query", path])
    }

    /// The `source` of an instance created from the lab's busybox image, pulled from the
    /// image server over the `lxd` protocol.
    pub fn image_source(&self) -> Value {
        serde_json::json!({
            "type": "image",
            "alias": self.image.alias,
            "server": self.image_server.endpoint,
            "protocol": "lxd",
            "certificate": self.image_server.certificate_pem,
        })
    }

    /// Directory to use as `$LXD_GITOPS_CREDENTIALS_DIR` (holds `lab/client.{crt,key}`).
    pub fn credentials_dir(&self) -> &Path {
        &self.cluster.credentials_dir
    }

    /// A unique, valid LXD name: `[a-z][a-z0-9-]*`, at most 63 characters, not ending in
    /// a hyphen; unique per process (pid), call (counter) and run (clock).
    pub fn unique(&self, prefix: &str) -> String {
        unique(prefix)
    }

    /// Start a clean standalone daemon `name` on the lab bridge (see `Spare`).
    pub fn spare(&self, name: &str) -> Spare {
        let out = Command::new(&self.script)
            .arg("spare")
            .arg(&self.dir)
            .arg(name)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            panic!(
                "`scripts/lab spare {} {name}` failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
                self.dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
        let daemon: Daemon = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("scripts/lab spare printed no daemon JSON ({e}):\n{stdout}"));
        Spare {
            daemon,
            script: self.script.clone(),
            lab_dir: self.dir.clone(),
            node1_dir: self.lxd_dir("node1"),
            lxc_conf: self.lxc_conf.clone(),
            stopped: false,
        }
    }
}

/// See `Lab::unique`.
pub fn unique(prefix: &str) -> String {
    let mut p: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .collect();
    if !p.starts_with(|c: char| c.is_ascii_lowercase()) {
        p.insert(0, 't');
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let suffix = format!("-{}{}-{n}", base36(u64::from(std::process::id())), base36(u64::from(nanos % 1296)));
    p.truncate(63 - suffix.len());
    while p.ends_with('-') {
        p.pop();
    }
    p + &suffix
}

fn base36(mut v: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

impl Spare {
    /// Remove the spare from the cluster if it joined (forcefully), then stop it and
    /// delete its netns and directory. Panics if `scripts/lab spare-down` fails.
    pub fn stop(mut self) {
        self.stopped = true;
        if let Err(e) = self.teardown() {
            panic!("{e}");
        }
    }

    fn teardown(&self) -> Result<(), String> {
        let lxc = |args: &[&str]| {
            Command::new("lxc")
                .args(args)
                .env("LXD_DIR", &self.node1_dir)
                .env("LXD_CONF", &self.lxc_conf)
                .stdin(Stdio::null())
                .output()
        };
        if let Ok(out) = lxc(&["query", "/1.0/cluster/members"]) {
            let listed = serde_json::from_slice::<Vec<String>>(&out.stdout)
                .map(|v| v.iter().any(|u| u.rsplit('/').next() == Some(self.daemon.name.as_str())))
                .unwrap_or(false);
            if listed {
                let _ = lxc(&["cluster", "remove", "--force", "--yes", &self.daemon.name]);
            }
        }
        let out = Command::new(&self.script)
            .arg("spare-down")
            .arg(&self.lab_dir)
            .arg(&self.daemon.name)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`scripts/lab spare-down {} {}` failed ({}):\n{}{}",
                self.lab_dir.display(),
                self.daemon.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            if let Err(e) = self.teardown() {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// A lab of one test's own, for tests that change cluster-wide state (server
/// config, members, prune, snap roll-outs). Started in a free slot; stopped by pid
/// (`scripts/lab down`) on drop. Panics with the script output if it cannot start.
pub struct PrivateLab {
    pub lab: Lab,
    dir: PathBuf,
}

impl PrivateLab {
    pub fn up() -> PrivateLab {
        let dir = tempfile::Builder::new().prefix("lxd-gitops-private.").tempdir().unwrap().keep();
        let _ = std::fs::remove_dir(&dir); // `up` wants a new or empty folder
                                           // `auto` picks the first free slot; two labs starting at once could pick the
                                           // same one, so every `up` of the test suite runs under one lock.
        let lock = tmp_root().join("lxd-gitops-lab.lock");
        let out = Command::new("flock")
            .arg("-o")
            .arg(&lock)
            .arg(script_path())
            .arg("up")
            .arg(&dir)
            .env("LAB_SLOT", "auto")
            .env("LAB_QUIET", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/lab: {e}"));
        assert!(
            out.status.success(),
            "cannot start a private LXD lab:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let lab = load(&dir.join("lab.json")).unwrap_or_else(|e| panic!("{e}"));
        PrivateLab { lab, dir }
    }
}

impl Drop for PrivateLab {
    fn drop(&mut self) {
        let _ = Command::new(script_path()).arg("down").arg(&self.dir).stdin(Stdio::null()).output();
    }
}

impl Lab {
    /// Runs the `lxd-gitops` binary with this lab's credentials folder.
    pub fn gitops(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lxd-gitops"))
            .args(args)
            .env("LXD_GITOPS_CREDENTIALS_DIR", self.credentials_dir())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run lxd-gitops: {e}"))
    }
}

/// Both output streams of a command, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
