//! The git source: the watched branch of the fleet repository, as revisions on disk.
//!
//! Owns: a working directory (`<work_dir>/repo.git`, a bare repository it fetches
//! into, and `<work_dir>/checkouts/<commit>/`, one read-only export per revision),
//! fetching `origin/<branch>`, refusing heads whose signature does not satisfy the
//! `SignaturePolicy`, and exporting a commit's tree. Must not: parse fleet files,
//! decide which revision is "good" (that is `last_good` plus the validator), push.
//!
//! Why one directory per commit instead of one work tree: a run of one cluster may
//! still be reading revision A while a webhook makes the source fetch revision B.
//! Exports never change once written (written to a temporary name, then renamed),
//! so readers never see a half-checked-out tree.

use super::remote::{self, redact_url, RemoteAuth};
use super::signature::{verify_commit, SignaturePolicy, Signer};

use super::GitError;
use git2::{Oid, Repository};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many exports `sync` keeps besides the one it returns (the most recent ones).
const KEEP_CHECKOUTS: usize = 4;

/// Where the fleet comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// `https://…`, `ssh://…`, `user@host:path`, `file://…` or a local path.
    pub url: String,
    pub branch: String,
    /// The fleet directory inside the repository (`.` for its root).
    pub path: String,
    pub auth: RemoteAuth,
    pub signature: SignaturePolicy,
}

/// One revision of the fleet, exported to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// Full commit id.
    pub commit: String,
    /// The fleet directory of this commit (the export root joined with `path`).
    pub dir: PathBuf,
    /// Who signed it, when the policy asked for a signature.
    pub signer: Option<String>,
}

/// Fetches and exports revisions of one branch. Methods block (git2, subprocesses):
/// call them from `spawn_blocking`. Calls are serialised internally.
pub struct GitSource {
    spec: SourceSpec,
    work_dir: PathBuf,
    lock: Mutex<()>,
    /// Commits whose signature already verified, so re-exports don't re-run tools.
    verified: Mutex<HashMap<Oid, Option<String>>>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &redact_url(&self.spec.url))
            .field("branch", &self.spec.branch)
            .field("path", &self.spec.path)
            .field("work_dir", &self.work_dir)
            .finish()
    }
}

impl GitSource {
    /// A source that keeps its clone and exports under `work_dir` (created on first sync).
    pub fn new(spec: SourceSpec, work_dir: impl Into<PathBuf>) -> Result<GitSource, GitError> {
        let rel = Path::new(&spec.path);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(GitError::Config(format!(
                "repo.path `{}` must be a relative path inside the repository",
                spec.path
            )));
        }
        if !git2::Reference::is_valid_name(&format!("refs/heads/{}", spec.branch)) {
            return Err(GitError::Config(format!("`{}` is not a valid branch name", spec.branch)));
        }
        Ok(GitSource { spec, work_dir: work_dir.into(), lock: Mutex::new(()), verified: Mutex::new(HashMap::new()) })
    }

    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.spec.branch)
    }

    fn open(&self) -> Result<Repository, GitError> {
        let path = self.work_dir.join("repo.git");
        if path.join("HEAD").exists() {
            Repository::open_bare(&path).map_err(GitError::git(format!("opening the source clone {}", path.display())))
        } else {
            std::fs::create_dir_all(&self.work_dir)
                .map_err(GitError::io("creating the source directory", &self.work_dir))?;
            Repository::init_bare(&path).map_err(GitError::git(format!("creating the source clone {}", path.display())))
        }
    }

    /// Fetches the branch and returns its head commit id, without exporting it.
    /// Also tells whether the remote is reachable (readiness).
    pub fn fetch(&self) -> Result<String, GitError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = self.open()?;
        Ok(self.fetch_locked(&repo)?.to_string())
    }

    fn fetch_locked(&self, repo: &Repository) -> Result<Oid, GitError> {
        let refspec = format!("+refs/heads/{}:{}", self.spec.branch, self.tracking_ref());
        remote::fetch(repo, &self.spec.url, &self.spec.auth, &[refspec])?;
        repo.refname_to_id(&self.tracking_ref())
            .map_err(|_| GitError::NoBranch { url: redact_url(&self.spec.url), branch: self.spec.branch.clone() })
    }

    /// Fetches the branch, verifies its head and exports it. The revision returned
    /// is the head of `origin/<branch>`; whether it is *valid* is for the fleet
    /// validator to say (see `LastGood`).
    pub fn sync(&self) -> Result<Revision, GitError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = self.open()?;
        let head = self.fetch_locked(&repo)?;
        let rev = self.export_locked(&repo, head)?;
        self.prune_locked(&rev.commit);
        Ok(rev)
    }

    /// Exports an already fetched commit (such as the last good revision after the
    /// head turned out invalid). The signature policy applies to it as well.
    pub fn checkout(&self, commit: &str) -> Result<Revision, GitError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = self.open()?;
        let oid = Oid::from_str(commit).map_err(|_| GitError::Config(format!("`{commit}` is not a commit id")))?;
        self.export_locked(&repo, oid)
    }

    fn export_locked(&self, repo: &Repository, oid: Oid) -> Result<Revision, GitError> {
        let commit = repo.find_commit(oid).map_err(GitError::git(format!("reading commit {oid}")))?;
        let cached = self.verified.lock().unwrap().get(&oid).cloned();
        let signer = match cached {
            Some(s) => s,
            None => {
                let s = verify_commit(repo, oid, &self.spec.signature)?.map(|Signer(s)| s);
                self.verified.lock().unwrap().insert(oid, s.clone());
                s
            }
        };
        let checkouts = self.work_dir.join("checkouts");
        let root = checkouts.join(oid.to_string());
        if !root.is_dir() {
            let tmp = checkouts.join(format!(".{oid}.tmp"));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(GitError::io("removing a partial export", &tmp))?;
            }
            std::fs::create_dir_all(&tmp).map_err(GitError::io("creating an export", &tmp))?;
            let tree = commit.tree().map_err(GitError::git(format!("reading the tree of {oid}")))?;
            let mut co = git2::build::CheckoutBuilder::new();
            co.target_dir(&tmp).force().recreate_missing(true);
            repo.checkout_tree(tree.as_object(), Some(&mut co)).map_err(GitError::git(format!("exporting {oid}")))?;
            std::fs::rename(&tmp, &root).map_err(GitError::io("publishing an export", &root))?;
        } else {
            // Touch it so pruning by age keeps what is in use.
            let _ = filetime_now(&root);
        }
        let dir =
            if self.spec.path == "." || self.spec.path.is_empty() { root.clone() } else { root.join(&self.spec.path) };
        if !dir.is_dir() {
            return Err(GitError::NoPath { commit: oid.to_string(), path: self.spec.path.clone() });
        }
        Ok(Revision { commit: oid.to_string(), dir, signer })
    }

    /// Removes old exports, keeping `keep` and the most recently used ones.
    fn prune_locked(&self, keep: &str) {
        let checkouts = self.work_dir.join("checkouts");
        let Ok(entries) = std::fs::read_dir(&checkouts) else {
            return;
        };
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                !n.starts_with('.') && n != keep
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (_, old) in dirs.into_iter().skip(KEEP_CHECKOUTS) {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(path = %old.display(), error = %e, "could not remove an old export");
            }
        }
    }
}

/// Marks a directory as recently used (its mtime drives pruning).
fn filetime_now(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    f.set_modified(std::time::SystemTime::now())
}
