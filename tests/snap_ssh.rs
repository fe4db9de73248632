//! The SSH transport end to end: a real OpenSSH server on loopback, the real `ssh`
//! client forwarding a local unix socket, and on the "remote" side the stand-in
//! snapd binary (`lxd-gitops-snapd-standin`) listening where snapd would.
//!
//! The test starts its own `sshd` (generated host key, authorized key and config in
//! a temp dir, loopback only) and stops it by pid at the end. It needs
//! `/usr/sbin/sshd` (installed with `apt-get install -y openssh-server` if missing)
//! and fails, with sshd's log, when sshd cannot start: it never skips.

use lxd_gitops::snap::{SnapError, SnapdClient, SshTarget, Transport, TransportError};
use std::collections::BTreeMap;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A child process killed (by pid) and reaped when dropped, so a failing
/// assertion never leaks sshd or the stand-in.
struct Reaped {
    name: &'static str,
    child: Child,
}

impl Reaped {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            eprintln!("stopping {} (pid {})", self.name, self.pid());
        }
        self.stop();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn ensure_sshd() {
    if Path::new(SSHD).exists() {
        return;
    }
    let out = Command::new("apt-get")
        .args(["install", "-y", "openssh-server"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    match out {
        Ok(o) if o.status.success() && Path::new(SSHD).exists() => {}
        Ok(o) => panic!(
            "{SSHD} missing and `apt-get install -y openssh-server` failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("{SSHD} missing and apt-get cannot run: {e}"),
    }
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "lxd-gitops-test", "-f"]).arg(path));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool, log: impl Fn() -> String) {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > timeout {
            panic!("{what} not ready after {timeout:?}; log:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

struct Sshd {
    process: Reaped,
    port: u16,
    log: PathBuf,
}

/// Starts `sshd -D -e` on 127.0.0.1 with keys and config under `dir`.
fn start_sshd(dir: &Path, authorized: &Path) -> Sshd {
    ensure_sshd();
    fs::create_dir_all("/run/sshd").expect("mkdir -p /run/sshd (sshd's privilege separation dir)");
    let host_key = dir.join("host_key");
    keygen(&host_key);
    let port = free_port();
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized}\n\
             # The temp dir sits under world-writable /tmp, which StrictModes rejects.\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             AllowStreamLocalForwarding yes\n\
             StreamLocalBindUnlink yes\n\
             X11Forwarding no\n\
             PrintMotd no\n\
             LogLevel VERBOSE\n",
            host_key = host_key.display(),
            pid = dir.join("sshd.pid").display(),
            authorized = authorized.display(),
        ),
    )
    .unwrap();
    let log = dir.join("sshd.log");
    let child = Command::new(SSHD)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("sshd.stdout")).unwrap())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
    let mut process = Reaped { name: "sshd", child };
    let read_log = || fs::read_to_string(&log).unwrap_or_default();
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("sshd exited ({status}) at start; its log:\n{}", read_log());
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            process.stop();
            panic!("sshd not listening on 127.0.0.1:{port} after 15 s; its log:\n{}", read_log());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Sshd { process, port, log }
}

fn known_hosts_line(port: u16, host_pub: &Path) -> String {
    let key = fs::read_to_string(host_pub).unwrap();
    let mut parts = key.split_whitespace();
    format!("[127.0.0.1]:{port} {} {}\n", parts.next().unwrap(), parts.next().unwrap())
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; look at its state.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapd_through_a_real_ssh_forward() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Client key, authorized on the server.
    let client_key = d.join("client_key");
    keygen(&client_key);
    let authorized = d.join("authorized_keys");
    fs::copy(d.join("client_key.pub"), &authorized).unwrap();

    // The "remote" snapd: the stand-in binary on its own socket.
    let remote_socket = d.join("remote-snapd.socket");
    let standin_log = d.join("standin.log");
    let mut standin = Reaped {
        name: "stand-in snapd",
        child: Command::new(env!("CARGO_BIN_EXE_lxd-gitops-snapd-standin"))
            .arg("--socket")
            .arg(&remote_socket)
            .args(["--step-delay-ms", "50", "--store", "5.21/stable=31333:5.21.3-c5ae129"])
            .stdin(Stdio::null())
            .stderr(fs::File::create(&standin_log).unwrap())
            .spawn()
            .unwrap(),
    };
    let start = Instant::now();
    while !remote_socket.exists() {
        let log = || fs::read_to_string(&standin_log).unwrap_or_default();
        if let Ok(Some(status)) = standin.child.try_wait() {
            panic!("stand-in snapd exited ({status}); its log:\n{}", log());
        }
        if start.elapsed() > Duration::from_secs(10) {
            panic!("stand-in snapd socket not there after 10 s; its log:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(25));
    }

    let mut sshd = start_sshd(d, &authorized);
    let known_hosts = d.join("known_hosts");
    fs::write(&known_hosts, known_hosts_line(sshd.port, &d.join("host_key.pub"))).unwrap();
    // An empty client config: the user's ~/.ssh/config must not change the test.
    let ssh_config = d.join("ssh_config");
    fs::write(&ssh_config, "").unwrap();

    let target = SshTarget {
        port: sshd.port,
        identity_file: Some(client_key.clone()),
        known_hosts: Some(known_hosts.clone()),
        remote_socket: remote_socket.clone(),
        config_file: Some(ssh_config.clone()),
        connect_timeout: Duration::from_secs(10),
        ..SshTarget::new("127.0.0.1", current_user())
    };
    let transport = Transport::Ssh(target.clone());
    let sshd_log = || fs::read_to_string(&sshd.log).unwrap_or_default();

    let client = match SnapdClient::connect("m1", &transport).await {
        Ok(c) => c,
        Err(e) => panic!("ssh transport failed: {e}\nsshd log:\n{}", sshd_log()),
    };
    let ssh_pid = client.endpoint().ssh_pid().expect("an ssh child");

    // The forwarded socket lives in a private directory.
    {
        use std::os::unix::fs::PermissionsExt;
        let socket_dir = client.endpoint().socket().parent().unwrap();
        let mode = fs::metadata(socket_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", socket_dir.display());
    }

    let info = match client.snap_info("lxd").await {
        Ok(i) => i,
        Err(e) => panic!("{e}\nsshd log:\n{}", sshd_log()),
    };
    assert_eq!(info.name, "lxd");
    assert_eq!(info.revision, "24322");
    assert_eq!(info.tracking_channel.as_deref(), Some("5.0/stable"));

    // Writes and change polling go through the same forward (one connection each).
    let mut values = BTreeMap::new();
    values.insert("daemon.debug".to_string(), Some("true".to_string()));
    let id = client.set_conf("lxd", &values).await.unwrap();
    client.wait_change(&id, Duration::from_secs(10)).await.unwrap();
    let conf = client.get_conf("lxd", &["daemon.debug"]).await.unwrap();
    assert_eq!(conf["daemon.debug"], "true");
    let id = client.refresh("lxd", "5.21/stable").await.unwrap().unwrap();
    client.wait_change(&id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(client.snap_info("lxd").await.unwrap().revision, "31333");
    assert_eq!(client.refresh("lxd", "5.21/stable").await.unwrap(), None);

    // Closing the client ends ssh.
    client.close().await;
    assert!(!pid_alive(ssh_pid), "ssh (pid {ssh_pid}) still running after close");

    // Dropping (not closing) also kills ssh.
    let client = SnapdClient::connect("m1", &transport).await.unwrap();
    let pid = client.endpoint().ssh_pid().unwrap();
    let socket_dir = client.endpoint().socket().parent().unwrap().to_path_buf();
    drop(client);
    wait_for("ssh to exit after drop", Duration::from_secs(5), || !pid_alive(pid), String::new);
    assert!(!socket_dir.exists(), "private socket dir left behind");

    // A missing remote socket: the tunnel comes up, the request fails and the
    // error carries what ssh said about the failed channel.
    let missing = Transport::Ssh(SshTarget { remote_socket: d.join("no-such.socket"), ..target.clone() });
    let client = SnapdClient::connect("m1", &missing).await.unwrap();
    let e = client.snap_info("lxd").await.unwrap_err();
    assert!(matches!(e, SnapError::Io { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("ssh://") && text.contains("GET /v2/snaps/lxd"), "{text}");
    client.close().await;

    // An unknown host key is refused without prompting (BatchMode), and the error
    // names the host and carries ssh's own message.
    let empty_known_hosts = d.join("known_hosts.empty");
    fs::write(&empty_known_hosts, "").unwrap();
    let stranger = Transport::Ssh(SshTarget { known_hosts: Some(empty_known_hosts), ..target.clone() });
    let e = SnapdClient::connect("m1", &stranger).await.unwrap_err();
    let SnapError::Transport { source: TransportError::Exited { stderr, .. }, .. } = &e else {
        panic!("expected ssh to exit, got {e}");
    };
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{}", sshd.port)), "{e}");

    // A key the server does not know: refused, no password prompt.
    let other_key = d.join("other_key");
    keygen(&other_key);
    let unknown_key = Transport::Ssh(SshTarget { identity_file: Some(other_key), ..target.clone() });
    let e = SnapdClient::connect("m1", &unknown_key).await.unwrap_err();
    assert!(e.to_string().contains("Permission denied"), "{e}");

    // Stop sshd and the stand-in by pid.
    let sshd_pid = sshd.process.pid();
    let pidfile = fs::read_to_string(d.join("sshd.pid")).unwrap_or_default();
    assert_eq!(pidfile.trim(), sshd_pid.to_string(), "sshd pid file");
    sshd.process.stop();
    assert!(!pid_alive(sshd_pid));
    standin.stop();
}
