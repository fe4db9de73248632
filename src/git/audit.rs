//! Audit commits: one commit per run on a dedicated branch, pushed with retry.
//!
//! Owns: the audit record format (`AuditRun`, written as
//! `runs/<cluster>/<UTC start>-<short rev>.json`, and `status/<cluster>.json`, the
//! cluster's current state: applied revision, drift, pending snap settings, last
//! result), building each commit on top of the remote audit branch head (an orphan
//! branch when it does not exist yet), and pushing it: on a non-fast-forward
//! rejection it fetches, rebuilds the commit on the new head and tries again.
//! Must not: touch any other branch (it refuses to be configured on the watched
//! branch, so an audit commit can never trigger a reconcile), touch files other than
//! its own two per run, force-push, or record secrets.

use super::remote::{self, redact_url, PushFailure, RemoteAuth};
use super::GitError;
use crate::model::{ConfigMap, Kind};
use crate::run::{short_rev, Outcome, RunReport, Trigger};
use chrono::{DateTime, Utc};
use git2::{Oid, Repository, Signature, Tree};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// The audit branch used when none is configured.
pub const DEFAULT_AUDIT_BRANCH: &str = "lxd-gitops/audit";

/// Who ran the reconcile: written in every record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub hostname: String,
    pub version: String,
}

impl Identity {
    /// This host and this build.
    pub fn current() -> Identity {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        Identity { hostname, version: env!("CARGO_PKG_VERSION").to_string() }
    }
}

/// Everything recorded about one run of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRun {
    pub cluster: String,
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// Source revision, outcome, plan counts, drift and pending snap settings.
    #[serde(flatten)]
    pub report: RunReport,
    /// Per-step results (the executor's ApplyReport as JSON; `null` when nothing ran).
    #[serde(default)]
    pub steps: serde_json::Value,
    pub reconciler: Identity,
}

/// `status/<cluster>.json`: where the cluster stands after the latest run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    /// The last revision live state was brought to (or found at).
    pub applied_revision: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
    pub last_run: LastRun,
    #[serde(default)]
    pub drift: BTreeMap<Kind, u64>,
    #[serde(default)]
    pub pending_snap: BTreeMap<String, ConfigMap>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub revision: Option<String>,
    pub trigger: Trigger,
    pub outcome: Outcome,
    pub finished: DateTime<Utc>,
    /// Path of the run file inside the audit branch.
    pub record: String,
}

/// Name and email for the author or committer of audit commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub email: String,
}

/// Where and how audit commits are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSpec {
    /// The repository holding the audit branch (usually the fleet repository).
    pub url: String,
    pub auth: RemoteAuth,
    pub branch: String,
    /// The watched branch: the audit branch may never be this one.
    pub source_branch: String,
    pub author: Person,
    pub committer: Person,
    /// Whether commits are pushed; when not, they stay in the local clone (a
    /// development setting: `git -C <state_dir>/audit.git log lxd-gitops/audit`).
    pub push: bool,
    /// Push attempts before giving up (each after a fetch and rebuild).
    pub max_attempts: u32,
}

/// Writes audit commits. Blocking; calls are serialised.
pub struct AuditWriter {
    spec: AuditSpec,
    repo_dir: PathBuf,
    lock: Mutex<()>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("url", &redact_url(&self.spec.url))
            .field("branch", &self.spec.branch)
            .field("repo_dir", &self.repo_dir)
            .finish()
    }
}

fn strip_heads(b: &str) -> &str {
    b.strip_prefix("refs/heads/").unwrap_or(b)
}

impl AuditWriter {
    /// A writer keeping its clone in `repo_dir`. Refuses an audit branch that is the
    /// watched branch.
    pub fn new(spec: AuditSpec, repo_dir: impl Into<PathBuf>) -> Result<AuditWriter, GitError> {
        let branch = strip_heads(&spec.branch);
        if branch == strip_heads(&spec.source_branch) {
            return Err(GitError::Config(format!(
                "the audit branch `{branch}` is the watched branch: audit commits would trigger reconciles; pick another (default {DEFAULT_AUDIT_BRANCH})"
            )));
        }
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(GitError::Config(format!("`{branch}` is not a valid branch name")));
        }
        let spec = AuditSpec { branch: branch.to_string(), max_attempts: spec.max_attempts.max(1), ..spec };
        Ok(AuditWriter { spec, repo_dir: repo_dir.into(), lock: Mutex::new(()) })
    }

    pub fn branch(&self) -> &str {
        &self.spec.branch
    }

    fn open(&self) -> Result<Repository, GitError> {
        if self.repo_dir.join("HEAD").exists() {
            Repository::open_bare(&self.repo_dir).map_err(GitError::git(format!("opening {}", self.repo_dir.display())))
        } else {
            std::fs::create_dir_all(&self.repo_dir)
                .map_err(GitError::io("creating the audit clone", &self.repo_dir))?;
            Repository::init_bare(&self.repo_dir)
                .map_err(GitError::git(format!("creating {}", self.repo_dir.display())))
        }
    }

    /// Commits `run` and pushes it; returns the commit id that landed.
    pub fn record(&self, run: &AuditRun) -> Result<Oid, GitError> {
        check_cluster_name(&run.cluster)?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = self.open()?;
        let local_ref = format!("refs/heads/{}", self.spec.branch);
        let tracking = format!("refs/remotes/origin/{}", self.spec.branch);
        let mut last_error = String::new();
        for attempt in 1..=self.spec.max_attempts {
            if attempt > 1 {
                std::thread::sleep(backoff(attempt));
            }
            let parent = if self.spec.push {
                if let Err(e) =
                    remote::fetch(&repo, &self.spec.url, &self.spec.auth, &[format!("+{local_ref}:{tracking}")])
                {
                    last_error = e.to_string();
                    tracing::warn!(attempt, error = %last_error, "fetching the audit branch failed");
                    continue;
                }
                repo.refname_to_id(&tracking).ok()
            } else {
                repo.refname_to_id(&local_ref).ok()
            };
            let oid = self.build_commit(&repo, parent, run)?;
            repo.reference(&local_ref, oid, true, "lxd-gitops audit")
                .map_err(GitError::git("updating the local audit branch"))?;
            if !self.spec.push {
                return Ok(oid);
            }
            match remote::push(&repo, &self.spec.url, &self.spec.auth, &format!("{local_ref}:{local_ref}")) {
                Ok(()) => {
                    let _ = repo.reference(&tracking, oid, true, "lxd-gitops audit pushed");
                    tracing::debug!(commit = %oid, attempt, "audit commit pushed");
                    return Ok(oid);
                }
                Err(PushFailure::Rejected(msg)) => {
                    tracing::info!(attempt, reason = %msg, "audit push rejected, rebasing on the new head");
                    last_error = msg;
                }
                Err(PushFailure::Other(msg)) => {
                    tracing::warn!(attempt, error = %msg, "audit push failed");
                    last_error = msg;
                }
            }
        }
        Err(GitError::Push { url: redact_url(&self.spec.url), attempts: self.spec.max_attempts, message: last_error })
    }

    /// A commit adding this run's file and replacing the cluster's status file on
    /// top of `parent` (or an orphan commit when there is none).
    fn build_commit(&self, repo: &Repository, parent: Option<Oid>, run: &AuditRun) -> Result<Oid, GitError> {
        let parent = match parent {
            Some(p) => Some(repo.find_commit(p).map_err(GitError::git("reading the audit branch head"))?),
            None => None,
        };
        let base = match &parent {
            Some(c) => Some(c.tree().map_err(GitError::git("reading the audit tree"))?),
            None => None,
        };

        let rev = run.report.revision.as_deref().unwrap_or("none");
        let stamp = run.started.format("%Y%m%dT%H%M%S%.3fZ");
        let mut name = format!("{stamp}-{}.json", short_rev(rev));
        let run_dir = format!("runs/{}", run.cluster);
        let mut n = 2;
        while let Some(t) = &base {
            if t.get_path(std::path::Path::new(&format!("{run_dir}/{name}"))).is_err() {
                break;
            }
            name = format!("{stamp}-{}-{n}.json", short_rev(rev));
            n += 1;
        }
        let run_path = format!("{run_dir}/{name}");

        let previous: Option<ClusterStatus> = base.as_ref().and_then(|t| {
            let entry = t.get_path(std::path::Path::new(&format!("status/{}.json", run.cluster))).ok()?;
            let blob = repo.find_blob(entry.id()).ok()?;
            serde_json::from_slice(blob.content()).ok()
        });
        let status = next_status(previous, run, &run_path);

        #[derive(Serialize)]
        struct RunFile<'a> {
            format: u32,
            #[serde(flatten)]
            run: &'a AuditRun,
            duration_seconds: f64,
        }
        let run_json = serde_json::to_vec_pretty(&RunFile {
            format: 1,
            run,
            duration_seconds: (run.finished - run.started).to_std().unwrap_or_default().as_secs_f64(),
        })
        .map_err(|e| GitError::Config(format!("serialising the audit record: {e}")))?;
        let status_json = serde_json::to_vec_pretty(&status)
            .map_err(|e| GitError::Config(format!("serialising the status file: {e}")))?;

        let blob_run = repo.blob(&run_json).map_err(GitError::git("writing the run file"))?;
        let blob_status = repo.blob(&status_json).map_err(GitError::git("writing the status file"))?;
        let tree = upsert(repo, base.as_ref(), &["runs", &run.cluster, &name], blob_run)?;
        let tree = repo.find_tree(tree).map_err(GitError::git("reading the new tree"))?;
        let status_name = format!("{}.json", run.cluster);
        let tree = upsert(repo, Some(&tree), &["status", &status_name], blob_status)?;
        let tree = repo.find_tree(tree).map_err(GitError::git("reading the new tree"))?;

        let when = git2::Time::new(run.finished.timestamp(), 0);
        let author = Signature::new(&self.spec.author.name, &self.spec.author.email, &when)
            .map_err(GitError::git("audit author"))?;
        let committer = Signature::now(&self.spec.committer.name, &self.spec.committer.email)
            .map_err(GitError::git("audit committer"))?;
        let message = format!(
            "audit({}): {} {} [{}]\n\n{}\nRecord: {}\nReconciler: {} {}\n",
            run.cluster,
            run.report.outcome.name(),
            short_rev(rev),
            run.trigger,
            run.report.outcome,
            run_path,
            run.reconciler.hostname,
            run.reconciler.version,
        );
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(None, &author, &committer, &message, &tree, &parents)
            .map_err(GitError::git("creating the audit commit"))
    }
}

/// Cluster names become path segments: refuse anything that could escape them.
fn check_cluster_name(name: &str) -> Result<(), GitError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
        return Err(GitError::Config(format!("`{name}` cannot be used as a cluster name in audit paths")));
    }
    Ok(())
}

/// The status after `run`: the applied revision moves only when the run applied
/// (or found nothing to do); otherwise the previous one stays.
fn next_status(previous: Option<ClusterStatus>, run: &AuditRun, record: &str) -> ClusterStatus {
    let (applied_revision, applied_at) = if run.report.outcome.is_applied() {
        (run.report.revision.clone(), Some(run.finished))
    } else {
        previous.map(|p| (p.applied_revision, p.applied_at)).unwrap_or((None, None))
    };
    ClusterStatus {
        cluster: run.cluster.clone(),
        applied_revision,
        applied_at,
        last_run: LastRun {
            revision: run.report.revision.clone(),
            trigger: run.trigger.clone(),
            outcome: run.report.outcome.clone(),
            finished: run.finished,
            record: record.to_string(),
        },
        drift: run.report.drift.clone(),
        pending_snap: run.report.pending_snap.clone(),
    }
}

/// Writes `blob` at `path` inside `base` (creating subtrees), returning the new root.
fn upsert(repo: &Repository, base: Option<&Tree>, path: &[&str], blob: Oid) -> Result<Oid, GitError> {
    let mut tb = repo.treebuilder(base).map_err(GitError::git("building the audit tree"))?;
    match path {
        [] => unreachable!("audit paths are never empty"),
        [file] => {
            tb.insert(file, blob, 0o100644).map_err(GitError::git("adding an audit file"))?;
        }
        [dir, rest @ ..] => {
            let sub = base
                .and_then(|t| t.get_name(dir))
                .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
                .map(|e| repo.find_tree(e.id()))
                .transpose()
                .map_err(GitError::git("reading an audit subtree"))?;
            let new = upsert(repo, sub.as_ref(), rest, blob)?;
            tb.insert(dir, new, 0o040000).map_err(GitError::git("adding an audit directory"))?;
        }
    }
    tb.write().map_err(GitError::git("writing the audit tree"))
}

fn backoff(attempt: u32) -> Duration {
    // 100 ms, 200 ms, 400 ms, … plus up to 100 ms of jitter so racing writers part.
    let base = 100u64 << (attempt.saturating_sub(2)).min(5);
    let jitter = (std::process::id() as u64 ^ Utc::now().timestamp_subsec_nanos() as u64) % 100;
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn sample_run(cluster: &str, outcome: Outcome) -> AuditRun {
        let started = Utc.with_ymd_and_hms(2026, 11, 23, 10, 15, 0).unwrap();
        let mut report = RunReport::new(Some("0123456789abcdef0123".into()), outcome);
        report.drift.insert(Kind::Profile, 2);
        AuditRun {
            cluster: cluster.into(),
            trigger: Trigger::Manual,
            started,
            finished: started + chrono::Duration::seconds(3),
            report,
            steps: serde_json::json!([{"step": "update Profile/default/base", "result": "ok"}]),
            reconciler: Identity { hostname: "host1".into(), version: "0.1.0".into() },
        }
    }

    fn spec(url: &str, push: bool) -> AuditSpec {
        AuditSpec {
            url: url.into(),
            auth: RemoteAuth::None,
            branch: DEFAULT_AUDIT_BRANCH.into(),
            source_branch: "main".into(),
            author: Person { name: "lxd-gitops".into(), email: "lxd-gitops@host1".into() },
            committer: Person { name: "lxd-gitops".into(), email: "lxd-gitops@host1".into() },
            push,
            max_attempts: 3,
        }
    }

    #[test]
    fn refuses_the_watched_branch() {
        let mut s = spec("/nowhere", true);
        s.branch = "refs/heads/main".into();
        let err = AuditWriter::new(s, "/tmp/x").unwrap_err();
        assert!(err.to_string().contains("watched branch"), "{err}");
    }

    #[test]
    fn status_keeps_the_applied_revision_across_failures() {
        let ok = sample_run("lab", Outcome::Applied);
        let s1 = next_status(None, &ok, "runs/lab/a.json");
        assert_eq!(s1.applied_revision.as_deref(), Some("0123456789abcdef0123"));
        let mut failed = sample_run("lab", Outcome::Failed { error: "boom".into() });
        failed.report.revision = Some("ffff".into());
        let s2 = next_status(Some(s1.clone()), &failed, "runs/lab/b.json");
        assert_eq!(s2.applied_revision, s1.applied_revision);
        assert_eq!(s2.last_run.revision.as_deref(), Some("ffff"));
        assert_eq!(s2.last_run.outcome.name(), "failed");
    }

    #[test]
    fn local_commits_build_an_orphan_branch_and_add_files() {
        let dir = tempfile::tempdir().unwrap();
        let w = AuditWriter::new(spec("unused", false), dir.path().join("audit.git")).unwrap();
        let first = w.record(&sample_run("lab", Outcome::Applied)).unwrap();
        let mut second_run = sample_run("prod", Outcome::NoChanges);
        second_run.started += chrono::Duration::seconds(1);
        let second = w.record(&second_run).unwrap();
        let repo = Repository::open_bare(dir.path().join("audit.git")).unwrap();
        let c1 = repo.find_commit(first).unwrap();
        assert_eq!(c1.parent_count(), 0, "the first audit commit is an orphan");
        let c2 = repo.find_commit(second).unwrap();
        assert_eq!(c2.parent_id(0).unwrap(), first);
        let tree = c2.tree().unwrap();
        let paths = [
            "runs/lab/20261123T101500.000Z-0123456789ab.json",
            "runs/prod/20261123T101501.000Z-0123456789ab.json",
            "status/lab.json",
            "status/prod.json",
        ];
        for p in paths {
            assert!(tree.get_path(std::path::Path::new(p)).is_ok(), "missing {p}");
        }
        let blob = repo.find_blob(tree.get_path(std::path::Path::new(paths[0])).unwrap().id()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(blob.content()).unwrap();
        assert_eq!(v["outcome"]["result"], "applied");
        assert_eq!(v["revision"], "0123456789abcdef0123");
        assert_eq!(v["duration_seconds"], 3.0);
        assert_eq!(v["reconciler"]["hostname"], "host1");
        assert_eq!(v["drift"]["Profile"], 2);
        assert!(c2.message().unwrap().starts_with("audit(prod): no-changes"));
    }

    #[test]
    fn path_escaping_cluster_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w = AuditWriter::new(spec("unused", false), dir.path().join("audit.git")).unwrap();
        assert!(w.record(&sample_run("../x", Outcome::Applied)).is_err());
    }
}
