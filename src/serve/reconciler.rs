//! The daemon loop: triggers in, at most one run per cluster at a time.
//!
//! Owns: the per-cluster single-flight queue (a trigger for a busy cluster becomes
//! its one pending run; more triggers collapse into it), suspension, the fleet-wide
//! dispatcher (refresh the source once, then fan a trigger out to every cluster),
//! the drift and window-reopen timers, apply gating by sync windows, graceful
//! shutdown (stop taking triggers, let runs in flight finish), and the state that
//! `/status`, `/readyz` and `/metrics` show. Must not: know git, LXD, plans or
//! HTTP: the work is behind the `Reconcile` trait, which the integrator implements
//! with the real fleet → live → plan → apply → audit pipeline.

use super::metrics::Metrics;
use super::schedule::ClusterSchedule;
use crate::run::{Outcome, RunReport, Trigger};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// What the source looks like after a refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetHead {
    /// The head commit of the watched branch (or a content hash of the watched
    /// directory in development mode). A change makes the poller start runs.
    pub revision: String,
    /// The clusters to reconcile and their timing, taken from the last revision
    /// that validated (so an invalid head never changes schedules or windows).
    pub clusters: Vec<ClusterSchedule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The git remote could not be reached: `/readyz` turns 503 until a fetch works.
    #[error("fetching the fleet repository: {0}")]
    Fetch(String),
    /// Anything else (no revision ever validated, local IO).
    #[error("{0}")]
    Other(String),
}

/// Whether a run may change live state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ApplyGate {
    Open,
    /// Outside the sync windows: plan, report drift, apply nothing, return
    /// `Outcome::Held`. The loop starts a `WindowOpen` run at `reopens`.
    Held {
        reopens: Option<DateTime<Utc>>,
    },
}

/// Tells a run that the daemon is stopping: finish the step in flight, start no
/// new step, return what was done.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the daemon starts stopping.
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// A signal that never fires (tests, one-shot CLI use).
    pub fn never() -> StopSignal {
        let (tx, rx) = watch::channel(false);
        // A dropped sender would make `stopped()` resolve at once; keep it alive.
        std::mem::forget(tx);
        StopSignal(rx)
    }
}

/// Everything a run is told.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub trigger: Trigger,
    /// Decided by the loop from the cluster's sync windows at the start of the run.
    /// The implementation must not apply when it is `Held`.
    pub apply: ApplyGate,
    pub stop: StopSignal,
}

/// The work of the daemon, implemented by the integrator.
///
/// `refresh` is called at startup, on every poll tick and before a fleet-wide
/// trigger (webhook, `POST /reconcile`, SIGHUP, file watch) fans out: it fetches
/// the source, validates the head, remembers the last good revision and says
/// which clusters exist. `reconcile` runs one cluster: read live state, plan
/// against the last good revision, apply when `ctx.apply` is `Open` (drift-only
/// runs, `Trigger::Cron`, apply only when the policy says `correct_drift`), write
/// the audit commit, and report. The loop guarantees that `reconcile` never runs
/// twice at once for one cluster; different clusters run concurrently.
pub trait Reconcile: Send + Sync + 'static {
    fn refresh(&self) -> impl Future<Output = Result<FleetHead, RefreshError>> + Send;
    fn reconcile(&self, cluster: &str, ctx: RunContext) -> impl Future<Output = RunReport> + Send;
}

/// Options the loop starts with.
#[derive(Debug, Clone, Default)]
pub struct LoopOptions {
    /// Clusters that start suspended (from the runtime config).
    pub suspended: BTreeSet<String>,
}

/// What happened to a trigger for one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enqueued {
    /// A run started.
    Started,
    /// A run is in flight: this trigger is (part of) its one pending successor.
    Coalesced,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("no cluster named `{0}`")]
    UnknownCluster(String),
    #[error("cluster `{0}` is suspended")]
    Suspended(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// The last finished run of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub duration_seconds: f64,
    #[serde(flatten)]
    pub report: RunReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct Running {
    pub trigger: Trigger,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueState {
    Idle,
    Running,
    RunningWithPending,
}

/// One cluster in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub suspended: bool,
    pub queue: QueueState,
    pub running: Option<Running>,
    pub pending: Option<Trigger>,
    pub applied_revision: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
    pub last_run: Option<LastRun>,
    pub next_drift_check: Option<DateTime<Utc>>,
    pub held_until: Option<DateTime<Utc>>,
    /// False once the fleet stopped describing it (kept while its run finishes).
    pub in_fleet: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub head: Option<String>,
    pub last_refresh: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub ready: bool,
    pub shutting_down: bool,
    pub source: SourceStatus,
    pub clusters: BTreeMap<String, ClusterStatus>,
}

struct Slot {
    schedule: ClusterSchedule,
    suspended: bool,
    in_fleet: bool,
    running: Option<Running>,
    pending: Option<Trigger>,
    last: Option<LastRun>,
    applied: Option<(String, DateTime<Utc>)>,
    next_drift: Option<DateTime<Utc>>,
    held_until: Option<DateTime<Utc>>,
}

impl Slot {
    fn new(schedule: ClusterSchedule, suspended: bool, now: DateTime<Utc>) -> Slot {
        let next_drift = schedule.drift.as_ref().and_then(|l| l.next_after(&now));
        Slot {
            schedule,
            suspended,
            in_fleet: true,
            running: None,
            pending: None,
            last: None,
            applied: None,
            next_drift,
            held_until: None,
        }
    }
}

#[derive(Default)]
struct State {
    accepting: bool,
    clusters: BTreeMap<String, Slot>,
    initially_suspended: BTreeSet<String>,
    head: Option<String>,
    refreshed_ok: bool,
    remote_ok: bool,
    last_refresh: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

enum FleetMsg {
    /// Refresh, then start runs only if the head moved.
    Poll,
    /// Refresh, then run every cluster.
    Run(Trigger),
}

struct Shared<R> {
    pipeline: R,
    state: Mutex<State>,
    metrics: Metrics,
    stop_tx: watch::Sender<bool>,
    idle: Notify,
    timers_changed: Notify,
    fleet_tx: mpsc::UnboundedSender<FleetMsg>,
}

/// A handle on the running loop; cheap to clone.
pub struct Reconciler<R: Reconcile> {
    shared: Arc<Shared<R>>,
}

impl<R: Reconcile> Clone for Reconciler<R> {
    fn clone(&self) -> Self {
        Reconciler { shared: self.shared.clone() }
    }
}

impl<R: Reconcile> Reconciler<R> {
    /// Starts the dispatcher and the timers on the current tokio runtime. Nothing
    /// runs until a trigger arrives (the daemon sends `Trigger::Startup`).
    pub fn start(pipeline: R, options: LoopOptions) -> Reconciler<R> {
        let (fleet_tx, fleet_rx) = mpsc::unbounded_channel();
        let (stop_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            pipeline,
            state: Mutex::new(State { accepting: true, initially_suspended: options.suspended, ..State::default() }),
            metrics: Metrics::new(),
            stop_tx,
            idle: Notify::new(),
            timers_changed: Notify::new(),
            fleet_tx,
        });
        tokio::spawn(dispatcher(shared.clone(), fleet_rx));
        tokio::spawn(timers(shared.clone()));
        Reconciler { shared }
    }

    pub fn pipeline(&self) -> &R {
        &self.shared.pipeline
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Refreshes the source, then runs every cluster (coalescing per cluster).
    pub fn trigger_all(&self, trigger: Trigger) -> Result<(), TriggerError> {
        self.send(FleetMsg::Run(trigger))
    }

    /// Refreshes the source and runs every cluster if the head moved.
    pub fn poll(&self) -> Result<(), TriggerError> {
        self.send(FleetMsg::Poll)
    }

    fn send(&self, msg: FleetMsg) -> Result<(), TriggerError> {
        if !self.shared.state.lock().unwrap().accepting {
            return Err(TriggerError::ShuttingDown);
        }
        self.shared.fleet_tx.send(msg).map_err(|_| TriggerError::ShuttingDown)
    }

    /// Runs one cluster (no refresh first).
    pub fn trigger(&self, cluster: &str, trigger: Trigger) -> Result<Enqueued, TriggerError> {
        enqueue(&self.shared, cluster, trigger)
    }

    /// Suspends a cluster: triggers are refused until `resume`; a run in flight
    /// finishes, its pending successor is dropped.
    pub fn suspend(&self, cluster: &str) -> Result<(), TriggerError> {
        let mut st = self.shared.state.lock().unwrap();
        let slot = st.clusters.get_mut(cluster).ok_or_else(|| TriggerError::UnknownCluster(cluster.into()))?;
        slot.suspended = true;
        slot.pending = None;
        update_queue_metrics(&self.shared.metrics, &st);
        tracing::info!(cluster, "suspended");
        Ok(())
    }

    /// Resumes a cluster and starts a run so it catches up with what it missed.
    pub fn resume(&self, cluster: &str) -> Result<Enqueued, TriggerError> {
        {
            let mut st = self.shared.state.lock().unwrap();
            let slot = st.clusters.get_mut(cluster).ok_or_else(|| TriggerError::UnknownCluster(cluster.into()))?;
            slot.suspended = false;
        }
        tracing::info!(cluster, "resumed");
        enqueue(&self.shared, cluster, Trigger::Manual)
    }

    /// `Ok` when the first refresh worked and the last fetch reached the remote.
    pub fn readiness(&self) -> Result<(), String> {
        let st = self.shared.state.lock().unwrap();
        if !st.accepting {
            return Err("shutting down".into());
        }
        if !st.refreshed_ok {
            return Err(match &st.last_error {
                Some(e) => format!("no successful sync yet: {e}"),
                None => "no successful sync yet".into(),
            });
        }
        if !st.remote_ok {
            return Err(format!(
                "git remote unreachable at last try: {}",
                st.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
        Ok(())
    }

    pub fn status(&self) -> Status {
        let st = self.shared.state.lock().unwrap();
        let ready = st.accepting && st.refreshed_ok && st.remote_ok;
        Status {
            ready,
            shutting_down: !st.accepting,
            source: SourceStatus {
                head: st.head.clone(),
                last_refresh: st.last_refresh,
                last_error: st.last_error.clone(),
            },
            clusters: st
                .clusters
                .iter()
                .map(|(name, s)| {
                    let queue = match (&s.running, &s.pending) {
                        (None, _) => QueueState::Idle,
                        (Some(_), None) => QueueState::Running,
                        (Some(_), Some(_)) => QueueState::RunningWithPending,
                    };
                    (
                        name.clone(),
                        ClusterStatus {
                            suspended: s.suspended,
                            queue,
                            running: s.running.clone(),
                            pending: s.pending.clone(),
                            applied_revision: s.applied.as_ref().map(|a| a.0.clone()),
                            applied_at: s.applied.as_ref().map(|a| a.1),
                            last_run: s.last.clone(),
                            next_drift_check: s.next_drift,
                            held_until: s.held_until,
                            in_fleet: s.in_fleet,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Stops taking triggers and drops pending runs; runs in flight are told to
    /// stop after their current step. Returns at once; see `drained`.
    pub fn begin_shutdown(&self) {
        let mut st = self.shared.state.lock().unwrap();
        if !st.accepting {
            return;
        }
        st.accepting = false;
        for slot in st.clusters.values_mut() {
            slot.pending = None;
        }
        update_queue_metrics(&self.shared.metrics, &st);
        drop(st);
        let _ = self.shared.stop_tx.send(true);
        self.shared.timers_changed.notify_one();
        tracing::info!("shutting down: no new runs, waiting for runs in flight");
    }

    /// Resolves when no run is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.state.lock().unwrap().clusters.values().all(|s| s.running.is_none()) {
                return;
            }
            notified.await;
        }
    }

    /// `begin_shutdown`, then wait for runs in flight.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.drained().await;
        tracing::info!("all runs finished");
    }

    /// A signal for work outside the loop that should also stop (the HTTP server).
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal(self.shared.stop_tx.subscribe())
    }
}

fn update_queue_metrics(metrics: &Metrics, st: &State) {
    let waiting = st.clusters.values().filter(|s| s.pending.is_some()).count();
    let in_flight = st.clusters.values().filter(|s| s.running.is_some()).count();
    metrics.set_queue(waiting, in_flight);
}

fn enqueue<R: Reconcile>(shared: &Arc<Shared<R>>, cluster: &str, trigger: Trigger) -> Result<Enqueued, TriggerError> {
    let mut st = shared.state.lock().unwrap();
    if !st.accepting {
        return Err(TriggerError::ShuttingDown);
    }
    let slot = st.clusters.get_mut(cluster).ok_or_else(|| TriggerError::UnknownCluster(cluster.into()))?;
    if slot.suspended {
        return Err(TriggerError::Suspended(cluster.into()));
    }
    if slot.running.is_some() {
        let keep = match slot.pending.take() {
            Some(p) if p.priority() > trigger.priority() => p,
            _ => trigger,
        };
        tracing::debug!(cluster, trigger = %keep, "coalesced behind the run in flight");
        slot.pending = Some(keep);
        update_queue_metrics(&shared.metrics, &st);
        return Ok(Enqueued::Coalesced);
    }
    slot.running = Some(Running { trigger: trigger.clone(), since: Utc::now() });
    update_queue_metrics(&shared.metrics, &st);
    drop(st);
    tokio::spawn(run_cluster(shared.clone(), cluster.to_string(), trigger));
    Ok(Enqueued::Started)
}

/// Runs `cluster` until it has no pending trigger left.
async fn run_cluster<R: Reconcile>(shared: Arc<Shared<R>>, cluster: String, first: Trigger) {
    let mut trigger = first;
    loop {
        let now = Utc::now();
        let apply = {
            let st = shared.state.lock().unwrap();
            match st.clusters.get(&cluster) {
                Some(slot) if !slot.schedule.windows.allows(now) => {
                    ApplyGate::Held { reopens: slot.schedule.windows.next_allowed(now) }
                }
                _ => ApplyGate::Open,
            }
        };
        let ctx =
            RunContext { trigger: trigger.clone(), apply: apply.clone(), stop: StopSignal(shared.stop_tx.subscribe()) };
        tracing::info!(cluster = %cluster, trigger = %trigger, apply = ?apply, "run starting");
        let started = Utc::now();
        let t0 = Instant::now();
        // In its own task, so that a panic in the pipeline is a failed run, not a
        // cluster stuck "running" forever.
        let inner = {
            let shared = shared.clone();
            let cluster = cluster.clone();
            tokio::spawn(async move { shared.pipeline.reconcile(&cluster, ctx).await })
        };
        let report = match inner.await {
            Ok(r) => r,
            Err(e) => RunReport::new(None, Outcome::Failed { error: format!("the run panicked: {e}") }),
        };
        let elapsed = t0.elapsed();
        let finished = Utc::now();
        shared.metrics.record_run(&cluster, &report, elapsed, finished);
        match &report.outcome {
            o if o.is_failure() => {
                tracing::warn!(cluster = %cluster, outcome = %o, seconds = elapsed.as_secs_f64(), "run finished")
            }
            o => {
                tracing::info!(cluster = %cluster, outcome = %o, seconds = elapsed.as_secs_f64(), "run finished")
            }
        }

        let mut st = shared.state.lock().unwrap();
        let accepting = st.accepting;
        let Some(slot) = st.clusters.get_mut(&cluster) else {
            break;
        };
        if report.outcome.is_applied() {
            if let Some(rev) = &report.revision {
                slot.applied = Some((rev.clone(), finished));
            }
            slot.held_until = None;
        }
        if let (Outcome::Held { .. }, ApplyGate::Held { reopens }) = (&report.outcome, &apply) {
            slot.held_until = *reopens;
            shared.timers_changed.notify_one();
        }
        slot.last = Some(LastRun {
            trigger: trigger.clone(),
            started,
            finished,
            duration_seconds: elapsed.as_secs_f64(),
            report,
        });
        let next = if accepting && !slot.suspended {
            slot.pending.take()
        } else {
            slot.pending = None;
            None
        };
        match next {
            Some(t) => {
                slot.running = Some(Running { trigger: t.clone(), since: Utc::now() });
                trigger = t;
                update_queue_metrics(&shared.metrics, &st);
            }
            None => {
                slot.running = None;
                if !slot.in_fleet {
                    st.clusters.remove(&cluster);
                }
                update_queue_metrics(&shared.metrics, &st);
                drop(st);
                shared.idle.notify_waiters();
                return;
            }
        }
    }
    // The slot vanished (cannot happen while running, but never leave waiters hanging).
    shared.idle.notify_waiters();
}

/// Fleet-wide triggers: coalesced, one refresh, then fanned out.
async fn dispatcher<R: Reconcile>(shared: Arc<Shared<R>>, mut rx: mpsc::UnboundedReceiver<FleetMsg>) {
    while let Some(first) = rx.recv().await {
        // Everything that queued up meanwhile is served by this one refresh.
        let mut run: Option<Trigger> = None;
        let mut add = |m: FleetMsg| {
            if let FleetMsg::Run(t) = m {
                run = match run.take() {
                    Some(p) if p.priority() > t.priority() => Some(p),
                    _ => Some(t),
                };
            }
        };
        add(first);
        while let Ok(m) = rx.try_recv() {
            add(m);
        }
        if !shared.state.lock().unwrap().accepting {
            break;
        }
        let result = shared.pipeline.refresh().await;
        let now = Utc::now();
        let (moved, head) = {
            let mut st = shared.state.lock().unwrap();
            st.last_refresh = Some(now);
            match result {
                Ok(head) => {
                    st.refreshed_ok = true;
                    st.remote_ok = true;
                    st.last_error = None;
                    let moved = st.head.as_deref() != Some(head.revision.as_str());
                    st.head = Some(head.revision.clone());
                    apply_fleet(&mut st, head.clusters, now);
                    shared.timers_changed.notify_one();
                    (moved, st.head.clone())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refresh failed");
                    if matches!(e, RefreshError::Fetch(_)) {
                        st.remote_ok = false;
                        shared.metrics.git_fetch_failed();
                    }
                    st.last_error = Some(e.to_string());
                    (false, st.head.clone())
                }
            }
        };
        let trigger = match (run, moved, head) {
            (Some(t), _, _) => Some(t),
            (None, true, Some(revision)) => Some(Trigger::Poll { revision }),
            _ => None,
        };
        let Some(trigger) = trigger else { continue };
        let names: Vec<String> = shared
            .state
            .lock()
            .unwrap()
            .clusters
            .iter()
            .filter(|(_, s)| s.in_fleet && !s.suspended)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            match enqueue(&shared, &name, trigger.clone()) {
                Ok(_) | Err(TriggerError::Suspended(_)) | Err(TriggerError::UnknownCluster(_)) => {}
                Err(TriggerError::ShuttingDown) => return,
            }
        }
    }
}

/// Brings the cluster set in line with the fleet's (new clusters, new schedules,
/// clusters that left).
fn apply_fleet(st: &mut State, clusters: Vec<ClusterSchedule>, now: DateTime<Utc>) {
    let names: BTreeSet<String> = clusters.iter().map(|c| c.name.clone()).collect();
    for schedule in clusters {
        match st.clusters.get_mut(&schedule.name) {
            Some(slot) => {
                if slot.schedule.drift != schedule.drift {
                    slot.next_drift = schedule.drift.as_ref().and_then(|l| l.next_after(&now));
                }
                slot.schedule = schedule;
                slot.in_fleet = true;
            }
            None => {
                let suspended = st.initially_suspended.contains(&schedule.name);
                st.clusters.insert(schedule.name.clone(), Slot::new(schedule, suspended, now));
            }
        }
    }
    st.clusters.retain(|name, slot| {
        if names.contains(name) {
            return true;
        }
        slot.in_fleet = false;
        slot.running.is_some()
    });
}

/// Drift checks on each cluster's cron line, and a run when a held cluster's
/// sync window opens.
async fn timers<R: Reconcile>(shared: Arc<Shared<R>>) {
    let mut stop = shared.stop_tx.subscribe();
    loop {
        let now = Utc::now();
        let mut due: Vec<(String, Trigger)> = Vec::new();
        let mut next_wake: Option<DateTime<Utc>> = None;
        {
            let mut st = shared.state.lock().unwrap();
            if !st.accepting {
                return;
            }
            for (name, slot) in st.clusters.iter_mut() {
                if let Some(t) = slot.next_drift {
                    if t <= now {
                        due.push((name.clone(), Trigger::Cron));
                        slot.next_drift = slot.schedule.drift.as_ref().and_then(|l| l.next_after(&now));
                    }
                }
                if let Some(t) = slot.held_until {
                    if t <= now {
                        due.push((name.clone(), Trigger::WindowOpen));
                        slot.held_until = None;
                    }
                }
                for t in [slot.next_drift, slot.held_until].into_iter().flatten() {
                    next_wake = Some(next_wake.map_or(t, |w| w.min(t)));
                }
            }
        }
        for (name, trigger) in due {
            match enqueue(&shared, &name, trigger) {
                Err(TriggerError::Suspended(_)) => {
                    tracing::debug!(cluster = %name, "drift check skipped: suspended")
                }
                Err(e) => tracing::debug!(cluster = %name, error = %e, "timer trigger dropped"),
                Ok(_) => {}
            }
        }
        // Wake at the next due time, on a schedule change, or at least once a
        // minute (the wall clock may jump).
        let sleep_for = next_wake
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = shared.timers_changed.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SyncWindow, WindowKind};
    use crate::serve::schedule::SyncWindows;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    /// Records calls; each run blocks until the test releases a permit.
    struct Stub {
        head: Mutex<String>,
        clusters: Mutex<Vec<ClusterSchedule>>,
        refreshes: AtomicUsize,
        calls: Mutex<Vec<(String, Trigger, ApplyGate)>>,
        release: Semaphore,
        panic_on: Option<String>,
    }

    impl Stub {
        fn new(names: &[&str]) -> Stub {
            Stub {
                head: Mutex::new("rev1".into()),
                clusters: Mutex::new(names.iter().map(|n| ClusterSchedule::unscheduled(*n)).collect()),
                refreshes: AtomicUsize::new(0),
                calls: Mutex::new(Vec::new()),
                release: Semaphore::new(0),
                panic_on: None,
            }
        }
        fn calls(&self) -> Vec<(String, Trigger, ApplyGate)> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Reconcile for Stub {
        async fn refresh(&self) -> Result<FleetHead, RefreshError> {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            Ok(FleetHead {
                revision: self.head.lock().unwrap().clone(),
                clusters: self.clusters.lock().unwrap().clone(),
            })
        }
        async fn reconcile(&self, cluster: &str, ctx: RunContext) -> RunReport {
            self.calls.lock().unwrap().push((cluster.to_string(), ctx.trigger.clone(), ctx.apply.clone()));
            if self.panic_on.as_deref() == Some(cluster) {
                panic!("stub panics for {cluster}");
            }
            self.release.acquire().await.unwrap().forget();
            let outcome = match ctx.apply {
                ApplyGate::Open => Outcome::Applied,
                ApplyGate::Held { .. } => Outcome::Held { reason: "outside sync windows".into() },
            };
            RunReport::new(Some(self.head.lock().unwrap().clone()), outcome)
        }
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn started(names: &[&str]) -> Reconciler<Stub> {
        let r = Reconciler::start(Stub::new(names), LoopOptions::default());
        r.poll().unwrap();
        // The first poll sees a new head and runs every cluster: let them finish.
        until("first runs", || r.pipeline().calls().len() == names.len()).await;
        r.pipeline().release.add_permits(names.len());
        r.drained().await;
        r
    }

    #[tokio::test]
    async fn triggers_for_a_busy_cluster_collapse_into_one_pending_run() {
        let r = started(&["lab"]).await;
        assert_eq!(r.trigger("lab", Trigger::Cron), Ok(Enqueued::Started));
        until("run 2", || r.pipeline().calls().len() == 2).await;
        for t in [Trigger::Cron, Trigger::Manual, Trigger::Watch, Trigger::Cron] {
            assert_eq!(r.trigger("lab", t), Ok(Enqueued::Coalesced));
        }
        let st = r.status();
        assert_eq!(st.clusters["lab"].queue, QueueState::RunningWithPending);
        assert_eq!(st.clusters["lab"].pending, Some(Trigger::Manual));
        r.pipeline().release.add_permits(1);
        until("run 3", || r.pipeline().calls().len() == 3).await;
        assert_eq!(r.pipeline().calls()[2].1, Trigger::Manual, "the strongest trigger is kept");
        r.pipeline().release.add_permits(1);
        r.drained().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(r.pipeline().calls().len(), 3, "no run beyond the one pending");
        let st = r.status();
        assert_eq!(st.clusters["lab"].queue, QueueState::Idle);
        assert_eq!(st.clusters["lab"].applied_revision.as_deref(), Some("rev1"));
    }

    #[tokio::test]
    async fn suspended_clusters_run_nothing() {
        let r = started(&["lab", "prod"]).await;
        r.suspend("lab").unwrap();
        assert_eq!(r.trigger("lab", Trigger::Manual), Err(TriggerError::Suspended("lab".into())));
        r.trigger_all(Trigger::Manual).unwrap();
        until("prod runs", || r.pipeline().calls().len() == 3).await;
        r.pipeline().release.add_permits(1);
        r.drained().await;
        assert_eq!(r.pipeline().calls()[2].0, "prod");
        assert!(r.status().clusters["lab"].suspended);
        // Resuming catches up at once.
        assert_eq!(r.resume("lab"), Ok(Enqueued::Started));
        until("lab runs", || r.pipeline().calls().len() == 4).await;
        r.pipeline().release.add_permits(1);
        r.drained().await;
        assert_eq!(r.trigger("nope", Trigger::Manual), Err(TriggerError::UnknownCluster("nope".into())));
    }

    #[tokio::test]
    async fn polls_start_runs_only_when_the_head_moves() {
        let r = started(&["lab"]).await;
        let refreshes = r.pipeline().refreshes.load(Ordering::SeqCst);
        r.poll().unwrap();
        until("refresh", || r.pipeline().refreshes.load(Ordering::SeqCst) > refreshes).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(r.pipeline().calls().len(), 1, "same head: nothing to do");
        *r.pipeline().head.lock().unwrap() = "rev2".into();
        r.poll().unwrap();
        until("run on rev2", || r.pipeline().calls().len() == 2).await;
        assert_eq!(r.pipeline().calls()[1].1, Trigger::Poll { revision: "rev2".into() });
        r.pipeline().release.add_permits(1);
        r.drained().await;
        assert!(r.readiness().is_ok());
    }

    #[tokio::test]
    async fn new_clusters_from_a_refresh_join_and_removed_ones_leave() {
        let r = started(&["lab"]).await;
        *r.pipeline().clusters.lock().unwrap() = vec![ClusterSchedule::unscheduled("prod")];
        r.trigger_all(Trigger::Manual).unwrap();
        until("prod runs", || r.pipeline().calls().len() == 2).await;
        r.pipeline().release.add_permits(1);
        r.drained().await;
        let st = r.status();
        assert!(st.clusters.contains_key("prod"));
        assert!(!st.clusters.contains_key("lab"));
    }

    #[tokio::test]
    async fn sync_windows_hold_applies() {
        let r = started(&["lab"]).await;
        let closed = SyncWindows::parse(&[SyncWindow {
            kind: WindowKind::Deny,
            schedule: "0 * * * *".into(),
            duration: "61m".into(),
            description: None,
        }])
        .unwrap();
        *r.pipeline().clusters.lock().unwrap() =
            vec![ClusterSchedule { name: "lab".into(), drift: None, windows: closed }];
        r.trigger_all(Trigger::Manual).unwrap();
        until("held run", || r.pipeline().calls().len() == 2).await;
        assert_eq!(r.pipeline().calls()[1].2, ApplyGate::Held { reopens: None });
        r.pipeline().release.add_permits(1);
        r.drained().await;
        let last = r.status().clusters["lab"].last_run.clone().unwrap();
        assert_eq!(last.report.outcome.name(), "held");
    }

    #[tokio::test]
    async fn shutdown_waits_for_the_run_in_flight_and_refuses_new_triggers() {
        let r = started(&["lab"]).await;
        r.trigger("lab", Trigger::Manual).unwrap();
        until("run", || r.pipeline().calls().len() == 2).await;
        r.trigger("lab", Trigger::Manual).unwrap(); // pending: dropped by shutdown
        let mut stop = r.stop_signal();
        assert!(!stop.is_stopping());
        let r2 = r.clone();
        let done = tokio::spawn(async move { r2.shutdown().await });
        stop.stopped().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!done.is_finished(), "shutdown must wait for the run in flight");
        assert_eq!(r.trigger("lab", Trigger::Manual), Err(TriggerError::ShuttingDown));
        assert_eq!(r.trigger_all(Trigger::Manual), Err(TriggerError::ShuttingDown));
        r.pipeline().release.add_permits(1);
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("shutdown finishes once the run returns")
            .unwrap();
        assert_eq!(r.pipeline().calls().len(), 2, "the pending run was dropped");
        assert!(r.readiness().is_err());
    }

    #[tokio::test]
    async fn a_panicking_run_is_a_failed_run() {
        let mut stub = Stub::new(&["lab"]);
        stub.panic_on = Some("lab".into());
        let r = Reconciler::start(stub, LoopOptions::default());
        r.trigger_all(Trigger::Startup).unwrap();
        until("run", || r.pipeline().calls().len() == 1).await;
        r.drained().await;
        until("recorded", || r.status().clusters["lab"].last_run.is_some()).await;
        let st = r.status();
        assert_eq!(st.clusters["lab"].queue, QueueState::Idle);
        assert_eq!(st.clusters["lab"].last_run.as_ref().unwrap().report.outcome.name(), "failed");
        assert!(r.metrics().encode().contains("lxd_gitops_reconcile_failures_total{cluster=\"lab\"} 1"));
    }

    #[tokio::test]
    async fn initially_suspended_clusters_wait_for_resume() {
        let r = Reconciler::start(Stub::new(&["lab"]), LoopOptions { suspended: ["lab".to_string()].into() });
        r.trigger_all(Trigger::Startup).unwrap();
        until("refresh", || r.pipeline().refreshes.load(Ordering::SeqCst) == 1).await;
        until("cluster known", || r.status().clusters.contains_key("lab")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(r.pipeline().calls().is_empty());
        assert!(r.status().clusters["lab"].suspended);
    }
}
