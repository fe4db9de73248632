//! The GitOps loop without LXD: a local bare repository as the remote, the git
//! source and its signature check, racing audit writers, and the daemon's HTTP
//! endpoints in front of a stub `Reconcile` (our own seam) that records triggers.
//!
//! Needs `git` and `ssh-keygen` on PATH (both are in the CI image and in
//! deploy/Containerfile). Measures webhook → reconcile latency on loopback.

use lxd_gitops::git::audit::{AuditRun, AuditSpec, AuditWriter, Identity, Person};
use lxd_gitops::git::source::{GitSource, SourceSpec};
use lxd_gitops::git::{GitError, RemoteAuth, SignaturePolicy};
use lxd_gitops::run::{Outcome, RunReport, Trigger};
use lxd_gitops::serve::reconciler::{FleetHead, Reconcile, RefreshError, RunContext};
use lxd_gitops::serve::webhook::sign;
use lxd_gitops::serve::{ClusterSchedule, Config, Daemon};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// A remote and a clone to push from, driven with the git CLI.
// ---------------------------------------------------------------------------

struct Remote {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.com")
        .env("GIT_COMMITTER_NAME", "Ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("fleet.git");
        let work = dir.path().join("work");
        git(dir.path(), &["init", "--bare", "-b", "main", bare.to_str().unwrap()]);
        git(dir.path(), &["clone", bare.to_str().unwrap(), work.to_str().unwrap()]);
        let r = Remote { _dir: dir, bare, work };
        r.commit("fleet/cluster.yaml", "kind: Cluster\nname: lab\n", &[]);
        r
    }

    /// Writes a file, commits (with extra `git commit` flags) and pushes; returns the commit id.
    fn commit(&self, file: &str, content: &str, flags: &[&str]) -> String {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        git(&self.work, &["add", "-A"]);
        let mut args = vec!["commit", "-q", "-m", "change"];
        args.extend_from_slice(flags);
        git(&self.work, &args);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn url(&self) -> String {
        self.bare.to_str().unwrap().to_string()
    }
}

fn spec(url: &str, signature: SignaturePolicy) -> SourceSpec {
    SourceSpec { url: url.into(), branch: "main".into(), path: "fleet".into(), auth: RemoteAuth::None, signature }
}

// ---------------------------------------------------------------------------
// Git source
// ---------------------------------------------------------------------------

#[test]
fn source_sync_picks_up_new_commits() {
    let remote = Remote::new();
    let state = tempfile::tempdir().unwrap();
    let src = GitSource::new(spec(&remote.url(), SignaturePolicy::None), state.path().join("src")).unwrap();

    let first = src.sync().unwrap();
    assert_eq!(first.commit, git(&remote.work, &["rev-parse", "HEAD"]));
    assert!(first.dir.ends_with("fleet"));
    assert_eq!(std::fs::read_to_string(first.dir.join("cluster.yaml")).unwrap(), "kind: Cluster\nname: lab\n");

    let second_id = remote.commit("fleet/profile.yaml", "kind: Profile\nname: base\n", &[]);
    let second = src.sync().unwrap();
    assert_eq!(second.commit, second_id);
    assert!(second.dir.join("profile.yaml").is_file());
    // The earlier export is untouched: a run still reading it is not disturbed.
    assert!(!first.dir.join("profile.yaml").exists());
    assert!(first.dir.join("cluster.yaml").is_file());
    // Syncing again without a new commit gives the same revision.
    assert_eq!(src.sync().unwrap(), second);
    // The last good revision can be exported again on demand.
    assert_eq!(src.checkout(&first.commit).unwrap().commit, first.commit);

    // file:// URLs work too, and a missing branch or path is a clear error.
    let file_url = format!("file://{}", remote.url());
    let via_url = GitSource::new(spec(&file_url, SignaturePolicy::None), state.path().join("src2")).unwrap();
    assert_eq!(via_url.sync().unwrap().commit, second_id);
    let mut no_branch = spec(&remote.url(), SignaturePolicy::None);
    no_branch.branch = "nope".into();
    let err = GitSource::new(no_branch, state.path().join("src3")).unwrap().sync().unwrap_err();
    assert!(matches!(err, GitError::NoBranch { .. } | GitError::Fetch { .. }), "{err}");
    let mut no_path = spec(&remote.url(), SignaturePolicy::None);
    no_path.path = "elsewhere".into();
    let err = GitSource::new(no_path, state.path().join("src4")).unwrap().sync().unwrap_err();
    assert!(matches!(err, GitError::NoPath { .. }), "{err}");
    assert!(
        GitSource::new(SourceSpec { path: "../etc".into(), ..spec("x", SignaturePolicy::None) }, state.path()).is_err()
    );
}

fn ssh_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

#[test]
fn ssh_signed_heads_are_accepted_and_others_refused() {
    let remote = Remote::new();
    let keys = tempfile::tempdir().unwrap();
    let (trusted, trusted_pub) = ssh_keygen(keys.path(), "trusted");
    let (stranger, _) = ssh_keygen(keys.path(), "stranger");
    let allowed = keys.path().join("allowed_signers");
    std::fs::write(&allowed, format!("ops@example.com {trusted_pub}\n")).unwrap();
    let sign_with = |key: &Path| -> Vec<String> {
        vec![
            "-S".into(),
            // `git -c` must come before the subcommand; pass via the flags the helper appends.
            format!("--gpg-sign={}", key.display()),
        ]
    };
    let state = tempfile::tempdir().unwrap();
    let src = GitSource::new(
        spec(&remote.url(), SignaturePolicy::Ssh { allowed_signers_file: allowed.clone() }),
        state.path().join("src"),
    )
    .unwrap();

    // Unsigned (the initial commit): refused.
    let err = src.sync().unwrap_err();
    assert!(matches!(&err, GitError::Signature { reason, .. } if reason.contains("not signed")), "{err}");

    // Signed by the trusted key: accepted, and the signer is named.
    git(&remote.work, &["config", "gpg.format", "ssh"]);
    let flags = sign_with(&trusted);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let signed = remote.commit("fleet/a.yaml", "a: 1\n", &flags);
    let t0 = Instant::now();
    let rev = src.sync().unwrap();
    println!("fetch + verify + export of a signed head: {:?}", t0.elapsed());
    assert_eq!(rev.commit, signed);
    assert_eq!(rev.signer.as_deref(), Some("ops@example.com"));

    // Signed by a key that is not in allowed_signers: refused.
    let flags = sign_with(&stranger);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let bad = remote.commit("fleet/b.yaml", "b: 1\n", &flags);
    let err = src.sync().unwrap_err();
    match &err {
        GitError::Signature { commit, reason } => {
            assert_eq!(commit, &bad);
            assert!(reason.contains("verifies"), "{reason}");
        }
        other => panic!("expected a signature error, got {other}"),
    }

    // Unsigned on top of a signed one: refused again (only the head counts).
    remote.commit("fleet/c.yaml", "c: 1\n", &["--no-gpg-sign"]);
    assert!(matches!(src.sync(), Err(GitError::Signature { .. })));
}

#[test]
fn gpg_signed_heads_are_accepted_when_gpg_is_available() {
    if Command::new("gpg").arg("--version").output().is_err() || Command::new("gpgv").arg("--version").output().is_err()
    {
        eprintln!("gpg or gpgv missing: skipped");
        return;
    }
    let remote = Remote::new();
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    gpg(&["--quick-gen-key", "Ops <ops@example.com>", "ed25519", "sign", "never"]);
    let keyring = home.path().join("trusted.gpg");
    std::fs::write(&keyring, gpg(&["--export", "ops@example.com"])).unwrap();

    let program = home.path().join("gpg-wrapper");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\nexec gpg --homedir {} --batch --pinentry-mode loopback --passphrase '' \"$@\"\n",
            home.path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    git(&remote.work, &["config", "gpg.program", program.to_str().unwrap()]);
    let signed = remote.commit("fleet/a.yaml", "a: 1\n", &["--gpg-sign=ops@example.com"]);

    let state = tempfile::tempdir().unwrap();
    let src =
        GitSource::new(spec(&remote.url(), SignaturePolicy::Gpg { keyring_file: keyring }), state.path().join("src"))
            .unwrap();
    let rev = src.sync().unwrap();
    assert_eq!(rev.commit, signed);
    assert!(rev.signer.is_some());
    remote.commit("fleet/b.yaml", "b: 1\n", &["--no-gpg-sign"]);
    assert!(matches!(src.sync(), Err(GitError::Signature { .. })));
}

/// An sshd on a loopback port serving the test's repositories (needs root for
/// sshd's privilege separation; skipped otherwise).
struct Sshd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
    client_key: PathBuf,
    known_hosts: PathBuf,
    wrong_known_hosts: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sshd() -> Option<Sshd> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" || !Path::new("/usr/sbin/sshd").exists() {
        return None;
    }
    std::fs::create_dir_all("/run/sshd").ok()?;
    let dir = tempfile::tempdir().unwrap();
    let (host_key, host_pub) = ssh_keygen(dir.path(), "hostkey");
    let (_, other_pub) = ssh_keygen(dir.path(), "otherhost");
    let (client_key, client_pub) = ssh_keygen(dir.path(), "client");
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(&authorized, format!("{client_pub}\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\nSetEnv PATH=/usr/local/bin:/usr/bin:/bin\n",
            host_key.display(),
            authorized.display()
        ),
    )
    .unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}\n")).unwrap();
    let wrong_known_hosts = dir.path().join("wrong_known_hosts");
    std::fs::write(&wrong_known_hosts, format!("[127.0.0.1]:{port} {other_pub}\n")).unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-f")
        .arg(&config)
        .arg("-E")
        .arg(dir.path().join("sshd.log"))
        .spawn()
        .ok()?;
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(5) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Sshd { child, port, _dir: dir, client_key, known_hosts, wrong_known_hosts })
}

#[test]
fn ssh_remotes_use_the_key_and_pin_the_host_key() {
    let Some(sshd) = start_sshd() else {
        eprintln!("sshd not usable here (needs root and /usr/sbin/sshd): skipped");
        return;
    };
    let remote = Remote::new();
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, remote.url());
    let state = tempfile::tempdir().unwrap();
    let auth =
        RemoteAuth::SshKey { private_key_file: sshd.client_key.clone(), known_hosts_file: sshd.known_hosts.clone() };
    let src = GitSource::new(
        SourceSpec { auth: auth.clone(), ..spec(&url, SignaturePolicy::None) },
        state.path().join("src"),
    )
    .unwrap();
    let rev = src.sync().unwrap();
    assert_eq!(rev.commit, git(&remote.work, &["rev-parse", "HEAD"]));

    // A host key that is not the pinned one: refused before any credential is sent.
    let pinned_wrong = GitSource::new(
        SourceSpec {
            auth: RemoteAuth::SshKey {
                private_key_file: sshd.client_key.clone(),
                known_hosts_file: sshd.wrong_known_hosts.clone(),
            },
            ..spec(&url, SignaturePolicy::None)
        },
        state.path().join("src2"),
    )
    .unwrap();
    let err = pinned_wrong.sync().unwrap_err();
    assert!(err.to_string().contains("host key"), "{err}");

    // The audit writer pushes over SSH as well.
    let bot = Person { name: "lxd-gitops".into(), email: "bot@example.com".into() };
    let writer = AuditWriter::new(
        AuditSpec {
            url,
            auth,
            branch: "lxd-gitops/audit".into(),
            source_branch: "main".into(),
            author: bot.clone(),
            committer: bot,
            push: true,
            max_attempts: 2,
        },
        state.path().join("audit"),
    )
    .unwrap();
    let id = writer.record(&audit_run("lab", 1)).unwrap();
    assert_eq!(git(&remote.bare, &["rev-parse", "lxd-gitops/audit"]), id.to_string());
}

/// Smart HTTP in front of `git http-backend` (CGI), demanding Basic auth with
/// `x-access-token:<token>`, the way GitHub takes a token.
async fn git_http_server(root: PathBuf, token: &'static str) -> std::net::SocketAddr {
    use axum::body::{to_bytes, Body};
    use axum::http::{Request, Response, StatusCode};
    use base64::Engine;
    let handler = move |req: Request<Body>| {
        let root = root.clone();
        async move {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
            );
            let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok());
            if auth != Some(expected.as_str()) {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("WWW-Authenticate", "Basic realm=\"git\"")
                    .body(Body::empty())
                    .unwrap();
            }
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let content_type =
                req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let encoding =
                req.headers().get("content-encoding").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = to_bytes(req.into_body(), usize::MAX).await.unwrap();
            let out = tokio::task::spawn_blocking(move || {
                let mut child = Command::new("git")
                    .arg("http-backend")
                    .env("GIT_PROJECT_ROOT", &root)
                    .env("GIT_HTTP_EXPORT_ALL", "1")
                    .env("REQUEST_METHOD", method)
                    .env("PATH_INFO", path)
                    .env("QUERY_STRING", query)
                    .env("CONTENT_TYPE", content_type)
                    .env("HTTP_CONTENT_ENCODING", encoding)
                    .env("CONTENT_LENGTH", body.len().to_string())
                    .env("REMOTE_USER", "x-access-token")
                    .env("REMOTE_ADDR", "127.0.0.1")
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(&body).unwrap();
                child.wait_with_output().unwrap().stdout
            })
            .await
            .unwrap();
            let split = out
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, 4))
                .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
                .unwrap();
            let head = String::from_utf8_lossy(&out[..split.0]).to_string();
            let mut resp = Response::builder();
            for line in head.lines() {
                let (k, v) = line.split_once(':').unwrap();
                if k.eq_ignore_ascii_case("status") {
                    resp = resp.status(v.trim()[..3].parse::<u16>().unwrap());
                } else {
                    resp = resp.header(k.trim(), v.trim());
                }
            }
            resp.body(Body::from(out[split.0 + split.1..].to_vec())).unwrap()
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_remotes_send_the_token_from_its_file() {
    let remote = Remote::new();
    let root = remote.bare.parent().unwrap().to_path_buf();
    let addr = git_http_server(root, "t0ken").await;
    let url = format!("http://{addr}/fleet.git");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    let source = Arc::new(
        GitSource::new(
            SourceSpec { auth: RemoteAuth::token(&token_file), ..spec(&url, SignaturePolicy::None) },
            dir.path().join("src"),
        )
        .unwrap(),
    );
    let s = source.clone();
    let rev = tokio::task::spawn_blocking(move || s.sync()).await.unwrap().unwrap();
    assert_eq!(rev.commit, git(&remote.work, &["rev-parse", "HEAD"]));

    // A wrong token: refused once, reported, and the token never appears.
    std::fs::write(&token_file, "wrong-token\n").unwrap();
    let other = Arc::new(
        GitSource::new(
            SourceSpec { auth: RemoteAuth::token(&token_file), ..spec(&url, SignaturePolicy::None) },
            dir.path().join("src2"),
        )
        .unwrap(),
    );
    let err = tokio::task::spawn_blocking(move || other.sync()).await.unwrap().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, GitError::Fetch { .. }), "{text}");
    assert!(!text.contains("wrong-token"), "{text}");

    // Without credentials configured: a clear error.
    let anon = GitSource::new(spec(&url, SignaturePolicy::None), dir.path().join("src3")).unwrap();
    let err = tokio::task::spawn_blocking(move || anon.sync()).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("credentials"), "{err}");
}

// ---------------------------------------------------------------------------
// Audit writer
// ---------------------------------------------------------------------------

fn audit_run(cluster: &str, n: i64) -> AuditRun {
    let started = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap().with_timezone(&chrono::Utc)
        + chrono::Duration::seconds(n);
    AuditRun {
        cluster: cluster.into(),
        trigger: Trigger::Manual,
        started,
        finished: started + chrono::Duration::milliseconds(800),
        report: RunReport::new(Some(format!("{n:040x}")), Outcome::Applied),
        steps: serde_json::json!([]),
        reconciler: Identity::current(),
    }
}

fn audit_writer(remote: &Remote, dir: &Path) -> AuditWriter {
    let bot = Person { name: "lxd-gitops".into(), email: "bot@example.com".into() };
    AuditWriter::new(
        AuditSpec {
            url: remote.url(),
            auth: RemoteAuth::None,
            branch: "lxd-gitops/audit".into(),
            source_branch: "main".into(),
            author: bot.clone(),
            committer: bot,
            push: true,
            max_attempts: 5,
        },
        dir,
    )
    .unwrap()
}

#[test]
fn racing_audit_writers_rebase_and_both_land() {
    let remote = Remote::new();
    let main_before = git(&remote.bare, &["rev-parse", "main"]);
    let state = tempfile::tempdir().unwrap();
    let a = Arc::new(audit_writer(&remote, &state.path().join("a")));
    let b = Arc::new(audit_writer(&remote, &state.path().join("b")));

    // The first record creates the branch as an orphan.
    let first = a.record(&audit_run("lab", 0)).unwrap();
    assert_eq!(git(&remote.bare, &["rev-list", "--count", "lxd-gitops/audit"]), "1");
    assert_eq!(git(&remote.bare, &["rev-parse", "lxd-gitops/audit"]), first.to_string());

    // Then both write at the same time, from clones that are each behind.
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = [("lab", a.clone(), 100), ("prod", b.clone(), 200)]
        .into_iter()
        .map(|(cluster, w, base)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..4 {
                    w.record(&audit_run(cluster, base + i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }

    let files = git(&remote.bare, &["ls-tree", "-r", "--name-only", "lxd-gitops/audit"]);
    let runs: Vec<&str> = files.lines().filter(|l| l.starts_with("runs/")).collect();
    assert_eq!(runs.len(), 9, "every record is on the audit branch:\n{files}");
    assert!(files.lines().any(|l| l == "status/lab.json"));
    assert!(files.lines().any(|l| l == "status/prod.json"));
    assert_eq!(
        git(&remote.bare, &["rev-list", "--count", "lxd-gitops/audit"]),
        "9",
        "linear history: each record one commit"
    );
    assert_eq!(git(&remote.bare, &["rev-parse", "main"]), main_before, "the watched branch is untouched");
    let status = git(&remote.bare, &["show", "lxd-gitops/audit:status/prod.json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["applied_revision"], format!("{:040x}", 203));
    let log = git(&remote.bare, &["log", "-1", "--format=%an <%ae>|%cn", "lxd-gitops/audit"]);
    assert_eq!(log, "lxd-gitops <bot@example.com>|lxd-gitops");
}

// ---------------------------------------------------------------------------
// The daemon over HTTP, in front of a stub pipeline that fetches for real.
// ---------------------------------------------------------------------------

struct StubPipeline {
    source: Arc<GitSource>,
    calls: Mutex<Vec<(String, Trigger, Instant)>>,
}

impl Reconcile for StubPipeline {
    async fn refresh(&self) -> Result<FleetHead, RefreshError> {
        let source = self.source.clone();
        let rev = tokio::task::spawn_blocking(move || source.sync())
            .await
            .unwrap()
            .map_err(|e| RefreshError::Fetch(e.to_string()))?;
        Ok(FleetHead { revision: rev.commit, clusters: vec![ClusterSchedule::unscheduled("lab")] })
    }

    async fn reconcile(&self, cluster: &str, ctx: RunContext) -> RunReport {
        self.calls.lock().unwrap().push((cluster.to_string(), ctx.trigger.clone(), Instant::now()));
        let revision = match &ctx.trigger {
            Trigger::Webhook { revision, .. } => Some(revision.clone()),
            _ => None,
        };
        RunReport::new(revision, Outcome::NoChanges)
    }
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
fn http(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body)
}

async fn http_async(
    addr: std::net::SocketAddr,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http(addr, method, path, &h, &body)
    })
    .await
    .unwrap()
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_are_verified_and_reach_the_reconciler_in_milliseconds() {
    let remote = Remote::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("github.secret"), "It's a Secret to Everybody\n").unwrap();
    std::fs::write(dir.path().join("admin.token"), "let-me-in\n").unwrap();
    let config_text = format!(
        "repo:\n  url: {}\n  branch: main\n  path: fleet\nlisten: 127.0.0.1:0\npoll_interval: 1h\nwebhooks:\n  github: {{secret_file: github.secret}}\nadmin_token_file: admin.token\nstate_dir: state\n",
        remote.url()
    );
    let config = Config::parse(&config_text, "config.yaml", dir.path()).unwrap();
    assert!(!format!("{config:?}").contains("Secret to Everybody"));
    let source = Arc::new(GitSource::new(config.repo.as_ref().unwrap().source_spec(), config.source_dir()).unwrap());
    let daemon = Daemon::bind(&config, StubPipeline { source, calls: Mutex::new(Vec::new()) }).await.unwrap();
    let addr = daemon.local_addr().unwrap();
    let reconciler = daemon.reconciler().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(daemon.serve_until(async move {
        let _ = stop_rx.await;
    }));
    let calls = || reconciler.pipeline().calls.lock().unwrap().clone();

    // Startup: one refresh, one run.
    wait_for("startup run", || calls().len() == 1).await;
    assert_eq!(calls()[0].1, Trigger::Startup);
    wait_for("ready", || reconciler.readiness().is_ok()).await;
    assert_eq!(http_async(addr, "GET", "/healthz", vec![], vec![]).await.0, 200);
    assert_eq!(http_async(addr, "GET", "/readyz", vec![], vec![]).await.0, 200);

    let head = remote.commit("fleet/new.yaml", "kind: Profile\nname: new\n", &[]);
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{head}","repository":{{"full_name":"ops/fleet"}}}}"#);
    let secret = b"It's a Secret to Everybody";

    // A bad signature: 401, nothing queued.
    let bad = format!("sha256={}", sign(b"wrong secret", body.as_bytes()));
    let (code, text) = http_async(
        addr,
        "POST",
        "/hooks/github",
        vec![("X-Hub-Signature-256", bad.clone()), ("X-GitHub-Event", "push".into())],
        body.clone().into_bytes(),
    )
    .await;
    assert_eq!(code, 401, "{text}");
    assert!(!text.contains(&bad[7..]), "the signature is not echoed");
    let (code, _) =
        http_async(addr, "POST", "/hooks/github", vec![("X-GitHub-Event", "push".into())], body.clone().into_bytes())
            .await;
    assert_eq!(code, 401, "missing signature");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls().len(), 1, "nothing queued for unauthenticated webhooks");

    // A push to another branch: accepted and ignored.
    let other = body.replace("refs/heads/main", "refs/heads/feature");
    let sig = format!("sha256={}", sign(secret, other.as_bytes()));
    let (code, text) = http_async(
        addr,
        "POST",
        "/hooks/github",
        vec![("X-Hub-Signature-256", sig), ("X-GitHub-Event", "push".into())],
        other.into_bytes(),
    )
    .await;
    assert_eq!((code, text.trim()), (202, "ignored: ref refs/heads/feature"));
    // An unconfigured provider: 404.
    assert_eq!(http_async(addr, "POST", "/hooks/gitlab", vec![], b"{}".to_vec()).await.0, 404);

    // A good one: measure POST → reconcile call.
    let mut timings = Vec::new();
    for round in 0..5 {
        let before = calls().len();
        let sig = format!("sha256={}", sign(secret, body.as_bytes()));
        let t0 = Instant::now();
        let (code, text) = http_async(
            addr,
            "POST",
            "/hooks/github",
            vec![("X-Hub-Signature-256", sig), ("X-GitHub-Event", "push".into())],
            body.clone().into_bytes(),
        )
        .await;
        let answered = t0.elapsed();
        assert_eq!(code, 202, "{text}");
        wait_for("webhook run", || calls().len() > before).await;
        let (cluster, trigger, at) = calls()[before].clone();
        let latency = at.duration_since(t0);
        println!("round {round}: webhook answered in {answered:?}, reconcile started {latency:?} after the POST");
        timings.push(latency);
        assert_eq!(cluster, "lab");
        assert_eq!(trigger, Trigger::Webhook { provider: "github".into(), revision: head.clone() });
        reconciler.drained().await;
    }
    timings.sort();
    println!("webhook → reconcile: min {:?}, median {:?}, max {:?}", timings[0], timings[2], timings[4]);
    assert!(timings[4] < Duration::from_secs(2), "over the 2 s budget: {timings:?}");

    // Status and metrics show the run; no secrets anywhere.
    let (code, status) = http_async(addr, "GET", "/status", vec![], vec![]).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["clusters"]["lab"]["applied_revision"], head);
    assert_eq!(v["clusters"]["lab"]["last_run"]["outcome"]["result"], "no-changes");
    assert_eq!(v["source"]["head"], head);
    let (code, metrics) = http_async(addr, "GET", "/metrics", vec![], vec![]).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!("lxd_gitops_last_applied_revision_info{{cluster=\"lab\",revision=\"{head}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("lxd_gitops_webhook_requests_total{provider=\"github\",result=\"unauthorized\"} 2"),
        "{metrics}"
    );
    for s in [&status, &metrics] {
        assert!(!s.contains("Secret to Everybody") && !s.contains("let-me-in"));
    }

    // Manual runs and suspension need the admin token.
    assert_eq!(http_async(addr, "POST", "/reconcile?cluster=lab", vec![], vec![]).await.0, 401);
    let auth = ("Authorization", "Bearer let-me-in".to_string());
    let before = calls().len();
    let (code, text) = http_async(addr, "POST", "/reconcile?cluster=lab", vec![auth.clone()], vec![]).await;
    assert_eq!(code, 202, "{text}");
    wait_for("manual run", || calls().len() > before).await;
    reconciler.drained().await;
    assert_eq!(http_async(addr, "POST", "/reconcile?cluster=nope", vec![auth.clone()], vec![]).await.0, 404);
    assert_eq!(http_async(addr, "POST", "/clusters/lab/suspend", vec![auth.clone()], vec![]).await.0, 200);
    let before = calls().len();
    assert_eq!(http_async(addr, "POST", "/reconcile?cluster=lab", vec![auth.clone()], vec![]).await.0, 409);
    let sig = format!("sha256={}", sign(secret, body.as_bytes()));
    assert_eq!(
        http_async(addr, "POST", "/hooks/github", vec![("X-Hub-Signature-256", sig)], body.clone().into_bytes())
            .await
            .0,
        202
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls().len(), before, "a suspended cluster runs nothing");
    let (_, status) = http_async(addr, "GET", "/status", vec![], vec![]).await;
    assert!(status.contains("\"suspended\":true"), "{status}");
    assert_eq!(http_async(addr, "POST", "/clusters/lab/resume", vec![auth.clone()], vec![]).await.0, 200);
    wait_for("catch-up run after resume", || calls().len() > before).await;

    // Graceful shutdown.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}
