//! JSON Schema checks of fleet documents, one schema per kind.
//!
//! Owns: the schemas compiled into the binary from `schema/*.json` (the same files
//! editors use), and turning schema violations into positioned diagnostics. Must
//! not: check references between objects (see `semantic`).

use super::diagnostic::{Diagnostic, Rule};
use super::yaml::{escape_pointer_token, Document};
use crate::model::Kind;
use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

/// The schema text of a kind, as shipped in `schema/`.
pub fn schema_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Cluster => include_str!("../../schema/cluster.json"),
        Kind::Member => include_str!("../../schema/member.json"),
        Kind::ClusterGroup => include_str!("../../schema/cluster-group.json"),
        Kind::Project => include_str!("../../schema/project.json"),
        Kind::StoragePool => include_str!("../../schema/storage-pool.json"),
        Kind::Network => include_str!("../../schema/network.json"),
        Kind::Profile => include_str!("../../schema/profile.json"),
        Kind::Image => include_str!("../../schema/image.json"),
        Kind::Instance => include_str!("../../schema/instance.json"),
        Kind::Certificate => include_str!("../../schema/certificate.json"),
        Kind::Snap => include_str!("../../schema/snap.json"),
    }
}

fn validators() -> &'static HashMap<Kind, Validator> {
    static V: OnceLock<HashMap<Kind, Validator>> = OnceLock::new();
    V.get_or_init(|| {
        Kind::ALL
            .into_iter()
            .map(|k| {
                let schema: Value = serde_json::from_str(schema_text(k))
                    .unwrap_or_else(|e| panic!("schema/{} is not JSON: {e}", k.schema_file()));
                let v = jsonschema::draft202012::new(&schema)
                    .unwrap_or_else(|e| panic!("schema/{} does not compile: {e}", k.schema_file()));
                (k, v)
            })
            .collect()
    })
}

/// Fields LXD prints that are read-only; operators paste them from `lxc ... show`.
const READ_ONLY_FIELDS: &[&str] = &[
    "used_by",
    "expanded_config",
    "expanded_devices",
    "created_at",
    "last_used_at",
    "uploaded_at",
    "status",
    "status_code",
    "location",
    "managed",
    "locations",
    "stateful",
    "architecture",
    "database",
    "url",
    "message",
    "cached",
    "size",
    "filename",
    "update_source",
    "base_image",
];

/// Checks `doc` against the schema of `kind`; one diagnostic per violation.
pub fn check(kind: Kind, doc: &Document, file: &str, object: Option<&str>) -> Vec<Diagnostic> {
    let validator = &validators()[&kind];
    let mut out = Vec::new();
    for err in validator.iter_errors(&doc.value) {
        let path = err.instance_path().as_str().to_string();
        let (pos, message, hint, path) = match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for field in unexpected {
                    let p = format!("{path}/{}", escape_pointer_token(field));
                    let hint = if READ_ONLY_FIELDS.contains(&field.as_str()) {
                        Some(format!("`{field}` is a read-only field LXD prints; remove it from the fleet file"))
                    } else {
                        Some(format!("allowed here: see schema/{}", kind.schema_file()))
                    };
                    out.push(diag(file, doc.key_pos(&p), object, p, format!("unknown field `{field}`"), hint));
                }
                continue;
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or("?");
                let at = first_key_pointer(doc, &path).unwrap_or_else(|| path.clone());
                (doc.key_pos(&at), format!("missing required field `{name}`"), None, path)
            }
            ValidationErrorKind::PropertyNames { error } => {
                // The offending name is the failing instance of the inner error.
                let bad = error.instance().as_str().unwrap_or("?").to_string();
                let p = format!("{path}/{}", escape_pointer_token(&bad));
                let hint = if bad.starts_with("volatile.") || bad.starts_with("image.") {
                    Some("`volatile.*` and `image.*` keys are written by LXD itself; remove it".to_string())
                } else {
                    None
                };
                (doc.key_pos(&p), format!("key `{bad}` is not allowed here: {}", error), hint, p)
            }
            _ => (doc.value_pos(&path), err.to_string(), None, path),
        };
        out.push(diag(file, pos, object, path, message, hint));
    }
    out
}

/// The first key of the mapping at `pointer`, so "missing field" points at the object.
fn first_key_pointer(doc: &Document, pointer: &str) -> Option<String> {
    let obj = doc.value.pointer(pointer)?.as_object()?;
    obj.keys().map(|k| format!("{pointer}/{}", escape_pointer_token(k))).min_by_key(|p| doc.key_pos(p))
}

fn diag(
    file: &str,
    pos: super::yaml::Pos,
    object: Option<&str>,
    path: String,
    message: String,
    hint: Option<String>,
) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        object: object.map(str::to_string),
        path,
        rule: Rule::Schema,
        message,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::yaml::parse_documents;

    #[test]
    fn every_shipped_schema_compiles() {
        assert_eq!(validators().len(), Kind::ALL.len());
    }

    #[test]
    fn unknown_field_points_at_the_key_with_a_hint() {
        let doc = &parse_documents("kind: Profile\ncluster: c\nname: p\nused_by: []\n").unwrap()[0];
        let diags = check(Kind::Profile, doc, "p.yaml", Some("Profile/default/p"));
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].line, diags[0].column), (4, 1));
        assert!(diags[0].message.contains("unknown field `used_by`"));
        assert!(diags[0].hint.as_deref().unwrap().contains("read-only"));
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let doc = &parse_documents("kind: Instance\ncluster: c\nname: i\nephemeral: \"yes\"\n").unwrap()[0];
        let diags = check(Kind::Instance, doc, "i.yaml", None);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].line, diags[0].column), (4, 12));
        assert_eq!(diags[0].path, "/ephemeral");
    }

    #[test]
    fn missing_required_points_at_the_object() {
        let doc = &parse_documents("kind: Instance\ncluster: c\n").unwrap()[0];
        let diags = check(Kind::Instance, doc, "i.yaml", None);
        assert!(diags.iter().any(|d| d.message.contains("`name`") && d.line == 1), "{diags:?}");
    }
}
