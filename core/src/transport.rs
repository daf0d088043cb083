//! The transport contract: anything that can hand the gateway client a byte stream to the gateway's WebSocket port.
//!
//! A transport (direct TCP, TLS, an SSH tunnel, a QUIC relay, a runtime plugin, a child
//! process) only moves bytes. WebSocket framing, the challenge handshake, device signing and
//! reconnection live once, above it, in [`crate::gateway`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::prompt::Prompter;

pub mod commands;
pub use commands::HostCommands;

/// An optional part of the transport contract, as a descriptor declares it (so that a
/// refusal can name the transports that offer it without building any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// [`HostCommands`], reached through [`Transport::commands`].
    HostCommands,
    /// [`GatewayPorts`], reached through [`Transport::ports`].
    GatewayPorts,
    /// [`Supervision`], reached through [`Transport::supervision`].
    Supervision,
    /// [`Diagnosis`], reached through [`Transport::diagnosis`].
    Diagnosis,
    /// [`HostIdentity`], reached through [`Transport::host_identity`].
    HostIdentity,
}

impl Capability {
    /// Every capability, in the order listings show them.
    pub const ALL: [Capability; 5] = [
        Self::GatewayPorts,
        Self::HostCommands,
        Self::Supervision,
        Self::Diagnosis,
        Self::HostIdentity,
    ];

    /// How refusals and listings name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::HostCommands => commands::CAPABILITY,
            Self::GatewayPorts => "ports on the gateway host",
            Self::Supervision => "a supervised session (loss noticed, reset)",
            Self::Diagnosis => "its own doctor layers",
            Self::HostIdentity => "checking and trusting the peer's identity",
        }
    }

    /// Whether a built transport offers it (what its descriptor must declare).
    pub fn offered_by(self, transport: &dyn Transport) -> bool {
        match self {
            Self::HostCommands => transport.commands().is_some(),
            Self::GatewayPorts => transport.ports().is_some(),
            Self::Supervision => transport.supervision().is_some(),
            Self::Diagnosis => transport.diagnosis().is_some(),
            Self::HostIdentity => transport.host_identity().is_some(),
        }
    }
}
pub mod diagnosis;
pub use diagnosis::{Diagnosis, LayerReport, LayerSink, LayerStatus, Stopped};
mod ports;
pub mod tcp;
pub use ports::{GatewayPorts, Supervision};
mod host_identity;
pub use host_identity::{Destination, HostIdentity, PresentedIdentity, Remembered, Standing};

/// A duplex byte stream to the gateway's WebSocket port (TCP, TLS, an SSH channel, …).
pub trait DuplexStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> DuplexStream for T {}

/// What [`Transport::connect`] returns: the stream plus what the client needs to speak
/// WebSocket over it.
pub struct Connected {
    /// The byte stream, already past any transport-level handshake (TLS, SSH).
    pub stream: Box<dyn DuplexStream>,
    /// The `ws://` or `wss://` URL to put in the HTTP upgrade request (Host header and path).
    /// For a tunnel this is the gateway's address as seen from the far end, e.g.
    /// `ws://127.0.0.1:18789/`.
    pub request_url: String,
}

impl fmt::Debug for Connected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field("request_url", &self.request_url)
            .finish_non_exhaustive()
    }
}

/// A local endpoint a transport exposes for other programs (browser, the openclaw CLI).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalEndpoint {
    /// What the endpoint reaches, e.g. "gateway" or "widget sandbox".
    pub purpose: String,
    /// The URL other programs should use, e.g. `ws://127.0.0.1:18789`.
    pub url: String,
}

/// Output of a command run on the gateway host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOutput {
    /// Exit status; `None` when the remote side reported a signal instead.
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A connection method to a gateway.
///
/// Contract:
/// - `connect` may be called many times (every reconnect); each call returns a fresh stream.
///   It must finish or fail within a bounded time (implementations apply their own connect
///   timeout) and must never prompt unless `Prompter::is_interactive` says a human is there.
/// - Errors carry a [`TransportErrorKind`] so the client knows whether retrying can help.
/// - Optional capabilities have defaults meaning "not supported".
#[async_trait]
pub trait Transport: Send + Sync {
    /// The registered name of this transport ("direct-ws", "ssh-tunnel", …).
    fn name(&self) -> &str;

    /// A stable key naming the gateway this transport reaches (used to store the device token
    /// the gateway issues). Two transports reaching the same gateway the same way return the
    /// same key; it contains no secret.
    fn gateway_key(&self) -> String;

    /// Human description of where this transport connects, for status lines and errors.
    fn describe(&self) -> String;

    /// Whether the gateway will see this connection as local (loopback): true for local mode
    /// and SSH tunnels, false for direct remote URLs. The client only retries a refused shared
    /// token with the stored device token on trusted endpoints.
    fn is_loopback_to_gateway(&self) -> bool {
        false
    }

    /// The gateway's own WebSocket URL when this machine reaches it without a go-between
    /// (so a browser can open the HTTP side of the same address: `dashboard`). Default:
    /// none (the gateway is reached through the transport's channel only).
    fn gateway_url(&self) -> Option<String> {
        None
    }

    /// Opens a fresh byte stream to the gateway's WebSocket port.
    async fn connect(&self) -> Result<Connected, TransportError>;

    /// Local endpoints this transport serves for other programs (e.g. an SSH tunnel's
    /// 127.0.0.1 listener). Default: none.
    fn local_endpoints(&self) -> Vec<LocalEndpoint> {
        Vec::new()
    }

    /// Commands on the gateway host (the openclaw CLI, a command with a terminal), when this
    /// transport can run them. Default: not offered.
    fn commands(&self) -> Option<&dyn HostCommands> {
        None
    }

    /// The transport's own doctor layers (see [`Diagnosis`]). Default: not offered; the
    /// doctor then checks the transport as a whole through `connect`.
    fn diagnosis(&self) -> Option<&dyn Diagnosis> {
        None
    }

    /// Streams to ports on the gateway host (local forwards). Default: not offered.
    fn ports(&self) -> Option<&dyn GatewayPorts> {
        None
    }

    /// Watching and resetting the session under this transport's streams. Default: not
    /// offered (each stream stands alone; nothing to watch).
    fn supervision(&self) -> Option<&dyn Supervision> {
        None
    }

    /// Checking and remembering the peer's identity (`ssh trust`, `tls trust`). Default: not offered.
    fn host_identity(&self) -> Option<&dyn HostIdentity> {
        None
    }

    /// Releases long-lived resources (SSH sessions, listeners). Default: nothing to release.
    async fn close(&self) {}
}

/// What a transport factory receives besides its settings.
#[derive(Clone)]
pub struct TransportEnv {
    /// Who answers questions (host-key trust, passphrases).
    pub prompter: Arc<dyn Prompter>,
}

impl fmt::Debug for TransportEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportEnv")
            .field("interactive", &self.prompter.is_interactive())
            .finish()
    }
}

/// Which layer of a transport failed; decides whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportErrorKind {
    /// The transport's settings are wrong (bad URL, missing target). Not retryable.
    Config,
    /// Name resolution failed. Retryable (networks come back).
    Resolve,
    /// TCP connect refused or timed out. Retryable.
    Connect,
    /// TLS failed (certificate not trusted, pin mismatch). Not retryable.
    Tls,
    /// The remote host's identity is unknown, changed or revoked. Not retryable.
    HostTrust,
    /// The transport refused our credentials (SSH key refused). Not retryable.
    Authentication,
    /// A tunnel or forward could not be opened, or broke. Retryable.
    Tunnel,
    /// A remote command could not run. Not retryable.
    Remote,
    /// The capability is not offered by this transport. Not retryable.
    Unsupported,
    /// Other I/O failure on an established stream. Retryable.
    Io,
    /// The far end does not speak the transport's protocol or broke it (not an SSH server, an
    /// oversized packet). Not retryable: the same peer answers the same way.
    Protocol,
}

impl TransportErrorKind {
    /// Whether reconnecting later can fix this without the user changing anything.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Resolve | Self::Connect | Self::Tunnel | Self::Io
        )
    }

    /// Short layer name for one-line error messages.
    pub fn layer(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Resolve => "dns",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::HostTrust => "host-key",
            Self::Authentication => "transport-auth",
            Self::Tunnel => "tunnel",
            Self::Remote => "remote",
            Self::Unsupported => "unsupported",
            Self::Io => "io",
            Self::Protocol => "protocol",
        }
    }
}

/// A transport failure: which layer, what happened, and what the user can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: String,
    /// One actionable sentence, when there is one.
    pub fix: Option<String>,
}

impl TransportError {
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            fix: None,
        }
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(TransportErrorKind::Config, message)
    }

    /// This error as the `io::Error` a stream's read or write fails with, for a transport
    /// that only learns on the stream why it failed (a child process that exits before the
    /// gateway answered): the gateway client finds it again ([`TransportError::from_io`])
    /// and reports it as the transport's error, kind and fix included.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// The transport error a stream failed with through [`TransportError::into_io`].
    pub fn from_io(error: &std::io::Error) -> Option<&TransportError> {
        error.get_ref()?.downcast_ref()
    }
}
