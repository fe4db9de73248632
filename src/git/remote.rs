//! Talking to a git remote: credentials, host key pinning, fetch and push.
//!
//! Owns: how the source and the audit writer authenticate (`RemoteAuth`: none, an
//! HTTPS token read from a file, or an SSH key with a pinned `known_hosts` file),
//! the git2 callbacks that implement it, and redacting URLs for messages. Must not:
//! log or return secret material (token files are read inside the credential
//! callback and dropped there), decide which refs to fetch or what to commit.

use super::GitError;
use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, ProxyOptions, PushOptions, RemoteCallbacks, Repository,
};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The username sent with an HTTPS token when none is configured. GitHub and Gitea
/// accept it; GitLab wants `oauth2`.
pub const DEFAULT_TOKEN_USERNAME: &str = "x-access-token";

/// How to authenticate to a remote. Paths only: secrets stay in their files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RemoteAuth {
    /// Local paths, `file://` URLs and public HTTPS repositories.
    #[default]
    None,
    /// HTTPS with a token read from `file` at each connection (so rotation works).
    Token { file: PathBuf, username: String },
    /// SSH with a private key; the server's host key must be in `known_hosts_file`.
    SshKey { private_key_file: PathBuf, known_hosts_file: PathBuf },
}

impl RemoteAuth {
    pub fn token(file: impl Into<PathBuf>) -> Self {
        RemoteAuth::Token { file: file.into(), username: DEFAULT_TOKEN_USERNAME.into() }
    }

    /// Checks at startup that the files it names can be read, so that a typo shows
    /// up at once and not at the first fetch.
    pub fn check_files(&self) -> Result<(), GitError> {
        let files: Vec<&Path> = match self {
            RemoteAuth::None => vec![],
            RemoteAuth::Token { file, .. } => vec![file],
            RemoteAuth::SshKey { private_key_file, known_hosts_file } => vec![private_key_file, known_hosts_file],
        };
        for f in files {
            std::fs::File::open(f).map_err(GitError::io("reading a credentials file", f))?;
        }
        Ok(())
    }
}

/// The URL with any password or token in it replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Host and port of an SSH remote (`ssh://user@host:port/path` or `user@host:path`).
pub(crate) fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    if let Ok(u) = url::Url::parse(url) {
        if u.scheme() == "ssh" || u.scheme() == "git+ssh" {
            return Some((u.host_str()?.to_string(), u.port().unwrap_or(22)));
        }
        if u.scheme().len() > 1 {
            return None;
        }
    }
    // scp-like syntax: [user@]host:path (a single-letter "scheme" is a Windows drive).
    let (before, _) = url.split_once(':')?;
    if before.contains('/') {
        return None;
    }
    let host = before.rsplit('@').next()?;
    Some((host.to_string(), 22))
}

/// Whether `key` (the raw host key the server sent) is listed for `host:port` in
/// `known_hosts`. `ssh-keygen -F` does the lookup so hashed entries and patterns
/// work as in OpenSSH; `@revoked` entries that match refuse the key.
pub(crate) fn host_key_known(known_hosts: &Path, host: &str, port: u16, key: &[u8]) -> Result<bool, String> {
    use base64::Engine;
    let spec = if port == 22 { host.to_string() } else { format!("[{host}]:{port}") };
    let out = Command::new("ssh-keygen")
        .arg("-F")
        .arg(&spec)
        .arg("-f")
        .arg(known_hosts)
        .output()
        .map_err(|e| format!("running ssh-keygen -F: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut known = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut fields: Vec<&str> = line.split_whitespace().collect();
        let marker = fields.first().filter(|f| f.starts_with('@')).copied();
        if marker.is_some() {
            fields.remove(0);
        }
        let Some(b64) = fields.get(2) else { continue };
        let Ok(listed) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        if listed != key {
            continue;
        }
        match marker {
            Some("@revoked") => return Ok(false),
            Some(_) => {}
            None => known = true,
        }
    }
    Ok(known)
}

/// What the callbacks saw, for error messages libgit2 would otherwise replace
/// with its own ("invalid or unknown remote ssh hostkey").
#[derive(Default)]
pub(crate) struct Notes {
    host_key: std::cell::RefCell<Option<String>>,
}

impl Notes {
    /// The message to report for `e`: ours when a callback refused.
    fn message(&self, e: &git2::Error) -> String {
        self.host_key.borrow_mut().take().unwrap_or_else(|| e.message().to_string())
    }
}

/// Callbacks that answer credential requests and pin SSH host keys.
pub(crate) fn callbacks<'a>(auth: &'a RemoteAuth, url: &str, notes: &'a Notes) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    // libgit2 asks again after a refused credential; a second ask means "refused".
    let asked = Cell::new(0u32);
    cb.credentials(move |_url, username_from_url, allowed| {
        asked.set(asked.get() + 1);
        if asked.get() > 1 {
            return Err(git2::Error::from_str("the remote refused the configured credentials"));
        }
        match auth {
            RemoteAuth::None => Err(git2::Error::from_str("the remote asks for credentials and none are configured")),
            RemoteAuth::Token { file, username } => {
                if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                    return Err(git2::Error::from_str(
                        "a token is configured but the remote does not accept user/password (is this an SSH URL?)",
                    ));
                }
                let token = std::fs::read_to_string(file)
                    .map_err(|e| git2::Error::from_str(&format!("reading the token file {}: {e}", file.display())))?;
                Cred::userpass_plaintext(username, token.trim())
            }
            RemoteAuth::SshKey { private_key_file, .. } => {
                if allowed.contains(CredentialType::USERNAME) {
                    return Cred::username(username_from_url.unwrap_or("git"));
                }
                Cred::ssh_key(username_from_url.unwrap_or("git"), None, private_key_file, None)
            }
        }
    });
    if let RemoteAuth::SshKey { known_hosts_file, .. } = auth {
        let port = ssh_host_port(url).map(|(_, p)| p).unwrap_or(22);
        cb.certificate_check(move |cert, hostname| {
            let Some(hk) = cert.as_hostkey() else {
                // HTTPS with an SSH key configured: let libgit2's TLS checks decide.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let Some(key) = hk.hostkey() else {
                return Err(git2::Error::from_str("the SSH server sent no host key to check"));
            };
            let problem = match host_key_known(known_hosts_file, hostname, port, key) {
                Ok(true) => return Ok(CertificateCheckStatus::CertificateOk),
                Ok(false) => {
                    format!("the host key of {hostname} (port {port}) is not in {}", known_hosts_file.display())
                }
                Err(e) => e,
            };
            *notes.host_key.borrow_mut() = Some(problem.clone());
            Err(git2::Error::from_str(&problem))
        });
    }
    cb
}

/// Fetches `refspecs` from `url` into `repo` (no tags).
pub(crate) fn fetch(repo: &Repository, url: &str, auth: &RemoteAuth, refspecs: &[String]) -> Result<(), GitError> {
    let notes = Notes::default();
    let fail = |e: git2::Error| GitError::Fetch { url: redact_url(url), message: notes.message(&e) };
    let mut remote = repo.remote_anonymous(url).map_err(fail)?;
    let mut proxy = ProxyOptions::new();
    proxy.auto();
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(auth, url, &notes)).download_tags(git2::AutotagOption::None).proxy_options(proxy);
    remote.fetch(refspecs, Some(&mut opts), None).map_err(fail)
}

/// Why a push did not land.
#[derive(Debug)]
pub(crate) enum PushFailure {
    /// The remote moved on (non-fast-forward): fetch, rebuild, retry.
    Rejected(String),
    /// Anything else (network, credentials).
    Other(String),
}

/// Pushes one refspec (`refs/heads/a:refs/heads/b`, never forced).
pub(crate) fn push(repo: &Repository, url: &str, auth: &RemoteAuth, refspec: &str) -> Result<(), PushFailure> {
    if is_local(url) {
        return push_local(repo, url, refspec);
    }
    let notes = Notes::default();
    let mut remote = repo.remote_anonymous(url).map_err(|e| PushFailure::Other(e.message().to_string()))?;
    let rejected: std::rc::Rc<Cell<Option<String>>> = Default::default();
    let mut cb = callbacks(auth, url, &notes);
    let seen = rejected.clone();
    cb.push_update_reference(move |_refname, status| {
        if let Some(msg) = status {
            seen.set(Some(msg.to_string()));
        }
        Ok(())
    });
    let mut proxy = ProxyOptions::new();
    proxy.auto();
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cb).proxy_options(proxy);
    let result = remote.push(&[refspec], Some(&mut opts));
    drop(remote);
    match result {
        Err(e) if is_non_fast_forward(&e) => Err(PushFailure::Rejected(e.message().to_string())),
        Err(e) => Err(PushFailure::Other(notes.message(&e))),
        Ok(()) => match rejected.take() {
            Some(msg) => Err(PushFailure::Rejected(msg)),
            None => Ok(()),
        },
    }
}

/// A path or `file://` URL: another repository on this machine.
fn is_local(url: &str) -> bool {
    url.starts_with("file://") || (!url.contains("://") && !url.contains('@') && !url.contains(':'))
}

/// libgit2's local transport checks fast-forward against the refs it read when it
/// connected and then writes the remote ref without comparing it again, so two
/// writers racing on one local remote can lose a commit. `git push` goes through
/// receive-pack, which updates the ref only if it still has the old value.
fn push_local(repo: &Repository, url: &str, refspec: &str) -> Result<(), PushFailure> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path())
        .args(["push", "--porcelain", "--quiet", url, refspec])
        .output()
        .map_err(|e| PushFailure::Other(format!("cannot run git push: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lower = text.to_ascii_lowercase();
    if lower.contains("non-fast-forward")
        || lower.contains("fetch first")
        || lower.contains("[rejected]")
        || lower.contains("failed to lock")
        || lower.contains("cannot lock ref")
    {
        Err(PushFailure::Rejected(text.trim().to_string()))
    } else {
        Err(PushFailure::Other(text.trim().to_string()))
    }
}

fn is_non_fast_forward(e: &git2::Error) -> bool {
    let m = e.message().to_ascii_lowercase();
    e.code() == git2::ErrorCode::NotFastForward
        || m.contains("fast-forward")
        || m.contains("fastforward")
        || m.contains("fetch first")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("https://user:s3cret@example.com/fleet.git"), "https://user:***@example.com/fleet.git");
        assert_eq!(redact_url("/srv/git/fleet.git"), "/srv/git/fleet.git");
        assert_eq!(redact_url("git@example.com:ops/fleet.git"), "git@example.com:ops/fleet.git");
    }

    #[test]
    fn ssh_hosts_and_ports() {
        assert_eq!(ssh_host_port("ssh://git@example.com:2222/ops/fleet.git"), Some(("example.com".into(), 2222)));
        assert_eq!(ssh_host_port("git@example.com:ops/fleet.git"), Some(("example.com".into(), 22)));
        assert_eq!(ssh_host_port("https://example.com/ops/fleet.git"), None);
        assert_eq!(ssh_host_port("/srv/git/fleet.git"), None);
    }

    #[test]
    fn known_hosts_lookup_matches_key_host_and_port() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let key_a = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let key_b = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        let kh = dir.path().join("known_hosts");
        std::fs::write(
            &kh,
            format!("git.example.com ssh-ed25519 {}\n[git.example.com]:2222 ssh-ed25519 {}\n", b64(key_a), b64(key_b)),
        )
        .unwrap();
        assert_eq!(host_key_known(&kh, "git.example.com", 22, key_a), Ok(true));
        assert_eq!(host_key_known(&kh, "git.example.com", 22, key_b), Ok(false));
        assert_eq!(host_key_known(&kh, "git.example.com", 2222, key_b), Ok(true));
        assert_eq!(host_key_known(&kh, "other.example.com", 22, key_a), Ok(false));
    }
}
