//! How to reach one member's snapd: its local unix socket, or the same socket on a
//! remote host forwarded over SSH.
//!
//! Owns: turning a `Transport` into an `Endpoint`, a local unix socket path the
//! client can connect to. For SSH that means running the OpenSSH client as a child
//! process (`ssh -N -L <local socket>:<remote socket>`) with a local socket in a
//! private (0700) temporary directory, waiting until the forward is up, and killing
//! ssh when the endpoint is dropped.
//! Must not: speak HTTP or know snapd's API (that is `client`), prompt for anything
//! (BatchMode: no passwords, no host-key questions, unknown host keys are refused),
//! or hold credentials itself: keys and known hosts are files the operator provides.
//!
//! Why OpenSSH and not an SSH library: operators already have working ssh setups
//! (agents, `~/.ssh/config`, ProxyJump, certificates) and audited host keys in
//! `known_hosts`; spawning `ssh` reuses all of it.
//!
//! Note on privilege: snapd decides what a request may do from the peer credentials
//! of the socket connection. Over SSH that peer is the *remote login user*, so
//! writes (`snap set`, `snap refresh`) need `user: root` (or an equivalent snapd
//! grants); as another user snapd answers 401/403 `login-required`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Where snapd listens on every host.
pub const DEFAULT_SNAPD_SOCKET: &str = "/run/snapd.socket";

/// How to reach a member's snapd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// snapd on this host (lxd-gitops runs on the member itself).
    Local { socket: PathBuf },
    /// snapd on another host, through an SSH-forwarded unix socket.
    Ssh(SshTarget),
}

impl Transport {
    /// The local snapd at its default socket.
    pub fn local() -> Transport {
        Transport::Local { socket: PathBuf::from(DEFAULT_SNAPD_SOCKET) }
    }

    /// Makes the snapd socket reachable: checks the local socket, or starts the SSH
    /// forward and waits until it is up. Drop the `Endpoint` to close it.
    pub async fn open(&self) -> Result<Endpoint, TransportError> {
        match self {
            Transport::Local { socket } => {
                if let Err(e) = std::fs::metadata(socket) {
                    return Err(TransportError::LocalSocket {
                        socket: socket.clone(),
                        detail: format!("{e} (is snapd installed and running on this host?)"),
                    });
                }
                Ok(Endpoint { socket: socket.clone(), tunnel: None })
            }
            Transport::Ssh(target) => {
                let tunnel = SshTunnel::open(target).await?;
                Ok(Endpoint { socket: tunnel.local_socket.clone(), tunnel: Some(tunnel) })
            }
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Local { socket } => write!(f, "unix:{}", socket.display()),
            Transport::Ssh(t) => t.fmt(f),
        }
    }
}

/// A remote host whose snapd socket is reached through `ssh -L`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub host: String,
    pub user: String,
    pub port: u16,
    /// Private key (`ssh -i`, with `IdentitiesOnly=yes`); `None` uses ssh's defaults
    /// and agent.
    pub identity_file: Option<PathBuf>,
    /// Known hosts file holding the host's key; `None` uses ssh's defaults. Unknown
    /// or changed host keys are always refused (`StrictHostKeyChecking=yes`).
    pub known_hosts: Option<PathBuf>,
    /// The snapd socket on the remote host.
    pub remote_socket: PathBuf,
    /// An ssh client config file (`ssh -F`); `None` reads the usual ones.
    pub config_file: Option<PathBuf>,
    /// How long to wait for the connection and the forward to be up.
    pub connect_timeout: Duration,
    /// The ssh client program.
    pub program: PathBuf,
}

impl SshTarget {
    /// `user@host:22` forwarding the default snapd socket, with ssh's defaults for
    /// keys and known hosts.
    pub fn new(host: impl Into<String>, user: impl Into<String>) -> SshTarget {
        SshTarget {
            host: host.into(),
            user: user.into(),
            port: 22,
            identity_file: None,
            known_hosts: None,
            remote_socket: PathBuf::from(DEFAULT_SNAPD_SOCKET),
            config_file: None,
            connect_timeout: Duration::from_secs(15),
            program: PathBuf::from("ssh"),
        }
    }

    /// The ssh command line (without the program) forwarding `local` to the remote
    /// snapd socket.
    pub fn ssh_args(&self, local: &Path) -> Vec<String> {
        let mut args: Vec<String> = vec!["-N".into(), "-T".into()];
        let mut opt = |o: String| {
            args.push("-o".into());
            args.push(o);
        };
        opt("BatchMode=yes".into());
        opt("StrictHostKeyChecking=yes".into());
        opt("ExitOnForwardFailure=yes".into());
        opt(format!("ConnectTimeout={}", self.connect_timeout.as_secs().max(1)));
        opt("ServerAliveInterval=15".into());
        opt("ServerAliveCountMax=3".into());
        if let Some(kh) = &self.known_hosts {
            opt(format!("UserKnownHostsFile={}", kh.display()));
        }
        if self.identity_file.is_some() {
            opt("IdentitiesOnly=yes".into());
        }
        if let Some(cfg) = &self.config_file {
            args.push("-F".into());
            args.push(cfg.display().to_string());
        }
        if let Some(id) = &self.identity_file {
            args.push("-i".into());
            args.push(id.display().to_string());
        }
        args.push("-p".into());
        args.push(self.port.to_string());
        args.push("-l".into());
        args.push(self.user.clone());
        args.push("-L".into());
        args.push(format!("{}:{}", local.display(), self.remote_socket.display()));
        // Ends option parsing: a host can never be read as an option.
        args.push("--".into());
        args.push(self.host.clone());
        args
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ssh://{}@{}:{}{}", self.user, self.host, self.port, self.remote_socket.display())
    }
}

/// Errors making a member's snapd reachable.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("snapd socket {}: {detail}", socket.display())]
    LocalSocket { socket: PathBuf, detail: String },
    #[error("{target}: refusing host name {host:?} (empty or starting with '-')")]
    BadHost { target: String, host: String },
    #[error("{target}: cannot create a private directory for the forwarded socket: {source}")]
    TempDir { target: String, source: std::io::Error },
    #[error("{target}: cannot start `{}`: {source}", program.display())]
    Spawn { target: String, program: PathBuf, source: std::io::Error },
    #[error("{target}: ssh exited ({status}) before the forward was up; ssh said: {}", show_stderr(stderr))]
    Exited { target: String, status: ExitStatus, stderr: String },
    #[error("{target}: forward not up after {waited:?}; ssh said: {}", show_stderr(stderr))]
    Timeout { target: String, waited: Duration, stderr: String },
}

fn show_stderr(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        "(nothing on stderr)".to_string()
    } else {
        s.to_string()
    }
}

/// A reachable snapd socket. For SSH it owns the tunnel: dropping the endpoint
/// kills ssh and removes the private directory.
#[derive(Debug)]
pub struct Endpoint {
    socket: PathBuf,
    tunnel: Option<SshTunnel>,
}

impl Endpoint {
    /// An endpoint for a socket path used as is (no checks, no tunnel).
    pub fn at(socket: impl Into<PathBuf>) -> Endpoint {
        Endpoint { socket: socket.into(), tunnel: None }
    }

    /// The local unix socket to connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What ssh printed so far (warnings, `channel N: open failed: ...` when the
    /// remote socket is missing), to add to error messages. `None` for local sockets.
    pub fn diagnostics(&self) -> Option<String> {
        let t = self.tunnel.as_ref()?;
        let s = t.stderr.lock().expect("stderr buffer").trim().to_string();
        Some(s).filter(|s| !s.is_empty())
    }

    /// The ssh process id, if this endpoint is a tunnel.
    pub fn ssh_pid(&self) -> Option<u32> {
        self.tunnel.as_ref().and_then(|t| t.child.id())
    }

    /// Closes the endpoint, waiting for ssh to exit (dropping also kills it, but
    /// cannot wait).
    pub async fn close(mut self) {
        if let Some(t) = self.tunnel.as_mut() {
            let _ = t.child.kill().await;
        }
    }
}

/// A running `ssh -N -L` child and the private directory holding its local socket.
#[derive(Debug)]
struct SshTunnel {
    child: Child,
    local_socket: PathBuf,
    stderr: Arc<Mutex<String>>,
    // Dropped after `child` (field order): the socket's directory outlives ssh.
    _dir: tempfile::TempDir,
}

impl SshTunnel {
    async fn open(target: &SshTarget) -> Result<SshTunnel, TransportError> {
        let name = target.to_string();
        if target.host.is_empty() || target.host.starts_with('-') {
            return Err(TransportError::BadHost { target: name, host: target.host.clone() });
        }
        let dir = private_dir().map_err(|source| TransportError::TempDir { target: name.clone(), source })?;
        let local_socket = dir.path().join("snapd.socket");
        let mut child = Command::new(&target.program)
            .args(target.ssh_args(&local_socket))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TransportError::Spawn {
                target: name.clone(),
                program: target.program.clone(),
                source,
            })?;

        // Drain stderr continuously so ssh never blocks on a full pipe, and keep it
        // for error messages.
        let stderr = Arc::new(Mutex::new(String::new()));
        let reader = {
            let mut pipe = child.stderr.take().expect("stderr is piped");
            let buf = Arc::clone(&stderr);
            tokio::spawn(async move {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    let mut b = buf.lock().expect("stderr buffer");
                    b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    // Keep the tail: a long-lived tunnel must not grow without bound.
                    if b.len() > 64 * 1024 {
                        let cut = b.len() - 32 * 1024;
                        let cut = (cut..b.len()).find(|i| b.is_char_boundary(*i)).unwrap_or(0);
                        b.drain(..cut);
                    }
                }
            })
        };

        let started = tokio::time::Instant::now();
        // ssh itself gives up after ConnectTimeout; allow for authentication on top.
        let deadline = target.connect_timeout + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
                let stderr = stderr.lock().expect("stderr buffer").clone();
                return Err(TransportError::Exited { target: name, status, stderr });
            }
            // ssh binds the socket file before it listens on it: wait until a
            // connection is accepted, not just until the file exists. (The probe
            // opens one forwarded channel, closed at once without a request.)
            if local_socket.exists() && tokio::net::UnixStream::connect(&local_socket).await.is_ok() {
                return Ok(SshTunnel { child, local_socket, stderr, _dir: dir });
            }
            if started.elapsed() > deadline {
                let _ = child.kill().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
                let stderr = stderr.lock().expect("stderr buffer").clone();
                return Err(TransportError::Timeout { target: name, waited: deadline, stderr });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SshTunnel {
    fn drop(&mut self) {
        // `kill_on_drop` does the same when `child` drops; doing it first makes the
        // order explicit: ssh dies before its socket directory is removed.
        let _ = self.child.start_kill();
    }
}

/// A fresh directory only the current user can enter (tempfile creates 0700; set
/// it again so a permissive umask or platform default cannot widen it).
fn private_dir() -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("lxd-gitops-snapd-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_line_is_batch_strict_and_ends_options_before_the_host() {
        let mut t = SshTarget::new("node1.example", "root");
        t.port = 2222;
        t.identity_file = Some("/etc/lxd-gitops/id_ed25519".into());
        t.known_hosts = Some("/etc/lxd-gitops/known_hosts".into());
        let args = t.ssh_args(Path::new("/tmp/x/snapd.socket")).join(" ");
        assert_eq!(
            args,
            "-N -T -o BatchMode=yes -o StrictHostKeyChecking=yes -o ExitOnForwardFailure=yes \
             -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=3 \
             -o UserKnownHostsFile=/etc/lxd-gitops/known_hosts -o IdentitiesOnly=yes \
             -i /etc/lxd-gitops/id_ed25519 -p 2222 -l root \
             -L /tmp/x/snapd.socket:/run/snapd.socket -- node1.example"
        );
        assert_eq!(t.to_string(), "ssh://root@node1.example:2222/run/snapd.socket");
    }

    #[tokio::test]
    async fn hosts_that_look_like_options_are_refused() {
        let t = Transport::Ssh(SshTarget::new("-oProxyCommand=evil", "root"));
        let e = t.open().await.unwrap_err();
        assert!(matches!(e, TransportError::BadHost { .. }), "{e}");
    }

    #[tokio::test]
    async fn missing_local_socket_is_a_clear_error() {
        let t = Transport::Local { socket: "/nonexistent/snapd.socket".into() };
        let e = t.open().await.unwrap_err().to_string();
        assert!(e.contains("/nonexistent/snapd.socket") && e.contains("snapd"), "{e}");
    }

    #[tokio::test]
    async fn ssh_failures_carry_its_stderr() {
        // A program that fails like ssh does: message on stderr, non-zero exit.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-ssh");
        std::fs::write(&fake, "#!/bin/sh\necho 'Permission denied (publickey).' >&2\nexit 255\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut t = SshTarget::new("node1", "root");
        t.program = fake;
        let e = Transport::Ssh(t).open().await.unwrap_err().to_string();
        assert!(e.contains("ssh://root@node1:22"), "{e}");
        assert!(e.contains("Permission denied (publickey)."), "{e}");
        assert!(e.contains("255"), "{e}");
    }
}
