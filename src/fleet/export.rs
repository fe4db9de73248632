//! Writing a fleet repository from live state (`lxd-gitops import`).
//!
//! Owns: turning a cluster's `LiveState` into fleet documents in the folder
//! convention of `examples/fleet-repo`, leaving out what LXD decides by itself
//! (observed fields, `volatile.*`, the ownership marker), and a small block-style
//! YAML writer for those documents. Imported objects are adopted, not owned: they
//! carry no owner marker, so prune never deletes them. Must not: talk to LXD or
//! decide anything about plans.

use crate::model::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One file to write: repository-relative path and its text.
pub type File = (String, String);

/// Fleet files for the cluster `spec` describes, as `live` shows it.
pub fn export(spec: &ClusterSpec, live: &LiveState) -> Vec<File> {
    let c = &spec.name;
    let o = &live.objects;
    let base = format!("clusters/{c}");
    let mut files: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut push = |path: String, kind: Kind, mut v: Value| {
        if let Value::Object(m) = &mut v {
            let mut doc = Map::new();
            doc.insert("kind".into(), Value::String(kind.as_str().into()));
            if kind != Kind::Cluster {
                doc.insert("cluster".into(), Value::String(c.clone()));
            }
            doc.extend(std::mem::take(m));
            v = Value::Object(doc);
        }
        files.entry(path).or_default().push(v);
    };

    let mut cluster = spec.clone();
    cluster.config = o.server_config.clone();
    cluster.config.remove(INVENTORY_KEY);
    push(format!("{base}/cluster.yaml"), Kind::Cluster, to_value(&cluster));

    for m in o.members.values() {
        let mut m = m.clone();
        m.status = None;
        m.database_roles.clear();
        m.config.remove(OWNER_KEY);
        m.ensure = if m.ensure == MemberEnsure::Evacuated { MemberEnsure::Evacuated } else { MemberEnsure::Present };
        push(format!("{base}/members/{}.yaml", m.name), Kind::Member, to_value(&m));
    }
    for g in o.groups.values().filter(|g| g.name != "default") {
        let mut g = g.clone();
        g.members.clear();
        push(format!("{base}/groups.yaml"), Kind::ClusterGroup, to_value(&g));
    }
    for p in o.projects.values() {
        let mut p = p.clone();
        p.config.remove(OWNER_KEY);
        push(format!("{base}/projects/{}/project.yaml", p.name), Kind::Project, to_value(&p));
    }
    for p in o.storage_pools.values() {
        let mut p = p.clone();
        p.status = None;
        p.config.remove(OWNER_KEY);
        push(format!("{base}/storage.yaml"), Kind::StoragePool, to_value(&p));
    }
    for n in o.networks.values() {
        let mut n = n.clone();
        n.status = None;
        n.config.remove(OWNER_KEY);
        push(format!("{base}/networks.yaml"), Kind::Network, to_value(&n));
    }
    for p in o.profiles.values() {
        let mut p = p.clone();
        p.config.remove(OWNER_KEY);
        push(format!("{base}/projects/{}/profiles.yaml", p.project), Kind::Profile, to_value(&p));
    }
    // One document per image (live lists it once per alias): the first alias names it.
    let mut seen = std::collections::HashSet::new();
    for img in o.images.values() {
        let id = (img.project.clone(), img.fingerprint.clone().unwrap_or_else(|| img.name.clone()));
        if !seen.insert(id) || img.aliases.is_empty() {
            continue; // alias-less images (LXD's cache) are not fleet objects
        }
        let mut img = img.clone();
        let mut names: Vec<ImageAlias> = img.aliases.clone();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        img.name = names[0].name.clone();
        img.aliases = names.into_iter().skip(1).collect();
        img.fingerprint = None;
        img.properties.remove(IMAGE_OWNER_PROPERTY);
        push(format!("{base}/projects/{}/images.yaml", img.project), Kind::Image, to_value(&img));
    }
    for i in o.instances.values() {
        let mut i = i.clone();
        i.target = i.location.take();
        i.status = None;
        i.base_image = None;
        i.config.remove(OWNER_KEY);
        push(format!("{base}/projects/{}/instances/{}.yaml", i.project, i.name), Kind::Instance, to_value(&i));
    }
    for cert in o.certificates.values().filter(|c| c.cert_type != CertificateType::Server) {
        let mut cert = cert.clone();
        cert.fingerprint.clear();
        push(format!("{base}/trust/{}.yaml", cert.name), Kind::Certificate, to_value(&cert));
    }
    for s in o.snap.values() {
        let mut s = s.clone();
        s.revision = None;
        s.pending.clear();
        push(format!("{base}/snap/{}.yaml", s.member), Kind::Snap, to_value(&s));
    }

    files
        .into_iter()
        .map(|(path, docs)| {
            let depth = path.matches('/').count();
            let kinds: std::collections::BTreeSet<&str> =
                docs.iter().filter_map(|d| d.get("kind").and_then(Value::as_str)).collect();
            let schema = match (kinds.len(), kinds.iter().next()) {
                (1, Some(k)) => Kind::parse(k).map(|k| k.schema_file()).unwrap_or("fleet.json"),
                _ => "fleet.json",
            };
            let mut text = format!("# yaml-language-server: $schema={}schema/{schema}\n", "../".repeat(depth));
            text.push_str("# Imported from the live cluster by `lxd-gitops import`.\n");
            for (n, d) in docs.iter().enumerate() {
                if n > 0 {
                    text.push_str("---\n");
                }
                write_yaml(&mut text, d, 0);
            }
            (path, text)
        })
        .collect()
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("model values serialize")
}

/// Block-style YAML for JSON values. Strings are double-quoted (JSON escapes are
/// valid YAML), multi-line strings are literal blocks, so nothing is re-typed.
pub fn write_yaml(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                out.push_str(&" ".repeat(indent));
                out.push_str(&key(k));
                write_after_key(out, v, indent);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for v in a {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        // First key on the dash line, the rest aligned under it.
                        let mut inner = String::new();
                        write_yaml(&mut inner, v, indent + 2);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    _ => write_after_key(out, v, indent),
                }
            }
        }
        other => {
            out.push_str(&" ".repeat(indent));
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn write_after_key(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_yaml(out, v, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_yaml(out, v, indent + 2);
        }
        Value::String(s) if s.contains('\n') && !s.contains('\r') && !s.starts_with(' ') => {
            let chomp = if s.ends_with('\n') { "" } else { "-" };
            out.push_str(&format!(" |{chomp}\n"));
            for line in s.trim_end_matches('\n').split('\n') {
                if line.is_empty() {
                    out.push('\n');
                } else {
                    out.push_str(&" ".repeat(indent + 2));
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if plain {
        format!("{k}:")
    } else {
        format!("{}:", Value::String(k.to_string()))
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::yaml::parse_documents;
    use serde_json::json;

    #[test]
    fn yaml_round_trips_through_the_loader_parser() {
        let v = json!({
            "kind": "Profile", "name": "p", "config": {"limits.cpu": "2", "user.x": "yes", "raw.lxc": "a\nb\n"},
            "devices": {"eth0": {"type": "nic", "name": "eth0"}}, "profiles": ["default", "web"], "empty": {},
            "list": [{"name": "a", "description": ""}, {"name": "b", "description": "x"}], "n": 3, "b": false
        });
        let mut s = String::new();
        write_yaml(&mut s, &v, 0);
        let back = &parse_documents(&s).unwrap()[0].value;
        assert_eq!(back, &v, "{s}");
    }
}
