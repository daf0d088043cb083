//! The optional `openssh` backend: the system `ssh` binary with the macOS app's flags, for setups only OpenSSH handles (ProxyCommand helpers, hardware keys, Match blocks).
//!
//! The child never outlives us (PR_SET_PDEATHSIG on Linux, kill on drop elsewhere), never
//! prompts (`BatchMode=yes`), never shares a ControlMaster (we own its exact PID), and dies
//! when a forward cannot be set up (`ExitOnForwardFailure=yes`). The last lines of its
//! stderr are kept and classified, so a failure reads like the in-process backend's.
//!
//! Its forwards listen on Unix sockets in a fresh 0700 directory, never on a TCP port: a
//! loopback port handed to `ssh -L` is free for anyone until ssh binds it (after
//! authenticating), and another local user who reads the port from `/proc/<ssh>/cmdline`
//! could bind it first and receive our `connect` frame with the gateway token. Nobody else
//! can create or open a socket in a directory only we can enter.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawlink_core::transport::{RemoteOutput, TransportError, TransportErrorKind};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::hostkey::HostKeyPolicy;
use crate::target::SshTarget;
use crate::SshSettings;

/// How many stderr lines are kept for error messages.
const STDERR_TAIL: usize = 20;

/// The system ssh, configured from the profile.
#[derive(Debug, Clone)]
pub struct OpenSsh {
    program: PathBuf,
    target: SshTarget,
    settings: SshSettings,
    /// `$HOME`, when it differs from the passwd home that ssh would use for `~`.
    home_override: Option<PathBuf>,
}

impl OpenSsh {
    pub fn new(
        settings: SshSettings,
        target: SshTarget,
        home: &std::path::Path,
    ) -> Result<Self, TransportError> {
        if let HostKeyPolicy::Pinned(_) = settings.host_key_policy {
            return Err(TransportError::config(
                "the openssh backend cannot enforce a pinned host-key fingerprint",
            )
            .with_fix("use host_key_policy = \"strict\" with the key in known_hosts, or the default backend"));
        }
        // Like the macOS app: a trusted system path first, not whatever PATH says.
        let program = [
            "/usr/bin/ssh",
            "/bin/ssh",
            "/usr/local/bin/ssh",
            "/opt/homebrew/bin/ssh",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            TransportError::config(
                "the openssh backend needs the OpenSSH client, and no ssh binary was found",
            )
            .with_fix(
                "install it (Debian: apt-get install openssh-client) or use the default backend",
            )
        })?;
        let home_override = (passwd_home().as_deref() != Some(home)).then(|| home.to_path_buf());
        Ok(Self {
            program,
            target,
            settings,
            home_override,
        })
    }

    /// The options every invocation shares (the app's set), then the destination.
    fn base_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut opt = |o: String| {
            args.push("-o".into());
            args.push(o.into());
        };
        for o in [
            "BatchMode=yes",
            "ControlMaster=no",
            "ControlPath=none",
            "ControlPersist=no",
            "ForkAfterAuthentication=no",
            "TCPKeepAlive=yes",
        ] {
            opt(o.to_owned());
        }
        opt(format!(
            "ServerAliveInterval={}",
            self.settings.keepalive_interval_s.unwrap_or(15)
        ));
        opt(format!(
            "ServerAliveCountMax={}",
            self.settings.keepalive_count.unwrap_or(3)
        ));
        opt(format!(
            "ConnectTimeout={}",
            self.settings
                .connect_timeout_ms
                .map(|ms| ms.div_ceil(1000))
                .unwrap_or(10)
        ));
        match self.settings.host_key_policy {
            HostKeyPolicy::Strict => opt("StrictHostKeyChecking=yes".into()),
            HostKeyPolicy::AcceptNew => opt("StrictHostKeyChecking=accept-new".into()),
            HostKeyPolicy::OpenSsh | HostKeyPolicy::Pinned(_) => {}
        }
        // ssh expands `~` with the passwd home and ignores $HOME; we honour $HOME like the
        // in-process backend does, so both read the same files.
        let home = self.home_override.as_ref();
        match (&self.settings.known_hosts_file, home) {
            (Some(file), _) => opt(format!("UserKnownHostsFile={}", file.display())),
            (None, Some(home)) => opt(format!(
                "UserKnownHostsFile={}",
                home.join(".ssh/known_hosts").display()
            )),
            (None, None) => {}
        }
        if let Some(identity) = &self.settings.identity_file {
            opt("IdentitiesOnly=yes".into());
            args.push("-i".into());
            args.push(identity.into());
        }
        let home_config = home.map(|h| h.join(".ssh/config")).filter(|c| c.is_file());
        if let Some(config) = self.settings.ssh_config.clone().or(home_config) {
            args.push("-F".into());
            args.push(config.into());
        }
        // Only a port the user typed: a default -p 22 would override the alias's Port.
        if let Some(port) = self.target.port {
            args.push("-p".into());
            args.push(port.to_string().into());
        }
        args
    }

    fn destination(&self) -> OsString {
        match &self.target.user {
            Some(user) => format!("{user}@{}", self.target.host).into(),
            None => self.target.host.clone().into(),
        }
    }

    /// The full argument vector for a forward-only session (`-n -N -L SOCKET:127.0.0.1:PORT …`).
    pub fn forward_args(&self, sockets: &ForwardSockets) -> Vec<OsString> {
        let mut args = self.base_args();
        for o in [
            "ExitOnForwardFailure=yes",
            // A socket left by a previous ssh of ours (after a restart) is replaced.
            "StreamLocalBindUnlink=yes",
            // Only we may connect (the directory is 0700 too).
            "StreamLocalBindMask=0177",
        ] {
            args.push("-o".into());
            args.push(o.into());
        }
        args.push("-n".into());
        args.push("-N".into());
        for (socket, remote) in sockets.paths.iter().zip(&sockets.remote_ports) {
            let mut spec = socket.clone().into_os_string();
            spec.push(format!(":127.0.0.1:{remote}"));
            args.push("-L".into());
            args.push(spec);
        }
        args.push("--".into());
        args.push(self.destination());
        args
    }

    /// The arguments that run `remote` on the host (no forwards): the backend's options,
    /// `-t` (a terminal; quieter logging) or `-T`, the destination, the command.
    pub(crate) fn exec_args(&self, remote: &str, tty: bool) -> Vec<OsString> {
        let mut args = self.base_args();
        if tty {
            // Errors still show; "Connection to HOST closed." after every command does not.
            args.push("-o".into());
            args.push("LogLevel=ERROR".into());
        }
        args.push(if tty { "-t" } else { "-T" }.into());
        args.push("--".into());
        args.push(self.destination());
        args.push(remote.into());
        args
    }

    /// The trusted ssh binary this backend runs.
    pub(crate) fn program(&self) -> &std::path::Path {
        &self.program
    }

    /// `ssh` with `args`, stdin from /dev/null, no askpass, and (Linux) killed with us.
    pub(crate) fn command(&self, args: Vec<OsString>) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            // HOME and SSH_AUTH_SOCK pass through: the user's config and agent keep working.
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY");
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and only affects the child being set up.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }

    /// Runs one remote command line (already shell-safe) and collects its output.
    pub async fn run(
        &self,
        remote_command: &str,
        limit: Duration,
    ) -> Result<RemoteOutput, TransportError> {
        let mut args = self.base_args();
        args.push("--".into());
        args.push(self.destination());
        args.push(remote_command.into());
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = command.spawn().map_err(|e| spawn_error(&self.program, e))?;
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| {
                TransportError::new(
                    TransportErrorKind::Remote,
                    format!("ssh did not finish within {} s", limit.as_secs()),
                )
            })?
            .map_err(|e| {
                TransportError::new(TransportErrorKind::Remote, format!("waiting for ssh: {e}"))
            })?;
        // OpenSSH exits 255 for its own failures; anything else is the remote command's.
        if output.status.code() == Some(255) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(classify(
                &stderr.lines().map(str::to_owned).collect::<Vec<_>>(),
            ));
        }
        Ok(RemoteOutput {
            exit_code: output.status.code(),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }

    /// Starts `ssh -N -L` for the forwards of `sockets` and waits until ssh listens on them.
    pub async fn start_forwards(
        &self,
        sockets: &Arc<ForwardSockets>,
    ) -> Result<ForwardChild, TransportError> {
        // Whatever a previous ssh left there is stale: readiness below means "this ssh bound it".
        for path in &sockets.paths {
            let _ = std::fs::remove_file(path);
        }
        let mut command = self.command(self.forward_args(sockets));
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| spawn_error(&self.program, e))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "clawlink_transport_ssh::openssh", "ssh: {line}");
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let mut forward = ForwardChild {
            child,
            tail,
            sockets: sockets.clone(),
        };
        let limit =
            Duration::from_millis(self.settings.connect_timeout_ms.unwrap_or(10_000) + 5_000);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = forward
                .child
                .try_wait()
                .map_err(|e| TransportError::new(TransportErrorKind::Tunnel, e.to_string()))?
            {
                // Give the stderr reader a moment to collect the last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut error = classify(&forward.stderr_tail());
                error.message = format!(
                    "ssh exited ({status}) before the forward was up: {}",
                    error.message
                );
                return Err(error);
            }
            // Only our ssh can create a socket in our 0700 directory, so its presence is
            // proof enough; connecting to test it would open a channel to the gateway.
            if sockets.paths.iter().all(|p| is_socket(p)) {
                return Ok(forward);
            }
            if Instant::now() > deadline {
                return Err(TransportError::new(
                    TransportErrorKind::Tunnel,
                    format!(
                        "ssh did not open its forward within {} s: {}",
                        limit.as_secs(),
                        forward.stderr_tail().join(" / ")
                    ),
                )
                .with_fix(TIMEOUT_FIX));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What to do when ssh neither connects nor fails in time.
const TIMEOUT_FIX: &str = "the SSH host did not complete the connection in time: check the network path to it \
     (VPN, firewall), raise connect_timeout_ms (ssh's ConnectTimeout), and run `clawlink doctor` to see which layer stalls";

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// The Unix sockets the openssh backend's forwards listen on: one per remote port, in a
/// fresh directory only this user can enter, removed when dropped.
#[derive(Debug)]
pub struct ForwardSockets {
    dir: tempfile::TempDir,
    /// The socket for each remote port, in the same order.
    pub paths: Vec<PathBuf>,
    pub remote_ports: Vec<u16>,
}

impl ForwardSockets {
    /// A new 0700 directory (under `$XDG_RUNTIME_DIR` when set, else the temp directory)
    /// with one socket name per remote port.
    pub fn new(remote_ports: &[u16]) -> Result<Arc<Self>, TransportError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("clawlink-ssh-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Tunnel,
                    format!(
                        "cannot create a private directory for ssh's forward sockets in {}: {e}",
                        base.display()
                    ),
                )
                .with_fix("make TMPDIR (or XDG_RUNTIME_DIR) a writable directory")
            })?;
        let paths: Vec<PathBuf> = remote_ports
            .iter()
            .enumerate()
            .map(|(i, _)| dir.path().join(format!("f{i}.sock")))
            .collect();
        // sun_path holds 108 bytes on Linux (104 on macOS).
        if let Some(long) = paths.iter().find(|p| p.as_os_str().len() > 100) {
            return Err(TransportError::new(
                TransportErrorKind::Tunnel,
                format!(
                    "the forward socket path {} is too long for a Unix socket",
                    long.display()
                ),
            )
            .with_fix("set TMPDIR to a shorter directory, e.g. /tmp"));
        }
        Ok(Arc::new(Self {
            dir,
            paths,
            remote_ports: remote_ports.to_vec(),
        }))
    }

    /// The private directory holding the sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A running `ssh -N -L` child; killed when dropped.
pub struct ForwardChild {
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    sockets: Arc<ForwardSockets>,
}

impl ForwardChild {
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stderr_tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The sockets this child listens on.
    pub fn sockets(&self) -> &Arc<ForwardSockets> {
        &self.sockets
    }

    /// SIGTERM, then SIGKILL after 2 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child's PID.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// The home directory ssh itself uses (from the passwd database).
fn passwd_home() -> Option<PathBuf> {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy out at once and
    // nothing else in this process calls getpw* concurrently with this short read.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if entry.is_null() || (*entry).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*entry).pw_dir);
        Some(PathBuf::from(
            std::ffi::OsStr::from_encoded_bytes_unchecked(dir.to_bytes()),
        ))
    }
}

fn spawn_error(program: &std::path::Path, e: std::io::Error) -> TransportError {
    TransportError::new(
        TransportErrorKind::Tunnel,
        format!("cannot start {}: {e}", program.display()),
    )
}

/// Turns OpenSSH's last stderr lines into the same error kinds the in-process backend uses.
fn classify(lines: &[String]) -> TransportError {
    let text = lines.join(" / ");
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    let (kind, fix) = if has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        (
            TransportErrorKind::HostTrust,
            "the host key changed: verify it out of band before removing the old one",
        )
    } else if has("Host key verification failed")
        || has("No ED25519 host key is known")
        || has("host key is known")
    {
        (
            TransportErrorKind::HostTrust,
            "trust the host first: `clawlink ssh trust TARGET` shows its fingerprint",
        )
    } else if has("Permission denied") || has("Too many authentication failures") {
        (
            TransportErrorKind::Authentication,
            "add your public key to the host's authorized_keys, or set identity_file",
        )
    } else if has("Could not resolve hostname") {
        (
            TransportErrorKind::Resolve,
            "check the host name of the SSH target",
        )
    } else if has("Connection timed out") || has("timed out during banner exchange") {
        (TransportErrorKind::Connect, TIMEOUT_FIX)
    } else if has("Connection refused") || has("No route to host") {
        (
            TransportErrorKind::Connect,
            "check that sshd runs on that host and port",
        )
    } else if has("Address already in use") || has("cannot listen to port") {
        (
            TransportErrorKind::Tunnel,
            "another program holds the local port; pick another local_port",
        )
    } else {
        (
            TransportErrorKind::Tunnel,
            "run the same ssh command by hand with -v to see more",
        )
    };
    let message = if text.is_empty() {
        "ssh failed without a message".to_owned()
    } else {
        text
    };
    TransportError::new(kind, message).with_fix(fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: serde_json::Value) -> SshSettings {
        let mut base = serde_json::json!({"target": "claw@gw"});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn args(settings: SshSettings, target: &str) -> Vec<String> {
        let home = passwd_home().unwrap();
        let ssh = OpenSsh::new(settings, SshTarget::parse(target).unwrap(), &home).unwrap();
        let sockets = ForwardSockets::new(&[18789]).unwrap();
        ssh.forward_args(&sockets)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn forward_args_match_the_apps_and_put_the_target_last() {
        let a = args(settings(serde_json::json!({})), "claw@gw");
        for expected in [
            "BatchMode=yes",
            "ExitOnForwardFailure=yes",
            "ServerAliveInterval=15",
            "ServerAliveCountMax=3",
            "ControlMaster=no",
            "ControlPath=none",
            "StrictHostKeyChecking=yes",
        ] {
            assert!(a.iter().any(|x| x == expected), "{expected} missing: {a:?}");
        }
        // The forward listens on a Unix socket in a private directory, never a TCP port.
        let forward = a
            .windows(2)
            .find(|w| w[0] == "-L")
            .map(|w| w[1].clone())
            .unwrap();
        let (socket, remote) = forward.split_once(":").unwrap();
        assert_eq!(remote, "127.0.0.1:18789");
        assert!(
            socket.starts_with('/') && socket.ends_with(".sock"),
            "{a:?}"
        );
        assert!(a.iter().any(|x| x == "StreamLocalBindUnlink=yes"));
        assert!(a.contains(&"-n".to_owned()) && a.contains(&"-N".to_owned()));
        assert_eq!(&a[a.len() - 2..], ["--", "claw@gw"]);
        assert!(
            !a.contains(&"-p".to_owned()),
            "-p without a typed port: {a:?}"
        );
        assert!(!a.contains(&"-i".to_owned()));
    }

    #[test]
    fn port_and_identity_only_when_given() {
        let a = args(
            settings(serde_json::json!({"identity_file": "/k"})),
            "claw@gw:2222",
        );
        assert!(a.windows(2).any(|w| w == ["-p", "2222"]));
        assert!(a.windows(2).any(|w| w == ["-i", "/k"]));
        assert!(a.iter().any(|x| x == "IdentitiesOnly=yes"));
    }

    #[test]
    fn stderr_is_classified_by_layer() {
        let kind = |s: &str| classify(&[s.to_owned()]).kind;
        assert_eq!(
            kind("claw@127.0.0.1: Permission denied (publickey)."),
            TransportErrorKind::Authentication
        );
        assert_eq!(
            kind("Host key verification failed."),
            TransportErrorKind::HostTrust
        );
        assert_eq!(
            kind("ssh: connect to host 127.0.0.1 port 1: Connection refused"),
            TransportErrorKind::Connect
        );
        assert_eq!(
            kind("ssh: Could not resolve hostname nope: Name or service not known"),
            TransportErrorKind::Resolve
        );
    }

    #[test]
    fn a_handshake_timeout_names_the_timeout_setting_the_path_and_doctor() {
        let error = classify(&["Connection timed out during banner exchange".to_owned()]);
        assert_eq!(error.kind, TransportErrorKind::Connect);
        let fix = error.fix.unwrap();
        for needle in [
            "connect_timeout_ms",
            "ConnectTimeout",
            "network path",
            "clawlink doctor",
        ] {
            assert!(fix.contains(needle), "{needle}: {fix}");
        }
    }

    #[test]
    fn forward_sockets_live_in_a_private_directory_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let sockets = ForwardSockets::new(&[18789, 18790]).unwrap();
        let dir = sockets.dir().to_path_buf();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(sockets.paths.len(), 2);
        assert!(sockets
            .paths
            .iter()
            .all(|p| p.parent() == Some(dir.as_path())));
        drop(sockets);
        assert!(!dir.exists());
    }
}
