//! Did someone else change an object between plan and apply?
//!
//! Owns: comparing the fields an update step writes, as LXD returns them right
//! before the write, with the same fields as the plan read them. An update PUTs
//! whole maps (config, devices), so writing over a change the plan never saw would
//! silently undo it — an operator's `lxc config set` between plan and apply, say.
//! When those fields moved, the step is a conflict: nothing is written and the
//! caller plans again from what is live now. Covers the kinds whose GET is the
//! object the planner compared (instances, profiles, projects); the others rely on
//! `If-Match` between their GET and PUT. Must not: talk to LXD (pure).

use crate::lxd::convert;
use crate::model::Kind;
use crate::plan::Step;
use serde_json::Value;

/// The fields of `kind` an update writes in full.
fn written_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Instance => &["description", "config", "devices", "profiles", "ephemeral"],
        Kind::Profile => &["description", "config", "devices"],
        Kind::Project => &["description", "config"],
        _ => &[],
    }
}

/// `fresh` (LXD's JSON for the object, just read) in the model's vocabulary.
fn as_model(kind: Kind, project: &str, fresh: &Value) -> Option<Value> {
    let v = match kind {
        Kind::Instance => serde_json::to_value(convert::instance(fresh)),
        Kind::Profile => serde_json::to_value(convert::profile(fresh, project)),
        Kind::Project => serde_json::to_value(convert::project(fresh)),
        _ => return None,
    };
    v.ok()
}

/// The written fields (`config.limits.cpu`, `devices.eth0`, `profiles`, ...) that
/// differ between the plan's view of `step`'s object and `fresh`. Empty when
/// nothing the step writes moved, or when the step carries no live view to check.
pub fn moved_since_plan(step: &Step, fresh: &Value) -> Vec<String> {
    let fields = written_fields(step.object.kind);
    let (Some(planned), false) = (step.live.as_ref(), fields.is_empty()) else { return Vec::new() };
    let project = step.object.project.as_deref().unwrap_or("default");
    let Some(now) = as_model(step.object.kind, project, fresh) else { return Vec::new() };
    let mut moved = Vec::new();
    let empty = serde_json::Map::new();
    for f in fields {
        let (a, b) = (planned.get(*f), now.get(*f));
        if same(a, b) {
            continue;
        }
        match (as_map(a, b, &empty), as_map(b, a, &empty)) {
            (Some(a), Some(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                moved.extend(keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(|k| format!("{f}.{k}")));
            }
            _ => moved.push((*f).to_string()),
        }
    }
    moved
}

/// `v` as a map; a missing map (the model skips empty ones) is `empty` when
/// `other` is a map.
fn as_map<'v>(
    v: Option<&'v Value>,
    other: Option<&Value>,
    empty: &'v serde_json::Map<String, Value>,
) -> Option<&'v serde_json::Map<String, Value>> {
    match v {
        None if other.is_some_and(Value::is_object) => Some(empty),
        v => v.and_then(Value::as_object),
    }
}

/// Equal, where a missing field equals its empty default (the model skips empty
/// maps, strings and `false` when it serializes).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let empty = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Bool(b)) => !b,
        _ => false,
    };
    a == b || (empty(a) && empty(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectRef;
    use crate::plan::Action;
    use serde_json::json;

    fn step(kind: Kind, live: Value) -> Step {
        let object = match kind {
            Kind::Project => ObjectRef::global(kind, "p"),
            _ => ObjectRef::in_project(kind, "default", "c1"),
        };
        Step {
            id: "s".into(),
            object,
            action: Action::Update,
            changes: vec![],
            reason: String::new(),
            flags: vec![],
            depends_on: vec![],
            etag: None,
            live_digest: None,
            desired: None,
            live: Some(live),
        }
    }

    fn lxd_instance(config: Value) -> Value {
        json!({"name": "c1", "project": "default", "type": "container", "status": "Stopped",
               "location": "node1", "profiles": ["default"], "config": config, "devices": {},
               "ephemeral": false, "description": ""})
    }

    fn planned(config: Value) -> Value {
        serde_json::to_value(convert::instance(&lxd_instance(config))).unwrap()
    }

    #[test]
    fn an_unchanged_object_has_not_moved_even_when_lxd_volatile_keys_and_status_did() {
        let s = step(Kind::Instance, planned(json!({"limits.cpu": "1", "volatile.idmap.base": "0"})));
        let mut fresh = lxd_instance(json!({"limits.cpu": "1", "volatile.idmap.base": "1000", "volatile.x": "y"}));
        fresh["status"] = json!("Running");
        fresh["location"] = json!("node2");
        assert_eq!(moved_since_plan(&s, &fresh), Vec::<String>::new());
    }

    #[test]
    fn a_key_set_or_changed_by_someone_else_is_named() {
        let s = step(Kind::Instance, planned(json!({"limits.cpu": "1"})));
        let fresh = lxd_instance(json!({"limits.cpu": "2", "user.note": "by hand"}));
        assert_eq!(moved_since_plan(&s, &fresh), vec!["config.limits.cpu", "config.user.note"]);
        let mut fresh = lxd_instance(json!({"limits.cpu": "1"}));
        fresh["profiles"] = json!(["default", "extra"]);
        fresh["description"] = json!("changed");
        assert_eq!(moved_since_plan(&s, &fresh), vec!["description", "profiles"]);
    }

    #[test]
    fn profiles_and_projects_are_checked_too_other_kinds_are_not() {
        let lxd = json!({"name": "c1", "description": "", "config": {"limits.memory": "1GiB"}, "devices": {}});
        let s = step(Kind::Profile, serde_json::to_value(convert::profile(&lxd, "default")).unwrap());
        let mut fresh = lxd.clone();
        assert!(moved_since_plan(&s, &fresh).is_empty());
        fresh["devices"] = json!({"eth0": {"type": "nic", "network": "lxdbr0"}});
        assert_eq!(moved_since_plan(&s, &fresh), vec!["devices.eth0"]);

        let lxd = json!({"name": "p", "description": "", "config": {"features.images": "true"}});
        let s = step(Kind::Project, serde_json::to_value(convert::project(&lxd)).unwrap());
        let fresh = json!({"name": "p", "description": "", "config": {"features.images": "false"}});
        assert_eq!(moved_since_plan(&s, &fresh), vec!["config.features.images"]);

        let s = step(Kind::Network, json!({"config": {"a": "1"}}));
        assert!(moved_since_plan(&s, &json!({"config": {"a": "2"}})).is_empty());
    }

    #[test]
    fn a_step_without_a_live_view_is_not_checked() {
        let mut s = step(Kind::Instance, json!({}));
        s.live = None;
        assert!(moved_since_plan(&s, &lxd_instance(json!({"x": "y"}))).is_empty());
    }
}
