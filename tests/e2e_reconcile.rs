//! End to end against real LXD, through the `lxd-gitops` binary: the example fleet
//! converges from empty into a private 3-member lab, the next plan is empty, hand
//! drift is shown exactly and corrected, snapshots match what `lxc` reports, and
//! saved plans are refused once the world moved.
//!
//! The example fleet sets cluster-wide server config and prunes, so it gets a lab
//! of its own (a second `scripts/lab up` in a free slot), torn down at the end.

mod common;

use common::lab::{output_text, Lab, PrivateLab};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Stand-in snapd servers (snapd cannot run here), killed on drop.
struct Standins(Vec<Child>);

impl Drop for Standins {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Copies the example fleet and points it at `lab` (endpoints, pin, image server).
fn example_fleet(lab: &Lab, into: &Path) {
    copy_dir(&root().join("examples/fleet-repo"), into);
    let cluster = into.join("clusters/lab/cluster.yaml");
    let endpoints: Vec<String> = lab.cluster.members.iter().map(|m| format!("\"{}\"", m.endpoint)).collect();
    rewrite(&cluster, |l| {
        if l.starts_with("endpoints:") {
            Some(format!("endpoints: [{}]", endpoints.join(", ")))
        } else if l.starts_with("fingerprint:") {
            Some(format!("fingerprint: \"{}\"", lab.cluster.fingerprint))
        } else {
            None
        }
    });
    let cert = lab.image_server.certificate_pem.trim().replace('\n', "\n      ");
    for f in walk(&into.join("clusters")) {
        if f.file_name().unwrap() == "images.yaml" {
            rewrite(&f, |l| {
                let t = l.trim_start();
                t.starts_with("server:").then(|| {
                    let indent = &l[..l.len() - t.len()];
                    format!("{indent}server: \"{}\"\n{indent}certificate: |\n      {cert}", lab.image_server.endpoint)
                })
            });
        }
        if f.parent().unwrap().ends_with("members") {
            let text = std::fs::read_to_string(&f).unwrap();
            let name = text.lines().find_map(|l| l.strip_prefix("name:")).unwrap().trim().to_string();
            let addr = lab.member(&name).address.clone();
            rewrite(&f, |l| l.starts_with("address:").then(|| format!("address: {addr}")));
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn rewrite(file: &Path, f: impl Fn(&str) -> Option<String>) {
    let text = std::fs::read_to_string(file).unwrap();
    let out: Vec<String> = text.lines().map(|l| f(l).unwrap_or_else(|| l.to_string())).collect();
    std::fs::write(file, out.join("\n") + "\n").unwrap();
}

fn plan_json(lab: &Lab, fleet: &Path, config: &Path) -> Value {
    let f = fleet.to_str().unwrap();
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--format", "json", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "plan failed\n{}", output_text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("plan JSON: {e}\n{}", output_text(&o)))
}

fn steps(plan: &Value) -> Vec<(String, String)> {
    plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["steps"].as_array().unwrap().iter())
        .map(|s| (s["action"].as_str().unwrap().to_string(), s["id"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn the_example_fleet_converges_and_drift_is_corrected() {
    let private = PrivateLab::up();
    let lab = &private.lab;
    let work = tempfile::tempdir().unwrap();
    let fleet = work.path().join("fleet");
    example_fleet(lab, &fleet);
    let f = fleet.to_str().unwrap();

    // Stand-in snapd per member, and a runtime config naming them.
    let mut standins = Standins(Vec::new());
    let mut config = format!("state_dir: {}\nclusters:\n  lab:\n    snapd:\n", work.path().join("state").display());
    for m in lab.member_names() {
        let sock = work.path().join(format!("snapd-{m}.socket"));
        standins.0.push(
            Command::new(env!("CARGO_BIN_EXE_lxd-gitops-snapd-standin"))
                .arg("--socket")
                .arg(&sock)
                .args(["--channel", "5.0/stable"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        config.push_str(&format!("      {m}: {{socket: {}}}\n", sock.display()));
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let cfg = work.path().join("config.yaml");
    std::fs::write(&cfg, config).unwrap();
    let c = cfg.to_str().unwrap();

    // 1. From empty: the plan has changes (exit 2), apply converges, the next plan is empty (exit 0).
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--config", c, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    let o = lab.gitops(&["apply", f, "--cluster", "lab", "--config", c, "--auto-approve"]);
    assert!(o.status.success(), "apply failed\n{}", output_text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Cluster lab matches the fleet."), "{}", output_text(&o));
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--config", c, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "second plan is not empty\n{}", output_text(&o));

    // What LXD reports agrees: 10 instances where the fleet put them, running or stopped.
    let list = lab.lxc_json("node1", &["list", "--all-projects"]);
    let by_name: std::collections::BTreeMap<String, &Value> =
        list.as_array().unwrap().iter().map(|i| (i["name"].as_str().unwrap().to_string(), i)).collect();
    assert_eq!(by_name.len(), 10, "{:?}", by_name.keys());
    assert_eq!(by_name["web-1"]["location"], "node1");
    assert_eq!(by_name["util-1"]["status"], "Stopped");
    assert_eq!(by_name["db-1"]["status"], "Running");
    assert_eq!(by_name["web-1"]["config"]["user.lxd-gitops.owner"], "lab");

    // The snapshot says the same as lxc.
    let snap = work.path().join("snap.json");
    let o = lab.gitops(&["snapshot", f, "--cluster", "lab", "--config", c, "-o", snap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", output_text(&o));
    let live: Value = serde_json::from_str(&std::fs::read_to_string(&snap).unwrap()).unwrap();
    for (name, i) in &by_name {
        let key = format!("{}/{name}", i["project"].as_str().unwrap());
        let s = &live["objects"]["instances"][&key];
        assert_eq!(s["location"], i["location"], "{key}");
        assert_eq!(s["status"], i["status"], "{key}");
    }
    // Offline plan from the snapshot: nothing to do either.
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--state", snap.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));

    // 2. Drift by hand shows up as exactly that change ...
    lab.lxc_ok("node1", &["config", "set", "web-1", "user.note=by-hand", "--project", "web"]);
    let plan = plan_json(lab, &fleet, &cfg);
    assert_eq!(steps(&plan), vec![("update".to_string(), "instances/update/Instance/web/web-1".to_string())]);
    let change = &plan["phases"][0]["steps"][0]["changes"][0];
    assert_eq!(change["path"], "config.user.note");
    assert_eq!(change["before"], "by-hand");
    assert_eq!(change["after"], Value::Null);

    // ... and more of it: a profile edit, a stopped instance, an extra owned instance.
    lab.lxc_ok("node1", &["profile", "set", "web", "limits.memory", "64MiB", "--project", "web"]);
    lab.lxc_ok("node1", &["stop", "db-1", "--project", "data", "--force"]);
    lab.lxc_ok("node1", &["init", "--empty", "stray-1", "--project", "web", "-c", "user.lxd-gitops.owner=lab"]);
    let plan = plan_json(lab, &fleet, &cfg);
    let got: Vec<String> = steps(&plan).into_iter().map(|(_, id)| id).collect();
    for want in [
        "instances/update/Instance/web/web-1",
        "profiles/update/Profile/web/web",
        "instances/start/Instance/data/db-1",
        "prune/delete/Instance/web/stray-1",
    ] {
        assert!(got.iter().any(|g| g == want), "missing {want} in {got:?}");
    }
    let o = lab.gitops(&["apply", f, "--cluster", "lab", "--config", c, "--auto-approve"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--config", c, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "drift not corrected\n{}", output_text(&o));
    assert_eq!(lab.query("node1", "/1.0/instances/db-1?project=data")["status"], "Running");
    assert!(!lab.lxc("node1", &["info", "stray-1", "--project", "web"]).status.success(), "stray-1 still exists");

    // 3. A saved plan is refused once live state moved after it was made.
    lab.lxc_ok("node1", &["config", "set", "web-2", "user.note=one", "--project", "web"]);
    let saved = work.path().join("plan.json");
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--config", c, "--out", saved.to_str().unwrap()]);
    assert!(o.status.success(), "{}", output_text(&o));
    lab.lxc_ok("node1", &["config", "set", "web-2", "user.note=two", "--project", "web"]);
    let o = lab.gitops(&["apply", f, "--config", c, "--auto-approve", "--plan", saved.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("changed since the plan was made"), "{}", output_text(&o));
    assert_eq!(lab.query("node1", "/1.0/instances/web-2?project=web")["config"]["user.note"], "two", "nothing applied");
    // A fresh saved plan applies.
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--config", c, "--out", saved.to_str().unwrap()]);
    assert!(o.status.success(), "{}", output_text(&o));
    let o = lab.gitops(&["apply", f, "--config", c, "--auto-approve", "--plan", saved.to_str().unwrap()]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(lab.query("node1", "/1.0/instances/web-2?project=web")["config"].get("user.note").is_none());

    // 4. Import writes a fleet that validates and plans to zero changes (adoption).
    let imported = work.path().join("imported");
    let o = lab.gitops(&["import", f, "--cluster", "lab", "--config", c, "-o", imported.to_str().unwrap()]);
    assert!(o.status.success(), "{}", output_text(&o));
    let i = imported.to_str().unwrap();
    let o = lab.gitops(&["validate", i]);
    assert!(o.status.success(), "the imported fleet does not validate\n{}", output_text(&o));
    let o = lab.gitops(&["plan", i, "--cluster", "lab", "--config", c, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "the imported fleet does not plan to zero changes\n{}", output_text(&o));
    let web1 = std::fs::read_to_string(imported.join("clusters/lab/projects/web/instances/web-1.yaml")).unwrap();
    assert!(web1.contains("target: \"node1\"") && !web1.contains("volatile."), "{web1}");

    // 5. An invalid revision changes nothing: validation errors, exit 1, no plan.
    std::fs::write(fleet.join("clusters/lab/broken.yaml"), "kind: Instance\ncluster: lab\nname: [oops\n").unwrap();
    let o = lab.gitops(&["apply", f, "--cluster", "lab", "--config", c, "--auto-approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("clusters/lab/broken.yaml:") && err.contains("YAML syntax error"), "{}", output_text(&o));
    assert!(!err.contains("Apply to cluster"), "nothing may be applied from an invalid revision\n{}", output_text(&o));
    drop(standins);
}
