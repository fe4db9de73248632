//! Git at both ends of the flow: the source the fleet comes from, and the audit
//! branch runs are recorded on.
//!
//! Owns: fetching and materialising revisions of the watched branch (`source`),
//! verifying commit signatures (`signature`), remembering the last revision that
//! validated and applied per cluster (`last_good`), writing and pushing audit
//! commits (`audit`), and the remote plumbing they share (`remote`: credentials,
//! SSH host key pinning). Must not: parse fleet files, talk to LXD, decide when to
//! run. Everything here is blocking (git2); async callers use `spawn_blocking`.

pub mod audit;
pub mod last_good;
pub mod remote;
pub mod signature;
pub mod source;

pub use audit::{AuditRun, AuditWriter};
pub use last_good::LastGood;
pub use remote::RemoteAuth;
pub use signature::SignaturePolicy;
pub use source::{GitSource, Revision};

use std::path::PathBuf;

/// Errors from the git layer, with enough context to act on. Never carries a
/// secret: token contents are read inside credential callbacks only.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{context}: {source}")]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },
    #[error("{context}: {path}: {source}")]
    Io {
        context: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The remote could not be reached or refused our credentials.
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    /// The head commit is unsigned, signed by an unknown key or badly signed.
    #[error("refusing revision {commit}: {reason}")]
    Signature { commit: String, reason: String },
    #[error("branch `{branch}` not found at {url}")]
    NoBranch { url: String, branch: String },
    #[error("revision {commit} has no directory `{path}`")]
    NoPath { commit: String, path: String },
    #[error("{0}")]
    Config(String),
    #[error("pushing the audit commit to {url} failed after {attempts} attempt(s): {message}")]
    Push { url: String, attempts: u32, message: String },
}

impl GitError {
    pub(crate) fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError {
        let context = context.into();
        move |source| GitError::Git { context, source }
    }

    pub(crate) fn io(context: impl Into<String>, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> GitError {
        let context = context.into();
        let path = path.into();
        move |source| GitError::Io { context, path, source }
    }
}
