//! The real-LXD lab is up and usable: three Online members serving the pinned cluster
//! certificate, a trusted client certificate, the busybox image on the image server,
//! and a container pulled from the image server runs on a chosen member.
mod common;

use common::lab::{lab, Lab};
use serde_json::{json, Value};

#[test]
fn cluster_has_three_online_members() {
    let lab = lab();
    let members = lab.query("node1", "/1.0/cluster/members?recursion=1");
    let members = members.as_array().expect("member list");
    for name in ["node1", "node2", "node3"] {
        let m = members
            .iter()
            .find(|m| m["server_name"] == name)
            .unwrap_or_else(|| panic!("{name} is not a cluster member: {members:#?}"));
        assert_eq!(m["status"], "Online", "{name}: {m:#}");
        assert_eq!(m["url"], lab.member(name).endpoint.as_str(), "{name}: {m:#}");
    }
}

#[test]
fn members_serve_the_pinned_cluster_certificate() {
    let lab = lab();
    assert_eq!(lab.cluster.fingerprint.len(), 64);
    for name in lab.member_names() {
        let info = lab.query(name, "/1.0");
        assert_eq!(
            info["environment"]["certificate_fingerprint"],
            lab.cluster.fingerprint.as_str(),
            "{name} reports another certificate"
        );
    }
}

#[test]
fn client_certificate_is_trusted_and_laid_out_for_the_product() {
    let lab = lab();
    for daemon in ["node1", "images"] {
        let certs = lab.query(daemon, "/1.0/certificates?recursion=1");
        assert!(
            certs
                .as_array()
                .expect("certificate list")
                .iter()
                .any(|c| c["fingerprint"] == lab.client.fingerprint.as_str() && c["type"] == "client"),
            "{daemon} does not trust the lab client certificate: {certs:#}"
        );
    }
    let creds = lab.credentials_dir().join(&lab.cluster.credentials);
    for f in ["client.crt", "client.key"] {
        assert!(creds.join(f).is_file(), "{} missing", creds.join(f).display());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&lab.client.key).expect("client key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "client key mode");
}

#[test]
fn image_server_holds_the_public_busybox_image() {
    let lab = lab();
    for alias in ["busybox", "busybox%2F1.35"] {
        let a = lab.query("images", &format!("/1.0/images/aliases/{alias}"));
        assert_eq!(a["target"], lab.image.fingerprint.as_str(), "alias {alias}");
    }
    let image = lab.query("images", &format!("/1.0/images/{}", lab.image.fingerprint));
    assert_eq!(image["public"], true);
    assert_eq!(image["properties"]["os"], "busybox");
    assert_eq!(image["properties"]["release"], "1.35");
    let size = std::fs::metadata(&lab.image.tarball).expect("image tarball").len();
    assert_eq!(size, lab.image.size);
    assert_eq!(image["size"], json!(size));
}

/// Deletes the instance even when the test fails.
struct Instance<'a> {
    lab: &'a Lab,
    name: String,
}

impl Drop for Instance<'_> {
    fn drop(&mut self) {
        let _ = self.lab.lxc("node1", &["delete", "--force", &self.name]);
    }
}

#[test]
fn container_pulled_from_the_image_server_runs_on_node2() {
    let lab = lab();
    let inst = Instance { lab, name: lab.unique("smoke") };
    let body = json!({"name": inst.name, "type": "container", "source": lab.image_source()});
    let op = lab.lxc_json(
        "node1",
        &["query", "-X", "POST", "--wait", "/1.0/instances?target=node2", "--data", &body.to_string()],
    );
    assert_eq!(op["status"], "Success", "create: {op:#}");
    lab.lxc_ok("node1", &["start", &inst.name]);

    // Seen from another member: running on node2, made from the busybox image.
    let got: Value = lab.query("node3", &format!("/1.0/instances/{}", inst.name));
    assert_eq!(got["status"], "Running", "{got:#}");
    assert_eq!(got["location"], "node2", "{got:#}");
    assert_eq!(got["config"]["image.os"], "busybox", "{got:#}");
    assert_eq!(got["config"]["volatile.base_image"], lab.image.fingerprint.as_str(), "{got:#}");

    let out = lab.lxc_ok("node1", &["exec", &inst.name, "--", "busybox", "echo", "hello from the lab"]);
    assert_eq!(out.trim(), "hello from the lab");
}
