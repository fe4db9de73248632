//! Renderers: a `Plan` in, text out: for a terminal (`text`), for a pull-request
//! comment (`markdown`), for machines (`json`).
//!
//! Owns: how a plan looks, and the pieces the renderers share (markers, summary
//! wording, value formatting, unified diffs of multi-line values). Must not: decide
//! anything about the plan, or do IO; renderers print what the planner decided.

pub mod json;
pub mod markdown;
pub mod text;

pub use json::json;
pub use markdown::{markdown, MarkdownOptions};
pub use text::{text, TextOptions};

use super::model::{Action, FieldChange, Plan};
use serde_json::Value;

/// One-character marker of an action: `+` create, `~` update, `-` delete, `>` other.
pub(crate) fn marker(action: Action) -> char {
    match action {
        Action::Create => '+',
        Action::Update => '~',
        Action::Delete | Action::RemoveMember => '-',
        _ => '>',
    }
}

/// The action as words (`remove member`).
pub(crate) fn verb(action: Action) -> String {
    action.as_str().replace('_', " ")
}

/// "Plan for cluster X: N to create, ..." or "No changes. ...".
pub fn summary(plan: &Plan) -> String {
    summary_line(plan)
}

pub(crate) fn summary_line(plan: &Plan) -> String {
    if plan.is_empty() && !plan.incomplete.is_empty() {
        return format!(
            "No changes in what could be read, but cluster {} could not be read completely ({}).",
            plan.cluster,
            plan.incomplete.join("; ")
        );
    }
    if plan.is_empty() {
        return format!("No changes. Cluster {} matches the fleet.", plan.cluster);
    }
    let c = plan.counts();
    format!(
        "Plan for cluster {}: {} to create, {} to update, {} to delete, {} other",
        plan.cluster, c.create, c.update, c.delete, c.other
    )
}

/// A value on one line: strings JSON-quoted, absent as `(none)`.
pub(crate) fn inline(v: Option<&Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// Whether a value is shown as lines (multi-line strings, maps) rather than inline.
fn is_multiline(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => s.contains('\n'),
        Some(Value::Object(_)) => true,
        _ => false,
    }
}

/// The lines a multi-line value is diffed as: a string's own lines, a map's
/// `key: value` lines.
fn as_lines(v: Option<&Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::String(s)) => {
            let mut s = s.clone();
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        }
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}\n"),
                other => format!("{k}: {other}\n"),
            })
            .collect(),
        Some(other) => format!("{other}\n"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    Same,
    Removed,
    Added,
    Hunk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiffLine {
    pub kind: LineKind,
    pub text: String,
}

/// How one field change is shown.
pub(crate) enum Shown {
    /// `path: before → after`
    Inline { path: String, before: String, after: String },
    /// `path:` followed by a unified diff of the two values.
    Block { path: String, lines: Vec<DiffLine> },
}

pub(crate) fn show(change: &FieldChange) -> Shown {
    let (b, a) = (change.before.as_ref(), change.after.as_ref());
    if !is_multiline(b) && !is_multiline(a) {
        return Shown::Inline { path: change.path.clone(), before: inline(b), after: inline(a) };
    }
    let (old, new) = (as_lines(b), as_lines(a));
    let diff = similar::TextDiff::from_lines(&old, &new);
    let mut lines = Vec::new();
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        lines.push(DiffLine { kind: LineKind::Hunk, text: hunk.header().to_string() });
        for c in hunk.iter_changes() {
            let kind = match c.tag() {
                similar::ChangeTag::Equal => LineKind::Same,
                similar::ChangeTag::Delete => LineKind::Removed,
                similar::ChangeTag::Insert => LineKind::Added,
            };
            lines.push(DiffLine { kind, text: c.value().trim_end_matches('\n').to_string() });
        }
    }
    Shown::Block { path: change.path.clone(), lines }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! One small fixed plan, shared by the renderers' snapshot tests.
    use crate::model::*;
    use crate::plan::model::*;
    use serde_json::json;

    pub fn plan() -> Plan {
        let step = |id: &str, object: ObjectRef, action: Action, reason: &str| Step {
            id: id.into(),
            object,
            action,
            changes: vec![],
            reason: reason.into(),
            flags: vec![],
            depends_on: vec![],
            etag: None,
            live_digest: None,
            desired: None,
            live: None,
        };
        let mut create = step(
            "projects/create/Project/web",
            ObjectRef::global(Kind::Project, "web"),
            Action::Create,
            "declared in the fleet, not in LXD",
        );
        create.desired = Some(
            json!({"name": "web", "description": "Web tier", "config": {"limits.instances": "10", "user.lxd-gitops.owner": "prod"}}),
        );
        create.changes = vec![
            FieldChange { path: "description".into(), before: None, after: Some(json!("Web tier")) },
            FieldChange { path: "config.limits.instances".into(), before: None, after: Some(json!("10")) },
        ];
        let mut update = step(
            "instances/update/Instance/web/w1",
            ObjectRef::in_project(Kind::Instance, "web", "w1"),
            Action::Update,
            "differs from the fleet; raw.lxc take(s) effect after a restart",
        );
        update.etag = Some("e1".into());
        update.flags = vec![Flag::RestartNeeded];
        update.changes = vec![
            FieldChange {
                path: "config.limits.memory".into(),
                before: Some(json!("1GiB")),
                after: Some(json!("2GiB")),
            },
            FieldChange {
                path: "config.raw.lxc".into(),
                before: Some(json!("lxc.apparmor.profile=unconfined\nlxc.mount.auto=proc:rw\n")),
                after: Some(json!("lxc.apparmor.profile=unconfined\nlxc.mount.auto=proc:rw sys:rw\n")),
            },
            FieldChange {
                path: "devices.eth0".into(),
                before: Some(json!({"name": "eth0", "network": "br0", "type": "nic"})),
                after: Some(json!({"name": "eth0", "network": "br1", "type": "nic"})),
            },
        ];
        let mut restart = step(
            "instances/restart/Instance/web/w1",
            ObjectRef::in_project(Kind::Instance, "web", "w1"),
            Action::Restart,
            "apply changes that need a restart",
        );
        restart.depends_on = vec![update.id.clone()];
        let mut held = step(
            "instances/move/Instance/web/w2",
            ObjectRef::in_project(Kind::Instance, "web", "w2"),
            Action::Move,
            "runs on `n1`, the fleet places it on `n2`",
        );
        held.flags = vec![Flag::MoveHeld];
        held.changes =
            vec![FieldChange { path: "location".into(), before: Some(json!("n1")), after: Some(json!("n2")) }];
        let mut delete = step(
            "prune/delete/Profile/web/old",
            ObjectRef::in_project(Kind::Profile, "web", "old"),
            Action::Delete,
            "owned by this fleet and no longer declared",
        );
        delete.flags = vec![Flag::Blocked("still used by instances: web/w3".into())];
        Plan {
            version: PLAN_FORMAT_VERSION,
            cluster: "prod".into(),
            phases: vec![
                Phase { kind: PhaseKind::Projects, steps: vec![create] },
                Phase { kind: PhaseKind::Instances, steps: vec![update, restart, held] },
                Phase { kind: PhaseKind::Prune, steps: vec![delete] },
            ],
            blocked: Some("refusing: this plan deletes 1 objects, more than policy.max_deletions = 0".into()),
            warnings: vec!["not managed: Instance/default/scratch (no owner marker)".into()],
            incomplete: vec![],
            live_digest: "0f".repeat(32),
        }
    }

    pub fn empty() -> Plan {
        Plan {
            version: PLAN_FORMAT_VERSION,
            cluster: "prod".into(),
            phases: vec![],
            blocked: None,
            warnings: vec![],
            incomplete: vec![],
            live_digest: "0f".repeat(32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_and_multiline_strings_become_unified_diffs() {
        let c = FieldChange { path: "devices.eth0".into(), before: None, after: Some(json!({"type": "nic"})) };
        match show(&c) {
            Shown::Block { lines, .. } => {
                assert_eq!(lines[0].kind, LineKind::Hunk);
                assert_eq!(lines[1], DiffLine { kind: LineKind::Added, text: "type: nic".into() });
            }
            Shown::Inline { .. } => panic!("maps are blocks"),
        }
        let c = FieldChange { path: "config.limits.cpu".into(), before: Some(json!("1")), after: None };
        assert!(
            matches!(show(&c), Shown::Inline { ref before, ref after, .. } if before == "\"1\"" && after == "(none)")
        );
    }

    #[test]
    fn summary_wording() {
        assert_eq!(summary_line(&fixture::empty()), "No changes. Cluster prod matches the fleet.");
        assert_eq!(
            summary_line(&fixture::plan()),
            "Plan for cluster prod: 1 to create, 1 to update, 1 to delete, 2 other"
        );
    }
}
