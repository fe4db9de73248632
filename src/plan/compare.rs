//! Field-level comparison of like with like: config maps, devices, lists, and a
//! merge join of two sorted collections.
//!
//! Owns: turning two values into `FieldChange`s without allocating when they are
//! equal (the common case: most of a large cluster has no drift). Must not: know
//! which keys a kind ignores or keeps: callers pass those rules in.

use super::model::FieldChange;
use crate::model::{ConfigMap, Devices};
use serde_json::Value;
use std::collections::btree_map;
use std::collections::BTreeMap;
use std::iter::Peekable;

/// One key of a merge join: only desired, only live, or both.
pub(crate) enum Pair<'a, A, B> {
    Desired(&'a A),
    Live(&'a B),
    Both(&'a A, &'a B),
}

/// Walks two maps with the same key order together, in key order. Linear, no lookups.
pub(crate) struct Join<'a, K, A, B> {
    a: Peekable<btree_map::Iter<'a, K, A>>,
    b: Peekable<btree_map::Iter<'a, K, B>>,
}

pub(crate) fn join<'a, K: Ord, A, B>(
    desired: &'a BTreeMap<K, A>,
    live: &'a BTreeMap<K, B>,
) -> Join<'a, K, A, B> {
    Join {
        a: desired.iter().peekable(),
        b: live.iter().peekable(),
    }
}

impl<'a, K: Ord, A, B> Iterator for Join<'a, K, A, B> {
    type Item = (&'a K, Pair<'a, A, B>);

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering::*;
        let order = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            Less => {
                let (k, a) = self.a.next()?;
                Some((k, Pair::Desired(a)))
            }
            Greater => {
                let (k, b) = self.b.next()?;
                Some((k, Pair::Live(b)))
            }
            Equal => {
                let (k, a) = self.a.next()?;
                let (_, b) = self.b.next()?;
                Some((k, Pair::Both(a, b)))
            }
        }
    }
}

pub(crate) fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

pub(crate) fn config_value(m: &ConfigMap) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

pub(crate) fn list_value<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(items.iter().map(|s| string(s.as_ref())).collect())
}

pub(crate) fn change(
    path: impl Into<String>,
    before: Option<Value>,
    after: Option<Value>,
) -> FieldChange {
    FieldChange {
        path: path.into(),
        before,
        after,
    }
}

/// How a config map of one kind is compared.
#[derive(Clone, Copy)]
pub(crate) struct MapRules {
    /// Keys compared on neither side (LXD-written keys, the owner marker).
    pub ignore: fn(&str) -> bool,
    /// Keys that live has and desired lacks, left alone instead of removed. `|_| true`
    /// gives merge semantics (only declared keys are managed).
    pub keep_live_only: fn(&str) -> bool,
}

pub(crate) fn never(_: &str) -> bool {
    false
}
pub(crate) fn always(_: &str) -> bool {
    true
}

impl MapRules {
    /// Only keys desired declares are managed.
    pub const MERGE: MapRules = MapRules {
        ignore: never,
        keep_live_only: always,
    };
}

/// Appends one change per differing key, path `<prefix>.<key>`.
pub(crate) fn diff_map(
    prefix: &str,
    desired: &ConfigMap,
    live: &ConfigMap,
    rules: MapRules,
    out: &mut Vec<FieldChange>,
) {
    for (key, pair) in join(desired, live) {
        if (rules.ignore)(key) {
            continue;
        }
        match pair {
            Pair::Both(d, l) => {
                if d != l {
                    out.push(change(
                        format!("{prefix}.{key}"),
                        Some(string(l)),
                        Some(string(d)),
                    ));
                }
            }
            Pair::Desired(d) => out.push(change(format!("{prefix}.{key}"), None, Some(string(d)))),
            Pair::Live(l) => {
                if !(rules.keep_live_only)(key) {
                    out.push(change(format!("{prefix}.{key}"), Some(string(l)), None));
                }
            }
        }
    }
}

/// Devices are authoritative and compared whole: one change per differing device.
pub(crate) fn diff_devices(
    prefix: &str,
    desired: &Devices,
    live: &Devices,
    out: &mut Vec<FieldChange>,
) {
    for (name, pair) in join(desired, live) {
        match pair {
            Pair::Both(d, l) => {
                if d != l {
                    out.push(change(
                        format!("{prefix}.{name}"),
                        Some(config_value(l)),
                        Some(config_value(d)),
                    ));
                }
            }
            Pair::Desired(d) => out.push(change(
                format!("{prefix}.{name}"),
                None,
                Some(config_value(d)),
            )),
            Pair::Live(l) => out.push(change(
                format!("{prefix}.{name}"),
                Some(config_value(l)),
                None,
            )),
        }
    }
}

/// A string field; empty strings count as absent.
pub(crate) fn diff_str(path: &str, desired: &str, live: &str, out: &mut Vec<FieldChange>) {
    if desired != live {
        let v = |s: &str| (!s.is_empty()).then(|| string(s));
        out.push(change(path, v(live), v(desired)));
    }
}

pub(crate) fn diff_bool(path: &str, desired: bool, live: bool, out: &mut Vec<FieldChange>) {
    if desired != live {
        out.push(change(
            path,
            Some(Value::Bool(live)),
            Some(Value::Bool(desired)),
        ));
    }
}

/// Lists whose order does not matter (roles, groups, projects).
pub(crate) fn diff_set(
    path: &str,
    desired: &[String],
    live: &[String],
    out: &mut Vec<FieldChange>,
) {
    let mut d: Vec<&str> = desired.iter().map(String::as_str).collect();
    let mut l: Vec<&str> = live.iter().map(String::as_str).collect();
    d.sort_unstable();
    d.dedup();
    l.sort_unstable();
    l.dedup();
    if d != l {
        out.push(change(path, Some(list_value(&l)), Some(list_value(&d))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> ConfigMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn merge_join_visits_every_key_once_in_order() {
        let a = m(&[("a", "1"), ("c", "3")]);
        let b = m(&[("b", "2"), ("c", "4")]);
        let got: Vec<String> = join(&a, &b)
            .map(|(k, p)| match p {
                Pair::Desired(_) => format!("d:{k}"),
                Pair::Live(_) => format!("l:{k}"),
                Pair::Both(_, _) => format!("b:{k}"),
            })
            .collect();
        assert_eq!(got, ["d:a", "l:b", "b:c"]);
    }

    #[test]
    fn authoritative_maps_remove_live_only_keys_but_not_ignored_ones() {
        let rules = MapRules {
            ignore: |k| k.starts_with("volatile."),
            keep_live_only: never,
        };
        let d = m(&[("limits.cpu", "2")]);
        let l = m(&[("limits.cpu", "1"), ("volatile.uuid", "x"), ("user.x", "y")]);
        let mut out = Vec::new();
        diff_map("config", &d, &l, rules, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].path, "config.limits.cpu");
        assert_eq!(out[1].path, "config.user.x");
        assert_eq!(out[1].after, None);
        out.clear();
        diff_map(
            "config",
            &d,
            &m(&[("limits.cpu", "2"), ("volatile.a", "b")]),
            rules,
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn merge_maps_leave_undeclared_keys() {
        let mut out = Vec::new();
        diff_map(
            "c",
            &m(&[("a", "1")]),
            &m(&[("a", "1"), ("b", "2")]),
            MapRules::MERGE,
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn sets_ignore_order() {
        let mut out = Vec::new();
        diff_set(
            "groups",
            &["b".into(), "a".into()],
            &["a".into(), "b".into()],
            &mut out,
        );
        assert!(out.is_empty());
    }
}
