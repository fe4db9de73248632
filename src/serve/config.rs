//! The daemon's runtime configuration file (`/etc/lxd-gitops/config.yaml` or `--config`).
//!
//! Owns: reading the YAML file (with `file:line:column` in every error), defaults,
//! resolving relative paths against the file's directory, and reading secrets
//! (webhook secrets) from their files once at startup into `Secret`s, whose
//! `Debug` and `Display` print `***`. Must not: hold the fleet's desired state (that
//! is the fleet repository), log or serialise a secret, open network connections.

use crate::fleet::cron::parse_duration;
use crate::fleet::yaml::{parse_documents, Document, Pos};
use crate::git::audit::{AuditSpec, Person, DEFAULT_AUDIT_BRANCH};
use crate::git::remote::{RemoteAuth, DEFAULT_TOKEN_USERNAME};
use crate::git::signature::SignaturePolicy;
use crate::git::source::SourceSpec;
use crate::serve::webhook::Provider;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/lxd-gitops/config.yaml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lxd-gitops";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9580";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// A secret read from a file. It can be used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// Reads `path`, dropping one trailing newline (files written by `echo`).
    pub fn from_file(path: &Path) -> std::io::Result<Secret> {
        let mut bytes = std::fs::read(path)?;
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Ok(Secret(bytes))
    }

    /// The secret's bytes, for the one place that needs them (HMAC keys, tokens).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The fleet repository to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoConfig {
    pub url: String,
    pub branch: String,
    pub path: String,
    pub auth: RemoteAuth,
    pub signature: SignaturePolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub branch: String,
    pub author: Person,
    pub committer: Person,
    pub push: bool,
}

/// How to reach one member's snapd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapdEndpoint {
    /// A local unix socket (the daemon runs on the member).
    Socket { path: PathBuf },
    /// snapd's socket on a remote member, through SSH.
    Ssh { host: String, port: u16, user: String, identity_file: PathBuf, known_hosts: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterRuntime {
    /// Start with this cluster suspended (nothing runs until `POST .../resume`).
    pub suspended: bool,
    pub snapd: BTreeMap<String, SnapdEndpoint>,
}

/// The resolved runtime configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// None only in development mode with `watch_dir`.
    pub repo: Option<RepoConfig>,
    pub poll_interval: Duration,
    pub listen: SocketAddr,
    pub webhooks: BTreeMap<Provider, Secret>,
    /// Bearer token for `POST /reconcile` and `/clusters/...` (none: no check; keep
    /// `listen` on loopback then).
    pub admin_token: Option<Secret>,
    pub audit: AuditConfig,
    pub credentials_dir: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub watch_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    pub clusters: BTreeMap<String, ClusterRuntime>,
}

impl RepoConfig {
    /// The git source this repository section describes.
    pub fn source_spec(&self) -> SourceSpec {
        SourceSpec {
            url: self.url.clone(),
            branch: self.branch.clone(),
            path: self.path.clone(),
            auth: self.auth.clone(),
            signature: self.signature.clone(),
        }
    }
}

impl Config {
    /// Where the git source keeps its clone and exports.
    pub fn source_dir(&self) -> PathBuf {
        self.state_dir.join("source")
    }

    /// The audit writer's own clone.
    pub fn audit_dir(&self) -> PathBuf {
        self.state_dir.join("audit.git")
    }

    /// The last-good state file.
    pub fn last_good_path(&self) -> PathBuf {
        self.state_dir.join("last-good.json")
    }

    /// Audit commits go to the fleet repository (same URL and credentials), on
    /// the audit branch. None without a repository (development with `watch_dir`).
    pub fn audit_spec(&self) -> Option<AuditSpec> {
        let repo = self.repo.as_ref()?;
        Some(AuditSpec {
            url: repo.url.clone(),
            auth: repo.auth.clone(),
            branch: self.audit.branch.clone(),
            source_branch: repo.branch.clone(),
            author: self.audit.author.clone(),
            committer: self.audit.committer.clone(),
            push: self.audit.push,
            max_attempts: 5,
        })
    }
}

/// A problem in the configuration file, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

// --- the file's shape ------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    repo: Option<FileRepo>,
    poll_interval: Option<String>,
    listen: Option<String>,
    #[serde(default)]
    webhooks: BTreeMap<String, FileWebhook>,
    admin_token_file: Option<PathBuf>,
    #[serde(default)]
    audit: FileAudit,
    credentials_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    watch_dir: Option<PathBuf>,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default)]
    clusters: BTreeMap<String, FileCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepo {
    url: String,
    #[serde(default = "default_branch")]
    branch: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    signature: FileSignature,
}

fn default_branch() -> String {
    "main".into()
}
fn default_path() -> String {
    ".".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    token_file: Option<PathBuf>,
    token_username: Option<String>,
    ssh_key_file: Option<PathBuf>,
    known_hosts_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSignature {
    ssh_allowed_signers: Option<PathBuf>,
    gpg_keyring: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhook {
    secret_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAudit {
    branch: Option<String>,
    author_name: Option<String>,
    author_email: Option<String>,
    committer_name: Option<String>,
    committer_email: Option<String>,
    push: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    #[serde(default)]
    suspended: bool,
    #[serde(default)]
    snapd: BTreeMap<String, FileSnapd>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSnapd {
    socket: Option<PathBuf>,
    ssh: Option<FileSnapdSsh>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSnapdSsh {
    host: String,
    #[serde(default = "default_ssh_port")]
    port: u16,
    #[serde(default = "default_ssh_user")]
    user: String,
    identity_file: PathBuf,
    known_hosts: PathBuf,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_ssh_user() -> String {
    "root".into()
}

// --- loading ---------------------------------------------------------------

struct Ctx<'a> {
    file: String,
    doc: Option<&'a Document>,
    base: PathBuf,
}

impl Ctx<'_> {
    fn err_at(&self, pos: Pos, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: pos.line.max(1),
            column: pos.column.max(1),
            message: message.into(),
        }
    }
    fn value_err(&self, pointer: &str, message: impl Into<String>) -> ConfigError {
        let pos = self.doc.map(|d| d.value_pos(pointer)).unwrap_or_default();
        self.err_at(pos, message)
    }
    fn key_err(&self, pointer: &str, message: impl Into<String>) -> ConfigError {
        let pos = self.doc.map(|d| d.key_pos(pointer)).unwrap_or_default();
        self.err_at(pos, message)
    }
    /// Relative paths are relative to the config file's directory.
    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
    fn readable(&self, pointer: &str, p: &Path) -> Result<PathBuf, ConfigError> {
        let p = self.path(p);
        std::fs::File::open(&p).map_err(|e| self.value_err(pointer, format!("cannot read {}: {e}", p.display())))?;
        Ok(p)
    }
}

impl Config {
    /// The daemon needs somewhere to read the fleet from; one-shot commands
    /// (`plan`, `apply`) only use the cluster and snapd sections.
    pub fn require_source(&self) -> Result<(), ConfigError> {
        if self.repo.is_none() && self.watch_dir.is_none() {
            return Err(ConfigError {
                file: self.file.display().to_string(),
                line: 1,
                column: 1,
                message: "`repo` is required (or `watch_dir` for development)".into(),
            });
        }
        Ok(())
    }

    /// Reads and resolves the file at `path`, reading secret files it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 1,
            column: 1,
            message: format!("cannot read the configuration: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, &path.display().to_string(), &base)
    }

    /// Parses configuration `text`; `file` names it in errors, relative paths are
    /// resolved against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut ctx = Ctx { file: file.to_string(), doc: None, base: base.to_path_buf() };
        let docs = parse_documents(text).map_err(|e| ctx.err_at(e.pos, e.message))?;
        if docs.len() > 1 {
            return Err(ctx.err_at(docs[1].start, "the configuration is one YAML document"));
        }
        let raw: FileConfig = match docs.first() {
            None => FileConfig::default(),
            Some(doc) => {
                ctx.doc = Some(doc);
                serde_path_to_error::deserialize(doc.value.clone()).map_err(|e| serde_error(&ctx, doc, e))?
            }
        };
        resolve(&ctx, raw)
    }
}

/// Places a deserialisation error at the node it is about.
fn serde_error(ctx: &Ctx, doc: &Document, e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let mut pointer = String::new();
    for seg in e.path().iter() {
        use serde_path_to_error::Segment;
        match seg {
            Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&crate::fleet::yaml::escape_pointer_token(key));
            }
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    let message = e.inner().to_string();
    let where_ = if pointer.is_empty() {
        String::new()
    } else {
        format!(" (at {})", pointer.trim_start_matches('/').replace('/', "."))
    };
    // "unknown field `x`": point at the key itself when we can find it.
    if let Some(field) = message.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
        let token = format!("/{}", crate::fleet::yaml::escape_pointer_token(field));
        // serde_path_to_error usually includes the unknown key in the path already.
        let at_key = if pointer.ends_with(&token) { pointer.clone() } else { format!("{pointer}{token}") };
        if doc.positions.contains_key(&at_key) {
            return ctx.key_err(&at_key, format!("{message}{where_}"));
        }
    }
    ctx.value_err(&pointer, format!("{message}{where_}"))
}

fn resolve(ctx: &Ctx, raw: FileConfig) -> Result<Config, ConfigError> {
    let repo = match raw.repo {
        Some(r) => Some(resolve_repo(ctx, r)?),
        None => None,
    };
    let watch_dir = raw.watch_dir.as_deref().map(|p| ctx.path(p));
    if let Some(w) = &watch_dir {
        if !w.is_dir() {
            return Err(ctx.value_err("/watch_dir", format!("{} is not a directory", w.display())));
        }
    }

    let poll_interval = match &raw.poll_interval {
        Some(s) => {
            let d = parse_duration(s).map_err(|e| ctx.value_err("/poll_interval", e))?;
            if d < Duration::from_secs(1) {
                return Err(ctx.value_err("/poll_interval", "poll_interval is at least 1s"));
            }
            d
        }
        None => DEFAULT_POLL_INTERVAL,
    };
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        ctx.value_err("/listen", format!("`{listen_text}` is not an address:port such as 127.0.0.1:9580"))
    })?;

    let mut webhooks = BTreeMap::new();
    for (name, hook) in &raw.webhooks {
        let ptr = format!("/webhooks/{name}");
        let provider = Provider::parse(name).ok_or_else(|| {
            ctx.key_err(&ptr, format!("unknown webhook provider `{name}` (github, gitlab, gitea, generic)"))
        })?;
        let path = ctx.path(&hook.secret_file);
        let secret = Secret::from_file(&path).map_err(|e| {
            ctx.value_err(&format!("{ptr}/secret_file"), format!("cannot read secret file {}: {e}", path.display()))
        })?;
        if secret.is_empty() {
            return Err(
                ctx.value_err(&format!("{ptr}/secret_file"), format!("secret file {} is empty", path.display()))
            );
        }
        webhooks.insert(provider, secret);
    }

    let admin_token = match &raw.admin_token_file {
        Some(p) => {
            let path = ctx.path(p);
            let secret = Secret::from_file(&path).map_err(|e| {
                ctx.value_err("/admin_token_file", format!("cannot read secret file {}: {e}", path.display()))
            })?;
            if secret.is_empty() {
                return Err(ctx.value_err("/admin_token_file", format!("secret file {} is empty", path.display())));
            }
            Some(secret)
        }
        None => None,
    };

    let audit_branch = raw.audit.branch.clone().unwrap_or_else(|| DEFAULT_AUDIT_BRANCH.into());
    if let Some(r) = &repo {
        let strip = |b: &str| b.strip_prefix("refs/heads/").unwrap_or(b).to_string();
        if strip(&audit_branch) == strip(&r.branch) {
            return Err(ctx.value_err(
                if raw.audit.branch.is_some() { "/audit/branch" } else { "/repo/branch" },
                format!(
                    "the audit branch `{audit_branch}` is the watched branch: audit commits would trigger reconciles"
                ),
            ));
        }
    }
    let author = Person {
        name: raw.audit.author_name.clone().unwrap_or_else(|| "lxd-gitops".into()),
        email: raw.audit.author_email.clone().unwrap_or_else(|| "lxd-gitops@localhost".into()),
    };
    let committer = Person {
        name: raw.audit.committer_name.clone().unwrap_or_else(|| author.name.clone()),
        email: raw.audit.committer_email.clone().unwrap_or_else(|| author.email.clone()),
    };
    let audit = AuditConfig { branch: audit_branch, author, committer, push: raw.audit.push.unwrap_or(true) };

    let mut clusters = BTreeMap::new();
    for (name, c) in raw.clusters {
        let mut snapd = BTreeMap::new();
        for (member, s) in c.snapd {
            let ptr = format!("/clusters/{name}/snapd/{member}");
            let ep = match (s.socket, s.ssh) {
                (Some(path), None) => SnapdEndpoint::Socket { path: ctx.path(&path) },
                (None, Some(ssh)) => SnapdEndpoint::Ssh {
                    host: ssh.host,
                    port: ssh.port,
                    user: ssh.user,
                    identity_file: ctx.readable(&format!("{ptr}/ssh/identity_file"), &ssh.identity_file)?,
                    known_hosts: ctx.readable(&format!("{ptr}/ssh/known_hosts"), &ssh.known_hosts)?,
                },
                _ => {
                    return Err(ctx.key_err(&ptr, format!("snapd of `{member}`: give exactly one of `socket` or `ssh`")))
                }
            };
            snapd.insert(member, ep);
        }
        clusters.insert(name, ClusterRuntime { suspended: c.suspended, snapd });
    }

    Ok(Config {
        file: PathBuf::from(&ctx.file),
        repo,
        poll_interval,
        listen,
        webhooks,
        admin_token,
        audit,
        credentials_dir: raw.credentials_dir.as_deref().map(|p| ctx.path(p)),
        state_dir: raw.state_dir.as_deref().map(|p| ctx.path(p)).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        watch_dir,
        log_format: raw.log_format,
        clusters,
    })
}

fn resolve_repo(ctx: &Ctx, r: FileRepo) -> Result<RepoConfig, ConfigError> {
    if r.url.trim().is_empty() {
        return Err(ctx.value_err("/repo/url", "repo.url is empty"));
    }
    if !git2::Reference::is_valid_name(&format!("refs/heads/{}", r.branch)) {
        return Err(ctx.value_err("/repo/branch", format!("`{}` is not a valid branch name", r.branch)));
    }
    let rel = Path::new(&r.path);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(ctx.value_err("/repo/path", "repo.path is a relative directory inside the repository"));
    }
    let a = r.auth;
    let auth = match (a.token_file, a.ssh_key_file, a.known_hosts_file) {
        (None, None, None) => {
            if a.token_username.is_some() {
                return Err(ctx.key_err("/repo/auth/token_username", "token_username needs token_file"));
            }
            RemoteAuth::None
        }
        (Some(token), None, None) => RemoteAuth::Token {
            file: ctx.readable("/repo/auth/token_file", &token)?,
            username: a.token_username.unwrap_or_else(|| DEFAULT_TOKEN_USERNAME.into()),
        },
        (None, Some(key), Some(kh)) => RemoteAuth::SshKey {
            private_key_file: ctx.readable("/repo/auth/ssh_key_file", &key)?,
            known_hosts_file: ctx.readable("/repo/auth/known_hosts_file", &kh)?,
        },
        (None, Some(_), None) => {
            return Err(ctx.key_err(
                "/repo/auth/ssh_key_file",
                "ssh_key_file needs known_hosts_file (host keys are pinned, never trusted on first use)",
            ))
        }
        (None, None, Some(_)) => {
            return Err(ctx.key_err("/repo/auth/known_hosts_file", "known_hosts_file needs ssh_key_file"))
        }
        _ => {
            return Err(ctx.key_err("/repo/auth", "give either token_file or ssh_key_file + known_hosts_file, not both"))
        }
    };
    let signature = match (r.signature.ssh_allowed_signers, r.signature.gpg_keyring) {
        (None, None) => SignaturePolicy::None,
        (Some(f), None) => {
            SignaturePolicy::Ssh { allowed_signers_file: ctx.readable("/repo/signature/ssh_allowed_signers", &f)? }
        }
        (None, Some(f)) => SignaturePolicy::Gpg { keyring_file: ctx.readable("/repo/signature/gpg_keyring", &f)? },
        (Some(_), Some(_)) => {
            return Err(ctx.key_err("/repo/signature", "give one of ssh_allowed_signers or gpg_keyring"))
        }
    };
    Ok(RepoConfig { url: r.url, branch: r.branch, path: r.path, auth, signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "config.yaml", dir)
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), b"hunter2");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gh"), "hunter2\n").unwrap();
        let c = parse_in(dir.path(), "repo: {url: /srv/fleet.git}\nwebhooks:\n  github: {secret_file: gh}\n").unwrap();
        assert_eq!(c.webhooks[&Provider::GitHub].expose(), b"hunter2");
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***"));
    }

    #[test]
    fn defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse_in(dir.path(), "repo:\n  url: https://example.com/fleet.git\n").unwrap();
        let r = c.repo.as_ref().unwrap();
        assert_eq!(r.branch, "main");
        assert_eq!(r.path, ".");
        assert_eq!(r.auth, RemoteAuth::None);
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert_eq!(c.listen, "127.0.0.1:9580".parse().unwrap());
        assert_eq!(c.audit.branch, "lxd-gitops/audit");
        assert!(c.audit.push);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/lxd-gitops"));
        assert_eq!(c.log_format, LogFormat::Text);
        let audit = c.audit_spec().unwrap();
        assert_eq!((audit.branch.as_str(), audit.source_branch.as_str()), ("lxd-gitops/audit", "main"));
        assert_eq!(r.source_spec().url, "https://example.com/fleet.git");
        assert_eq!(c.source_dir(), PathBuf::from("/var/lib/lxd-gitops/source"));
    }

    #[test]
    fn full_file() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["token", "signers", "id", "kh", "gl"] {
            std::fs::write(dir.path().join(f), "x\n").unwrap();
        }
        let text = r#"
repo:
  url: https://git.example.com/ops/fleet.git
  branch: production
  path: fleet
  auth:
    token_file: token
    token_username: oauth2
  signature:
    ssh_allowed_signers: signers
poll_interval: 5m
listen: 0.0.0.0:9000
webhooks:
  gitlab: {secret_file: gl}
audit:
  branch: audit/log
  author_name: Fleet Bot
  author_email: bot@example.com
  push: false
state_dir: state
log_format: json
clusters:
  lab:
    suspended: true
    snapd:
      lab1: {socket: /run/snapd.socket}
      lab2:
        ssh: {host: 10.0.0.2, identity_file: id, known_hosts: kh}
"#;
        let c = parse_in(dir.path(), text).unwrap();
        let r = c.repo.unwrap();
        assert_eq!(r.auth, RemoteAuth::Token { file: dir.path().join("token"), username: "oauth2".into() });
        assert_eq!(r.signature, SignaturePolicy::Ssh { allowed_signers_file: dir.path().join("signers") });
        assert_eq!(c.poll_interval, Duration::from_secs(300));
        assert_eq!(c.audit.committer.name, "Fleet Bot");
        assert!(!c.audit.push);
        assert_eq!(c.state_dir, dir.path().join("state"));
        assert_eq!(c.log_format, LogFormat::Json);
        let lab = &c.clusters["lab"];
        assert!(lab.suspended);
        assert!(matches!(lab.snapd["lab1"], SnapdEndpoint::Socket { .. }));
        assert!(matches!(
            &lab.snapd["lab2"],
            SnapdEndpoint::Ssh { port: 22, user, .. } if user == "root"
        ));
    }

    #[test]
    fn errors_carry_positions() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, (usize, usize), &str)] = &[
            ("repo:\n  url: /x\n  brnch: main\n", (3, 3), "unknown field `brnch`"),
            ("repo: {url: /x}\npoll_interval: soon\n", (2, 16), "invalid duration"),
            ("repo: {url: /x}\nlisten: everywhere\n", (2, 9), "not an address"),
            ("repo: {url: /x}\nwebhooks:\n  bitbucket: {secret_file: x}\n", (3, 3), "unknown webhook provider"),
            ("repo: {url: /x}\nwebhooks:\n  github: {secret_file: missing}\n", (3, 25), "cannot read secret file"),
            ("repo: {url: /x}\naudit: {branch: main}\n", (2, 17), "watched branch"),
            ("repo: {url: /x}\nlog_format: xml\n", (2, 13), "unknown variant"),
            ("repo:\n  url: /x\n  auth: {ssh_key_file: k}\n", (3, 10), "known_hosts_file"),
            ("repo: {url: /x}\nclusters:\n  lab:\n    suspended: maybe\n", (4, 16), "invalid type"),
        ];
        for (text, (line, column), needle) in cases {
            let err = parse_in(dir.path(), text).unwrap_err();
            assert!(err.message.contains(needle), "{text:?}: {err}");
            assert_eq!((err.line, err.column), (*line, *column), "{text:?}: {err}");
            assert!(err.to_string().starts_with("config.yaml:"), "{err}");
        }
    }

    #[test]
    fn the_daemon_needs_a_source() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse_in(dir.path(), "poll_interval: 1m\n").unwrap();
        let err = c.require_source().unwrap_err();
        assert!(err.message.contains("`repo` is required"), "{err}");
        assert!(parse_in(dir.path(), "watch_dir: .\n").unwrap().require_source().is_ok());
    }

    #[test]
    fn watch_dir_alone_is_enough_for_development() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse_in(dir.path(), "watch_dir: .\n").unwrap();
        assert!(c.repo.is_none());
        assert_eq!(c.watch_dir, Some(dir.path().join(".")));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// deploy/config.example.yaml stays a valid configuration.
    #[test]
    fn the_shipped_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../deploy/config.example.yaml")
            .replace("/etc/lxd-gitops/", &format!("{}/", dir.path().display()));
        let creds = dir.path().join("credentials");
        std::fs::create_dir_all(&creds).unwrap();
        for f in ["git-token", "webhook-github", "lab-ssh-key", "known_hosts"] {
            std::fs::write(creds.join(f), "x\n").unwrap();
        }
        let c = Config::parse(&text, "config.example.yaml", dir.path()).unwrap();
        assert_eq!(c.repo.unwrap().path, "fleet");
        assert_eq!(c.clusters["lab"].snapd.len(), 2);
        assert!(c.webhooks.contains_key(&Provider::GitHub));
    }
}
