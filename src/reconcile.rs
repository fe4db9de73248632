//! One reconcile of one cluster, as the command line and the daemon both run it.
//!
//! Owns: the sequence connect → read live (LXD and snapd) → plan → apply → read
//! again, checking that a saved plan still matches the world before applying it,
//! and planning again (a bounded number of times) when steps met a concurrent
//! change. Must not: print (callers render), parse arguments or loop forever.

use crate::apply::executor::{self, ApplyOptions, ApplyReport, NoSnap, StepReport};
use crate::apply::snap::{SnapKeys, SnapdFleet};
use crate::lxd::connect::{connect_cluster, ClusterConnection};
use crate::lxd::live::read_cluster;
use crate::model::{DesiredCluster, LiveState};
use crate::plan::{self, Plan};
use crate::serve::config::Config;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Connect(#[from] crate::lxd::connect::ConnectError),
    #[error(transparent)]
    Read(#[from] crate::lxd::live::ReadError),
    #[error("cluster `{cluster}`: reading snap settings: {message}")]
    Snap { cluster: String, message: String },
    #[error("{0}")]
    StalePlan(String),
}

/// A cluster, connected, with its live state.
pub struct Session {
    pub conn: ClusterConnection,
    pub snap: SnapdFleet,
    pub live: LiveState,
}

/// Where state kept between runs lives (pending snap keys).
pub fn state_dir(runtime: Option<&Config>) -> PathBuf {
    runtime.map(|c| c.state_dir.clone()).unwrap_or_else(|| PathBuf::from("/var/lib/lxd-gitops"))
}

/// Connects to the cluster `desired` describes and reads its live state, snap
/// settings included where snapd access is configured.
pub async fn open(desired: &DesiredCluster, runtime: Option<&Config>) -> Result<Session, ReconcileError> {
    let spec = &desired.spec;
    let creds = runtime.and_then(|c| c.credentials_dir.clone());
    let conn = connect_cluster(spec, creds.as_deref()).await?;
    let mut live = read_cluster(&conn.client, &spec.name).await?;
    live.client_fingerprint = crate::lxd::identity::pem_fingerprint(&conn.cert_pem).ok();
    let endpoints = runtime.and_then(|c| c.clusters.get(&spec.name)).map(|c| c.snapd.clone()).unwrap_or_default();
    let pending_file = state_dir(runtime).join("pending").join(format!("{}.json", spec.name));
    let snap = SnapdFleet::new(endpoints, pending_file, Some(conn.client.clone()))
        .map_err(|message| ReconcileError::Snap { cluster: spec.name.clone(), message })?;
    if snap.is_configured() {
        let keys = snap_keys(desired, runtime.and_then(|c| c.clusters.get(&spec.name)).map(|c| c.snapd.keys()));
        live.objects.snap =
            snap.read(&keys).await.map_err(|message| ReconcileError::Snap { cluster: spec.name.clone(), message })?;
    }
    Ok(Session { conn, snap, live })
}

/// The snap keys to read per member: the Cluster's defaults plus the member's own
/// `Snap` document. A fleet that describes no members and no snap defaults (an
/// import) reads every key.
fn snap_keys<'a>(desired: &'a DesiredCluster, endpoints: Option<impl Iterator<Item = &'a String>>) -> SnapKeys {
    let defaults: Vec<String> =
        desired.spec.snap.as_ref().map(|s| s.config.keys().cloned().collect()).unwrap_or_default();
    if desired.objects.members.is_empty() && desired.objects.snap.is_empty() && defaults.is_empty() {
        return SnapKeys::Everything;
    }
    let mut keys_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let members = desired.objects.members.keys().chain(endpoints.into_iter().flatten());
    for m in members {
        let mut keys = defaults.clone();
        if let Some(s) = desired.objects.snap.get(m) {
            keys.extend(s.config.keys().cloned());
        }
        keys.sort();
        keys.dedup();
        keys_of.insert(m.clone(), keys);
    }
    SnapKeys::Named(keys_of)
}

/// The plan for `desired` against what `session` read.
pub fn plan(desired: &DesiredCluster, session: &Session) -> Plan {
    plan::plan(desired, &session.live)
}

/// Refuses a saved plan unless planning now gives the very same steps: if live
/// state or the fleet moved since the plan was reviewed, nothing is applied.
pub fn check_saved(saved: &Plan, fresh: &Plan) -> Result<(), ReconcileError> {
    if saved.cluster != fresh.cluster {
        return Err(ReconcileError::StalePlan(format!(
            "the saved plan is for cluster `{}`, not `{}`",
            saved.cluster, fresh.cluster
        )));
    }
    let strip = |p: &Plan| {
        let mut p = p.clone();
        for ph in &mut p.phases {
            for s in &mut ph.steps {
                // ETags also change with fields nobody compares (volatile keys).
                s.etag = None;
            }
        }
        (p.phases, p.blocked)
    };
    let (a, b) = (strip(saved), strip(fresh));
    if a == b {
        return Ok(());
    }
    let saved_ids: Vec<&str> = saved.steps().map(|s| s.id.as_str()).collect();
    let fresh_ids: Vec<&str> = fresh.steps().map(|s| s.id.as_str()).collect();
    let moved: Vec<&str> = fresh
        .steps()
        .filter(|f| saved.step(&f.id).map(|s| s.changes != f.changes || s.live_digest != f.live_digest) != Some(false))
        .map(|s| s.id.as_str())
        .chain(saved_ids.iter().copied().filter(|id| !fresh_ids.contains(id)))
        .take(10)
        .collect();
    Err(ReconcileError::StalePlan(format!(
        "live state or the fleet changed since the plan was made; nothing applied. Run plan again. Differing steps: {}",
        if moved.is_empty() { "(order or flags)".to_string() } else { moved.join(", ") }
    )))
}

/// Applies `plan` through `session`.
pub async fn apply(
    session: &Session,
    plan: &Plan,
    desired: &DesiredCluster,
    repo_root: &Path,
    progress: impl FnMut(&StepReport),
) -> ApplyReport {
    let opts = ApplyOptions {
        concurrency: desired.spec.policy.concurrency.max(1) as usize,
        stop_timeout: desired.spec.policy.stop_timeout,
        repo_root: repo_root.to_path_buf(),
    };
    if session.snap.is_configured() {
        executor::execute(plan, &session.conn, &session.snap, &opts, progress).await
    } else {
        executor::execute(plan, &session.conn, &NoSnap, &opts, progress).await
    }
}

/// How many times one apply plans again after steps met a concurrent change.
pub const MAX_REPLANS: usize = 2;

/// One round of `apply_replanning`: the plan applied and what became of it.
pub struct Round {
    pub plan: Plan,
    pub report: ApplyReport,
}

/// What `apply_replanning` did: every round, and why it stopped planning again
/// when conflicts remained (None when the last round had none).
pub struct Replanned {
    pub rounds: Vec<Round>,
    pub unresolved: Option<String>,
    /// The session of the last round.
    pub session: Session,
}

impl Replanned {
    /// True when no step failed, except conflicts a later round resolved.
    pub fn succeeded(&self) -> bool {
        self.unresolved.is_none()
            && self.rounds.iter().all(|r| r.report.steps.iter().all(|s| s.conflict || s.failure().is_none()))
    }
}

/// Applies `plan`. Where steps met a concurrent change (their object moved since
/// the plan read it, so nothing was overwritten), reads the cluster again, plans
/// again and applies the new plan if `approve` accepts it — at most `MAX_REPLANS`
/// times. `approve` sees each new plan (callers show it, ask, or refuse).
pub async fn apply_replanning(
    desired: &DesiredCluster,
    runtime: Option<&Config>,
    first: (Session, Plan),
    repo_root: &Path,
    mut approve: impl FnMut(&Plan) -> bool,
    mut progress: impl FnMut(&StepReport),
) -> Replanned {
    let (mut session, mut plan) = first;
    let mut rounds = Vec::new();
    loop {
        let report = apply(&session, &plan, desired, repo_root, &mut progress).await;
        let conflicts = report.conflicts().count();
        rounds.push(Round { plan, report });
        if conflicts == 0 {
            return Replanned { rounds, unresolved: None, session };
        }
        if rounds.len() > MAX_REPLANS {
            let unresolved = format!(
                "{conflicts} step(s) still met concurrent changes after planning again {MAX_REPLANS} times; run plan again"
            );
            return Replanned { rounds, unresolved: Some(unresolved), session };
        }
        session = match open(desired, runtime).await {
            Ok(s) => s,
            Err(e) => {
                let unresolved = Some(format!("reading the cluster again failed: {e}"));
                return Replanned { rounds, unresolved, session };
            }
        };
        plan = self::plan(desired, &session);
        if plan.is_empty() {
            return Replanned { rounds, unresolved: None, session };
        }
        if let Some(reason) = &plan.blocked {
            let unresolved = Some(format!("the new plan is refused: {reason}"));
            return Replanned { rounds, unresolved, session };
        }
        if !approve(&plan) {
            return Replanned { rounds, unresolved: Some("the new plan was not approved".into()), session };
        }
    }
}
