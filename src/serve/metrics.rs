//! Prometheus metrics of the daemon.
//!
//! Owns: the metric families, their names and labels, how a finished run updates
//! them, and the text exposition for `GET /metrics`. Must not: carry secrets or
//! unbounded label values other than cluster names, kinds and revisions (the
//! revision label of `..._revision_info` is replaced, never accumulated).

use crate::model::Kind;
use crate::run::{Outcome, RunReport};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabel {
    cluster: String,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    cluster: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabel {
    provider: String,
    result: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0])
}

/// All metrics of one daemon.
pub struct Metrics {
    registry: Registry,
    last_applied_timestamp: Family<ClusterLabel, Gauge<f64, AtomicU64>>,
    last_applied_revision: Family<RevisionLabel, Gauge>,
    reconcile_duration: Family<ClusterLabel, Histogram, fn() -> Histogram>,
    drift_objects: Family<KindLabel, Gauge>,
    reconcile_failures: Family<ClusterLabel, Counter>,
    queue_depth: Gauge,
    runs_in_flight: Gauge,
    git_fetch_failures: Counter,
    webhook_requests: Family<WebhookLabel, Counter>,
    /// The revision currently exported per cluster, to drop its old label.
    shown_revision: Mutex<HashMap<String, String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            last_applied_timestamp: Family::default(),
            last_applied_revision: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            drift_objects: Family::default(),
            reconcile_failures: Family::default(),
            queue_depth: Gauge::default(),
            runs_in_flight: Gauge::default(),
            git_fetch_failures: Counter::default(),
            webhook_requests: Family::default(),
            shown_revision: Mutex::new(HashMap::new()),
        };
        registry.register(
            "lxd_gitops_last_applied_timestamp_seconds",
            "Unix time live state last matched a revision (applied or no changes)",
            m.last_applied_timestamp.clone(),
        );
        registry.register(
            "lxd_gitops_last_applied_revision_info",
            "The revision live state last matched (value is always 1)",
            m.last_applied_revision.clone(),
        );
        registry.register(
            "lxd_gitops_reconcile_duration_seconds",
            "Duration of reconcile runs",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "lxd_gitops_drift_objects",
            "Objects whose live state differs from the wanted revision after the last run",
            m.drift_objects.clone(),
        );
        registry.register(
            "lxd_gitops_reconcile_failures",
            "Runs that failed, were refused by policy or met an invalid revision",
            m.reconcile_failures.clone(),
        );
        registry.register(
            "lxd_gitops_queue_depth",
            "Runs waiting behind a run in flight (at most one per cluster)",
            m.queue_depth.clone(),
        );
        registry.register("lxd_gitops_runs_in_flight", "Runs in progress", m.runs_in_flight.clone());
        registry.register(
            "lxd_gitops_git_fetch_failures",
            "Fetches of the fleet repository that failed",
            m.git_fetch_failures.clone(),
        );
        registry.register(
            "lxd_gitops_webhook_requests",
            "Webhook requests by provider and result (accepted, ignored, unauthorized, bad-request)",
            m.webhook_requests.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Updates the per-cluster metrics after a run.
    pub fn record_run(
        &self,
        cluster: &str,
        report: &RunReport,
        duration: std::time::Duration,
        finished: DateTime<Utc>,
    ) {
        let cl = ClusterLabel { cluster: cluster.to_string() };
        self.reconcile_duration.get_or_create(&cl).observe(duration.as_secs_f64());
        if report.outcome.is_failure() {
            self.reconcile_failures.get_or_create(&cl).inc();
        } else {
            // Make the counter exist at 0 so `rate()` works from the first failure.
            let _ = self.reconcile_failures.get_or_create(&cl);
        }
        if report.outcome.is_applied() {
            self.last_applied_timestamp.get_or_create(&cl).set(finished.timestamp_millis() as f64 / 1000.0);
            if let Some(rev) = &report.revision {
                let mut shown = self.shown_revision.lock().unwrap();
                if let Some(old) = shown.insert(cluster.to_string(), rev.clone()) {
                    if &old != rev {
                        self.last_applied_revision
                            .remove(&RevisionLabel { cluster: cluster.to_string(), revision: old });
                    }
                }
                self.last_applied_revision
                    .get_or_create(&RevisionLabel { cluster: cluster.to_string(), revision: rev.clone() })
                    .set(1);
            }
        }
        // What is still out of sync after the run: nothing when it applied; what it
        // found when it held or was refused; unknown (unchanged) when it failed.
        let remaining = match &report.outcome {
            Outcome::Applied | Outcome::NoChanges => Some(None),
            Outcome::Held { .. } | Outcome::Refused { .. } => Some(Some(&report.drift)),
            Outcome::Failed { .. } | Outcome::Invalid { .. } => None,
        };
        if let Some(drift) = remaining {
            for kind in Kind::ALL {
                let n = drift.and_then(|d| d.get(&kind)).copied().unwrap_or(0);
                self.drift_objects
                    .get_or_create(&KindLabel { cluster: cluster.to_string(), kind: kind.as_str().to_string() })
                    .set(n as i64);
            }
        }
    }

    pub fn set_queue(&self, waiting: usize, in_flight: usize) {
        self.queue_depth.set(waiting as i64);
        self.runs_in_flight.set(in_flight as i64);
    }

    pub fn git_fetch_failed(&self) {
        self.git_fetch_failures.inc();
    }

    pub fn webhook(&self, provider: &str, result: &str) {
        self.webhook_requests
            .get_or_create(&WebhookLabel { provider: provider.to_string(), result: result.to_string() })
            .inc();
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of `Metrics::encode`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        let m = Metrics::new();
        let mut report = RunReport::new(Some("abc".into()), Outcome::Applied);
        report.drift.insert(Kind::Profile, 3);
        m.record_run("lab", &report, std::time::Duration::from_millis(1500), Utc::now());
        report.revision = Some("def".into());
        m.record_run("lab", &report, std::time::Duration::from_millis(10), Utc::now());
        let held = RunReport { outcome: Outcome::Held { reason: "window".into() }, ..report.clone() };
        m.record_run("prod", &held, std::time::Duration::from_millis(10), Utc::now());
        m.record_run(
            "prod",
            &RunReport::new(None, Outcome::Failed { error: "x".into() }),
            std::time::Duration::from_millis(10),
            Utc::now(),
        );
        m.git_fetch_failed();
        m.set_queue(2, 1);
        let text = m.encode();
        for needle in [
            "lxd_gitops_last_applied_timestamp_seconds{cluster=\"lab\"}",
            "lxd_gitops_last_applied_revision_info{cluster=\"lab\",revision=\"def\"} 1",
            "lxd_gitops_reconcile_duration_seconds_bucket{le=\"2.5\",cluster=\"lab\"} 2",
            "lxd_gitops_drift_objects{cluster=\"lab\",kind=\"Profile\"} 0",
            "lxd_gitops_drift_objects{cluster=\"prod\",kind=\"Profile\"} 3",
            "lxd_gitops_reconcile_failures_total{cluster=\"prod\"} 1",
            "lxd_gitops_reconcile_failures_total{cluster=\"lab\"} 0",
            "lxd_gitops_queue_depth 2",
            "lxd_gitops_git_fetch_failures_total 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("revision=\"abc\""), "old revision label must go:\n{text}");
    }
}
