//! The live reader against the shared lab cluster: the number of HTTP requests to
//! read a cluster does not grow with the number of instances, and what it reads is
//! what `lxc` reports.

mod common;

use common::lab::{lab, Lab};
use std::path::Path;
use std::process::{Command, Stdio};

/// A fleet with only a Cluster document for the lab, under its own name.
fn cluster_only(lab: &Lab, dir: &Path, name: &str) {
    let endpoints: Vec<String> = lab.cluster.members.iter().map(|m| format!("\"{}\"", m.endpoint)).collect();
    std::fs::write(
        dir.join("cluster.yaml"),
        format!(
            "kind: Cluster\nname: {name}\nendpoints: [{}]\nfingerprint: \"{}\"\ncredentials: lab\n",
            endpoints.join(", "),
            lab.cluster.fingerprint
        ),
    )
    .unwrap();
}

/// Reads the cluster with `snapshot`; returns (instances in `project`, HTTP requests).
fn snapshot(lab: &Lab, fleet: &Path, name: &str, project: &str) -> (usize, u64) {
    let out = fleet.join("snap.json");
    let o = lab.gitops(&["snapshot", fleet.to_str().unwrap(), "--cluster", name, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let requests: u64 = stderr
        .split(" requests)")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in: {stderr}"));
    let live: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let n = live["objects"]["instances"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with(&format!("{project}/")))
        .count();
    (n, requests)
}

/// Creates empty containers `prefix-<i>` for i in range, four `lxc` at a time.
fn create_empty(lab: &Lab, project: &str, prefix: &str, range: std::ops::Range<usize>) {
    let names: Vec<String> = range.map(|i| format!("{prefix}-{i}")).collect();
    for chunk in names.chunks(4) {
        let children: Vec<_> = chunk
            .iter()
            .map(|n| {
                Command::new("lxc")
                    .args(["init", "--empty", n, "--project", project])
                    .env("LXD_DIR", lab.lxd_dir("node1"))
                    .env("LXD_CONF", &lab.lxc_conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "lxc init failed: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

#[test]
fn reading_a_cluster_costs_the_same_requests_for_10_and_200_instances() {
    let lab = lab();
    let project = lab.unique("flat");
    lab.lxc_ok(
        "node1",
        &["project", "create", &project, "-c", "features.images=false", "-c", "features.profiles=false"],
    );
    let dir = tempfile::tempdir().unwrap();
    let name = lab.unique("reader");
    cluster_only(lab, dir.path(), &name);

    create_empty(lab, &project, "c", 0..10);
    let (n10, r10) = snapshot(lab, dir.path(), &name, &project);
    assert_eq!(n10, 10);

    create_empty(lab, &project, "c", 10..200);
    let (n200, r200) = snapshot(lab, dir.path(), &name, &project);
    assert_eq!(n200, 200);
    assert_eq!(r10, r200, "requests grew with instances: {r10} for 10, {r200} for 200");

    // What the reader saw is what lxc lists.
    let listed = lab.lxc_json("node1", &["list", "--project", &project]);
    assert_eq!(listed.as_array().unwrap().len(), 200);

    for i in 0..200 {
        lab.lxc("node1", &["delete", &format!("c-{i}"), "--project", &project, "--force"]);
    }
    lab.lxc_ok("node1", &["project", "delete", &project]);
}

#[test]
fn wrong_pins_and_untrusted_clients_are_clear_errors() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let name = lab.unique("pins");
    // A wrong fingerprint: refused, naming both fingerprints; nothing read.
    let endpoints: Vec<String> = lab.cluster.members.iter().map(|m| format!("\"{}\"", m.endpoint)).collect();
    std::fs::write(
        dir.path().join("cluster.yaml"),
        format!(
            "kind: Cluster\nname: {name}\nendpoints: [{}]\nfingerprint: \"{}\"\ncredentials: lab\n",
            endpoints.join(", "),
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let o = lab.gitops(&["plan", dir.path().to_str().unwrap(), "--cluster", &name]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not match the pinned") && err.contains(&lab.cluster.fingerprint), "{err}");

    // Missing credentials: says where they should be and how to get them.
    cluster_only(lab, dir.path(), &name);
    let o = Command::new(env!("CARGO_BIN_EXE_lxd-gitops"))
        .args(["plan", dir.path().to_str().unwrap(), "--cluster", &name])
        .env("LXD_GITOPS_CREDENTIALS_DIR", dir.path().join("nothing-here"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("lxd-gitops login"), "{err}");

    // The first endpoint down: the next one answers (failover).
    let mut eps = vec!["\"https://127.0.0.1:1\"".to_string()];
    eps.extend(lab.cluster.members.iter().map(|m| format!("\"{}\"", m.endpoint)));
    std::fs::write(
        dir.path().join("cluster.yaml"),
        format!(
            "kind: Cluster\nname: {name}\nendpoints: [{}]\nfingerprint: \"{}\"\ncredentials: lab\n",
            eps.join(", "),
            lab.cluster.fingerprint
        ),
    )
    .unwrap();
    let o = lab.gitops(&["plan", dir.path().to_str().unwrap(), "--cluster", &name]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn login_with_a_trust_token_makes_a_new_client_trusted() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let name = lab.unique("login");
    let creds = dir.path().join("creds");
    // The fleet names credentials `fresh`: nothing exists there yet.
    let endpoints: Vec<String> = lab.cluster.members.iter().map(|m| format!("\"{}\"", m.endpoint)).collect();
    std::fs::write(
        dir.path().join("cluster.yaml"),
        format!(
            "kind: Cluster\nname: {name}\nendpoints: [{}]\nfingerprint: \"{}\"\ncredentials: fresh\n",
            endpoints.join(", "),
            lab.cluster.fingerprint
        ),
    )
    .unwrap();
    let token_name = lab.unique("gitops");
    let out = lab.lxc_ok("node1", &["config", "trust", "add", "--name", &token_name]);
    let token = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap().trim().to_string();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lxd-gitops"))
            .args(args)
            .env("LXD_GITOPS_CREDENTIALS_DIR", &creds)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let f = dir.path().to_str().unwrap();
    // Before: no credentials, a clear error.
    let o = run(&["plan", f, "--cluster", &name]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["login", f, "--cluster", &name, "--token", &token]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&lab.cluster.fingerprint), "{stdout}");
    assert!(!stdout.contains(&token) && !String::from_utf8_lossy(&o.stderr).contains(&token), "the token was printed");
    use std::os::unix::fs::PermissionsExt;
    let key = creds.join("fresh/client.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // After: the new identity reads the cluster.
    let o = run(&["plan", f, "--cluster", &name]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The token was single use: a second login with it is refused by LXD.
    std::fs::remove_dir_all(&creds).unwrap();
    let o = run(&["login", f, "--cluster", &name, "--token", &token]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    // Clean up the trust entry.
    let certs = lab.query("node1", "/1.0/certificates?recursion=1");
    for c in certs.as_array().unwrap() {
        if c["name"] == token_name.as_str() {
            lab.lxc("node1", &["config", "trust", "remove", c["fingerprint"].as_str().unwrap()]);
        }
    }
}
