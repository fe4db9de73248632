//! End to end for snap settings, through the `lxd-gitops` binary against a private
//! real-LXD lab. LXD is real; snapd is the stand-in (`lxd-gitops-snapd-standin`, one
//! per member, reached through the runtime config's `clusters.lab.snapd`), since
//! snapd cannot run here.
//!
//! One fleet (Cluster with snap defaults, three Members, a Snap document per member)
//! goes through, in order: key drift with reload/reboot flags and the pending list;
//! a channel roll to 5.21; a refused downgrade; a roll that stops at the member
//! whose snapd fails, and resumes once it no longer does.

mod common;

use common::lab::{output_text, Lab, PrivateLab};
use lxd_gitops::snap::client::{conf_value_text, SnapdClient};
use lxd_gitops::snap::Transport;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Channels the stand-ins' pretend store offers besides the installed 5.0/stable.
const STORE: &[&str] = &["5.21/stable=29619:5.21.1", "6/stable=33110:6.1"];

/// Stand-in snapd servers, one per member, killed (by their own handles) on drop.
struct Standins {
    dir: PathBuf,
    children: BTreeMap<String, Child>,
}

impl Standins {
    fn socket(&self, member: &str) -> PathBuf {
        self.dir.join(format!("snapd-{member}.socket"))
    }

    /// Starts `member`'s stand-in with `extra` arguments (after the store and speed).
    fn start(&mut self, member: &str, extra: &[String]) {
        let sock = self.socket(member);
        let _ = std::fs::remove_file(&sock);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lxd-gitops-snapd-standin"));
        cmd.arg("--socket").arg(&sock).args(["--step-delay-ms", "50"]);
        for s in STORE {
            cmd.args(["--store", s]);
        }
        let child = cmd.args(extra).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.children.insert(member.to_string(), child);
        for _ in 0..200 {
            if sock.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("stand-in snapd for {member} did not create {}", sock.display());
    }

    /// What `member`'s stand-in reports (config: the keys the fleet names).
    fn state(&self, member: &str) -> SnapState {
        snap_state(&self.socket(member), &["lxcfs.loadavg", "daemon.debug"])
    }

    fn stop(&mut self, member: &str) {
        if let Some(mut c) = self.children.remove(member) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Standins {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a stand-in reports, read through snapd's REST API with the product's client.
#[derive(Debug)]
struct SnapState {
    tracking: String,
    revision: String,
    version: String,
    conf: BTreeMap<String, String>,
}

fn snap_state(socket: &Path, keys: &[&str]) -> SnapState {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = SnapdClient::connect("probe", &Transport::Local { socket: socket.to_path_buf() }).await.unwrap();
        let info = client.snap_info("lxd").await.unwrap();
        let mut conf = BTreeMap::new();
        for k in keys {
            // One key at a time: an unset key is an error (option-not-found), not absent.
            if let Ok(v) = client.get_conf("lxd", &[k]).await {
                if let Some(v) = v.get(*k) {
                    conf.insert(k.to_string(), conf_value_text(v));
                }
            }
        }
        client.close().await;
        SnapState {
            tracking: info.tracking_channel.unwrap_or_default(),
            revision: info.revision,
            version: info.version,
            conf,
        }
    })
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The minimal fleet: the Cluster (snap defaults: `channel`), three Members, and a
/// Snap document per member (node1 a reboot key, node2 a reload key, node3 none).
fn snap_fleet(lab: &Lab, fleet: &Path, channel: &str) {
    let endpoints: Vec<String> = lab.cluster.members.iter().map(|m| format!("\"{}\"", m.endpoint)).collect();
    write(
        &fleet.join("clusters/lab/cluster.yaml"),
        &format!(
            "kind: Cluster\nname: lab\nendpoints: [{}]\nfingerprint: \"{}\"\ncredentials: lab\nsnap:\n  channel: {channel}\n",
            endpoints.join(", "),
            lab.cluster.fingerprint
        ),
    );
    for m in lab.member_names() {
        let addr = &lab.member(m).address;
        write(
            &fleet.join(format!("clusters/lab/members/{m}.yaml")),
            &format!("kind: Member\ncluster: lab\nname: {m}\naddress: {addr}\n"),
        );
        let config = match m {
            "node1" => "config:\n  lxcfs.loadavg: \"true\"\n",
            "node2" => "config:\n  daemon.debug: \"true\"\n",
            _ => "",
        };
        write(
            &fleet.join(format!("clusters/lab/snap/{m}.yaml")),
            &format!("kind: Snap\ncluster: lab\nmember: {m}\n{config}"),
        );
    }
}

fn plan_json(lab: &Lab, fleet: &Path, config: &Path) -> Value {
    let f = fleet.to_str().unwrap();
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--format", "json", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "plan failed\n{}", output_text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("plan JSON: {e}\n{}", output_text(&o)))
}

fn all_steps(plan: &Value) -> Vec<&Value> {
    plan["phases"].as_array().unwrap().iter().flat_map(|p| p["steps"].as_array().unwrap().iter()).collect()
}

fn ids(plan: &Value) -> Vec<String> {
    all_steps(plan).iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn step<'a>(plan: &'a Value, id: &str) -> &'a Value {
    all_steps(plan).into_iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step {id} in {:?}", ids(plan)))
}

fn flags(step: &Value) -> Vec<String> {
    step["flags"]
        .as_array()
        .map(|a| a.iter().map(|f| f["flag"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn snap_id(member: &str) -> String {
    format!("snap/update/Snap/{member}")
}

fn set_channel(fleet: &Path, channel: &str) {
    let f = fleet.join("clusters/lab/cluster.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    let out: Vec<String> = text
        .lines()
        .map(|l| if l.trim_start().starts_with("channel:") { format!("  channel: {channel}") } else { l.to_string() })
        .collect();
    std::fs::write(&f, out.join("\n") + "\n").unwrap();
}

#[test]
fn snap_settings_roll_member_by_member() {
    let private = PrivateLab::up();
    let lab = &private.lab;
    let work = tempfile::tempdir().unwrap();
    let fleet = work.path().join("fleet");
    snap_fleet(lab, &fleet, "5.0/stable");
    let f = fleet.to_str().unwrap();
    let members = lab.member_names();
    assert_eq!(members, ["node1", "node2", "node3"]);

    let mut standins = Standins { dir: work.path().to_path_buf(), children: BTreeMap::new() };
    let mut config = format!("state_dir: {}\nclusters:\n  lab:\n    snapd:\n", work.path().join("state").display());
    for m in &members {
        standins.start(m, &["--channel".into(), "5.0/stable".into()]);
        config.push_str(&format!("      {m}: {{socket: {}}}\n", standins.socket(m).display()));
    }
    let cfg = work.path().join("config.yaml");
    std::fs::write(&cfg, config).unwrap();
    let c = cfg.to_str().unwrap();

    // 1. Key drift: one step per member that differs, each after the previous one,
    //    flagged with what it takes to take effect.
    let plan = plan_json(lab, &fleet, &cfg);
    assert_eq!(ids(&plan), vec![snap_id("node1"), snap_id("node2")], "{plan:#}");
    let s1 = step(&plan, &snap_id("node1"));
    assert_eq!(s1["changes"][0]["path"], "config.lxcfs.loadavg", "{s1:#}");
    assert_eq!(s1["changes"][0]["after"], "true", "{s1:#}");
    assert_eq!(flags(s1), ["reboot_needed"], "{s1:#}");
    let s2 = step(&plan, &snap_id("node2"));
    assert_eq!(s2["changes"][0]["path"], "config.daemon.debug", "{s2:#}");
    assert_eq!(flags(s2), ["reload_needed"], "{s2:#}");
    assert!(
        s2["depends_on"].as_array().unwrap().iter().any(|d| d == &snap_id("node1")),
        "node2 waits for node1: {s2:#}"
    );

    let o = lab.gitops(&["apply", f, "--cluster", "lab", "--config", c, "--auto-approve"]);
    assert!(o.status.success(), "apply failed\n{}", output_text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Cluster lab matches the fleet."), "{}", output_text(&o));
    assert_eq!(standins.state("node1").conf, BTreeMap::from([("lxcfs.loadavg".into(), "true".into())]));
    assert_eq!(standins.state("node2").conf, BTreeMap::from([("daemon.debug".into(), "true".into())]));
    assert_eq!(standins.state("node3").conf, BTreeMap::new());

    let o = lab.gitops(&["pending", "--cluster", "lab", "--config", c, "--format", "json"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let pending: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("pending JSON: {e}\n{}", output_text(&o)));
    assert_eq!(
        pending,
        serde_json::json!({
            "node1": [{"key": "lxcfs.loadavg", "value": "true", "needs": "reboot"}],
            "node2": [{"key": "daemon.debug", "value": "true", "needs": "reload"}],
        }),
        "{}",
        output_text(&o)
    );
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--config", c, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "second plan is not empty\n{}", output_text(&o));

    // 2. A channel change rolls member by member: one step per member, in a chain.
    set_channel(&fleet, "5.21/stable");
    let plan = plan_json(lab, &fleet, &cfg);
    assert_eq!(ids(&plan), members.iter().map(|m| snap_id(m)).collect::<Vec<_>>(), "{plan:#}");
    for (i, m) in members.iter().enumerate() {
        let s = step(&plan, &snap_id(m));
        assert_eq!(s["changes"][0]["path"], "channel", "{s:#}");
        assert_eq!(s["changes"][0]["before"], "5.0/stable", "{s:#}");
        assert_eq!(s["changes"][0]["after"], "5.21/stable", "{s:#}");
        assert!(flags(s).is_empty(), "{s:#}");
        if i > 0 {
            let prev = snap_id(members[i - 1]);
            assert!(s["depends_on"].as_array().unwrap().iter().any(|d| d == &prev), "{m} waits for {prev}: {s:#}");
        }
    }
    let o = lab.gitops(&["apply", f, "--cluster", "lab", "--config", c, "--auto-approve"]);
    assert!(o.status.success(), "apply failed\n{}", output_text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let at = |m: &str| {
        out.find(&format!("ok      update Snap/{m}")).unwrap_or_else(|| panic!("{m} not ok\n{}", output_text(&o)))
    };
    assert!(at("node1") < at("node2") && at("node2") < at("node3"), "not member by member\n{}", output_text(&o));
    for m in &members {
        let s = standins.state(m);
        assert_eq!(
            (s.tracking.as_str(), s.revision.as_str(), s.version.as_str()),
            ("5.21/stable", "29619", "5.21.1"),
            "{m}"
        );
    }
    assert_eq!(standins.state("node2").conf["daemon.debug"], "true", "a refresh keeps the snap's config");
    // The refresh restarted node2's daemon (new revision): daemon.debug is in effect;
    // node1's lxcfs.loadavg still waits for a reboot.
    let o = lab.gitops(&["pending", "--cluster", "lab", "--config", c, "--format", "json"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let pending: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("pending JSON: {e}\n{}", output_text(&o)));
    assert_eq!(
        pending,
        serde_json::json!({"node1": [{"key": "lxcfs.loadavg", "value": "true", "needs": "reboot"}]}),
        "{}",
        output_text(&o)
    );
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--config", c, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "plan after the roll is not empty\n{}", output_text(&o));

    // 3. A downgrade is refused: every member's step is Blocked and nothing changes.
    set_channel(&fleet, "5.0/stable");
    let plan = plan_json(lab, &fleet, &cfg);
    assert_eq!(ids(&plan), members.iter().map(|m| snap_id(m)).collect::<Vec<_>>(), "{plan:#}");
    for m in &members {
        let s = step(&plan, &snap_id(m));
        assert_eq!(flags(s), ["blocked"], "{s:#}");
        let reason = s["flags"][0]["reason"].as_str().unwrap();
        assert!(reason.contains("downgrade") && reason.contains("5.21") && reason.contains("5.0"), "{reason}");
    }
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--config", c]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("blocked"), "{}", output_text(&o));
    let o = lab.gitops(&["apply", f, "--cluster", "lab", "--config", c, "--auto-approve", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "a refused step leaves the cluster differing\n{}", output_text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    for m in &members {
        assert!(out.contains(&format!("skipped update Snap/{m}")), "{m} not skipped\n{}", output_text(&o));
        assert!(!out.contains(&format!("ok      update Snap/{m}")), "{m} applied\n{}", output_text(&o));
        assert_eq!(standins.state(m).tracking, "5.21/stable", "{m} moved\n{}", output_text(&o));
    }
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Cluster lab still differs from the fleet in 3 step(s)"),
        "the refused downgrade is reported as not done\n{}",
        output_text(&o)
    );

    // 4. A member that fails stops the roll. node2's snapd is restarted as it was
    //    (5.21, daemon.debug=true), set to fail its next change.
    standins.stop("node2");
    standins.start(
        "node2",
        &[
            "--channel".into(),
            "5.21/stable".into(),
            "--revision".into(),
            "29619".into(),
            "--snap-version".into(),
            "5.21.1".into(),
            "--conf".into(),
            "daemon.debug=true".into(),
            "--fail-next-change".into(),
            "download of lxd rev 33110 failed: stand-in says no".into(),
        ],
    );
    set_channel(&fleet, "6/stable");
    let plan = plan_json(lab, &fleet, &cfg);
    assert_eq!(ids(&plan), members.iter().map(|m| snap_id(m)).collect::<Vec<_>>(), "only the channel moved: {plan:#}");
    let o = lab.gitops(&["apply", f, "--cluster", "lab", "--config", c, "--auto-approve"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("ok      update Snap/node1"), "{}", output_text(&o));
    let failed = out
        .lines()
        .find(|l| l.starts_with("FAILED  update Snap/node2"))
        .unwrap_or_else(|| panic!("{}", output_text(&o)));
    assert!(failed.contains("stand-in says no"), "the snapd error is shown: {failed}");
    assert!(failed.contains("ended Error"), "{failed}");
    assert_eq!(failed.matches("update Snap/node2").count(), 1, "the step is named once: {failed}");
    assert!(out.contains("skipped update Snap/node3"), "{}", output_text(&o));
    assert!(out.contains("Apply to cluster lab: 1 ok, 1 failed, 1 skipped"), "{}", output_text(&o));
    assert_eq!(standins.state("node1").tracking, "6/stable");
    assert_eq!(standins.state("node2").tracking, "5.21/stable");
    assert_eq!(standins.state("node3").tracking, "5.21/stable", "node3 was refreshed after node2 failed");

    // The failure was one-off: the next apply resumes the roll where it stopped.
    let o = lab.gitops(&["apply", f, "--cluster", "lab", "--config", c, "--auto-approve"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("update Snap/node1"), "node1 is done\n{}", output_text(&o));
    for m in &members {
        let s = standins.state(m);
        assert_eq!((s.tracking.as_str(), s.version.as_str()), ("6/stable", "6.1"), "{m}");
    }
    let o = lab.gitops(&["plan", f, "--cluster", "lab", "--config", c, "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    drop(standins);
}
