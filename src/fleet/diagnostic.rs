//! Problems found in a fleet repository, and how they are printed.
//!
//! Owns: the `Diagnostic` value (file, line, column, object, JSON path, rule,
//! message, hint), its sort order and its text and JSON renderings. Must not: find
//! problems (the loader, schema and semantic checks do that).

use serde::Serialize;
use std::fmt;

/// Which check found a problem; stable names for `--format json` consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The file could not be read or is not UTF-8.
    Read,
    /// YAML syntax.
    Syntax,
    /// A document is not an object, or its `kind` is missing or unknown.
    Kind,
    /// The JSON Schema of the kind.
    Schema,
    /// Two objects with the same identity.
    Duplicate,
    /// A reference to an object that does not exist.
    Reference,
    /// A rule about values the schema cannot express (cron lines, PEM, keys).
    Value,
}

/// One problem, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Path relative to the repository root, `/`-separated.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// `Kind/name` (or `Kind/project/name`) when the problem belongs to an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// JSON pointer of the offending node inside its document.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub rule: Rule,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    fn sort_key(&self) -> (&str, usize, usize, &str) {
        (&self.file, self.line, self.column, &self.message)
    }
}

impl PartialOrd for Diagnostic {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Diagnostic {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        write!(f, "{}", self.message)?;
        if !self.path.is_empty() {
            write!(f, " (at {})", self.path)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

/// Sorts and removes exact repeats, so output is stable whatever order checks ran in.
pub fn finish(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort();
    diags.dedup();
    diags
}

/// All diagnostics as text, one per line (hints indented below).
pub fn render_text(diags: &[Diagnostic]) -> String {
    let mut s = String::new();
    for d in diags {
        s.push_str(&d.to_string());
        s.push('\n');
    }
    s
}

/// All diagnostics as a JSON array.
pub fn render_json(diags: &[Diagnostic]) -> String {
    serde_json::to_string_pretty(diags).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(file: &str, line: usize, msg: &str) -> Diagnostic {
        Diagnostic {
            file: file.into(),
            line,
            column: 1,
            object: Some("Instance/web/w1".into()),
            path: "/config".into(),
            rule: Rule::Schema,
            message: msg.into(),
            hint: Some("try this".into()),
        }
    }

    #[test]
    fn sorted_by_file_then_line() {
        let out = finish(vec![d("b.yaml", 1, "x"), d("a.yaml", 9, "y"), d("a.yaml", 2, "z"), d("a.yaml", 2, "z")]);
        let order: Vec<_> = out.iter().map(|d| (d.file.as_str(), d.line)).collect();
        assert_eq!(order, vec![("a.yaml", 2), ("a.yaml", 9), ("b.yaml", 1)]);
    }

    #[test]
    fn text_form_is_file_line_column_object_message() {
        let s = d("a.yaml", 3, "boom").to_string();
        assert_eq!(s, "a.yaml:3:1: Instance/web/w1: boom (at /config)\n    hint: try this");
    }

    #[test]
    fn json_form_names_the_rule() {
        let s = render_json(&[d("a.yaml", 3, "boom")]);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v[0]["rule"], "schema");
        assert_eq!(v[0]["line"], 3);
    }
}
