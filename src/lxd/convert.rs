//! LXD's JSON objects to the shared vocabulary (and back, for writes).
//!
//! Owns: turning what `GET ...?recursion=1` returns into model types, dropping what
//! LXD adds by itself (`volatile.*`, `image.*`, read-only fields) so that live and
//! desired compare like with like. Must not: do IO or decide anything.

use crate::model::names::{is_lxd_managed_instance_key, is_member_local_server_key};
use crate::model::*;
use serde_json::Value;

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn b(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// A config map; LXD only ever returns strings, anything else is kept as its JSON text.
pub fn config(v: Option<&Value>) -> ConfigMap {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn devices(v: Option<&Value>) -> Devices {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), config(Some(v)))).collect())
        .unwrap_or_default()
}

/// Cluster-wide server config from `GET /1.0`: member-local keys are left out
/// (they are read per member with `?target=`).
pub fn server_config(v: &Value) -> ConfigMap {
    let mut c = config(v.get("config"));
    c.retain(|k, _| !is_member_local_server_key(k));
    c
}

/// Member-local keys from `GET /1.0?target=<member>`.
pub fn member_server_config(v: &Value) -> ConfigMap {
    let mut c = config(v.get("config"));
    c.retain(|k, _| is_member_local_server_key(k));
    c
}

pub fn member(v: &Value) -> Member {
    let roles = strings(v, "roles");
    let (database_roles, roles): (Vec<String>, Vec<String>) =
        roles.into_iter().partition(|r| r.starts_with("database"));
    let address = v
        .get("url")
        .and_then(Value::as_str)
        .map(|u| u.trim_start_matches("https://").to_string())
        .filter(|a| !a.is_empty());
    Member {
        name: s(v, "server_name"),
        description: s(v, "description"),
        address,
        roles,
        failure_domain: Some(s(v, "failure_domain")).filter(|f| !f.is_empty()).unwrap_or_else(|| "default".into()),
        config: config(v.get("config")),
        groups: strings(v, "groups"),
        join_fingerprint: None,
        server_config: ConfigMap::new(),
        ensure: if s(v, "status") == "Evacuated" { MemberEnsure::Evacuated } else { MemberEnsure::Present },
        evacuate: false,
        status: Some(s(v, "status")),
        database_roles,
    }
}

pub fn group(v: &Value) -> ClusterGroup {
    ClusterGroup { name: s(v, "name"), description: s(v, "description"), members: strings(v, "members") }
}

pub fn project(v: &Value) -> Project {
    Project { name: s(v, "name"), description: s(v, "description"), config: config(v.get("config")) }
}

/// Config without the `volatile.*` keys LXD keeps on pools and networks.
fn config_without_volatile(v: Option<&Value>) -> ConfigMap {
    let mut c = config(v);
    c.retain(|k, _| !k.starts_with("volatile."));
    c
}

pub fn storage_pool(v: &Value) -> StoragePool {
    StoragePool {
        name: s(v, "name"),
        description: s(v, "description"),
        driver: s(v, "driver"),
        config: config_without_volatile(v.get("config")),
        member_config: Default::default(),
        status: Some(s(v, "status")).filter(|x| !x.is_empty()),
    }
}

pub fn network(v: &Value, project: &str) -> Network {
    Network {
        project: project.to_string(),
        name: s(v, "name"),
        description: s(v, "description"),
        network_type: s(v, "type"),
        config: config_without_volatile(v.get("config")),
        member_config: Default::default(),
        status: Some(s(v, "status")).filter(|x| !x.is_empty()),
    }
}

pub fn profile(v: &Value, project: &str) -> Profile {
    Profile {
        project: project.to_string(),
        name: s(v, "name"),
        description: s(v, "description"),
        config: config(v.get("config")),
        devices: devices(v.get("devices")),
    }
}

/// One live image per alias it carries (keyed `project/alias`), all sharing the
/// fingerprint, so a desired image (known by its primary alias) finds its match.
/// Images without aliases are keyed by their fingerprint.
pub fn images(v: &Value, project: &str) -> Vec<Image> {
    let aliases: Vec<ImageAlias> = v
        .get("aliases")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| ImageAlias { name: s(x, "name"), description: s(x, "description") }).collect())
        .unwrap_or_default();
    // Images pulled from a remote remember where from; uploads have no source.
    let source = v.get("update_source").filter(|u| u.is_object()).map(|u| ImageSource {
        server: Some(s(u, "server")).filter(|x| !x.is_empty()),
        protocol: if s(u, "protocol") == "lxd" { ImageProtocol::Lxd } else { ImageProtocol::Simplestreams },
        alias: Some(s(u, "alias")).filter(|x| !x.is_empty()),
        fingerprint: None,
        image_type: if s(u, "image_type") == "virtual-machine" {
            InstanceType::VirtualMachine
        } else {
            InstanceType::Container
        },
        certificate: Some(s(u, "certificate")).filter(|x| !x.is_empty()),
        file: None,
    });
    let base = Image {
        project: project.to_string(),
        name: String::new(),
        aliases: Vec::new(),
        source,
        properties: config(v.get("properties")),
        public: b(v, "public"),
        auto_update: b(v, "auto_update"),
        fingerprint: Some(s(v, "fingerprint")),
    };
    if aliases.is_empty() {
        return vec![Image { name: s(v, "fingerprint"), ..base }];
    }
    aliases.iter().map(|a| Image { name: a.name.clone(), aliases: aliases.clone(), ..base.clone() }).collect()
}

pub fn instance(v: &Value) -> Instance {
    let mut cfg = config(v.get("config"));
    let base_image = cfg.get("volatile.base_image").cloned();
    cfg.retain(|k, _| !is_lxd_managed_instance_key(k));
    let status = s(v, "status");
    Instance {
        project: Some(s(v, "project")).filter(|p| !p.is_empty()).unwrap_or_else(|| "default".into()),
        name: s(v, "name"),
        instance_type: if s(v, "type") == "virtual-machine" {
            InstanceType::VirtualMachine
        } else {
            InstanceType::Container
        },
        description: s(v, "description"),
        image: None,
        profiles: strings(v, "profiles"),
        config: cfg,
        devices: devices(v.get("devices")),
        ephemeral: b(v, "ephemeral"),
        target: None,
        state: if status == "Running" || status == "Frozen" { PowerState::Running } else { PowerState::Stopped },
        location: Some(s(v, "location")).filter(|l| !l.is_empty() && l != "none"),
        status: Some(status),
        base_image,
    }
}

pub fn certificate(v: &Value) -> Certificate {
    let cert_type = match s(v, "type").as_str() {
        "metrics" => CertificateType::Metrics,
        "server" => CertificateType::Server,
        _ => CertificateType::Client,
    };
    Certificate {
        name: s(v, "name"),
        cert_type,
        restricted: b(v, "restricted"),
        projects: strings(v, "projects"),
        certificate: s(v, "certificate"),
        certificate_file: None,
        fingerprint: s(v, "fingerprint"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instances_lose_what_lxd_adds() {
        let v = json!({
            "name": "c1", "project": "web", "type": "container", "status": "Running", "location": "node2",
            "profiles": ["default"], "ephemeral": false, "description": "",
            "config": {"limits.cpu": "1", "volatile.base_image": "abc", "volatile.eth0.hwaddr": "00:16", "image.os": "busybox"},
            "devices": {"eth0": {"type": "nic", "network": "br0"}},
            "expanded_config": {"x": "y"}
        });
        let i = instance(&v);
        assert_eq!(i.config, ConfigMap::from([("limits.cpu".into(), "1".into())]));
        assert_eq!(i.base_image.as_deref(), Some("abc"));
        assert_eq!(i.location.as_deref(), Some("node2"));
        assert_eq!(i.state, PowerState::Running);
        assert_eq!(i.devices["eth0"]["network"], "br0");
    }

    #[test]
    fn members_split_database_roles() {
        let v = json!({"server_name": "n1", "url": "https://10.0.0.1:8443", "roles": ["database-leader", "database", "event-hub"],
            "failure_domain": "rack1", "status": "Online", "groups": ["default"], "config": {}, "description": ""});
        let m = member(&v);
        assert_eq!(m.roles, vec!["event-hub"]);
        assert_eq!(m.database_roles, vec!["database-leader", "database"]);
        assert_eq!(m.address.as_deref(), Some("10.0.0.1:8443"));
    }

    #[test]
    fn one_image_per_alias() {
        let v = json!({"fingerprint": "f1", "aliases": [{"name": "a", "description": ""}, {"name": "b", "description": "x"}],
            "properties": {"os": "busybox"}, "public": true, "auto_update": false});
        let imgs = images(&v, "default");
        assert_eq!(imgs.len(), 2);
        assert_eq!(imgs[0].name, "a");
        assert_eq!(imgs[0].aliases.len(), 2, "every entry lists all aliases of the image");
        assert!(imgs.iter().all(|i| i.fingerprint.as_deref() == Some("f1")));
    }

    #[test]
    fn server_config_keeps_only_global_keys() {
        let v = json!({"config": {"core.https_address": "10.0.0.1:8443", "images.auto_update_interval": "12"}});
        assert_eq!(server_config(&v).keys().collect::<Vec<_>>(), vec!["images.auto_update_interval"]);
        assert_eq!(member_server_config(&v).keys().collect::<Vec<_>>(), vec!["core.https_address"]);
    }
}
