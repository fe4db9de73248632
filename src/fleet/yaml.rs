//! YAML text to JSON values that remember where every node came from.
//!
//! Owns: parsing one fleet file (possibly several `---` documents) with saphyr,
//! turning each document into a `serde_json::Value` plus a map from JSON pointer to
//! the line and column of the node (and of its key, for mapping entries), so that
//! schema and semantic errors can name `file:line:column`. Must not: know kinds,
//! schemas or the model; panic on any input.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// Nesting deeper than this is refused: fleet objects are shallow, and a bound
/// keeps hostile input from exhausting the stack.
const MAX_DEPTH: usize = 64;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where a node is: its value, and for mapping entries also its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePos {
    pub value: Pos,
    pub key: Option<Pos>,
}

/// One YAML document of a file, as JSON, with positions by JSON pointer ("" is the root).
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    pub positions: HashMap<String, NodePos>,
    /// Position of the document's start (its first node).
    pub start: Pos,
}

impl Document {
    /// Position of the value at `pointer`, or of its nearest ancestor that has one.
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.lookup(pointer).map(|n| n.value).unwrap_or(self.start)
    }

    /// Position of the key of the entry at `pointer` (falls back to the value).
    pub fn key_pos(&self, pointer: &str) -> Pos {
        self.lookup(pointer).map(|n| n.key.unwrap_or(n.value)).unwrap_or(self.start)
    }

    fn lookup(&self, pointer: &str) -> Option<&NodePos> {
        let mut p = pointer;
        loop {
            if let Some(n) = self.positions.get(p) {
                return Some(n);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }
}

/// A problem found while reading YAML: always with a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// Parses all documents of `text`. Empty documents (only comments) are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, YamlError> {
    refuse_aliases(text)?;
    // saphyr has internal `expect`s; a panic there must become an error, not a crash.
    let parsed = std::panic::catch_unwind(|| MarkedYaml::load_from_str(text));
    let docs = match parsed {
        Ok(Ok(docs)) => docs,
        Ok(Err(e)) => {
            let m = e.marker();
            return Err(YamlError {
                pos: clamp_to_text(text, Pos { line: m.line().max(1), column: m.col() + 1 }),
                message: format!("YAML syntax error: {}", e.info()),
            });
        }
        Err(_) => {
            return Err(YamlError {
                pos: Pos { line: 1, column: 1 },
                message: "YAML syntax error: the parser could not read this file".into(),
            })
        }
    };
    let mut out = Vec::with_capacity(docs.len());
    for doc in &docs {
        if matches!(doc.data, YamlData::Value(Scalar::Null)) && doc.span.start.index() == doc.span.end.index() {
            continue;
        }
        let mut positions = HashMap::new();
        let value = convert(doc, String::new(), None, 0, &mut positions)?;
        if value.is_null() {
            continue;
        }
        out.push(Document { value, positions, start: pos_of(doc) });
    }
    Ok(out)
}

/// Errors at the end of input can be reported past the last line; point at the
/// end of the last line instead, so editors can jump there. Lines end as YAML says
/// (LF, CRLF or a lone CR), as in the positions saphyr reports.
fn clamp_to_text(text: &str, pos: Pos) -> Pos {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text.split(['\n', '\r']).collect();
    if pos.line <= lines.len() {
        return pos;
    }
    let last = lines.iter().rposition(|l| !l.is_empty()).unwrap_or(0);
    Pos { line: last + 1, column: lines[last].chars().count() + 1 }
}

/// saphyr expands aliases by copying the anchored node, so a few lines of hostile
/// YAML ("billion laughs") could take all memory. Fleet files never need them: a
/// streaming pass over the parser's events refuses them before anything is built.
fn refuse_aliases(text: &str) -> Result<(), YamlError> {
    let scan = std::panic::catch_unwind(|| {
        for ev in saphyr_parser::Parser::new_from_str(text) {
            match ev {
                Ok((saphyr_parser::Event::Alias(_), span)) => {
                    return Some(Pos { line: span.start.line().max(1), column: span.start.col() + 1 })
                }
                Ok(_) => {}
                // Syntax errors are reported by the full parse with the same position.
                Err(_) => return None,
            }
        }
        None
    });
    match scan {
        Ok(Some(pos)) => Err(YamlError {
            pos,
            message: "YAML aliases (*name) are not supported in fleet files: write the value out".into(),
        }),
        _ => Ok(()),
    }
}

fn pos_of(node: &MarkedYaml) -> Pos {
    Pos { line: node.span.start.line().max(1), column: node.span.start.col() + 1 }
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
pub fn escape_pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn convert(
    node: &MarkedYaml,
    pointer: String,
    key_pos: Option<Pos>,
    depth: usize,
    positions: &mut HashMap<String, NodePos>,
) -> Result<Value, YamlError> {
    let here = pos_of(node);
    if depth > MAX_DEPTH {
        return Err(YamlError { pos: here, message: format!("nesting deeper than {MAX_DEPTH} levels") });
    }
    positions.insert(pointer.clone(), NodePos { value: here, key: key_pos });
    Ok(match &node.data {
        YamlData::Value(s) => scalar_to_json(s),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Tagged(_, inner) => {
            // Tags (`!!str` ...) are accepted and ignored: the schema decides types.
            return convert(inner, pointer, key_pos, depth + 1, positions);
        }
        YamlData::Sequence(items) => {
            let mut arr = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                arr.push(convert(item, format!("{pointer}/{i}"), None, depth + 1, positions)?);
            }
            Value::Array(arr)
        }
        YamlData::Mapping(map) => {
            let mut obj = Map::new();
            for (k, v) in map.iter() {
                let key = key_string(k)?;
                let child = format!("{pointer}/{}", escape_pointer_token(&key));
                let value = convert(v, child, Some(pos_of(k)), depth + 1, positions)?;
                obj.insert(key, value);
            }
            Value::Object(obj)
        }
        YamlData::Alias(_) => {
            return Err(YamlError {
                pos: here,
                message: "YAML aliases (*name) are not supported in fleet files: write the value out".into(),
            })
        }
        YamlData::BadValue => return Err(YamlError { pos: here, message: "invalid YAML value".into() }),
    })
}

fn key_string(k: &MarkedYaml) -> Result<String, YamlError> {
    match &k.data {
        YamlData::Value(Scalar::String(s)) => Ok(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Ok(i.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Ok(b.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Ok(f.to_string()),
        YamlData::Value(Scalar::Null) => Ok("null".into()),
        YamlData::Representation(text, _, _) => Ok(text.to_string()),
        YamlData::Tagged(_, inner) => key_string(inner),
        _ => Err(YamlError { pos: pos_of(k), message: "mapping keys must be plain scalars".into() }),
    }
}

fn scalar_to_json(s: &Scalar) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => match Number::from_f64(f.into_inner()) {
            Some(n) => Value::Number(n),
            None => Value::String(f.into_inner().to_string()),
        },
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positions_point_at_keys_and_values() {
        let text = "kind: Profile\nname: base\nconfig:\n  limits.memory: 1GiB\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        let d = &docs[0];
        assert_eq!(d.value, json!({"kind": "Profile", "name": "base", "config": {"limits.memory": "1GiB"}}));
        assert_eq!(d.value_pos("/name"), Pos { line: 2, column: 7 });
        assert_eq!(d.key_pos("/config/limits.memory"), Pos { line: 4, column: 3 });
        assert_eq!(d.value_pos("/config/limits.memory"), Pos { line: 4, column: 18 });
        // An unknown pointer falls back to the nearest ancestor.
        assert_eq!(d.value_pos("/config/limits.memory/x"), Pos { line: 4, column: 18 });
    }

    #[test]
    fn multi_document_files_keep_their_own_positions() {
        let text = "# comment\nkind: A\n---\nkind: B\nname: x\n---\n# only a comment\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value_pos("/name"), Pos { line: 5, column: 7 });
        assert_eq!(docs[1].start.line, 4);
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = parse_documents("kind: Profile\nconfig: [a, b\nname: x\n").unwrap_err();
        assert!(err.message.contains("YAML syntax error"), "{}", err.message);
        assert!(err.pos.line >= 2, "{:?}", err.pos);
    }

    #[test]
    fn lone_cr_ends_a_line_in_error_positions_too() {
        // Seen after a fuzz/fleet_loader crash: saphyr counts a lone CR as a line break;
        // clamping to the text counted only LF, so this error moved to the end of line 1.
        let lf = "kind: Cluster\nname: lab\nfingerprint: [\n";
        let want = parse_documents(lf).unwrap_err().pos;
        assert_eq!(parse_documents(&lf.replace('\n', "\r")).unwrap_err().pos, want);
        assert_eq!(parse_documents(&lf.replace('\n', "\r\n")).unwrap_err().pos, want);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse_documents("name: a\nname: b\n").unwrap_err();
        assert!(err.message.contains("duplicated key"), "{}", err.message);
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn aliases_are_refused_with_a_position() {
        let err = parse_documents("a: &x 1\nb: *x\n").unwrap_err();
        assert!(err.message.contains("aliases"), "{}", err.message);
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn yaml_1_2_scalars() {
        let docs = parse_documents("a: yes\nb: true\nc: 12\nd: 1.5\ne: ~\nf: '12'\n").unwrap();
        assert_eq!(docs[0].value, json!({"a": "yes", "b": true, "c": 12, "d": 1.5, "e": null, "f": "12"}));
    }
}
