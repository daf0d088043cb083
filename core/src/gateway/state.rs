//! The connection state machine the client publishes on a watch channel.
//!
//! Connecting → Authenticating → Connected. A lost (or silent) connection is Degraded — we had
//! it and are restoring it; the reason carries the retry progress — until it is Connected
//! again. Reconnecting is the wait between attempts before any connection succeeded. Failed
//! is terminal until the user acts (bad credentials, pairing, protocol); Closed is a clean stop.
//! Every new `hello-ok` bumps the generation, so work tied to an older connection can tell it
//! is stale.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::error::GatewayError;
use super::protocol::HelloOk;

/// Where the connection is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "phase")]
pub enum Phase {
    /// Opening the transport and the WebSocket.
    Connecting { attempt: u32 },
    /// Challenge received, `connect` sent, waiting for `hello-ok`.
    Authenticating,
    /// `hello-ok` received; requests flow.
    Connected,
    /// The connection is lost or silent; the client is restoring it.
    Degraded { reason: String },
    /// Waiting before the next attempt.
    Reconnecting {
        attempt: u32,
        #[serde(with = "millis")]
        retry_in: Duration,
    },
    /// Stopped on an error that retrying cannot fix.
    Failed,
    /// Shut down on request.
    Closed,
}

mod millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// A snapshot of the connection, as published on [`super::GatewayClient::state`].
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionState {
    #[serde(flatten)]
    pub phase: Phase,
    /// Incremented on every successful `hello-ok`.
    pub generation: u64,
    /// The hello of the current (or last) connection.
    #[serde(skip)]
    pub hello: Option<Arc<HelloOk>>,
    /// Why the last attempt or connection failed.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "error_json")]
    pub last_error: Option<GatewayError>,
    /// When this phase began.
    #[serde(skip)]
    pub since: SystemTime,
    /// The last time a lost connection came back: why it was lost and how long it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_recovery: Option<Recovery>,
}

/// How a lost connection was restored, for `status --json` and the status line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// Why it was lost ("dead path: …", "the gateway closed the connection: …").
    pub cause: String,
    /// For a silent path: how long it had been silent when declared dead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_after_ms: Option<u64>,
    /// From the loss being noticed to `hello-ok` again.
    pub healthy_after_ms: u64,
    /// Connection attempts it took.
    pub attempts: u32,
    /// When it came back.
    #[serde(skip)]
    pub at: SystemTime,
}

fn error_json<S: serde::Serializer>(e: &Option<GatewayError>, s: S) -> Result<S::Ok, S::Error> {
    e.as_ref().map(GatewayError::to_json).serialize(s)
}

impl ConnectionState {
    pub(crate) fn initial() -> Self {
        Self {
            phase: Phase::Connecting { attempt: 0 },
            generation: 0,
            hello: None,
            last_error: None,
            since: SystemTime::now(),
            last_recovery: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// A short label for status lines ("connected", "reconnecting in 4s", …).
    pub fn label(&self) -> String {
        match &self.phase {
            Phase::Connecting { attempt: 0 } => "connecting".into(),
            Phase::Connecting { attempt } => format!("connecting (attempt {})", attempt + 1),
            Phase::Authenticating => "authenticating".into(),
            Phase::Connected => "connected".into(),
            Phase::Degraded { reason } => format!("degraded: {reason}"),
            Phase::Reconnecting { retry_in, .. } => {
                format!("reconnecting in {:.1}s", retry_in.as_secs_f64())
            }
            Phase::Failed => match &self.last_error {
                Some(e) => format!("failed: {e}"),
                None => "failed".into(),
            },
            Phase::Closed => "closed".into(),
        }
    }
}
