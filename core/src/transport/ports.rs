//! Optional transport capabilities for local forwards: reaching ports on the gateway host ([`GatewayPorts`]) and watching or resetting the session underneath ([`Supervision`]).
//!
//! A transport that offers [`GatewayPorts`] gets every local forward for free: the app's one
//! listener loop (`clawlink tunnel`, the forwards of `up`, `dashboard`'s own) accepts on
//! loopback and opens a fresh stream per connection through [`GatewayPorts::open`]. A
//! transport with a long-lived session under its streams (an SSH connection, a QUIC
//! connection, a child process) offers [`Supervision`] so that forwards serving other
//! programs are restored as soon as that session drops, not when the gateway client next
//! notices.

use async_trait::async_trait;

use super::{DuplexStream, TransportError};

/// Fresh byte streams to ports on the gateway host's loopback interface.
#[async_trait]
pub trait GatewayPorts: Send + Sync {
    /// The gateway's port on its host (the Control UI's widget sandbox is this + 1).
    fn gateway_port(&self) -> u16;

    /// The local port a forward of the gateway port should prefer (the profile's
    /// `local_port`, `--local-port`); the sandbox forward prefers the one after it.
    fn preferred_local_port(&self) -> u16 {
        self.gateway_port()
    }

    /// The gateway host as the user named it, for lines like "→ 127.0.0.1:18789 on HOST".
    fn host_label(&self) -> String;

    /// Opens a fresh stream to `127.0.0.1:port` on the gateway host. Offered at least for
    /// [`gateway_port`](Self::gateway_port), and for the port after it unless the settings
    /// cannot express it (an `exec` command without `%p`); other ports may be refused with
    /// [`TransportErrorKind::Unsupported`](super::TransportErrorKind::Unsupported), whose
    /// fix says how to reach them.
    /// Must not hand credentials to anything but the transport's own channel (no TCP port
    /// another local user could hold).
    async fn open(&self, port: u16) -> Result<Box<dyn DuplexStream>, TransportError>;
}

/// The long-lived session under a transport's streams: notice its loss, restore it, reset it.
#[async_trait]
pub trait Supervision: Send + Sync {
    /// Resolves once the underlying session is gone, or none is up, with why; how soon it
    /// notices is the transport's own pace (SSH: a check every two seconds of what its
    /// keepalives found). Cancel-safe: the caller drops the future to stop watching.
    async fn session_lost(&self) -> TransportError;

    /// Establishes the session again now. Errors say whether retrying can help
    /// ([`TransportErrorKind::is_retryable`](super::TransportErrorKind::is_retryable)).
    async fn restore(&self) -> Result<(), TransportError>;

    /// Retires the current session so that the next stream starts on a fresh one (the
    /// app's "Reset SSH tunnel", `clawlink reconnect`). Streams already open may end.
    async fn reset(&self);
}
