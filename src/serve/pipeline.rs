//! The daemon's real work: the `Reconcile` implementation.
//!
//! Owns: fetching the watched revision (git, or a local folder in development),
//! validating it and keeping the last good one (an invalid head is reported and
//! never applied; drift runs go on from the last good revision), and one cluster's
//! run: read live → plan → apply when the gate is open (and, for drift runs, when
//! the policy corrects drift) → audit record → last-good bookkeeping. Must not:
//! schedule (the loop does) or diff (the planner does).

use super::config::Config;
use super::reconciler::{ApplyGate, FleetHead, Reconcile, RefreshError, RunContext};
use super::schedule::ClusterSchedule;
use crate::fleet::{self, LoadedFleet};
use crate::git::audit::{AuditRun, AuditWriter, Identity};
use crate::git::last_good::LastGood;
use crate::git::source::GitSource;
use crate::model::Kind;
use crate::reconcile;
use crate::run::{Outcome, PlanSummary, RunReport};
use chrono::Utc;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The fleet as of the last refresh.
struct Current {
    /// Head revision (commit, or content hash of the watched folder).
    head: String,
    /// Problems of the head, when it is invalid.
    invalid: Option<Vec<String>>,
    /// The fleet reconciles use: the head when valid, else the last good revision.
    good: Option<(String, PathBuf, Arc<LoadedFleet>)>,
}

pub struct Pipeline {
    config: Config,
    source: Option<Arc<GitSource>>,
    audit: Option<Arc<AuditWriter>>,
    last_good: Arc<Mutex<LastGood>>,
    current: Mutex<Current>,
}

impl Pipeline {
    pub fn new(config: Config) -> Result<Pipeline, String> {
        config.require_source().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&config.state_dir).map_err(|e| format!("{}: {e}", config.state_dir.display()))?;
        let source = match &config.repo {
            Some(r) => Some(Arc::new(GitSource::new(r.source_spec(), config.source_dir()).map_err(|e| e.to_string())?)),
            None => None,
        };
        let audit = match config.audit_spec() {
            Some(spec) => Some(Arc::new(AuditWriter::new(spec, config.audit_dir()).map_err(|e| e.to_string())?)),
            None => None,
        };
        let last_good = LastGood::load(config.last_good_path()).map_err(|e| e.to_string())?;
        Ok(Pipeline {
            config,
            source,
            audit,
            last_good: Arc::new(Mutex::new(last_good)),
            current: Mutex::new(Current { head: String::new(), invalid: None, good: None }),
        })
    }

    fn schedules(fleet: &LoadedFleet) -> Vec<ClusterSchedule> {
        fleet
            .desired
            .clusters
            .values()
            .filter_map(|c| ClusterSchedule::from_policy(c.spec.name.clone(), &c.spec.policy).ok())
            .collect()
    }
}

/// A content hash of the watched folder's YAML files (development mode).
fn folder_revision(dir: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    fn walk(d: &std::path::Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    walk(dir, &mut files);
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::read(&f).unwrap_or_default());
    }
    format!("dir:{}", &hex::encode(h.finalize())[..16])
}

impl Reconcile for Pipeline {
    async fn refresh(&self) -> Result<FleetHead, RefreshError> {
        let (head, dir) = match &self.source {
            Some(src) => {
                let src = src.clone();
                let rev = tokio::task::spawn_blocking(move || src.sync())
                    .await
                    .map_err(|e| RefreshError::Other(e.to_string()))?
                    .map_err(|e| RefreshError::Fetch(e.to_string()))?;
                (rev.commit, rev.dir)
            }
            None => {
                let dir = self.config.watch_dir.clone().ok_or_else(|| RefreshError::Other("no source".into()))?;
                (folder_revision(&dir), dir)
            }
        };
        let loaded = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || fleet::load_and_validate(&dir))
                .await
                .map_err(|e| RefreshError::Other(e.to_string()))?
        };
        let mut cur = self.current.lock().expect("pipeline state");
        cur.head = head.clone();
        match loaded {
            Ok(f) => {
                cur.invalid = None;
                cur.good = Some((head.clone(), dir, Arc::new(f)));
            }
            Err(diags) => {
                tracing::warn!(revision = %head, problems = diags.len(), "the fleet revision is invalid; it is not applied");
                cur.invalid = Some(diags.iter().map(|d| d.to_string()).collect());
                if cur.good.is_none() {
                    // After a restart: fall back to the last revision that was applied.
                    let commit =
                        self.last_good.lock().expect("last good").all().values().map(|g| g.commit.clone()).next();
                    if let (Some(src), Some(commit)) = (&self.source, commit) {
                        if let Ok(rev) = src.checkout(&commit) {
                            if let Ok(f) = fleet::load_and_validate(&rev.dir) {
                                cur.good = Some((rev.commit, rev.dir, Arc::new(f)));
                            }
                        }
                    }
                }
            }
        }
        let clusters = cur.good.as_ref().map(|(_, _, f)| Pipeline::schedules(f)).unwrap_or_default();
        Ok(FleetHead { revision: head, clusters })
    }

    async fn reconcile(&self, cluster: &str, ctx: RunContext) -> RunReport {
        let started = Utc::now();
        let (head, invalid, good) = {
            let cur = self.current.lock().expect("pipeline state");
            (cur.head.clone(), cur.invalid.clone(), cur.good.clone())
        };
        let drift_run = ctx.trigger.is_drift_check();
        let mut steps = serde_json::Value::Null;
        let report = match (&invalid, &good) {
            (Some(problems), _) if !drift_run => RunReport::new(
                Some(head.clone()),
                Outcome::Invalid { diagnostics: problems.len(), first: problems.iter().take(5).cloned().collect() },
            ),
            (_, None) => {
                RunReport::new(Some(head.clone()), Outcome::Failed { error: "no valid fleet revision yet".into() })
            }
            (_, Some((rev, dir, fleet))) => match fleet.desired.clusters.get(cluster) {
                None => RunReport::new(
                    Some(rev.clone()),
                    Outcome::Failed { error: format!("cluster `{cluster}` is not in the fleet") },
                ),
                Some(desired) => {
                    let (r, s) = self.run_cluster(desired, rev, dir, &ctx, drift_run).await;
                    steps = s;
                    r
                }
            },
        };
        if let Some(audit) = &self.audit {
            let run = AuditRun {
                cluster: cluster.to_string(),
                trigger: ctx.trigger.clone(),
                started,
                finished: Utc::now(),
                report: report.clone(),
                steps,
                reconciler: Identity::current(),
            };
            let audit = audit.clone();
            match tokio::task::spawn_blocking(move || audit.record(&run)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(cluster, error = %e, "writing the audit record failed"),
                Err(e) => tracing::error!(cluster, error = %e, "writing the audit record failed"),
            }
        }
        report
    }
}

impl Pipeline {
    async fn run_cluster(
        &self,
        desired: &crate::model::DesiredCluster,
        rev: &str,
        dir: &std::path::Path,
        ctx: &RunContext,
        drift_run: bool,
    ) -> (RunReport, serde_json::Value) {
        let fail =
            |e: String| (RunReport::new(Some(rev.to_string()), Outcome::Failed { error: e }), serde_json::Value::Null);
        let session = match reconcile::open(desired, Some(&self.config)).await {
            Ok(s) => s,
            Err(e) => return fail(e.to_string()),
        };
        let plan = reconcile::plan(desired, &session);
        let counts = plan.counts();
        let mut drift: BTreeMap<Kind, u64> = BTreeMap::new();
        for s in plan.steps() {
            *drift.entry(s.object.kind).or_default() += 1;
        }
        let summary = PlanSummary {
            create: counts.create as u32,
            update: counts.update as u32,
            delete: counts.delete as u32,
            other: counts.other as u32,
        };
        let mut report = RunReport::new(Some(rev.to_string()), Outcome::NoChanges);
        report.plan = summary;
        report.drift = drift;
        report.pending_snap = session.snap.pending().await;
        if let Some(reason) = &plan.blocked {
            report.outcome = Outcome::Refused { reason: reason.clone() };
            return (report, serde_json::Value::Null);
        }
        if plan.is_empty() {
            self.record_good(&desired.spec.name, rev);
            return (report, serde_json::Value::Null);
        }
        if let ApplyGate::Held { reopens } = &ctx.apply {
            report.outcome = Outcome::Held {
                reason: match reopens {
                    Some(t) => format!("outside the sync windows; next window opens {t}"),
                    None => "outside the sync windows".into(),
                },
            };
            return (report, serde_json::Value::Null);
        }
        if drift_run && !desired.spec.policy.correct_drift {
            report.outcome = Outcome::Held { reason: "drift found; policy.correct_drift is false".into() };
            return (report, serde_json::Value::Null);
        }
        let cluster = &desired.spec.name;
        let done = reconcile::apply_replanning(
            desired,
            Some(&self.config),
            (session, plan),
            dir,
            |p| {
                tracing::warn!(cluster = %cluster, steps = p.steps().count(), "cluster changed while applying: planned again");
                true
            },
            |r| {
                tracing::info!(cluster = %cluster, step = %r.id, outcome = ?r.outcome, conflict = r.conflict, ms = r.duration_ms, "step");
            },
        )
        .await;
        let reports: Vec<&crate::apply::executor::ApplyReport> = done.rounds.iter().map(|r| &r.report).collect();
        // One report for the audit record: every round's steps, conflicts marked.
        let steps = serde_json::to_value(crate::apply::executor::ApplyReport {
            cluster: cluster.clone(),
            steps: reports.iter().flat_map(|r| r.steps.iter().cloned()).collect(),
            duration_ms: reports.iter().map(|r| r.duration_ms).sum(),
        })
        .unwrap_or_default();
        if done.succeeded() {
            report.outcome = Outcome::Applied;
            self.record_good(&desired.spec.name, rev);
        } else {
            let failures: Vec<&str> = reports
                .iter()
                .flat_map(|r| r.steps.iter())
                .filter(|s| !s.conflict)
                .filter_map(|s| match &s.outcome {
                    crate::apply::engine::Outcome::Failed(e) => Some(e.as_str()),
                    _ => None,
                })
                .collect();
            report.outcome = Outcome::Failed {
                error: match (failures.first(), &done.unresolved) {
                    (Some(first), _) => format!("{} step(s) failed; first: {first}", failures.len()),
                    (None, Some(why)) => why.clone(),
                    (None, None) => "the apply failed".into(),
                },
            };
        }
        report.pending_snap = done.session.snap.pending().await;
        (report, steps)
    }

    fn record_good(&self, cluster: &str, rev: &str) {
        if rev.starts_with("dir:") {
            return;
        }
        if let Err(e) = self.last_good.lock().expect("last good").record(cluster, rev, Utc::now()) {
            tracing::error!(cluster, error = %e, "recording the last good revision failed");
        }
    }
}
