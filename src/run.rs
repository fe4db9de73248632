//! The vocabulary of one reconcile run, shared by the daemon loop and the audit writer.
//!
//! Owns: why a run happened (`Trigger`), how it ended (`Outcome`) and the summary a
//! run reports back (`RunReport`: revision, plan counts, drift per kind, pending snap
//! settings). Must not: do IO, know git, HTTP or LXD. `serve` produces these values,
//! `git::audit` records them, `/status` and `/metrics` show them.

use crate::model::{ConfigMap, Kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Why a run was started. Several triggers for one cluster that arrive while it is
/// busy collapse into one pending run; `Trigger::priority` decides which one is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Trigger {
    /// The daemon started.
    Startup,
    /// The poller saw the watched branch move.
    Poll { revision: String },
    /// A verified webhook announced a push.
    Webhook { provider: String, revision: String },
    /// The cluster's drift schedule ticked.
    Cron,
    /// A sync window opened after an apply was held outside it.
    WindowOpen,
    /// A file changed in the watched development directory.
    Watch,
    /// `POST /reconcile`.
    Manual,
    /// SIGHUP.
    Signal,
}

impl Trigger {
    /// When triggers coalesce, the higher one is kept (ties keep the newer). A
    /// drift-only run is the weakest: any full run also detects drift.
    pub fn priority(&self) -> u8 {
        match self {
            Trigger::Cron | Trigger::WindowOpen => 0,
            Trigger::Startup | Trigger::Poll { .. } | Trigger::Watch => 1,
            Trigger::Webhook { .. } => 2,
            Trigger::Manual | Trigger::Signal => 3,
        }
    }

    /// Whether the run was asked for drift detection only (the cron schedule), as
    /// opposed to applying a new revision.
    pub fn is_drift_check(&self) -> bool {
        matches!(self, Trigger::Cron)
    }

    /// Short stable name, used as a metric label and in audit commit messages.
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Poll { .. } => "poll",
            Trigger::Webhook { .. } => "webhook",
            Trigger::Cron => "cron",
            Trigger::WindowOpen => "window-open",
            Trigger::Watch => "watch",
            Trigger::Manual => "manual",
            Trigger::Signal => "signal",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Webhook { provider, revision } => {
                write!(f, "webhook:{provider}@{}", short_rev(revision))
            }
            Trigger::Poll { revision } => write!(f, "poll@{}", short_rev(revision)),
            other => f.write_str(other.name()),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// The plan had steps and all of them were applied.
    Applied,
    /// Live state already matched the revision.
    NoChanges,
    /// Changes were found and deliberately not applied: outside a sync window, or a
    /// drift check on a cluster whose policy only reports drift.
    Held { reason: String },
    /// Policy refused the plan (too many deletions, a member still holding instances).
    Refused { reason: String },
    /// Applying failed part-way, or live state could not be read.
    Failed { error: String },
    /// The revision did not validate; nothing was applied, the last good one stays.
    Invalid {
        diagnostics: usize,
        /// The first few diagnostics, rendered as `file:line:column: message`.
        first: Vec<String>,
    },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::NoChanges => "no-changes",
            Outcome::Held { .. } => "held",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "failed",
            Outcome::Invalid { .. } => "invalid",
        }
    }

    /// Counted in `lxd_gitops_reconcile_failures_total`.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::Refused { .. } | Outcome::Invalid { .. })
    }

    /// Whether live state now matches the run's revision (it became the applied one).
    pub fn is_applied(&self) -> bool {
        matches!(self, Outcome::Applied | Outcome::NoChanges)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Held { reason } => write!(f, "held: {reason}"),
            Outcome::Refused { reason } => write!(f, "refused: {reason}"),
            Outcome::Failed { error } => write!(f, "failed: {error}"),
            Outcome::Invalid { diagnostics, .. } => {
                write!(f, "invalid: {diagnostics} problem(s)")
            }
            other => f.write_str(other.name()),
        }
    }
}

/// Step counts of the plan a run computed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSummary {
    pub create: u32,
    pub update: u32,
    pub delete: u32,
    /// Everything else: joins, evacuations, image refreshes, restarts.
    pub other: u32,
}

impl PlanSummary {
    pub fn total(&self) -> u32 {
        self.create + self.update + self.delete + self.other
    }
}

/// What one run reports back to the loop (and, with timing and steps, to the audit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// The source revision the run planned against (None when it never got one).
    pub revision: Option<String>,
    pub outcome: Outcome,
    #[serde(default)]
    pub plan: PlanSummary,
    /// Objects whose live state differed from the revision, per kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift: BTreeMap<Kind, u64>,
    /// Snap settings wanted but not yet applied, member → key → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending_snap: BTreeMap<String, ConfigMap>,
}

impl RunReport {
    pub fn new(revision: Option<String>, outcome: Outcome) -> Self {
        RunReport {
            revision,
            outcome,
            plan: PlanSummary::default(),
            drift: BTreeMap::new(),
            pending_snap: BTreeMap::new(),
        }
    }
}

/// The first 12 characters of a commit id, as shown in file names and messages.
pub fn short_rev(rev: &str) -> &str {
    &rev[..rev.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_json_is_tagged_and_stable() {
        let t = Trigger::Webhook { provider: "github".into(), revision: "0123456789abcdef".into() };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v, serde_json::json!({"kind": "webhook", "provider": "github", "revision": "0123456789abcdef"}));
        assert_eq!(t.to_string(), "webhook:github@0123456789ab");
        assert_eq!(serde_json::to_value(Trigger::WindowOpen).unwrap(), serde_json::json!({"kind": "window-open"}));
    }

    #[test]
    fn outcome_json_and_classes() {
        let o = Outcome::Refused { reason: "12 deletions > max 10".into() };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"result": "refused", "reason": "12 deletions > max 10"})
        );
        assert!(o.is_failure());
        assert!(!Outcome::Held { reason: "x".into() }.is_failure());
        assert!(Outcome::NoChanges.is_applied());
    }

    #[test]
    fn priorities_prefer_full_runs_over_drift_checks() {
        assert!(Trigger::Manual.priority() > Trigger::Cron.priority());
        assert!(
            Trigger::Webhook { provider: "gitea".into(), revision: "a".into() }.priority()
                > Trigger::Poll { revision: "a".into() }.priority()
        );
    }
}
