//! Fault injection against real LXD: what lxd-gitops does when the world misbehaves
//! around it. Each test breaks one thing on purpose and then asserts that nothing
//! the fleet declares was lost or duplicated, and each would fail if the safeguard
//! it covers were removed:
//!
//! - a member offline while planning: its instances are neither compared, changed
//!   nor pruned (LXD only has stubs for them), and the plan says it is incomplete;
//! - the LXD daemon lxd-gitops talks to restarted (clean SIGTERM stop, then start)
//!   while operations are in flight: the client moves on to the next member and the
//!   apply goes on; what failed is done by the next apply, every instance exactly
//!   once;
//! - a concurrent `lxc config set` between plan and apply: the stale update is a
//!   conflict and writes nothing; planning again shows the edit and applies from it;
//! - the repository comes back empty: the deletion guard refuses the plan, and an
//!   empty folder is no fleet at all.
//!
//! Elsewhere: a member's LXD killed mid-apply (`e2e_members`), SIGKILL of
//! lxd-gitops mid-apply and the git remote gone (`e2e_serve`), a saved plan refused
//! after live state moved (`e2e_reconcile`).
//!
//! Tests that stop daemons or prune get a private lab; the concurrent-edit test
//! only touches an instance of its own in the shared lab.

mod common;

use common::lab::{lab, output_text, Lab, PrivateLab};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Writes a fleet for `lab`: the cluster with `policy` lines, its members, the
/// `default` dir pool, and stopped empty containers `(name, member)`.
fn write_fleet(lab: &Lab, dir: &Path, policy: &str, instances: &[(String, &str)]) {
    let c = dir.join("clusters/lab");
    std::fs::create_dir_all(&c).unwrap();
    let endpoints: Vec<String> = lab.cluster.members.iter().map(|m| format!("\"{}\"", m.endpoint)).collect();
    std::fs::write(
        c.join("cluster.yaml"),
        format!(
            "kind: Cluster\nname: lab\nendpoints: [{}]\nfingerprint: \"{}\"\ncredentials: {}\npolicy:\n{policy}",
            endpoints.join(", "),
            lab.cluster.fingerprint,
            lab.cluster.credentials
        ),
    )
    .unwrap();
    let members: Vec<String> = lab
        .cluster
        .members
        .iter()
        .map(|m| format!("kind: Member\ncluster: lab\nname: {}\naddress: {}\ngroups: [default]\n", m.name, m.address))
        .collect();
    std::fs::write(c.join("members.yaml"), members.join("---\n")).unwrap();
    std::fs::write(c.join("storage.yaml"), "kind: StoragePool\ncluster: lab\nname: default\ndriver: dir\n").unwrap();
    write_instances(dir, instances);
}

fn write_instances(dir: &Path, instances: &[(String, &str)]) {
    let docs: Vec<String> = instances
        .iter()
        .map(|(n, m)| format!("kind: Instance\ncluster: lab\nname: {n}\ntarget: {m}\nstate: stopped\n"))
        .collect();
    std::fs::write(dir.join("clusters/lab/instances.yaml"), docs.join("---\n")).unwrap();
}

/// Every instance LXD lists, as (name, member), sorted; names are never repeated
/// across projects here, so a duplicate shows up twice.
fn listed(lab: &Lab) -> Vec<(String, String)> {
    let mut got: Vec<(String, String)> = lab
        .query("node1", "/1.0/instances?recursion=1&all-projects=true")
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_string(), i["location"].as_str().unwrap().to_string()))
        .collect();
    got.sort();
    got
}

fn sorted(v: &[(String, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = v.iter().map(|(n, m)| (n.clone(), m.to_string())).collect();
    v.sort();
    v
}

fn plan_json(lab: &Lab, fleet: &str) -> Value {
    let o = lab.gitops(&["plan", fleet, "--format", "json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("plan JSON: {e}\n{}", output_text(&o)))
}

/// (action, object) of every step.
fn steps(plan: &Value) -> Vec<(String, String)> {
    plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["steps"].as_array().unwrap().iter())
        .map(|s| (s["action"].as_str().unwrap().to_string(), s["object"].to_string()))
        .collect()
}

fn lab_cmd(lab: &Lab, args: &[&str]) {
    let o =
        Command::new(&lab.script).arg(args[0]).arg(&lab.dir).args(&args[1..]).stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "scripts/lab {args:?} failed: {}", output_text(&o));
}

/// Waits until node1 reports `member` with `status` (LXD's heartbeat decides).
fn wait_member_status(lab: &Lab, member: &str, status: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let members = lab.query("node1", "/1.0/cluster/members?recursion=1");
        let now = members
            .as_array()
            .and_then(|a| a.iter().find(|m| m["server_name"] == member))
            .and_then(|m| m["status"].as_str())
            .unwrap_or_default()
            .to_string();
        if now == status {
            return;
        }
        assert!(start.elapsed() < limit, "member {member} is still {now}, not {status}, after {limit:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn apply_ok(lab: &Lab, fleet: &str) -> String {
    let o = lab.gitops(&["apply", fleet, "--auto-approve"]);
    assert!(o.status.success(), "apply failed\n{}", output_text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_member_offline_during_plan_is_reported_and_nothing_is_deleted_from_missing_data() {
    let private = PrivateLab::up();
    let lab = &private.lab;
    // LXD declares a member offline after missing heartbeats; the lowest threshold
    // keeps the test short.
    lab.lxc_ok("node1", &["config", "set", "cluster.offline_threshold", "11"]);
    let work = tempfile::tempdir().unwrap();
    let fleet = work.path().join("fleet");
    let f = fleet.to_str().unwrap();
    let all: Vec<(String, &str)> =
        (0..6).map(|i| (format!("f{i}"), if i % 2 == 0 { "node2" } else { "node3" })).collect();
    write_fleet(lab, &fleet, "  prune: true\n", &all);
    apply_ok(lab, f);
    assert_eq!(listed(lab), sorted(&all));

    // f0 (on node2) and f1 (on node3) leave the fleet: with every member up, both
    // would be pruned.
    write_instances(&fleet, &all[2..]);
    let deletes = |p: &Value| steps(p).into_iter().filter(|(a, _)| a == "delete").count();
    assert_eq!(deletes(&plan_json(lab, f)), 2);

    lab_cmd(lab, &["stop", "node2"]);
    wait_member_status(lab, "node2", "Offline", Duration::from_secs(90));
    let plan = plan_json(lab, f);
    assert_eq!(steps(&plan), Vec::<(String, String)>::new(), "{plan:#}");
    assert!(plan["incomplete"].to_string().contains("node2"), "{plan:#}");
    let o = lab.gitops(&["plan", f]);
    let text = output_text(&o);
    assert!(text.contains("could not be read completely (member `node2` is offline)"), "{text}");
    assert!(text.contains("3 instance(s) on it cannot be read"), "{text}");
    assert!(text.contains("none of them is pruned"), "{text}");
    let o = lab.gitops(&["apply", f, "--auto-approve", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "an incomplete read is not a match\n{}", output_text(&o));
    assert!(!output_text(&o).contains("matches the fleet"), "{}", output_text(&o));
    assert_eq!(listed(lab), sorted(&all), "an apply with node2 offline lost or added instances");

    // Back online, the same fleet prunes exactly the two it no longer declares.
    lab_cmd(lab, &["start", "node2"]);
    wait_member_status(lab, "node2", "Online", Duration::from_secs(60));
    let out = apply_ok(lab, f);
    assert!(out.contains("matches the fleet"), "{out}");
    assert_eq!(listed(lab), sorted(&all[2..]));
}

#[test]
fn lxd_restarted_mid_operation_then_the_next_apply_converges_with_nothing_lost() {
    let private = PrivateLab::up();
    let lab = &private.lab;
    let work = tempfile::tempdir().unwrap();
    let fleet = work.path().join("fleet");
    let f = fleet.to_str().unwrap().to_string();
    let all: Vec<(String, &str)> =
        (0..24).map(|i| (format!("r{i}"), if i % 2 == 0 { "node2" } else { "node3" })).collect();
    write_fleet(lab, &fleet, "  prune: false\n", &all);

    // lxd-gitops talks to node1 (the first endpoint). Restart that daemon cleanly
    // while instance creations are in flight. The instances live on the other
    // members: when the member that is creating an instance shuts down, LXD 5.0.2
    // itself can keep the half-made instance's volume row (`UNIQUE constraint
    // failed: storage_volumes` on every later create), which no API client can
    // repair.
    let apply = Command::new(env!("CARGO_BIN_EXE_lxd-gitops"))
        .args(["apply", &f, "--auto-approve"])
        .env("LXD_GITOPS_CREDENTIALS_DIR", lab.credentials_dir())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while listed(lab).is_empty() {
        assert!(start.elapsed().as_secs() < 60, "the apply never created anything");
        std::thread::sleep(Duration::from_millis(50));
    }
    lab_cmd(lab, &["restart", "node1", "--graceful"]);
    let first = apply.wait_with_output().unwrap();
    // The restart cut into the apply, and the client moved on to another member.
    let text = output_text(&first);
    assert!(text.contains("continuing on the next cluster member"), "no failover:\n{text}");

    let start = Instant::now();
    loop {
        let o = lab.gitops(&["apply", &f, "--auto-approve"]);
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("matches the fleet") {
            break;
        }
        assert!(start.elapsed().as_secs() < 120, "no convergence after the restart\n{}", output_text(&o));
        std::thread::sleep(Duration::from_secs(3));
    }
    assert_eq!(listed(lab), sorted(&all), "instances lost, duplicated or misplaced");
}

#[test]
fn a_concurrent_edit_between_plan_and_apply_is_never_overwritten() {
    use lxd_gitops::reconcile;
    let lab = lab();
    // The library reads credentials from here, like the binary.
    std::env::set_var("LXD_GITOPS_CREDENTIALS_DIR", lab.credentials_dir());
    let name = lab.unique("cx");
    let work = tempfile::tempdir().unwrap();
    let fleet = work.path().join("fleet");
    let f = fleet.to_str().unwrap().to_string();
    write_fleet(lab, &fleet, "  prune: false\n", &[]);
    let instance = |cpu: &str| {
        format!("kind: Instance\ncluster: lab\nname: {name}\ntarget: node1\nstate: stopped\nconfig:\n  limits.cpu: \"{cpu}\"\n")
    };
    std::fs::write(fleet.join("clusters/lab/instances.yaml"), instance("1")).unwrap();
    apply_ok(lab, &f);
    let config = |key: &str| lab.lxc_ok("node1", &["config", "get", &name, key]).trim().to_string();
    assert_eq!(config("limits.cpu"), "1");

    // Plan limits.cpu 1 → 2; then someone edits the instance by hand.
    std::fs::write(fleet.join("clusters/lab/instances.yaml"), instance("2")).unwrap();
    let loaded = lxd_gitops::fleet::load_and_validate(&fleet).unwrap_or_else(|d| panic!("{d:?}"));
    let desired = &loaded.desired.clusters["lab"];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = rt.block_on(reconcile::open(desired, None)).unwrap();
    let plan = reconcile::plan(desired, &session);
    let update = plan.steps().find(|s| s.object.name == name).expect("an update step");
    assert_eq!(update.changes.len(), 1, "{:?}", update.changes);
    lab.lxc_ok("node1", &["config", "set", &name, "user.note=set by hand"]);

    // The stale plan: the update is a conflict and writes nothing.
    let report = rt.block_on(reconcile::apply(&session, &plan, desired, &fleet, |_| {}));
    let step = report.steps.iter().find(|s| s.object.ends_with(&format!("/{name}"))).unwrap();
    assert!(step.conflict, "{report:?}");
    assert!(step.failure().unwrap().contains("config.user.note"), "{report:?}");
    assert_eq!(config("user.note"), "set by hand", "the concurrent edit was overwritten");
    assert_eq!(config("limits.cpu"), "1");

    // Planning again from what is live shows the edit; approving applies it.
    let mut seen = Vec::new();
    let done = rt.block_on(reconcile::apply_replanning(
        desired,
        None,
        (rt.block_on(reconcile::open(desired, None)).unwrap(), plan.clone()),
        &fleet,
        |p| {
            seen.extend(p.steps().flat_map(|s| s.changes.iter().map(|c| c.path.clone())));
            true
        },
        |_| {},
    ));
    assert_eq!(done.rounds.len(), 2);
    assert!(done.rounds[0].report.conflicts().count() == 1);
    assert!(done.succeeded(), "{:?}", done.unresolved);
    seen.sort();
    assert_eq!(seen, ["config.limits.cpu", "config.user.note"]);
    assert_eq!(config("limits.cpu"), "2");
    assert_eq!(config("user.note"), "");
    let o = lab.gitops(&["plan", &f, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    lab.lxc_ok("node1", &["delete", &name]);
}

#[test]
fn a_repository_that_comes_back_empty_deletes_nothing() {
    let private = PrivateLab::up();
    let lab = &private.lab;
    let work = tempfile::tempdir().unwrap();
    let fleet = work.path().join("fleet");
    let f = fleet.to_str().unwrap();
    let all: Vec<(String, &str)> = (0..12).map(|i| (format!("e{i}"), ["node1", "node2", "node3"][i % 3])).collect();
    write_fleet(lab, &fleet, "  prune: true\n  max_deletions: 10\n", &all);
    std::fs::write(fleet.join("clusters/lab/profiles.yaml"), "kind: Profile\ncluster: lab\nname: web\n").unwrap();
    apply_ok(lab, f);
    assert_eq!(listed(lab), sorted(&all));

    // Everything but the cluster and its members is gone from the repository.
    std::fs::remove_file(fleet.join("clusters/lab/instances.yaml")).unwrap();
    std::fs::remove_file(fleet.join("clusters/lab/profiles.yaml")).unwrap();
    let plan = plan_json(lab, f);
    assert_eq!(
        plan["blocked"].as_str(),
        Some("refusing: this plan deletes 13 objects, more than policy.max_deletions = 10"),
        "{plan:#}"
    );
    let o = lab.gitops(&["apply", f, "--auto-approve"]);
    assert!(!o.status.success(), "a refused plan must fail the apply\n{}", output_text(&o));
    assert!(output_text(&o).contains("nothing applied"), "{}", output_text(&o));
    assert_eq!(listed(lab), sorted(&all), "instances were deleted");
    assert!(lab.lxc_ok("node1", &["profile", "list", "--format", "csv"]).contains("web"));

    // A folder with no fleet at all is an error, never "delete everything".
    let empty = work.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = lab.gitops(&["apply", empty.to_str().unwrap(), "--auto-approve", "--cluster", "lab"]);
    assert!(!o.status.success(), "{}", output_text(&o));
    assert_eq!(listed(lab), sorted(&all), "instances were deleted");
}
