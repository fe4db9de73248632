//! The plan as data: what `plan` produces, what renderers print and what the
//! executor runs.
//!
//! Owns: the `Plan` / `Phase` / `Step` types, their stable JSON form (documented in
//! `docs/plan-json.md`, versioned by `PLAN_FORMAT_VERSION`), reading a saved plan
//! back (`Plan::from_json`), and the canonical digest that lets `apply --plan`
//! refuse when live state moved since the plan was made. Must not: compute diffs,
//! render, or do IO.
//!
//! JSON rules: enum values are `snake_case` strings; every field of `Step` is always
//! written (absent values are `null`, empty lists `[]`) so consumers can rely on the
//! shape; phases without steps are left out of `phases`.

use crate::model::ObjectRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// The `version` this build writes and the only one it reads. Bump it when a field
/// changes meaning or disappears; adding an optional field does not need a bump.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// An ordered plan for one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Format version, `PLAN_FORMAT_VERSION`.
    pub version: u32,
    /// The fleet's name of the cluster.
    pub cluster: String,
    /// Non-empty phases in apply order.
    pub phases: Vec<Phase>,
    /// Set when the whole plan must not be applied (deletion guard, wrong cluster).
    /// The steps stay in the plan so the operator sees what was refused.
    #[serde(default)]
    pub blocked: Option<String>,
    /// Things the operator should know that are not steps (unmanaged objects, ...).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Why parts of the live state could not be read (`member `x` is offline`):
    /// the plan cannot show changes there, and prunes nothing of those kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
    /// `digest(&live.objects)`: identifies the live state the plan was computed from.
    pub live_digest: String,
}

/// One phase: steps of one stage of the apply order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub kind: PhaseKind,
    pub steps: Vec<Step>,
}

/// The phases, in apply order (`Ord` follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    ServerConfig,
    Projects,
    StoragePoolsAndNetworks,
    Profiles,
    Images,
    Members,
    Instances,
    Trust,
    Snap,
    Prune,
}

impl PhaseKind {
    pub const ALL: [PhaseKind; 10] = [
        PhaseKind::ServerConfig,
        PhaseKind::Projects,
        PhaseKind::StoragePoolsAndNetworks,
        PhaseKind::Profiles,
        PhaseKind::Images,
        PhaseKind::Members,
        PhaseKind::Instances,
        PhaseKind::Trust,
        PhaseKind::Snap,
        PhaseKind::Prune,
    ];

    /// The JSON name, also the first segment of step ids.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::ServerConfig => "server_config",
            PhaseKind::Projects => "projects",
            PhaseKind::StoragePoolsAndNetworks => "storage_pools_and_networks",
            PhaseKind::Profiles => "profiles",
            PhaseKind::Images => "images",
            PhaseKind::Members => "members",
            PhaseKind::Instances => "instances",
            PhaseKind::Trust => "trust",
            PhaseKind::Snap => "snap",
            PhaseKind::Prune => "prune",
        }
    }

    /// A heading for humans.
    pub fn title(self) -> &'static str {
        match self {
            PhaseKind::ServerConfig => "Server config",
            PhaseKind::Projects => "Projects",
            PhaseKind::StoragePoolsAndNetworks => "Storage pools and networks",
            PhaseKind::Profiles => "Profiles",
            PhaseKind::Images => "Images",
            PhaseKind::Members => "Members",
            PhaseKind::Instances => "Instances",
            PhaseKind::Trust => "Trust",
            PhaseKind::Snap => "Snap",
            PhaseKind::Prune => "Prune",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Stable id: `<phase>/<action>/<object>`, e.g. `instances/update/Instance/web/w1`.
    pub id: String,
    pub object: ObjectRef,
    pub action: Action,
    /// What differs, field by field (for creates: every declared field, `before` null).
    #[serde(default)]
    pub changes: Vec<FieldChange>,
    /// Why the step exists, one sentence.
    pub reason: String,
    #[serde(default)]
    pub flags: Vec<Flag>,
    /// Ids of steps that must succeed first; always earlier in `Plan::steps()` order.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The ETag LXD returned for the object, for `If-Match`.
    #[serde(default)]
    pub etag: Option<String>,
    /// `digest()` of the live object the step was planned against.
    #[serde(default)]
    pub live_digest: Option<String>,
    /// The full desired object the executor writes (shape per action: see
    /// `docs/plan-json.md`).
    #[serde(default)]
    pub desired: Option<Value>,
    /// The live object as read, for display and for the executor's merge.
    #[serde(default)]
    pub live: Option<Value>,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
    /// Join a new member to the cluster.
    Join,
    /// Evacuate a member (its instances move or stop).
    Evacuate,
    /// Restore an evacuated member.
    Restore,
    /// Remove a member from the cluster.
    RemoveMember,
    /// Replace an image by the pinned fingerprint.
    Refresh,
    Start,
    Stop,
    Restart,
    /// Move an instance to another member (stopped by an earlier step if it ran).
    Move,
    /// Recreate an object whose immutable fields changed. Never run: see `Flag::ReplaceNeeded`.
    Replace,
}

impl Action {
    /// The JSON name, also the second segment of step ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Join => "join",
            Action::Evacuate => "evacuate",
            Action::Restore => "restore",
            Action::RemoveMember => "remove_member",
            Action::Refresh => "refresh",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Move => "move",
            Action::Replace => "replace",
        }
    }

    /// Which count of `Summary` the action falls in.
    pub fn category(self) -> Category {
        match self {
            Action::Create => Category::Create,
            Action::Update => Category::Update,
            Action::Delete | Action::RemoveMember => Category::Delete,
            _ => Category::Other,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four buckets plans are summarised in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Create,
    Update,
    Delete,
    Other,
}

/// One field that differs. `path` is dotted: `config.limits.memory`, `devices.eth0`,
/// `profiles`, `state`, `member_config.n1.source`, `server_config.core.https_address`.
/// `before` is null when the field is being added, `after` null when removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    pub path: String,
    #[serde(default)]
    pub before: Option<Value>,
    #[serde(default)]
    pub after: Option<Value>,
}

/// Something the operator and the executor must know about a step.
/// JSON: `{"flag": "restart_needed"}`, `{"flag": "blocked", "reason": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "flag", content = "reason", rename_all = "snake_case")]
pub enum Flag {
    /// The change only takes effect after a restart; policy allows it and the plan
    /// holds the restart step.
    RestartNeeded,
    /// The change needs a restart that `policy.allow_restart` forbids: the step is
    /// not executed (reported as skipped) until policy allows it.
    RestartHeld,
    /// An immutable field (instance type or image, pool driver, network type)
    /// changed: recreating is never done silently; the step is reported and skipped.
    ReplaceNeeded,
    /// The instance should be on another member but `policy.allow_move` is false:
    /// reported and skipped.
    MoveHeld,
    /// The step cannot be executed now, for the reason given; skipped.
    Blocked(String),
    /// Snap keys that only take effect after `snap restart --reload lxd`.
    ReloadNeeded,
    /// Snap keys (`lxcfs.*`) that only take effect after a host reboot.
    RebootNeeded,
}

impl Flag {
    /// Whether the executor must skip a step carrying this flag.
    pub fn skips_step(&self) -> bool {
        matches!(self, Flag::RestartHeld | Flag::ReplaceNeeded | Flag::MoveHeld | Flag::Blocked(_))
    }

    /// A short label for humans.
    pub fn label(&self) -> String {
        match self {
            Flag::RestartNeeded => "restart needed: the plan restarts (policy.allow_restart)".into(),
            Flag::RestartHeld => "restart needed but policy.allow_restart is false: held, not applied".into(),
            Flag::ReplaceNeeded => "replace needed: recreate it by hand; not applied".into(),
            Flag::MoveHeld => "move needed but policy.allow_move is false: held, not applied".into(),
            Flag::Blocked(r) => format!("blocked: {r}"),
            Flag::ReloadNeeded => "takes effect after an LXD daemon reload".into(),
            Flag::RebootNeeded => "takes effect after a host reboot".into(),
        }
    }
}

impl Step {
    /// Whether the executor will run this step (no skipping flag). A step whose
    /// dependency did not succeed is skipped too; that is decided at apply time.
    pub fn runs(&self) -> bool {
        !self.flags.iter().any(Flag::skips_step)
    }
}

/// Counts of a plan or a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub other: usize,
}

impl Summary {
    pub fn total(&self) -> usize {
        self.create + self.update + self.delete + self.other
    }

    fn add(&mut self, action: Action) {
        match action.category() {
            Category::Create => self.create += 1,
            Category::Update => self.update += 1,
            Category::Delete => self.delete += 1,
            Category::Other => self.other += 1,
        }
    }
}

impl Phase {
    pub fn counts(&self) -> Summary {
        let mut s = Summary::default();
        for step in &self.steps {
            s.add(step.action);
        }
        s
    }
}

/// Why a saved plan cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PlanFormatError {
    #[error("not a plan file: {0}")]
    Json(#[from] serde_json::Error),
    #[error("plan format version {found} is not supported (this build reads version {PLAN_FORMAT_VERSION})")]
    Version { found: u64 },
    #[error("not a plan file: no `version` field")]
    NoVersion,
}

impl Plan {
    /// No steps at all (warnings alone do not make a plan non-empty).
    pub fn is_empty(&self) -> bool {
        self.phases.iter().all(|p| p.steps.is_empty())
    }

    /// Counts over every step, flagged ones included.
    pub fn counts(&self) -> Summary {
        let mut s = Summary::default();
        for step in self.steps() {
            s.add(step.action);
        }
        s
    }

    /// Every step, in apply order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> + '_ {
        self.phases.iter().flat_map(|p| p.steps.iter())
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps().find(|s| s.id == id)
    }

    /// Pretty JSON, the format of `plan --out`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serializes")
    }

    /// Reads a saved plan, checking the format version before anything else so that
    /// a plan from a newer build gets a clear message.
    pub fn from_json(text: &str) -> Result<Plan, PlanFormatError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: Option<u64>,
        }
        let v: VersionOnly = serde_json::from_str(text)?;
        match v.version {
            None => Err(PlanFormatError::NoVersion),
            Some(n) if n != u64::from(PLAN_FORMAT_VERSION) => Err(PlanFormatError::Version { found: n }),
            Some(_) => Ok(serde_json::from_str(text)?),
        }
    }
}

/// Lowercase hex SHA-256 of the compact JSON serde writes for `value`.
///
/// Canonical because the model uses `BTreeMap`s and fixed field order: the same
/// typed object always gives the same bytes. The executor must hash the same type
/// (e.g. the `model::Instance` the live reader produces), not raw LXD JSON.
pub fn digest<T: Serialize + ?Sized>(value: &T) -> String {
    struct HashWriter(Sha256);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, HashWriter(Sha256::new()));
    serde_json::to_writer(&mut w, value).expect("model values always serialize");
    let w = w.into_inner().unwrap_or_else(|_| unreachable!("hashing cannot fail"));
    hex::encode(w.0.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn sample() -> Plan {
        Plan {
            version: PLAN_FORMAT_VERSION,
            cluster: "c".into(),
            phases: vec![Phase {
                kind: PhaseKind::Instances,
                steps: vec![Step {
                    id: "instances/update/Instance/web/w1".into(),
                    object: ObjectRef::in_project(Kind::Instance, "web", "w1"),
                    action: Action::Update,
                    changes: vec![FieldChange {
                        path: "config.limits.memory".into(),
                        before: Some(Value::String("1GiB".into())),
                        after: None,
                    }],
                    reason: "drift".into(),
                    flags: vec![Flag::Blocked("member n1 is offline".into()), Flag::RestartHeld],
                    depends_on: vec![],
                    etag: Some("abc".into()),
                    live_digest: None,
                    desired: Some(serde_json::json!({"name": "w1"})),
                    live: None,
                }],
            }],
            blocked: None,
            warnings: vec!["w".into()],
            incomplete: vec![],
            live_digest: "00".into(),
        }
    }

    #[test]
    fn plans_round_trip_through_json() {
        let p = sample();
        let back = Plan::from_json(&p.to_json()).unwrap();
        assert_eq!(p, back);
    }

    #[test]
    fn json_shape_is_stable() {
        let v: Value = serde_json::from_str(&sample().to_json()).unwrap();
        let step = &v["phases"][0]["steps"][0];
        assert_eq!(v["phases"][0]["kind"], "instances");
        assert_eq!(step["action"], "update");
        assert_eq!(step["object"]["kind"], "Instance");
        assert_eq!(
            step["flags"],
            serde_json::json!([{"flag": "blocked", "reason": "member n1 is offline"}, {"flag": "restart_held"}])
        );
        assert!(step["live"].is_null());
        assert_eq!(step["changes"][0]["after"], Value::Null);
    }

    #[test]
    fn other_versions_are_refused_with_a_clear_message() {
        let mut v: Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["version"] = 2.into();
        let err = Plan::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("version 2 is not supported"), "{err}");
        assert!(matches!(Plan::from_json("{}"), Err(PlanFormatError::NoVersion)));
    }

    #[test]
    fn counts_and_emptiness() {
        let p = sample();
        assert!(!p.is_empty());
        assert_eq!(p.counts(), Summary { create: 0, update: 1, delete: 0, other: 0 });
        assert!(!p.steps().next().unwrap().runs());
        assert_eq!(Action::RemoveMember.category(), Category::Delete);
    }

    #[test]
    fn digests_are_canonical() {
        let mut a = crate::model::ConfigMap::new();
        a.insert("b".into(), "1".into());
        a.insert("a".into(), "2".into());
        let mut b = crate::model::ConfigMap::new();
        b.insert("a".into(), "2".into());
        b.insert("b".into(), "1".into());
        assert_eq!(digest(&a), digest(&b));
        assert_eq!(digest(&a).len(), 64);
    }
}
