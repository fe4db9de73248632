//! A throw-away standalone LXD daemon for end-to-end tests.
//!
//! Owns: starting `lxd` in its own temporary `LXD_DIR`, listening on a loopback
//! address unique to this test process (127.0.0.x, x from the pid), with a `dir`
//! storage pool and a root disk in the default profile, and with client
//! certificates in the trust store; and stopping it again (by pid, in `Drop`),
//! unmounting what it left under its `LXD_DIR`.
//! Must not: touch any other daemon, skip a test when LXD is missing (it panics
//! with the daemon log instead), or kill anything it did not start.
//!
//! Tests share one daemon while they overlap (`shared()` hands out an `Arc`);
//! the last one to finish stops it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A client key pair as PEM text.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Standalone {
    pub dir: PathBuf,
    pub pid: u32,
    /// `https://127.0.0.x:port`
    pub endpoint: String,
    /// `unix:<dir>/unix.socket`
    pub unix_endpoint: String,
    /// The server certificate's fingerprint, read from `GET /1.0` over the socket.
    pub fingerprint: String,
    /// ECDSA P-384 (PKCS#8), trusted.
    pub trusted: Identity,
    /// ECDSA P-256 (PKCS#8), never added to the trust store.
    pub untrusted: Identity,
    /// RSA 2048 with a PKCS#1 `RSA PRIVATE KEY`, trusted.
    pub trusted_rsa: Identity,
    /// ECDSA P-384 with a SEC1 `EC PRIVATE KEY` (what `lxc` itself writes), trusted.
    pub trusted_sec1: Identity,
    child: Option<Child>,
}

static SHARED: Mutex<Weak<Standalone>> = Mutex::new(Weak::new());
static STARTED: AtomicU32 = AtomicU32::new(0);

/// The daemon shared by the tests that run at the same time; started on demand.
pub fn shared() -> Arc<Standalone> {
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = slot.upgrade() {
        return d;
    }
    let d = Arc::new(Standalone::start());
    *slot = Arc::downgrade(&d);
    d
}

impl Standalone {
    pub fn start() -> Standalone {
        let pid = std::process::id();
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        // 127.0.0.10 .. 127.0.0.249: clear of 127.0.0.1 and of the addresses
        // tests use as "unreachable".
        let address = format!("127.0.0.{}:{}", 10 + pid % 240, 8443 + n);
        let dir = PathBuf::from(format!("/tmp/lxd-gitops-it-{pid}-{n}"));
        if dir.exists() {
            unmount_under(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir).expect("create LXD_DIR");
        // Everything that can fail before the daemon runs comes first: once it
        // runs, only `Drop` (by pid) may be left to stop it.
        let trusted = ecdsa_identity(&rcgen::PKCS_ECDSA_P384_SHA384, "lxd-gitops-it-trusted");
        let untrusted = ecdsa_identity(&rcgen::PKCS_ECDSA_P256_SHA256, "lxd-gitops-it-untrusted");
        let trusted_rsa = openssl_identity(&dir, "rsa");
        let trusted_sec1 = openssl_identity(&dir, "ec");
        let log = dir.join("lxd.log");
        let out = std::fs::File::create(dir.join("lxd.out")).expect("create lxd.out");
        let out_err = out.try_clone().expect("dup lxd.out");
        let child = Command::new("lxd")
            .args(["--group", "root", "--logfile"])
            .arg(&log)
            .env("LXD_DIR", &dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(out_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start lxd (is it installed?): {e}"));
        let mut d = Standalone {
            pid: child.id(),
            endpoint: format!("https://{address}"),
            unix_endpoint: format!("unix:{}", dir.join("unix.socket").display()),
            fingerprint: String::new(),
            trusted,
            untrusted,
            trusted_rsa,
            trusted_sec1,
            dir,
            child: Some(child),
        };
        d.must("lxd waitready", Command::new("lxd").args(["waitready", "--timeout", "60"]));
        d.lxc(&["config", "set", "core.https_address", &address]);
        d.lxc(&["storage", "create", "default", "dir"]);
        d.lxc(&["profile", "device", "add", "default", "root", "disk", "path=/", "pool=default"]);
        for (name, id) in [("trusted", &d.trusted), ("rsa", &d.trusted_rsa), ("sec1", &d.trusted_sec1)] {
            let path = d.dir.join(format!("{name}.crt"));
            std::fs::write(&path, &id.cert_pem).unwrap();
            d.lxc(&["config", "trust", "add", path.to_str().unwrap(), "--name", name]);
        }
        let info = d.lxc(&["query", "/1.0"]);
        let v: serde_json::Value =
            serde_json::from_str(&info).unwrap_or_else(|e| d.fail(&format!("GET /1.0: {e}: {info}")));
        d.fingerprint = v["environment"]["certificate_fingerprint"].as_str().unwrap_or_default().to_string();
        assert_eq!(d.fingerprint.len(), 64, "no certificate fingerprint in GET /1.0");
        wait_for_port(&address, Duration::from_secs(10)).unwrap_or_else(|e| d.fail(&e));
        d
    }

    /// Runs `lxc` against this daemon; panics with the daemon log on failure.
    pub fn lxc(&self, args: &[&str]) -> String {
        self.must(&format!("lxc {}", args.join(" ")), Command::new("lxc").args(args))
    }

    fn must(&self, what: &str, cmd: &mut Command) -> String {
        let out = cmd
            .env("LXD_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| self.fail(&format!("{what}: {e}")));
        if !out.status.success() {
            self.fail(&format!(
                "{what}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Panics with the daemon's log, so a broken daemon fails loudly.
    pub fn fail(&self, why: &str) -> ! {
        let log = std::fs::read_to_string(self.dir.join("lxd.log")).unwrap_or_default();
        let out = std::fs::read_to_string(self.dir.join("lxd.out")).unwrap_or_default();
        panic!(
            "standalone LXD in {}: {why}\n--- lxd.log ---\n{log}\n--- lxd stdout/stderr ---\n{out}",
            self.dir.display()
        );
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = dir.to_string_lossy().to_string();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", &p]).status();
    }
}

fn wait_for_port(address: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match std::net::TcpStream::connect(address) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(format!("{address} does not accept connections: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn ecdsa_identity(alg: &'static rcgen::SignatureAlgorithm, cn: &str) -> Identity {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// RSA (PKCS#1) or EC (SEC1) key pairs, as operators' tools write them.
fn openssl_identity(dir: &Path, kind: &str) -> Identity {
    let key = dir.join(format!("{kind}.key"));
    let crt = dir.join(format!("{kind}.pem"));
    let genkey = match kind {
        "rsa" => vec!["genrsa", "-traditional", "-out", key.to_str().unwrap(), "2048"],
        _ => vec!["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", key.to_str().unwrap()],
    };
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&genkey);
    let subj = format!("/CN=lxd-gitops-it-{kind}");
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
        "-days",
        "2",
        "-subj",
        &subj,
    ]);
    Identity { cert_pem: std::fs::read_to_string(&crt).unwrap(), key_pem: std::fs::read_to_string(&key).unwrap() }
}
