//! The LXD requests that realise one change, as plain data.
//!
//! Owns: for each kind and action, which endpoint LXD 5.0 wants, with which
//! method and body (the shapes in `shared/reference/lxd-api.md`): creation bodies,
//! the writable fields of a PUT after GET → modify, the two-step per-member
//! creation of pools and networks in a cluster. Must not: send anything, order
//! steps or decide whether a change is allowed.

use crate::model::*;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// `?project=` suffix, omitted for the default project.
pub fn project_query(project: &str) -> String {
    if project == "default" {
        String::new()
    } else {
        format!("project={}", enc(project))
    }
}

/// Joins a path with query parts, skipping empty ones.
pub fn with_query(path: &str, parts: &[String]) -> String {
    let q: Vec<&str> = parts.iter().map(String::as_str).filter(|p| !p.is_empty()).collect();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

fn owned(config: &ConfigMap, cluster: &str) -> ConfigMap {
    let mut c = config.clone();
    c.insert(OWNER_KEY.to_string(), cluster.to_string());
    c
}

fn obj<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

// --- projects -----------------------------------------------------------

pub fn project_create(p: &Project, cluster: &str) -> (String, Value) {
    ("/1.0/projects".into(), json!({"name": p.name, "description": p.description, "config": owned(&p.config, cluster)}))
}

/// Body of the PUT after GET: PATCH on projects replaces config in 5.0, so always PUT.
pub fn project_put(p: &Project, live: &Value) -> Value {
    json!({"description": p.description, "config": keep_owner(&p.config, live.get("config"))})
}

/// Desired config plus the live ownership marker, which the fleet never states.
pub fn keep_owner(config: &ConfigMap, live_config: Option<&Value>) -> ConfigMap {
    let mut c = config.clone();
    if let Some(owner) = live_config.and_then(|l| l.get(OWNER_KEY)).and_then(Value::as_str) {
        c.insert(OWNER_KEY.to_string(), owner.to_string());
    }
    c
}

// --- storage pools and networks -------------------------------------------

/// Requests that create a pool: in a cluster, one `?target=` POST per member with
/// its member keys (the pool is "pending" until then), then the global POST.
pub fn pool_create(p: &StoragePool, members: &[String], cluster: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for m in members {
        let local = p.member_config.get(m).cloned().unwrap_or_default();
        out.push((
            format!("/1.0/storage-pools?target={}", enc(m)),
            json!({"name": p.name, "driver": p.driver, "config": local}),
        ));
    }
    out.push((
        "/1.0/storage-pools".into(),
        json!({"name": p.name, "driver": p.driver, "description": p.description, "config": owned(&p.config, cluster)}),
    ));
    out
}

pub fn network_create(n: &Network, members: &[String], cluster: &str) -> Vec<(String, Value)> {
    let pq = project_query(&n.project);
    let mut out = Vec::new();
    for m in members {
        let local = n.member_config.get(m).cloned().unwrap_or_default();
        out.push((
            with_query("/1.0/networks", &[pq.clone(), format!("target={}", enc(m))]),
            json!({"name": n.name, "type": n.network_type, "config": local}),
        ));
    }
    out.push((
        with_query("/1.0/networks", &[pq]),
        json!({"name": n.name, "type": n.network_type, "description": n.description, "config": owned(&n.config, cluster)}),
    ));
    out
}

/// PUT body of the global part of a pool or network: global keys only (LXD
/// refuses member keys without `?target=`).
pub fn global_put(description: &str, config: &ConfigMap, live: &Value, member_keys: &[&str]) -> Value {
    let mut c = keep_owner(config, live.get("config"));
    // volatile keys LXD keeps must be sent back, or LXD treats them as removed.
    if let Some(lc) = live.get("config").and_then(Value::as_object) {
        for (k, v) in lc {
            if k.starts_with("volatile.") {
                c.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    c.retain(|k, _| !member_keys.contains(&k.as_str()));
    json!({"description": description, "config": c})
}

// --- profiles -------------------------------------------------------------

pub fn profile_create(p: &Profile, cluster: &str) -> (String, Value) {
    (
        with_query("/1.0/profiles", &[project_query(&p.project)]),
        json!({"name": p.name, "description": p.description, "config": owned(&p.config, cluster), "devices": obj(&p.devices)}),
    )
}

pub fn profile_path(project: &str, name: &str) -> String {
    with_query(&format!("/1.0/profiles/{}", enc(name)), &[project_query(project)])
}

pub fn profile_put(p: &Profile, live: &Value) -> Value {
    json!({"description": p.description, "config": keep_owner(&p.config, live.get("config")), "devices": obj(&p.devices)})
}

// --- images ---------------------------------------------------------------

/// Body of an image pull from a remote (async). Aliases are created with it.
pub fn image_pull(img: &Image, cluster: &str) -> Option<(String, Value)> {
    let src = img.source.as_ref()?;
    let server = src.server.as_ref()?;
    let mut source = Map::new();
    source.insert("type".into(), json!("image"));
    source.insert("mode".into(), json!("pull"));
    source.insert("server".into(), json!(server));
    source.insert(
        "protocol".into(),
        json!(match src.protocol {
            ImageProtocol::Lxd => "lxd",
            ImageProtocol::Simplestreams => "simplestreams",
        }),
    );
    source.insert("image_type".into(), json!(src.image_type.as_lxd()));
    if let Some(f) = &src.fingerprint {
        source.insert("fingerprint".into(), json!(f));
    } else if let Some(a) = &src.alias {
        source.insert("alias".into(), json!(a));
    }
    if let Some(c) = &src.certificate {
        source.insert("certificate".into(), json!(c));
    }
    let mut props = img.properties.clone();
    props.insert(IMAGE_OWNER_PROPERTY.into(), cluster.into());
    Some((
        with_query("/1.0/images", &[project_query(&img.project)]),
        json!({
            "auto_update": img.auto_update,
            "public": img.public,
            "properties": props,
            "aliases": [{"name": img.name}],
            "source": Value::Object(source),
        }),
    ))
}

/// PUT body for an image's writable fields (sync).
pub fn image_put(img: &Image, live: &Value, cluster: &str) -> Value {
    let mut props = img.properties.clone();
    let owner = live.pointer(&format!("/properties/{}", IMAGE_OWNER_PROPERTY)).and_then(Value::as_str);
    props.insert(IMAGE_OWNER_PROPERTY.into(), owner.unwrap_or(cluster).to_string());
    json!({
        "auto_update": img.auto_update,
        "public": img.public,
        "properties": props,
        "expires_at": live.get("expires_at").cloned().unwrap_or(Value::Null),
        "profiles": live.get("profiles").cloned().unwrap_or(json!(["default"])),
    })
}

pub fn alias_create(project: &str, alias: &ImageAlias, fingerprint: &str) -> (String, Value) {
    (
        with_query("/1.0/images/aliases", &[project_query(project)]),
        json!({"name": alias.name, "description": alias.description, "target": fingerprint}),
    )
}

// --- instances --------------------------------------------------------------

pub fn instance_path(project: &str, name: &str) -> String {
    with_query(&format!("/1.0/instances/{}", enc(name)), &[project_query(project)])
}

pub fn instance_state_path(project: &str, name: &str) -> String {
    with_query(&format!("/1.0/instances/{}/state", enc(name)), &[project_query(project)])
}

/// POST body creating an instance from a local image alias (async).
pub fn instance_create(i: &Instance, image_alias: Option<&str>, cluster: &str) -> (String, Value) {
    let mut q = vec![project_query(&i.project)];
    if let Some(t) = &i.target {
        q.push(format!("target={}", enc(t)));
    }
    let source = match image_alias {
        Some(a) => json!({"type": "image", "alias": a}),
        None => json!({"type": "none"}),
    };
    (
        with_query("/1.0/instances", &q),
        json!({
            "name": i.name,
            "type": i.instance_type.as_lxd(),
            "description": i.description,
            "source": source,
            "profiles": i.profiles,
            "config": owned(&i.config, cluster),
            "devices": obj(&i.devices),
            "ephemeral": i.ephemeral,
        }),
    )
}

/// PUT body after GET: the desired writable fields, keeping what LXD owns
/// (`volatile.*` such as `volatile.idmap.*`, `image.*`) and the owner marker.
pub fn instance_put(i: &Instance, live: &Value) -> Value {
    let mut config = keep_owner(&i.config, live.get("config"));
    if let Some(lc) = live.get("config").and_then(Value::as_object) {
        for (k, v) in lc {
            if crate::model::names::is_lxd_managed_instance_key(k) {
                config.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    json!({
        "architecture": live.get("architecture").cloned().unwrap_or(Value::Null),
        "config": config,
        "devices": obj(&i.devices),
        "ephemeral": i.ephemeral,
        "profiles": i.profiles,
        "stateful": live.get("stateful").cloned().unwrap_or(json!(false)),
        "description": i.description,
    })
}

pub fn instance_state(action: &str, timeout: u32, force: bool) -> Value {
    json!({"action": action, "timeout": timeout, "force": force})
}

// --- members ------------------------------------------------------------------

pub fn member_path(name: &str) -> String {
    format!("/1.0/cluster/members/{}", enc(name))
}

/// PUT body for a member: user roles plus the database roles LXD manages (sending
/// them back unchanged; adding or dropping `database` is refused by LXD).
pub fn member_put(m: &Member, live: &Value) -> Value {
    let mut roles: Vec<String> = live
        .get("roles")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).filter(|r| r.starts_with("database")).map(str::to_string).collect())
        .unwrap_or_default();
    roles.extend(m.roles.iter().cloned());
    json!({
        "roles": roles,
        "failure_domain": m.failure_domain,
        "description": m.description,
        "config": m.config,
        "groups": m.groups,
    })
}

// --- certificates -------------------------------------------------------------

/// POST body: the certificate as base64 DER, without PEM armour (5.0).
pub fn certificate_create(c: &Certificate) -> Result<(String, Value), String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(c.certificate.as_bytes()).map_err(|e| e.to_string())?;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pem.contents);
    Ok((
        "/1.0/certificates".into(),
        json!({
            "name": c.name,
            "type": match c.cert_type { CertificateType::Metrics => "metrics", _ => "client" },
            "restricted": c.restricted,
            "projects": c.projects,
            "certificate": b64,
        }),
    ))
}

/// PUT body: here `certificate` is PEM.
pub fn certificate_put(c: &Certificate) -> Value {
    json!({
        "name": c.name,
        "type": match c.cert_type { CertificateType::Metrics => "metrics", _ => "client" },
        "restricted": c.restricted,
        "projects": c.projects,
        "certificate": c.certificate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_creation_carries_target_project_and_owner() {
        let i = Instance {
            project: "web".into(),
            name: "w1".into(),
            target: Some("@edge".into()),
            profiles: vec!["default".into()],
            ..Default::default()
        };
        let (path, body) = instance_create(&i, Some("busybox"), "lab");
        assert_eq!(path, "/1.0/instances?project=web&target=%40edge");
        assert_eq!(body["source"], json!({"type": "image", "alias": "busybox"}));
        assert_eq!(body["config"][OWNER_KEY], "lab");
        assert_eq!(body["type"], "container");
    }

    #[test]
    fn instance_put_keeps_lxd_keys_and_owner() {
        let i = Instance {
            name: "w1".into(),
            config: ConfigMap::from([("limits.cpu".into(), "2".into())]),
            ..Default::default()
        };
        let live = json!({"architecture": "x86_64", "config": {
            "limits.cpu": "1", "volatile.idmap.base": "0", "image.os": "busybox", OWNER_KEY: "lab", "user.gone": "x"}});
        let body = instance_put(&i, &live);
        assert_eq!(
            body["config"],
            json!({"image.os": "busybox", "limits.cpu": "2", OWNER_KEY: "lab", "volatile.idmap.base": "0"})
        );
        assert_eq!(body["architecture"], "x86_64");
    }

    #[test]
    fn pools_are_created_per_member_then_globally() {
        let p = StoragePool {
            name: "fast".into(),
            driver: "dir".into(),
            member_config: [("n1".to_string(), ConfigMap::from([("source".into(), "/srv/a".into())]))].into(),
            ..Default::default()
        };
        let reqs = pool_create(&p, &["n1".into(), "n2".into()], "lab");
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].0, "/1.0/storage-pools?target=n1");
        assert_eq!(reqs[0].1["config"]["source"], "/srv/a");
        assert_eq!(reqs[1].1["config"], json!({}));
        assert_eq!(reqs[2].0, "/1.0/storage-pools");
        assert_eq!(reqs[2].1["config"][OWNER_KEY], "lab");
    }

    #[test]
    fn member_put_keeps_database_roles() {
        let m = Member {
            name: "n1".into(),
            roles: vec!["event-hub".into()],
            groups: vec!["default".into()],
            ..Default::default()
        };
        let body = member_put(&m, &json!({"roles": ["database-leader", "database", "ovn-chassis"]}));
        assert_eq!(body["roles"], json!(["database-leader", "database", "event-hub"]));
    }

    #[test]
    fn default_project_has_no_query() {
        assert_eq!(profile_path("default", "base"), "/1.0/profiles/base");
        assert_eq!(profile_path("my proj", "base"), "/1.0/profiles/base?project=my%20proj");
    }
}
