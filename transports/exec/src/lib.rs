//! Transport `exec`: the gateway's WebSocket over a command's stdin and stdout, like ssh's ProxyCommand (`ssh -W`, `cloudflared access tcp`, `tailscale nc`, …).
//!
//! Every `connect` runs the command afresh; its stdin and stdout are the stream, its stderr
//! is kept (the last lines) for errors. No shell runs unless the user writes one, and the
//! command gets clawlink's environment minus its secrets plus the profile's `env` table.
//! The command never outlives its stream, the transport, or clawlink (see `child.rs`).
//! Local forwards (`clawlink tunnel`) run one command per connection, `%p` being the port
//! asked for, as ssh runs a ProxyCommand per connection.

mod argv;
mod child;
mod stream;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::registry::TransportDescriptor;
use clawlink_core::transport::{
    Capability, Connected, DuplexStream, GatewayPorts, Transport, TransportEnv, TransportError,
    TransportErrorKind,
};
use serde::Deserialize;

pub use argv::{expand, Tokens};
pub use child::is_clawlink_secret;

/// The registered name.
pub const NAME: &str = "exec";
/// The gateway's default port.
pub const DEFAULT_PORT: u16 = 18789;

/// The settings table as `clawlink transports` shows it: every key of [`Settings`] (a test
/// checks that none is missing).
pub const EXAMPLE_CONFIG: &str = "command = [\"ssh\", \"-W\", \"127.0.0.1:18789\", \"gw-host\"]  # argv, no shell; tokens: %h host, %p port, %r user, %% a %\n\
# command = [\"cloudflared\", \"access\", \"tcp\", \"--hostname\", \"gw.example.com\"]\n\
# command = [\"tailscale\", \"nc\", \"gw\", \"18789\"]\n\
# host = \"127.0.0.1\"         # the gateway's host as the command's far end sees it (%h, the upgrade's Host)\n\
# port = 18789               # the gateway's port there (%p)\n\
# user = \"claw\"              # %r; only needed when the command uses it\n\
# env = { TUNNEL_SERVICE_TOKEN_ID = \"…\" }  # extra variables for the command (never clawlink's secrets)\n\
# connect_timeout_ms = 10000 # how long the command may take to bring the gateway's first answer
# local_port = 18789         # where `clawlink tunnel` listens (default: port); other ports need %p in the command";

clawlink_core::inventory::submit! {
    TransportDescriptor {
        name: NAME,
        summary: "the gateway's WebSocket over a command's stdin and stdout, like ssh's ProxyCommand (ssh -W, cloudflared access tcp, tailscale nc)",
        example_config: EXAMPLE_CONFIG,
        // The command is an argument vector: no one flag could carry it faithfully, and a
        // profile holds it once for every invocation.
        flags: &[],
        // Ports: each forwarded connection runs the command afresh (with `%p` for its port,
        // so a command without `%p` reaches the gateway's port only). No commands on the
        // host, no session to supervise; the doctor checks it as a whole through `connect`.
        capabilities: &[Capability::GatewayPorts],
        layers: &[],
        trust: None,
        factory: &Exec::from_settings,
    }
}

/// Settings of `[profile.transports.exec]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The argument vector; `command[0]` is looked up on PATH.
    pub command: Vec<String>,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub user: Option<String>,
    /// Extra environment variables for the command (values may be secrets: never printed).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The local port a forward of the gateway prefers (`clawlink tunnel`); default `port`.
    #[serde(default)]
    pub local_port: Option<u16>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `env` may carry a tunnel's service token: names only.
        f.debug_struct("Settings")
            .field("command", &self.command)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field(
                "env",
                &self.env.keys().map(|k| (k, "***")).collect::<Vec<_>>(),
            )
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

/// A command that carries the gateway's stream.
pub struct Exec {
    /// `command` with its tokens expanded.
    argv: Vec<String>,
    /// `command` as written, for other ports; `None` when it has no `%p` (then only the
    /// gateway's port is reachable).
    port_template: Option<Vec<String>>,
    user: Option<String>,
    local_port: u16,
    env: BTreeMap<String, String>,
    host: String,
    port: u16,
    report: Arc<stream::Report>,
    /// The commands started so far whose supervisor has not finished (close kills them).
    running: Mutex<Vec<Tracked>>,
}

/// What the transport keeps of one started command.
struct Tracked {
    stop: tokio_util::sync::CancellationToken,
    supervisor: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec")
            .field("argv", &self.argv)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("gateway", &self.authority())
            .finish_non_exhaustive()
    }
}

impl Exec {
    /// Checks the settings and expands the command's tokens.
    pub fn new(settings: Settings) -> Result<Self, TransportError> {
        let argv = argv::expand(
            &settings.command,
            &Tokens {
                host: &settings.host,
                port: settings.port,
                user: settings.user.as_deref(),
            },
        )?;
        if settings.host.trim().is_empty() {
            return Err(TransportError::config("transports.exec.host is empty")
                .with_fix("leave it out for 127.0.0.1, or name the gateway's host as the command's far end sees it"));
        }
        if settings.connect_timeout_ms == 0 {
            return Err(
                TransportError::config("transports.exec.connect_timeout_ms is 0").with_fix(
                    "leave it out for 10000, or give the milliseconds the command may take",
                ),
            );
        }
        for name in settings.env.keys() {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(TransportError::config(format!(
                    "transports.exec.env has the variable name {name:?}, which no environment can hold"
                ))
                .with_fix("use names without '=' or NUL"));
            }
            if is_clawlink_secret(name) {
                return Err(TransportError::config(format!(
                    "transports.exec.env sets {name}: clawlink's secrets never go to a child's environment"
                ))
                .with_fix("remove it; the command reaches the gateway's port, clawlink itself authenticates"));
            }
        }
        if settings.local_port == Some(0) {
            return Err(
                TransportError::config("transports.exec.local_port is 0").with_fix(
                    "leave it out to listen on the gateway's port, or give a port from 1 to 65535",
                ),
            );
        }
        let host = settings.host.trim().to_owned();
        let report = Arc::new(stream::Report {
            command: argv::display(&argv),
            gateway: authority(&host, settings.port),
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
        });
        // `%p` is in the command exactly when another port expands it differently.
        let other_port = argv::expand(
            &settings.command,
            &Tokens {
                host: &host,
                port: settings.port.wrapping_add(1),
                user: settings.user.as_deref(),
            },
        )?;
        let port_template = (other_port != argv).then(|| settings.command.clone());
        Ok(Self {
            argv,
            port_template,
            user: settings.user,
            local_port: settings.local_port.unwrap_or(settings.port),
            env: settings.env,
            host,
            port: settings.port,
            report,
            running: Mutex::new(Vec::new()),
        })
    }

    fn from_settings(
        settings: &serde_json::Value,
        _env: &TransportEnv,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(Self::new(Self::parse_settings(settings)?)?))
    }

    /// Parses the settings table.
    pub fn parse_settings(settings: &serde_json::Value) -> Result<Settings, TransportError> {
        serde_json::from_value(settings.clone()).map_err(|e| {
            use clawlink_core::registry::settings_keys;
            TransportError::config(format!("transports.exec: {e}")).with_fix(format!(
                "valid keys: {} (see `clawlink transports`)",
                settings_keys::<Settings>().join(", ")
            ))
        })
    }

    /// The expanded argument vector.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    fn authority(&self) -> String {
        authority(&self.host, self.port)
    }

    /// The URL of the upgrade request: the gateway as the command's far end sees it.
    pub fn request_url(&self) -> String {
        format!("ws://{}/", self.authority())
    }

    /// Starts `argv` and makes its stdin/stdout the stream; tracked for `close`.
    async fn run(
        &self,
        argv: &[String],
        report: Arc<stream::Report>,
    ) -> Result<Box<dyn DuplexStream>, TransportError> {
        let running = child::spawn(argv, &self.env).await?;
        let (stream, tracked) = stream::ChildStream::new(running, report);
        self.track(tracked);
        Ok(Box::new(stream))
    }

    fn track(&self, tracked: Tracked) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|t| !t.supervisor.is_finished());
        running.push(tracked);
    }
}

#[async_trait]
impl Transport for Exec {
    fn name(&self) -> &str {
        NAME
    }

    /// The command and the gateway address it reaches: another command is another way to
    /// a gateway, with its own device token.
    fn gateway_key(&self) -> String {
        format!("exec:{} -> {}", self.report.command, self.authority())
    }

    fn describe(&self) -> String {
        format!("`{}` → {}", self.report.command, self.authority())
    }

    fn ports(&self) -> Option<&dyn GatewayPorts> {
        Some(self)
    }

    async fn connect(&self) -> Result<Connected, TransportError> {
        Ok(Connected {
            stream: self.run(&self.argv, self.report.clone()).await?,
            request_url: self.request_url(),
        })
    }

    /// Kills every command still running (SIGTERM, SIGKILL after a grace) and waits,
    /// bounded, until each was reaped.
    async fn close(&self) {
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        for tracked in &running {
            tracked.stop.cancel();
        }
        for tracked in running {
            let _ = tokio::time::timeout(child::GRACE + Duration::from_secs(1), tracked.supervisor)
                .await;
        }
    }
}

/// One command per forwarded connection, like ssh's ProxyCommand: `%p` expands to the port
/// asked for.
#[async_trait]
impl GatewayPorts for Exec {
    fn gateway_port(&self) -> u16 {
        self.port
    }

    fn preferred_local_port(&self) -> u16 {
        self.local_port
    }

    fn host_label(&self) -> String {
        format!("{} (through `{}`)", self.host, self.report.command)
    }

    async fn open(&self, port: u16) -> Result<Box<dyn DuplexStream>, TransportError> {
        if port == self.port {
            return self.run(&self.argv, self.report.clone()).await;
        }
        let Some(template) = &self.port_template else {
            return Err(TransportError::new(
                TransportErrorKind::Unsupported,
                format!(
                    "exec: `{}` has no %p, so it reaches only the gateway's port {}, not {port}",
                    self.report.command, self.port
                ),
            )
            .with_fix("write %p where the command names the port (e.g. ssh -W %h:%p), so each forward reaches its own port"));
        };
        let argv = argv::expand(
            template,
            &Tokens {
                host: &self.host,
                port,
                user: self.user.as_deref(),
            },
        )?;
        let report = Arc::new(stream::Report {
            command: argv::display(&argv),
            gateway: authority(&self.host, port),
            connect_timeout: self.report.connect_timeout,
        });
        self.run(&argv, report).await
    }
}

/// `host:port` with an IPv6 host in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests;
