//! Transport `ssh-tunnel` (the default remote mode): the gateway's WebSocket over an in-process SSH connection.
//!
//! Unlike the macOS app, which spawns `ssh -N -L` and then has to track, reap and de-duplicate
//! child processes, clawlink speaks SSH itself (russh, ring crypto): our WebSocket runs over a
//! `direct-tcpip` channel to `127.0.0.1:<remote_port>` on the gateway host, so there is no
//! child process to orphan and no local port to fight over. One SSH session is shared by the
//! gateway connection, remote commands and the app's local forwards (through
//! [`GatewayPorts`]), and is re-opened on demand after a loss ([`Supervision`]).

pub mod commands;
mod diagnosis;
pub mod exec;
mod host_identity;
mod hostkey;
pub mod interactive;
pub mod known_hosts;
pub mod openssh;
mod session;
pub mod sshconfig;
pub mod target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::config::Mode;
use clawlink_core::prompt::Prompter;
use clawlink_core::registry::{
    FlagValue, Selection, TransportDescriptor, TransportFlag, TrustCommand,
};
use clawlink_core::transport::{
    Capability, Connected, DuplexStream, GatewayPorts, HostCommands, RemoteOutput, Supervision,
    Transport, TransportEnv, TransportError, TransportErrorKind,
};
use serde::Deserialize;

pub use hostkey::{HostKeyCheck, HostKeyPolicy, Trusted};
pub use session::{SessionInfo, SshSession};
use sshconfig::{Resolved, SshEnv};
use target::SshTarget;

/// The registered name.
pub const NAME: &str = "ssh-tunnel";
/// The gateway's default port, on the remote host and locally for `clawlink tunnel`.
pub const DEFAULT_GATEWAY_PORT: u16 = 18789;

/// Any byte stream SSH can run over (TCP, or a channel of a jump host).
pub(crate) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The settings table as `clawlink transports` shows it: every key of [`SshSettings`]
/// (a test checks that none is missing).
pub const EXAMPLE_CONFIG: &str = "target = \"claw@gateway-host\"          # user@host[:port], [v6]:port, ssh://…, or a ~/.ssh/config alias\n\
# identity_file = \"~/.ssh/id_ed25519\"   # like ssh -i: only this key\n\
# remote_port = 18789                   # the gateway's port on the remote host\n\
# local_port = 18789                    # clawlink tunnel's preferred local port\n\
# project_root = \"~/openclaw\"           # for remote CLI commands\n\
# cli_path = \"~/openclaw/openclaw.mjs\"\n\
# host_key_policy = \"strict\"            # strict | accept-new | openssh | SHA256:…\n\
# keepalive_interval_s = 15             # like ServerAliveInterval\n\
# keepalive_count = 3                   # like ServerAliveCountMax\n\
# connect_timeout_ms = 10000            # TCP connect and SSH handshake, each (like ConnectTimeout)\n\
# ssh_config = \"~/.ssh/config\"          # another SSH config file (like ssh -F)\n\
# known_hosts_file = \"~/.ssh/known_hosts\" # another known_hosts file, read and written (like UserKnownHostsFile)\n\
# backend = \"russh\"                    # or \"openssh\": the system ssh binary";

clawlink_core::inventory::submit! {
    TransportDescriptor {
        name: NAME,
        summary: "the gateway's WebSocket through an in-process SSH connection (like ssh -N -L, no child process); the default for remote mode",
        example_config: EXAMPLE_CONFIG,
        flags: FLAGS,
        capabilities: &[
            Capability::GatewayPorts,
            Capability::HostCommands,
            Capability::Supervision,
            Capability::Diagnosis,
            Capability::HostIdentity,
        ],
        layers: diagnosis::LAYERS,
        trust: Some(TrustCommand {
            command: "ssh",
            argument_key: "target",
            argument_required: None,
            profile_pin_key: None,
        }),
        factory: &SshTunnel::from_settings,
    }
}

/// The command-line overrides of [`SshSettings`]; `--ssh` selects this transport (and remote
/// mode) for the run.
const FLAGS: &[TransportFlag] = &[
    TransportFlag {
        flag: "ssh",
        value_name: "user@host[:port]",
        key: "target",
        help: "Reach the gateway through SSH to this target (selects the ssh-tunnel transport)",
        value: FlagValue::Text,
        selects: Some(Selection {
            mode: Some(Mode::Remote),
        }),
    },
    TransportFlag {
        flag: "identity",
        value_name: "FILE",
        key: "identity_file",
        help: "SSH identity file; like `ssh -i`, only this key is offered",
        value: FlagValue::LocalPath,
        selects: None,
    },
    TransportFlag {
        flag: "remote-port",
        value_name: "N",
        key: "remote_port",
        help: "The gateway's port on the remote host",
        value: FlagValue::Port,
        selects: None,
    },
    TransportFlag {
        flag: "local-port",
        value_name: "N",
        key: "local_port",
        help: "Preferred local port for `clawlink tunnel`",
        value: FlagValue::Port,
        selects: None,
    },
    TransportFlag {
        flag: "project-root",
        value_name: "DIR",
        key: "project_root",
        help: "Directory to run remote openclaw commands from",
        value: FlagValue::Text,
        selects: None,
    },
    TransportFlag {
        flag: "cli-path",
        value_name: "PATH",
        key: "cli_path",
        help: "The openclaw CLI on the remote host (a file; .js/.mjs run with node)",
        value: FlagValue::Text,
        selects: None,
    },
    TransportFlag {
        flag: "host-key-policy",
        value_name: "POLICY",
        key: "host_key_policy",
        help:
            "How SSH host keys are trusted: strict, accept-new, openssh, or a SHA256:… fingerprint",
        value: FlagValue::Text,
        selects: None,
    },
];

/// Settings of `[profile.transports.ssh_tunnel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    pub target: String,
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    #[serde(default = "default_port")]
    pub remote_port: u16,
    #[serde(default = "default_port")]
    pub local_port: u16,
    #[serde(default)]
    pub project_root: Option<String>,
    #[serde(default)]
    pub cli_path: Option<String>,
    #[serde(default)]
    pub host_key_policy: HostKeyPolicy,
    #[serde(default)]
    pub keepalive_interval_s: Option<u64>,
    #[serde(default)]
    pub keepalive_count: Option<usize>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Another SSH config file than `~/.ssh/config`.
    #[serde(default)]
    pub ssh_config: Option<PathBuf>,
    /// Another known_hosts file than the config's `UserKnownHostsFile` (read and written).
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
    /// `russh` (in-process, the default) or `openssh` (the system ssh binary).
    #[serde(default)]
    pub backend: Backend,
}

/// Which SSH implementation carries the tunnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process SSH (russh): no child process, one shared session.
    #[default]
    Russh,
    /// The system `ssh`, for ProxyCommand helpers, hardware keys and `Match` blocks.
    Openssh,
}

fn default_port() -> u16 {
    DEFAULT_GATEWAY_PORT
}

/// The `ssh-tunnel` transport.
pub struct SshTunnel {
    settings: SshSettings,
    target: SshTarget,
    env: SshEnv,
    prompter: Arc<dyn Prompter>,
    session: tokio::sync::Mutex<Option<Arc<SshSession>>>,
    /// The system ssh, when `backend = "openssh"`.
    openssh: Option<openssh::OpenSsh>,
    /// The openssh backend's `ssh -N -L` child: the gateway port and the sandbox port, each
    /// on a private Unix socket.
    openssh_forward: tokio::sync::Mutex<Option<openssh::ForwardChild>>,
    /// Whether the profile names `local_port` (a taken default port is no failure: the
    /// forwards fall back to a free one).
    local_port_explicit: bool,
}

impl std::fmt::Debug for SshTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTunnel")
            .field("target", &self.target.to_string())
            .finish_non_exhaustive()
    }
}

impl SshTunnel {
    /// A tunnel from settings, with this process's HOME, user and ssh-agent.
    pub fn new(settings: SshSettings, prompter: Arc<dyn Prompter>) -> Result<Self, TransportError> {
        Self::with_env(settings, prompter, SshEnv::from_process())
    }

    /// A tunnel with an explicit environment (tests).
    pub fn with_env(
        settings: SshSettings,
        prompter: Arc<dyn Prompter>,
        env: SshEnv,
    ) -> Result<Self, TransportError> {
        let target = SshTarget::parse(&settings.target).map_err(|e| {
            TransportError::config(e.to_string()).with_fix("write the target like user@host[:port]")
        })?;
        let openssh = match settings.backend {
            Backend::Openssh => Some(openssh::OpenSsh::new(
                settings.clone(),
                target.clone(),
                &env.home,
            )?),
            Backend::Russh => None,
        };
        Ok(Self {
            settings,
            target,
            env,
            prompter,
            session: tokio::sync::Mutex::new(None),
            openssh,
            openssh_forward: tokio::sync::Mutex::new(None),
            local_port_explicit: false,
        })
    }

    fn from_settings(
        settings: &serde_json::Value,
        env: &TransportEnv,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        let explicit = settings.get("local_port").is_some();
        let mut tunnel = Self::new(Self::parse_settings(settings)?, env.prompter.clone())?;
        tunnel.local_port_explicit = explicit;
        Ok(Arc::new(tunnel))
    }

    /// Parses and checks the settings table.
    pub fn parse_settings(settings: &serde_json::Value) -> Result<SshSettings, TransportError> {
        serde_json::from_value(settings.clone()).map_err(|e| {
            let hint = if settings.get("target").is_none() {
                "set the SSH target: `target = \"user@host\"` in [PROFILE.transports.ssh_tunnel], or --ssh TARGET".to_owned()
            } else {
                format!(
                    "valid keys: {} (see `clawlink transports`)",
                    clawlink_core::registry::settings_keys::<SshSettings>().join(", ")
                )
            };
            TransportError::config(format!("transports.{}: {e}", NAME.replace('-', "_"))).with_fix(hint)
        })
    }

    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// The system ssh, when this tunnel uses the `openssh` backend.
    pub fn openssh(&self) -> Option<&openssh::OpenSsh> {
        self.openssh.as_ref()
    }

    /// The openssh backend's forward of `port`: the private Unix socket a running
    /// `ssh -N -L SOCKET:…` child listens on, that child restarted when it died. One child
    /// forwards the gateway port and the sandbox port (+ 1); other ports are not offered.
    async fn openssh_socket(
        &self,
        ssh: &openssh::OpenSsh,
        port: u16,
    ) -> Result<PathBuf, TransportError> {
        let remote_ports = [
            self.settings.remote_port,
            self.settings.remote_port.saturating_add(1),
        ];
        let Some(index) = remote_ports.iter().position(|p| *p == port) else {
            return Err(TransportError::new(
                TransportErrorKind::Unsupported,
                format!(
                    "the openssh backend forwards only the gateway port {} and the sandbox port {}, not {port}",
                    remote_ports[0], remote_ports[1]
                ),
            ));
        };
        let mut slot = self.openssh_forward.lock().await;
        if let Some(child) = slot.as_mut() {
            if child.is_running() {
                return Ok(child.sockets().paths[index].clone());
            }
            tracing::info!(tail = ?child.stderr_tail(), "ssh exited; starting it again");
        }
        let sockets = match slot.as_ref() {
            Some(child) => child.sockets().clone(),
            None => openssh::ForwardSockets::new(&remote_ports)?,
        };
        let child = ssh.start_forwards(&sockets).await?;
        *slot = Some(child);
        Ok(sockets.paths[index].clone())
    }

    /// A stream to `127.0.0.1:port` on the gateway host: an SSH channel (russh), or a
    /// connection to the system ssh's private Unix socket (openssh) — never a TCP port
    /// another local user could hold.
    async fn open_port(&self, port: u16) -> Result<Box<dyn DuplexStream>, TransportError> {
        if let Some(ssh) = &self.openssh {
            let socket = self.openssh_socket(ssh, port).await?;
            let stream = tokio::net::UnixStream::connect(&socket)
                .await
                .map_err(|e| {
                    TransportError::new(
                        TransportErrorKind::Tunnel,
                        format!("ssh's local forward {}: {e}", socket.display()),
                    )
                })?;
            return Ok(Box::new(stream));
        }
        let channel = self.open_forward(port).await?;
        Ok(Box::new(channel.into_stream()))
    }

    /// The target and its ProxyJump hops (outermost first), with `~/.ssh/config` applied.
    pub fn resolve(&self) -> Result<(Resolved, Vec<Resolved>), TransportError> {
        let config = self.settings.ssh_config.as_deref();
        let resolve = |t: &SshTarget| {
            sshconfig::resolve(t, config, &self.env).map_err(|e| {
                TransportError::config(format!("SSH config: {e}"))
                    .with_fix("fix the file named above")
            })
        };
        let mut resolved = resolve(&self.target)?;
        if let Some(identity) = &self.settings.identity_file {
            resolved.identity_files = vec![expand_tilde(identity, &self.env.home)];
            resolved.identities_only = true;
        }
        if let Some(file) = &self.settings.known_hosts_file {
            resolved.user_known_hosts = vec![expand_tilde(file, &self.env.home)];
        }
        let hops = resolved
            .proxy_jump
            .iter()
            .map(resolve)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((resolved, hops))
    }

    fn timing(&self, resolved: &Resolved) -> session::Timing {
        session::Timing {
            connect_timeout: self
                .settings
                .connect_timeout_ms
                .map(Duration::from_millis)
                .or(resolved.connect_timeout)
                .unwrap_or(Duration::from_secs(10)),
            keepalive_interval: self
                .settings
                .keepalive_interval_s
                .map(Duration::from_secs)
                .or(resolved.keepalive_interval)
                .unwrap_or(Duration::from_secs(15)),
            keepalive_count: self
                .settings
                .keepalive_count
                .or(resolved.keepalive_count)
                .unwrap_or(3),
        }
    }

    /// The host-key check for `resolved` under this profile's policy.
    pub fn host_key_check(&self, resolved: &Resolved) -> HostKeyCheck {
        HostKeyCheck {
            policy: self.settings.host_key_policy.clone(),
            user_files: resolved.user_known_hosts.clone(),
            global_files: resolved.global_known_hosts.clone(),
            openssh_setting: resolved.strict_host_key_checking.clone(),
            target_display: self.target.to_string(),
            prompter: self.prompter.clone(),
        }
    }

    /// Opens a new SSH connection (not shared).
    pub async fn open_session(&self) -> Result<SshSession, TransportError> {
        let (resolved, hops) = self.resolve()?;
        let check = self.host_key_check(&resolved);
        session::open(
            &resolved,
            check,
            self.prompter.clone(),
            self.timing(&resolved),
            &hops,
        )
        .await
    }

    /// The shared SSH connection, opened (or re-opened after a loss) on demand.
    pub async fn session(&self) -> Result<Arc<SshSession>, TransportError> {
        let mut slot = self.session.lock().await;
        if let Some(live) = slot.as_ref() {
            if !live.is_closed() {
                return Ok(live.clone());
            }
            tracing::info!(target = %self.target, "SSH connection lost; reconnecting");
        }
        let fresh = Arc::new(self.open_session().await?);
        tracing::info!(endpoint = %fresh.info.endpoint, auth = %fresh.info.auth_method, "SSH connected");
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// Whether a shared SSH connection is currently up.
    pub async fn is_connected(&self) -> bool {
        self.session
            .lock()
            .await
            .as_ref()
            .is_some_and(|s| !s.is_closed())
    }

    /// A channel to `127.0.0.1:port` on the gateway host; re-opens SSH once if the shared
    /// connection turns out to be dead.
    pub async fn open_forward(
        &self,
        port: u16,
    ) -> Result<russh::Channel<russh::client::Msg>, TransportError> {
        let session = self.session().await?;
        match session.forward("127.0.0.1", port).await {
            Ok(channel) => Ok(channel),
            // A server that left the request unanswered would likely leave the next one too:
            // the caller retries with its backoff, on a fresh session.
            Err(e) if session.stalled() => {
                self.drop_session(&session).await;
                let stale = session.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), stale.disconnect()).await;
                });
                Err(e)
            }
            Err(e) if session.is_closed() || e.kind == TransportErrorKind::Io => {
                tracing::debug!(error = %e, "forward failed on a stale session; reconnecting once");
                self.drop_session(&session).await;
                self.session().await?.forward("127.0.0.1", port).await
            }
            Err(e) => Err(e),
        }
    }

    async fn drop_session(&self, stale: &Arc<SshSession>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, stale)) {
            *slot = None;
        }
    }

    /// Runs `openclaw ARGS` on the gateway host with the CLI resolution of [`exec::cli_script`].
    pub async fn run_cli(
        &self,
        args: &[&str],
        limit: Duration,
    ) -> Result<RemoteOutput, TransportError> {
        let location = exec::CliLocation {
            project_root: self.settings.project_root.clone(),
            cli_path: self.settings.cli_path.clone(),
        };
        let command = exec::sh_command(&exec::cli_script(&location, args));
        if let Some(ssh) = &self.openssh {
            return ssh.run(&command, limit).await;
        }
        let session = self.session().await?;
        exec::run(&session, &command, limit).await
    }

    /// The host key the server presents and what the known_hosts files say about it,
    /// without authenticating (for `clawlink ssh trust`).
    pub async fn probe_host_key(&self) -> Result<HostKeyProbe, TransportError> {
        let (resolved, hops) = self.resolve()?;
        let timing = self.timing(&resolved);
        let key = session::fetch_host_key(&resolved, &hops, self.prompter.clone(), timing, |r| {
            self.host_key_check(r)
        })
        .await?;
        let files: Vec<PathBuf> = resolved
            .user_known_hosts
            .iter()
            .chain(&resolved.global_known_hosts)
            .cloned()
            .collect();
        let verdict = known_hosts::KnownHosts::load(&files)
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::HostTrust,
                    format!("cannot read known_hosts: {e}"),
                )
            })?
            .check(&resolved.host_name, resolved.port, &key);
        Ok(HostKeyProbe {
            host: resolved.host_name.clone(),
            port: resolved.port,
            fingerprint: known_hosts::fingerprint(&key),
            algorithm: key.algorithm().to_string(),
            write_file: resolved.user_known_hosts.first().cloned(),
            key,
            verdict,
        })
    }
}

/// What `probe_host_key` found.
pub struct HostKeyProbe {
    pub host: String,
    pub port: u16,
    pub key: known_hosts::PublicKey,
    pub fingerprint: String,
    pub algorithm: String,
    pub verdict: known_hosts::Verdict,
    /// Where `clawlink ssh trust` writes the key.
    pub write_file: Option<PathBuf>,
}

fn expand_tilde(path: &std::path::Path, home: &std::path::Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

#[async_trait]
impl Transport for SshTunnel {
    fn name(&self) -> &str {
        NAME
    }

    fn gateway_key(&self) -> String {
        format!(
            "ssh://{}->127.0.0.1:{}",
            self.target, self.settings.remote_port
        )
    }

    fn describe(&self) -> String {
        format!(
            "ssh://{} → 127.0.0.1:{}",
            self.target, self.settings.remote_port
        )
    }

    /// The gateway sees the tunnel's connections as coming from 127.0.0.1.
    fn is_loopback_to_gateway(&self) -> bool {
        true
    }

    async fn connect(&self) -> Result<Connected, TransportError> {
        Ok(Connected {
            stream: self.open_port(self.settings.remote_port).await?,
            request_url: format!("ws://127.0.0.1:{}/", self.settings.remote_port),
        })
    }

    fn ports(&self) -> Option<&dyn GatewayPorts> {
        Some(self)
    }

    fn host_identity(&self) -> Option<&dyn clawlink_core::transport::HostIdentity> {
        Some(self)
    }

    fn supervision(&self) -> Option<&dyn Supervision> {
        Some(self)
    }

    fn commands(&self) -> Option<&dyn HostCommands> {
        Some(self)
    }

    fn diagnosis(&self) -> Option<&dyn clawlink_core::transport::Diagnosis> {
        Some(self)
    }

    /// Ends the SSH session, and the openssh backend's `ssh -N -L` child, so that nothing
    /// outlives the transport; the next `connect` starts afresh.
    async fn close(&self) {
        if let Some(session) = self.session.lock().await.take() {
            session.disconnect().await;
        }
        if let Some(child) = self.openssh_forward.lock().await.take() {
            child.stop().await;
        }
    }
}

#[async_trait]
impl GatewayPorts for SshTunnel {
    fn gateway_port(&self) -> u16 {
        self.settings.remote_port
    }

    fn preferred_local_port(&self) -> u16 {
        self.settings.local_port
    }

    fn host_label(&self) -> String {
        self.target.to_string()
    }

    async fn open(&self, port: u16) -> Result<Box<dyn DuplexStream>, TransportError> {
        self.open_port(port).await
    }
}

/// How often a session is checked for life; SSH keepalives (or ssh's own) find a dead
/// path, this only notices their verdict.
const SESSION_CHECK: Duration = Duration::from_secs(2);

#[async_trait]
impl Supervision for SshTunnel {
    /// The shared SSH connection (russh) or the `ssh -N -L` child (openssh) is gone, or was
    /// never started.
    async fn session_lost(&self) -> TransportError {
        loop {
            tokio::time::sleep(SESSION_CHECK).await;
            let lost = match &self.openssh {
                Some(_) => match self.openssh_forward.lock().await.as_mut() {
                    Some(child) => (!child.is_running())
                        .then(|| format!("ssh exited: {}", child.stderr_tail().join(" / "))),
                    None => Some("ssh is not running".to_owned()),
                },
                None => (!self.is_connected().await)
                    .then(|| format!("SSH connection to {} lost", self.target)),
            };
            if let Some(message) = lost {
                return TransportError::new(TransportErrorKind::Tunnel, message);
            }
        }
    }

    async fn restore(&self) -> Result<(), TransportError> {
        match &self.openssh {
            Some(ssh) => self
                .openssh_socket(ssh, self.settings.remote_port)
                .await
                .map(drop),
            None => self.session().await.map(drop),
        }
    }

    /// Ends the session (and ssh's child); the next stream opens a fresh one.
    async fn reset(&self) {
        self.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawlink_core::registry::settings_keys;

    #[test]
    fn every_setting_is_in_the_example_and_the_error_hint() {
        let keys = settings_keys::<SshSettings>();
        assert_eq!(keys.len(), 13, "{keys:?}");
        for key in keys {
            assert!(
                EXAMPLE_CONFIG
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))),
                "{key} missing from the example config"
            );
        }
        let error = SshTunnel::parse_settings(&serde_json::json!({"target": "a@b", "bakend": 1}))
            .unwrap_err();
        for key in keys {
            assert!(
                error.fix.as_deref().unwrap().contains(key),
                "{key}: {error:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_ssh_handshake_that_never_finishes_names_the_timeout_the_path_and_doctor() {
        // A server that accepts TCP and then says nothing, like a proxy swallowing SSH.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut accepted = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                accepted.push(socket);
            }
        });
        let settings = SshTunnel::parse_settings(&serde_json::json!({
            "target": format!("me@127.0.0.1:{port}"),
            "connect_timeout_ms": 300,
        }))
        .unwrap();
        let home = std::env::temp_dir().join(format!("clawlink-ssh-silent-{}", std::process::id()));
        let env = SshEnv {
            home: home.clone(),
            local_user: "me".into(),
            auth_sock: None,
        };
        let tunnel = SshTunnel::with_env(
            settings,
            Arc::new(clawlink_core::prompt::NonInteractive),
            env,
        )
        .unwrap();
        let Err(error) = tunnel.open_session().await else {
            panic!("a silent server completed an SSH handshake");
        };
        held.abort();
        assert_eq!(error.kind, TransportErrorKind::Connect);
        assert!(error.message.contains("handshake"), "{error:?}");
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
}
