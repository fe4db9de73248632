//! The daemon end to end: `lxd-gitops serve` watching a local bare repository and
//! reconciling into the shared real LXD lab. A webhook with a bad signature is
//! rejected and changes nothing; a signed one applies the pushed revision and leaves
//! an audit commit on the audit branch; an invalid revision is not applied and the
//! next valid one is.

mod common;

use common::lab::{lab, Lab};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn post(port: u16, path: &str, headers: &[(&str, String)], body: &str) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary", body]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let o = cmd.output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0)
}

fn instance_exists(lab: &Lab, project: &str, name: &str) -> bool {
    lab.lxc("node1", &["info", name, "--project", project]).status.success()
}

fn fleet(lab: &Lab, cluster: &str, project: &str, instances: &[&str]) -> String {
    fleet_with(lab, cluster, project, instances, "")
}

/// `policy` is YAML lines for the Cluster's `policy:` mapping (indented by two).
fn fleet_with(lab: &Lab, cluster: &str, project: &str, instances: &[&str], policy: &str) -> String {
    let endpoints: Vec<String> = lab.cluster.members.iter().map(|m| format!("\"{}\"", m.endpoint)).collect();
    let mut s = format!(
        "kind: Cluster\nname: {cluster}\nendpoints: [{}]\nfingerprint: \"{}\"\ncredentials: lab\n{policy}---\nkind: Project\ncluster: {cluster}\nname: {project}\nconfig:\n  features.images: \"false\"\n  features.profiles: \"false\"\n",
        endpoints.join(", "),
        lab.cluster.fingerprint
    );
    for i in instances {
        s.push_str(&format!(
            "---\nkind: Instance\ncluster: {cluster}\nproject: {project}\nname: {i}\nstate: stopped\n"
        ));
    }
    s
}

#[test]
fn webhooks_apply_pushes_and_leave_audit_commits() {
    let lab = lab();
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("fleet.git");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(tmp.path(), &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let cluster = lab.unique("served");
    let project = lab.unique("srv");
    let push = |text: &str, msg: &str| -> String {
        std::fs::write(work.join("fleet.yaml"), text).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", msg]);
        git(&work, &["push", "-q", "origin", "main"]);
        git(&work, &["rev-parse", "HEAD"])
    };
    push(&fleet(lab, &cluster, &project, &["a1"]), "first");

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let secret = "s3cret-for-tests";
    std::fs::write(tmp.path().join("hook-secret"), secret).unwrap();
    let config = format!(
        "repo:\n  url: {}\n  branch: main\npoll_interval: 1h\nlisten: 127.0.0.1:{port}\nwebhooks:\n  generic:\n    secret_file: {}\naudit:\n  branch: lxd-gitops/audit\n  author_name: lxd-gitops\n  author_email: lxd-gitops@example.invalid\n  push: true\ncredentials_dir: {}\nstate_dir: {}\n",
        bare.display(),
        tmp.path().join("hook-secret").display(),
        lab.credentials_dir().display(),
        tmp.path().join("state").display()
    );
    let cfg = tmp.path().join("config.yaml");
    std::fs::write(&cfg, config).unwrap();
    let start = || {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(tmp.path().join("serve.log")).unwrap();
        Daemon(
            Command::new(env!("CARGO_BIN_EXE_lxd-gitops"))
                .args(["serve", "--config", cfg.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let mut daemon = start();
    let serve_log = || std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();

    // The startup run applies the first revision.
    wait_for("the first revision to be applied", Duration::from_secs(90), || instance_exists(lab, &project, "a1"));

    // A push with a bad signature: 401, nothing applied.
    let rev2 = push(&fleet(lab, &cluster, &project, &["a1", "a2"]), "add a2");
    let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{rev2}\"}}");
    let code = post(port, "/hooks/generic", &[("X-Signature-256", format!("sha256={}", "0".repeat(64)))], &body);
    assert_eq!(code, 401, "{}", serve_log());
    let code = post(port, "/hooks/generic", &[], &body);
    assert_eq!(code, 401);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!instance_exists(lab, &project, "a2"), "applied without a valid signature");

    // Signed: applied within seconds.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let sent = Instant::now();
    let code = post(port, "/hooks/generic", &[("X-Signature-256", sig)], &body);
    assert!((200..300).contains(&code), "signed webhook answered {code}\n{}", serve_log());
    wait_for("the pushed revision to be applied", Duration::from_secs(60), || instance_exists(lab, &project, "a2"));
    eprintln!("webhook to instance created: {:?}", sent.elapsed());

    // The audit branch records the runs, with the revision.
    wait_for("an audit commit for the push", Duration::from_secs(30), || {
        let o = Command::new("git")
            .args(["--git-dir", bare.to_str().unwrap(), "grep", "-l", &rev2, "lxd-gitops/audit", "--", "runs"])
            .output()
            .unwrap();
        o.status.success()
    });
    let main_head = git(tmp.path(), &["--git-dir", bare.to_str().unwrap(), "rev-parse", "main"]);
    assert_eq!(main_head, rev2, "the daemon must never write to the watched branch");

    // An invalid revision is not applied; the next valid one is.
    let bad =
        fleet(lab, &cluster, &project, &["a1", "a2", "a3"]) + "---\nkind: Instance\ncluster: nope\nname: [broken\n";
    let rev3 = push(&bad, "broken");
    let sign = |body: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let body3 = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{rev3}\"}}");
    assert!((200..300).contains(&post(port, "/hooks/generic", &[("X-Signature-256", sign(&body3))], &body3)));
    wait_for("the invalid revision to be reported", Duration::from_secs(30), || {
        let o = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/status")]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).contains("invalid")
    });
    assert!(!instance_exists(lab, &project, "a3"), "an invalid revision was applied");
    let rev4 = push(&fleet(lab, &cluster, &project, &["a1", "a2", "a3"]), "fixed");
    let body4 = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{rev4}\"}}");
    assert!((200..300).contains(&post(port, "/hooks/generic", &[("X-Signature-256", sign(&body4))], &body4)));
    wait_for("the fixed revision to be applied", Duration::from_secs(60), || instance_exists(lab, &project, "a3"));

    // Drift by hand is corrected at the next tick of the cluster's cron schedule.
    let every_minute = "policy:\n  drift_schedule: \"* * * * *\"\n";
    let rev5 = push(&fleet_with(lab, &cluster, &project, &["a1", "a2", "a3"], every_minute), "drift every minute");
    let body5 = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{rev5}\"}}");
    assert!((200..300).contains(&post(port, "/hooks/generic", &[("X-Signature-256", sign(&body5))], &body5)));
    std::thread::sleep(Duration::from_secs(2));
    lab.lxc_ok("node1", &["config", "set", "a1", "user.by-hand=yes", "--project", &project]);
    wait_for("cron drift correction", Duration::from_secs(100), || {
        lab.query("node1", &format!("/1.0/instances/a1?project={project}"))["config"].get("user.by-hand").is_none()
    });

    // Outside the sync windows nothing is applied (a deny window that is always open).
    let deny = "policy:\n  sync_windows:\n    - {kind: deny, schedule: \"* * * * *\", duration: 2h}\n";
    let rev6 = push(&fleet_with(lab, &cluster, &project, &["a1", "a2", "a3", "a4"], deny), "a4 in a deny window");
    let body6 = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{rev6}\"}}");
    assert!((200..300).contains(&post(port, "/hooks/generic", &[("X-Signature-256", sign(&body6))], &body6)));
    wait_for("the held run to be reported", Duration::from_secs(30), || {
        let o = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/status")]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).contains("held")
    });
    assert!(!instance_exists(lab, &project, "a4"), "applied outside the sync windows");

    // SIGKILL in the middle of an apply, then a restart: it converges, nothing lost.
    let many: Vec<String> = (1..=12).map(|i| format!("k{i}")).collect();
    let mut names: Vec<&str> = vec!["a1", "a2", "a3"];
    names.extend(many.iter().map(String::as_str));
    let rev7 = push(&fleet_with(lab, &cluster, &project, &names, every_minute), "twelve more");
    let body7 = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{rev7}\"}}");
    assert!((200..300).contains(&post(port, "/hooks/generic", &[("X-Signature-256", sign(&body7))], &body7)));
    wait_for("the apply to start", Duration::from_secs(30), || instance_exists(lab, &project, "k1"));
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    drop(daemon);
    daemon = start();
    wait_for("convergence after the restart", Duration::from_secs(120), || {
        many.iter().all(|n| instance_exists(lab, &project, n))
    });
    let listed = lab.lxc_json("node1", &["list", "--project", &project]);
    assert_eq!(listed.as_array().unwrap().len(), names.len(), "instances lost or duplicated: {listed}");

    // The git remote gone: the daemon keeps running and says it is not ready.
    std::fs::rename(&bare, tmp.path().join("gone.git")).unwrap();
    assert!((200..300).contains(&post(port, "/reconcile", &[], "")), "{}", serve_log());
    wait_for("readyz to report the unreachable remote", Duration::from_secs(30), || {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{port}/readyz")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim() == "503"
    });
    let o = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/healthz")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok");
    assert!(!serve_log().contains(secret), "the webhook secret was logged");

    // Clean up what this test made in the shared lab.
    for i in &names {
        lab.lxc("node1", &["delete", i, "--project", &project, "--force"]);
    }
    drop(daemon);
    lab.lxc("node1", &["project", "delete", &project]);
}
