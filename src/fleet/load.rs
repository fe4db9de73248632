//! Reading a fleet repository from disk into `DesiredState`.
//!
//! Owns: walking the repository, reading each YAML file, dispatching documents by
//! `kind`, running the schema check, turning config scalars into LXD's strings,
//! reading certificate files beside their YAML, and remembering where each object
//! was declared (for later diagnostics). Must not: check cross-object rules (that
//! is `semantic`), talk to LXD, or stop at the first problem.

use super::diagnostic::{Diagnostic, Rule};
use super::schema;
use super::yaml::{self, Document, Pos};
use crate::model::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Where an object was declared.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Repository-relative path, `/`-separated.
    pub file: String,
    pub doc: Arc<Document>,
}

impl Origin {
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.doc.value_pos(pointer)
    }
}

/// A loaded repository: the desired state plus where every object came from.
#[derive(Debug, Clone, Default)]
pub struct LoadedFleet {
    pub desired: DesiredState,
    /// By (cluster, object).
    pub origins: HashMap<(String, ObjectRef), Origin>,
    /// Objects whose `cluster` names no Cluster, kept for the semantic check.
    pub(crate) orphans: Vec<(String, ObjectRef)>,
    pub files: usize,
}

impl LoadedFleet {
    pub fn origin(&self, cluster: &str, obj: &ObjectRef) -> Option<&Origin> {
        self.origins.get(&(cluster.to_string(), obj.clone()))
    }
}

/// Maps in each kind whose values are LXD strings. YAML lets operators write
/// `limits.cpu: 2`; LXD wants `"2"`. Paths are JSON pointers, `*` is any key.
fn string_maps(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Cluster => &["/config", "/snap/config"],
        Kind::Member => &["/config", "/server_config"],
        Kind::Project => &["/config"],
        Kind::StoragePool | Kind::Network => &["/config", "/member_config/*"],
        Kind::Profile | Kind::Instance => &["/config", "/devices/*"],
        Kind::Image => &["/properties"],
        Kind::Snap => &["/config"],
        Kind::ClusterGroup | Kind::Certificate => &[],
    }
}

fn stringify_at(value: &mut Value, path: &[&str]) {
    match path.split_first() {
        None => {
            if let Value::Object(map) = value {
                for v in map.values_mut() {
                    match v {
                        Value::Bool(b) => *v = Value::String(b.to_string()),
                        Value::Number(n) => *v = Value::String(n.to_string()),
                        _ => {}
                    }
                }
            }
        }
        Some((seg, rest)) => {
            if let Value::Object(map) = value {
                if *seg == "*" {
                    for v in map.values_mut() {
                        stringify_at(v, rest);
                    }
                } else if let Some(v) = map.get_mut(*seg) {
                    stringify_at(v, rest);
                }
            }
        }
    }
}

/// Loads every `*.yaml` / `*.yml` under `root` (hidden folders skipped, files in
/// sorted order). Returns the fleet and all problems found while loading.
pub fn load_dir(root: &Path) -> (LoadedFleet, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut fleet = LoadedFleet::default();
    let mut files = Vec::new();
    if let Err(e) = collect_files(root, root, &mut files) {
        diags.push(plain(".", Pos { line: 1, column: 1 }, Rule::Read, format!("cannot read {}: {e}", root.display())));
        return (fleet, diags);
    }
    files.sort();
    fleet.files = files.len();
    let mut pending: Vec<Pending> = Vec::new();
    for rel in &files {
        load_file(root, rel, &mut pending, &mut diags);
    }
    // Clusters first, so that every other object can find its cluster.
    pending.sort_by_key(|p| p.kind != Kind::Cluster);
    for p in pending {
        insert(&mut fleet, p, &mut diags);
    }
    (fleet, diags)
}

/// Loads documents from in-memory files (`(relative path, text)`), for tests and fuzzing.
pub fn load_texts(files: &[(&str, &str)]) -> (LoadedFleet, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut pending = Vec::new();
    for (rel, text) in files {
        load_text(Path::new("/nonexistent"), rel, text, &mut pending, &mut diags);
    }
    let mut fleet = LoadedFleet { files: files.len(), ..Default::default() };
    pending.sort_by_key(|p| p.kind != Kind::Cluster);
    for p in pending {
        insert(&mut fleet, p, &mut diags);
    }
    (fleet, diags)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_dir() {
            collect_files(root, &path, out)?;
        } else if (ft.is_file() || ft.is_symlink()) && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// A document that passed its schema, ready to become a typed object.
struct Pending {
    kind: Kind,
    cluster: Option<String>,
    file: String,
    doc: Arc<Document>,
    value: Value,
}

fn plain(file: &str, pos: Pos, rule: Rule, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        object: None,
        path: String::new(),
        rule,
        message,
        hint: None,
    }
}

fn load_file(root: &Path, rel: &str, pending: &mut Vec<Pending>, diags: &mut Vec<Diagnostic>) {
    let bytes = match std::fs::read(root.join(rel)) {
        Ok(b) => b,
        Err(e) => {
            diags.push(plain(rel, Pos { line: 1, column: 1 }, Rule::Read, format!("cannot read file: {e}")));
            return;
        }
    };
    match std::str::from_utf8(&bytes) {
        Ok(text) => load_text(root, rel, text, pending, diags),
        Err(e) => {
            let upto = &bytes[..e.valid_up_to()];
            let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
            let column = upto.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            diags.push(plain(rel, Pos { line, column }, Rule::Read, "file is not valid UTF-8 text".into()));
        }
    }
}

fn load_text(root: &Path, rel: &str, text: &str, pending: &mut Vec<Pending>, diags: &mut Vec<Diagnostic>) {
    let docs = match yaml::parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            diags.push(plain(rel, e.pos, Rule::Syntax, e.message));
            return;
        }
    };
    for doc in docs {
        let Some(obj) = doc.value.as_object() else {
            diags.push(plain(rel, doc.start, Rule::Kind, "a fleet document must be a mapping with a `kind`".into()));
            continue;
        };
        let kind = match obj.get("kind") {
            None => {
                diags.push(Diagnostic {
                    hint: Some(format!("one of: {}", kind_list())),
                    ..plain(rel, doc.start, Rule::Kind, "missing `kind`".into())
                });
                continue;
            }
            Some(Value::String(k)) => match Kind::parse(k) {
                Some(kind) => kind,
                None => {
                    diags.push(Diagnostic {
                        hint: Some(format!("one of: {}", kind_list())),
                        path: "/kind".into(),
                        ..plain(rel, doc.value_pos("/kind"), Rule::Kind, format!("unknown kind `{k}`"))
                    });
                    continue;
                }
            },
            Some(_) => {
                diags.push(plain(rel, doc.value_pos("/kind"), Rule::Kind, "`kind` must be a string".into()));
                continue;
            }
        };
        let label = object_label(kind, obj);
        let schema_diags = schema::check(kind, &doc, rel, label.as_deref());
        if !schema_diags.is_empty() {
            diags.extend(schema_diags);
            continue;
        }
        // The object's value moves on; its origin keeps only the positions.
        let mut doc = doc;
        let mut value = std::mem::take(&mut doc.value);
        for path in string_maps(kind) {
            let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            stringify_at(&mut value, &segs);
        }
        let map = value.as_object_mut().expect("checked above");
        map.remove("kind");
        let cluster = map.remove("cluster").and_then(|v| v.as_str().map(str::to_string));
        let doc = Arc::new(doc);
        if let Err(d) = resolve_files(root, rel, kind, &mut value, &doc, label.as_deref()) {
            diags.push(d);
            continue;
        }
        pending.push(Pending { kind, cluster, file: rel.to_string(), doc, value });
    }
}

fn kind_list() -> String {
    Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

fn object_label(kind: Kind, obj: &serde_json::Map<String, Value>) -> Option<String> {
    let name = obj.get(if kind == Kind::Snap { "member" } else { "name" })?.as_str()?;
    if kind.is_project_scoped() {
        let project = obj.get("project").and_then(Value::as_str).unwrap_or("default");
        Some(format!("{kind}/{project}/{name}"))
    } else {
        Some(format!("{kind}/{name}"))
    }
}

/// Joins a path written in a fleet file to the folder of that file, refusing
/// anything that would leave the repository.
fn repo_path(rel_file: &str, written: &str) -> Option<String> {
    let base = Path::new(rel_file).parent().unwrap_or(Path::new(""));
    let mut out = PathBuf::new();
    for c in base.join(written).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out.to_string_lossy().replace('\\', "/"))
}

/// Reads certificate files into the document and checks PEM; rewrites image
/// upload paths to be repository-relative.
fn resolve_files(
    root: &Path,
    rel: &str,
    kind: Kind,
    value: &mut Value,
    doc: &Document,
    label: Option<&str>,
) -> Result<(), Diagnostic> {
    let err = |pointer: &str, message: String, hint: Option<String>| Diagnostic {
        file: rel.to_string(),
        line: doc.value_pos(pointer).line,
        column: doc.value_pos(pointer).column,
        object: label.map(str::to_string),
        path: pointer.to_string(),
        rule: Rule::Value,
        message,
        hint,
    };
    match kind {
        Kind::Certificate => {
            let (pem, pointer) = match value.get("certificate_file").and_then(Value::as_str) {
                Some(f) => {
                    let path = repo_path(rel, f).ok_or_else(|| {
                        err("/certificate_file", format!("`{f}` points outside the repository"), None)
                    })?;
                    let text = std::fs::read_to_string(root.join(&path))
                        .map_err(|e| err("/certificate_file", format!("cannot read `{path}`: {e}"), None))?;
                    (text, "/certificate_file")
                }
                None => (value.get("certificate").and_then(Value::as_str).unwrap_or("").to_string(), "/certificate"),
            };
            let fingerprint = pem_fingerprint(&pem).map_err(|m| {
                err(pointer, format!("not a valid PEM certificate: {m}"), Some("paste the output of `openssl x509 -in cert.crt` (BEGIN CERTIFICATE ... END CERTIFICATE); never a private key".into()))
            })?;
            let map = value.as_object_mut().expect("object");
            map.insert("certificate".into(), Value::String(pem.trim().to_string() + "\n"));
            map.insert("fingerprint".into(), Value::String(fingerprint));
        }
        Kind::Image => {
            if let Some(f) = value.pointer("/source/file").and_then(Value::as_str) {
                let path = repo_path(rel, f)
                    .ok_or_else(|| err("/source/file", format!("`{f}` points outside the repository"), None))?;
                if !root.join(&path).is_file() && root != Path::new("/nonexistent") {
                    return Err(err("/source/file", format!("image file `{path}` does not exist"), None));
                }
                if let Some(v) = value.pointer_mut("/source/file") {
                    *v = Value::String(path);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Lowercase hex SHA-256 of the DER of the first certificate in `pem`.
pub fn pem_fingerprint(pem: &str) -> Result<String, String> {
    if pem.contains("PRIVATE KEY") {
        return Err("the text contains a private key, which must never be in the repository".into());
    }
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| format!("{e}"))?;
    if parsed.label != "CERTIFICATE" {
        return Err(format!("PEM block is `{}`, expected `CERTIFICATE`", parsed.label));
    }
    x509_parser::parse_x509_certificate(&parsed.contents).map_err(|e| format!("{e}"))?;
    Ok(hex::encode(Sha256::digest(&parsed.contents)))
}

fn insert(fleet: &mut LoadedFleet, p: Pending, diags: &mut Vec<Diagnostic>) {
    let Pending { kind, cluster, file, doc, value } = p;
    let label = value.as_object().and_then(|o| object_label(kind, o));
    let origin = Origin { file: file.clone(), doc: doc.clone() };
    let decode_err = |e: serde_json::Error| Diagnostic {
        file: file.clone(),
        line: doc.start.line,
        column: doc.start.column,
        object: label.clone(),
        path: String::new(),
        rule: Rule::Schema,
        message: format!("cannot read object: {e}"),
        hint: None,
    };
    if kind == Kind::Cluster {
        let spec: ClusterSpec = match serde_json::from_value(value) {
            Ok(s) => s,
            Err(e) => return diags.push(decode_err(e)),
        };
        let oref = ObjectRef::global(Kind::Cluster, spec.name.clone());
        if let Some(prev) = fleet.desired.clusters.get(&spec.name) {
            let _ = prev;
            return diags.push(duplicate(&fleet.origins[&(spec.name.clone(), oref.clone())], &origin, &oref));
        }
        fleet.origins.insert((spec.name.clone(), oref), origin);
        let name = spec.name.clone();
        fleet.desired.clusters.insert(name, DesiredCluster { spec, objects: ClusterObjects::default() });
        return;
    }
    let cluster = cluster.unwrap_or_default();
    macro_rules! put {
        ($ty:ty, $coll:ident, $key:expr, $oref:expr) => {{
            let obj: $ty = match serde_json::from_value(value) {
                Ok(o) => o,
                Err(e) => return diags.push(decode_err(e)),
            };
            #[allow(clippy::redundant_closure_call)]
            let key = ($key)(&obj);
            #[allow(clippy::redundant_closure_call)]
            let oref: ObjectRef = ($oref)(&obj);
            let Some(dc) = fleet.desired.clusters.get_mut(&cluster) else {
                fleet.origins.insert((cluster.clone(), oref.clone()), origin);
                fleet.orphans.push((cluster.clone(), oref));
                return;
            };
            let okey = (cluster.clone(), oref.clone());
            if dc.objects.$coll.contains_key(&key) {
                return diags.push(duplicate(&fleet.origins[&okey], &origin, &oref));
            }
            dc.objects.$coll.insert(key, obj);
            fleet.origins.insert(okey, origin);
        }};
    }
    match kind {
        Kind::Cluster => unreachable!("handled above"),
        Kind::Member => {
            put!(Member, members, |o: &Member| o.name.clone(), |o: &Member| ObjectRef::global(kind, o.name.clone()))
        }
        Kind::ClusterGroup => {
            put!(ClusterGroup, groups, |o: &ClusterGroup| o.name.clone(), |o: &ClusterGroup| ObjectRef::global(
                kind,
                o.name.clone()
            ))
        }
        Kind::Project => {
            put!(Project, projects, |o: &Project| o.name.clone(), |o: &Project| ObjectRef::global(kind, o.name.clone()))
        }
        Kind::StoragePool => {
            put!(StoragePool, storage_pools, |o: &StoragePool| o.name.clone(), |o: &StoragePool| ObjectRef::global(
                kind,
                o.name.clone()
            ))
        }
        Kind::Network => put!(Network, networks, |o: &Network| pkey(&o.project, &o.name), |o: &Network| {
            ObjectRef::in_project(kind, o.project.clone(), o.name.clone())
        }),
        Kind::Profile => put!(Profile, profiles, |o: &Profile| pkey(&o.project, &o.name), |o: &Profile| {
            ObjectRef::in_project(kind, o.project.clone(), o.name.clone())
        }),
        Kind::Image => put!(Image, images, |o: &Image| pkey(&o.project, &o.name), |o: &Image| {
            ObjectRef::in_project(kind, o.project.clone(), o.name.clone())
        }),
        Kind::Instance => put!(Instance, instances, |o: &Instance| pkey(&o.project, &o.name), |o: &Instance| {
            ObjectRef::in_project(kind, o.project.clone(), o.name.clone())
        }),
        Kind::Certificate => {
            put!(Certificate, certificates, |o: &Certificate| o.name.clone(), |o: &Certificate| ObjectRef::global(
                kind,
                o.name.clone()
            ))
        }
        Kind::Snap => put!(SnapSettings, snap, |o: &SnapSettings| o.member.clone(), |o: &SnapSettings| {
            ObjectRef::global(kind, o.member.clone())
        }),
    }
}

fn duplicate(first: &Origin, second: &Origin, oref: &ObjectRef) -> Diagnostic {
    let name_ptr = if oref.kind == Kind::Snap { "/member" } else { "/name" };
    let pos = second.value_pos(name_ptr);
    let fpos = first.value_pos(name_ptr);
    Diagnostic {
        file: second.file.clone(),
        line: pos.line,
        column: pos.column,
        object: Some(oref.to_string()),
        path: name_ptr.into(),
        rule: Rule::Duplicate,
        message: format!("duplicate {}: already declared at {}:{}:{}", oref.kind, first.file, fpos.line, fpos.column),
        hint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "kind: Cluster\nname: c\nendpoints: [\"https://127.0.0.1:8443\"]\nfingerprint: \"0000000000000000000000000000000000000000000000000000000000000000\"\ncredentials: c\n";

    #[test]
    fn config_scalars_become_lxd_strings() {
        let (fleet, diags) = load_texts(&[
            ("c.yaml", CLUSTER),
            ("i.yaml", "kind: Instance\ncluster: c\nname: i1\nconfig:\n  limits.cpu: 2\n  security.nesting: true\n"),
        ]);
        assert!(diags.is_empty(), "{diags:?}");
        let i = &fleet.desired.clusters["c"].objects.instances["default/i1"];
        assert_eq!(i.config["limits.cpu"], "2");
        assert_eq!(i.config["security.nesting"], "true");
    }

    #[test]
    fn duplicates_point_at_the_second_name() {
        let (_, diags) = load_texts(&[
            ("c.yaml", CLUSTER),
            ("p.yaml", "kind: Profile\ncluster: c\nname: p\n---\nkind: Profile\ncluster: c\nname: p\n"),
        ]);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].line, diags[0].column), (7, 7));
        assert!(diags[0].message.contains("duplicate Profile: already declared at p.yaml:3:7"));
    }

    #[test]
    fn same_name_in_two_projects_is_fine() {
        let (fleet, diags) = load_texts(&[
            ("c.yaml", CLUSTER),
            ("p.yaml", "kind: Profile\ncluster: c\nname: p\n---\nkind: Profile\ncluster: c\nproject: web\nname: p\n"),
        ]);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(fleet.desired.clusters["c"].objects.profiles.len(), 2);
    }

    #[test]
    fn unknown_and_missing_kinds() {
        let (_, diags) = load_texts(&[("a.yaml", "kind: Pod\nname: x\n---\nname: y\n---\n- 1\n")]);
        let msgs: Vec<_> = diags.iter().map(|d| (d.line, d.message.as_str())).collect();
        assert_eq!(
            msgs,
            vec![
                (1, "unknown kind `Pod`"),
                (4, "missing `kind`"),
                (6, "a fleet document must be a mapping with a `kind`")
            ]
        );
    }

    #[test]
    fn repo_paths_stay_inside() {
        assert_eq!(repo_path("a/b/c.yaml", "x.crt").as_deref(), Some("a/b/x.crt"));
        assert_eq!(repo_path("a/b/c.yaml", "../x.crt").as_deref(), Some("a/x.crt"));
        assert_eq!(repo_path("a/c.yaml", "../../x.crt"), None);
        assert_eq!(repo_path("a/c.yaml", "/etc/passwd"), None);
    }

    #[test]
    fn private_keys_are_refused() {
        assert!(pem_fingerprint("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
            .unwrap_err()
            .contains("private key"));
        assert!(pem_fingerprint("hello").is_err());
    }
}
