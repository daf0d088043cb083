//! Gateway client errors, each naming the layer that failed and, where one exists, the fix a user can act on.
//!
//! The layer decides two things: what the one-line error says ("auth: …") and whether the
//! client may reconnect by itself. Transport trouble and a gateway that is still starting are
//! retried; bad credentials, pairing and protocol mismatches never are (retrying would only
//! trip the gateway's rate limiter).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::protocol::ErrorShape;
use crate::transport::TransportError;

/// Which layer of the connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Config,
    Connect,
    Handshake,
    Auth,
    Pairing,
    Protocol,
    Rpc,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Connect => "connect",
            Self::Handshake => "handshake",
            Self::Auth => "auth",
            Self::Pairing => "pairing",
            Self::Protocol => "protocol",
            Self::Rpc => "rpc",
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of the gateway client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// The transport could not produce a stream.
    #[error("{}", .0.message)]
    Transport(TransportError),

    /// The WebSocket upgrade failed, or the socket closed before `hello-ok`.
    #[error("{message}")]
    Handshake { message: String, retryable: bool },

    /// The gateway refused our credentials or device proof.
    #[error("{message}")]
    Auth {
        /// `details.code`, e.g. `AUTH_TOKEN_MISMATCH`.
        code: String,
        message: String,
        fix: String,
    },

    /// The device (or its new scopes/metadata) awaits approval on the gateway.
    #[error("{message}")]
    Pairing {
        request_id: Option<String>,
        message: String,
        fix: String,
    },

    /// The gateway speaks another protocol version.
    #[error("{message}")]
    Protocol { message: String, fix: String },

    /// The gateway is starting, draining or busy; retry after the given delay.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },

    /// A request failed: the gateway answered with an error.
    #[error("{method}: {}", .error.message)]
    Rpc { method: String, error: ErrorShape },

    /// A request got no answer in time.
    #[error("{method}: no answer within {} ms", .after.as_millis())]
    Timeout { method: String, after: Duration },

    /// The connection dropped while a request was in flight. The request may or may not have
    /// been executed: re-send it with the same idempotency key.
    #[error("connection to the gateway was lost while waiting for {method}")]
    Disconnected { method: String },

    /// The client was shut down.
    #[error("the gateway client is shut down")]
    Closed,
}

impl GatewayError {
    /// The layer this error belongs to.
    pub fn layer(&self) -> Layer {
        match self {
            Self::Transport(e) if e.kind == crate::transport::TransportErrorKind::Config => {
                Layer::Config
            }
            Self::Transport(_) => Layer::Connect,
            Self::Handshake { .. } | Self::Unavailable { .. } => Layer::Handshake,
            Self::Auth { .. } => Layer::Auth,
            Self::Pairing { .. } => Layer::Pairing,
            Self::Protocol { .. } => Layer::Protocol,
            Self::Rpc { .. } | Self::Timeout { .. } | Self::Disconnected { .. } | Self::Closed => {
                Layer::Rpc
            }
        }
    }

    /// Whether the client may reconnect by itself after this error.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(e) => e.kind.is_retryable(),
            Self::Handshake { retryable, .. } => *retryable,
            Self::Unavailable { .. } | Self::Disconnected { .. } | Self::Timeout { .. } => true,
            Self::Auth { .. } | Self::Pairing { .. } | Self::Protocol { .. } | Self::Closed => {
                false
            }
            Self::Rpc { error, .. } => error.retryable,
        }
    }

    /// What the user can do, when we know.
    pub fn fix(&self) -> Option<String> {
        match self {
            Self::Transport(e) => e.fix.clone(),
            Self::Auth { fix, .. } | Self::Pairing { fix, .. } | Self::Protocol { fix, .. } => {
                Some(fix.clone())
            }
            Self::Handshake { .. } => Some(
                "check that the URL points at an OpenClaw gateway port and that the gateway is \
                 running (`openclaw gateway status` on the gateway host)"
                    .into(),
            ),
            Self::Unavailable { .. } => Some("the gateway is starting or busy; retry shortly".into()),
            Self::Rpc { error, .. } => rpc_fix(error),
            Self::Timeout { .. } => {
                Some("the gateway is slow or the connection stalled; retry, or raise client.request_timeout_ms".into())
            }
            Self::Disconnected { .. } => Some("retry; clawlink reconnects by itself".into()),
            Self::Closed => None,
        }
    }

    /// The gateway's `details.code` (or top-level code), when the gateway sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Auth { code, .. } => Some(code),
            Self::Rpc { error, .. } => Some(error.detail_code().unwrap_or(&error.code)),
            _ => None,
        }
    }

    /// The error as JSON for `--json` output: layer, message, code and fix.
    pub fn to_json(&self) -> Value {
        // A transport failure names its own layer (dns, tls, host-key, …), as the one-line
        // text does; `layer()` folds them into `connect` for the retry decision only.
        let layer = match self {
            Self::Transport(e) => e.kind.layer(),
            _ => self.layer().as_str(),
        };
        serde_json::json!({
            "layer": layer,
            "message": self.to_string(),
            "code": self.code(),
            "fix": self.fix(),
            "retryable": self.is_retryable(),
        })
    }
}

fn rpc_fix(error: &ErrorShape) -> Option<String> {
    if error.detail_code() == Some("MISSING_SCOPE") {
        let scope = error.detail_str("missingScope").unwrap_or("a scope");
        return Some(format!(
            "this device was not granted {scope}; approve the scope upgrade on the gateway host \
             (`openclaw devices list`, then `openclaw devices approve <requestId>`)"
        ));
    }
    if error.message.starts_with("unknown method") {
        return Some(
            "check the method name (`clawlink call` sends it verbatim); the gateway lists what it \
             offers in hello-ok's features.methods"
                .into(),
        );
    }
    if error.message.contains("params") {
        return Some(
            "check the parameters: the gateway refuses unknown keys and wrong types".into(),
        );
    }
    None
}

/// Turns a failed `connect` response into the error a user can act on.
pub fn classify_connect_error(error: ErrorShape) -> GatewayError {
    let detail = error.detail_code().unwrap_or_default().to_owned();
    let message = error.message.clone();
    if detail == "PROTOCOL_MISMATCH" {
        let expected = error
            .details
            .get("expectedProtocol")
            .and_then(Value::as_u64)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "another version".into());
        return GatewayError::Protocol {
            message: format!("{message} (gateway speaks protocol {expected}, clawlink speaks 4)"),
            fix: "update clawlink or the gateway so both speak the same protocol version".into(),
        };
    }
    if detail == "PAIRING_REQUIRED"
        || (error.code == "NOT_PAIRED" && detail != "DEVICE_IDENTITY_REQUIRED")
    {
        let request_id = error.detail_str("requestId").map(str::to_owned);
        let approve = match &request_id {
            Some(id) => format!("openclaw devices approve {id}"),
            None => "openclaw devices list, then openclaw devices approve <requestId>".into(),
        };
        let hint = error
            .detail_str("remediationHint")
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        return GatewayError::Pairing {
            request_id,
            message,
            fix: format!("approve this device on the gateway host: `{approve}`, then retry{hint}"),
        };
    }
    if error.code == "UNAVAILABLE" || error.retryable {
        return GatewayError::Unavailable {
            message,
            retry_after: error.retry_after_ms.map(Duration::from_millis),
        };
    }
    if detail.starts_with("AUTH_")
        || detail.starts_with("DEVICE_")
        || message.starts_with("unauthorized")
    {
        let mut fix = auth_fix(&detail, &error);
        if let Some(step) = error
            .detail_str("recommendedNextStep")
            .and_then(next_step_words)
        {
            fix.push_str(&format!(" (the gateway recommends: {step})"));
        }
        return GatewayError::Auth {
            code: if detail.is_empty() {
                error.code.clone()
            } else {
                detail
            },
            message,
            fix,
        };
    }
    GatewayError::Handshake {
        message: format!("the gateway refused the connection: {message}"),
        retryable: false,
    }
}

/// Corrects the fix of an auth refusal when clawlink sent the other kind of secret than the
/// gateway uses: a token sent to a password gateway is not a password "in the file named by
/// auth.password_file", which the user may never have set.
pub fn explain_secret_kind(
    error: GatewayError,
    sent_token: bool,
    sent_password: bool,
) -> GatewayError {
    let GatewayError::Auth { code, message, fix } = error else {
        return error;
    };
    let fix = match code.as_str() {
        "AUTH_PASSWORD_MISMATCH" | "AUTH_PASSWORD_MISSING" if sent_token && !sent_password => {
            "this gateway uses a password (gateway.auth.password), but clawlink sent a token: give it \
             the password instead (--password-file FILE, auth.password_file in the profile, \
             CLAWLINK_PASSWORD, or `clawlink auth set --password`) and drop the token"
                .to_owned()
        }
        "AUTH_TOKEN_MISMATCH" | "AUTH_TOKEN_MISSING" if sent_password && !sent_token => {
            "this gateway uses a token (gateway.auth.token), but clawlink sent a password: give it \
             the token instead (--token-file FILE, auth.token_file in the profile, CLAWLINK_TOKEN, \
             or `clawlink auth set`) and drop the password"
                .to_owned()
        }
        _ => fix,
    };
    GatewayError::Auth { code, message, fix }
}

/// The gateway's `details.recommendedNextStep`, in words.
fn next_step_words(step: &str) -> Option<&'static str> {
    Some(match step {
        "retry_with_device_token" => "retry with this device's token",
        "update_auth_configuration" => "update the gateway's auth configuration",
        "update_auth_credentials" => "update the credentials clawlink sends",
        "wait_then_retry" => "wait, then retry",
        "review_auth_configuration" => "review the gateway's auth configuration",
        _ => return None,
    })
}

fn auth_fix(detail: &str, error: &ErrorShape) -> String {
    match detail {
        "AUTH_TOKEN_MISMATCH" => "the token is not this gateway's gateway.auth.token: put the right one in the \
             profile's auth.token_file (or --token-file / CLAWLINK_TOKEN); on the gateway host \
             `openclaw config get gateway.auth.token` shows it"
            .into(),
        "AUTH_TOKEN_MISSING" => "the gateway requires a token: set auth.token_file in the profile, pass \
             --token-file FILE, or set CLAWLINK_TOKEN"
            .into(),
        "AUTH_TOKEN_NOT_CONFIGURED" => "the gateway has no token configured: use its password (auth.password_file) \
             or set gateway.auth.token on the gateway host"
            .into(),
        "AUTH_PASSWORD_MISMATCH" => "the password is not this gateway's gateway.auth.password: fix the file named \
             by auth.password_file (or --password-file / CLAWLINK_PASSWORD)"
            .into(),
        "AUTH_PASSWORD_MISSING" => "the gateway requires a password: set auth.password_file in the profile, pass \
             --password-file FILE, or set CLAWLINK_PASSWORD"
            .into(),
        "AUTH_PASSWORD_NOT_CONFIGURED" => "the gateway has no password configured: use its token (auth.token_file)".into(),
        "AUTH_RATE_LIMITED" => match error.retry_after_ms {
            Some(ms) => format!("too many failed attempts; wait {} s before retrying", ms.div_ceil(1000)),
            None => "too many failed attempts; wait before retrying".into(),
        },
        "AUTH_DEVICE_TOKEN_MISMATCH" => "this device's stored token was revoked or rotated; clawlink forgot it — \
             connect once with the shared token (auth.token_file) to get a new one"
            .into(),
        "AUTH_SCOPE_MISMATCH" => "this device's token does not grant the requested scopes; connect with the \
             shared token so the gateway can approve the upgrade"
            .into(),
        "DEVICE_IDENTITY_REQUIRED" => "the gateway requires credentials: set auth.token_file or auth.password_file".into(),
        d if d.starts_with("DEVICE_AUTH_SIGNATURE_EXPIRED") => {
            "this machine's clock differs from the gateway's by more than 2 minutes: fix the clock (NTP)".into()
        }
        d if d.starts_with("DEVICE_AUTH") => format!(
            "the gateway refused clawlink's device proof ({d}); this is a clawlink bug — please report it with `-vv` output"
        ),
        _ => error
            .detail_str("recommendedNextStep")
            .map(|s| format!("the gateway recommends: {s}"))
            .unwrap_or_else(|| "check the gateway's auth settings (gateway.auth) and the profile's auth section".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(json: Value) -> ErrorShape {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn wrong_token_is_an_auth_error_that_is_not_retried() {
        let err = classify_connect_error(shape(serde_json::json!({
            "code": "INVALID_REQUEST",
            "message": "unauthorized: gateway token mismatch (use this gateway's gateway.auth.token or pair the device)",
            "details": {"code": "AUTH_TOKEN_MISMATCH", "canRetryWithDeviceToken": true}
        })));
        assert_eq!(err.layer(), Layer::Auth);
        assert!(!err.is_retryable());
        assert_eq!(err.code(), Some("AUTH_TOKEN_MISMATCH"));
        assert!(err.fix().unwrap().contains("token_file"));
    }

    #[test]
    fn pairing_required_names_the_approve_command() {
        let err = classify_connect_error(shape(serde_json::json!({
            "code": "NOT_PAIRED",
            "message": "pairing required: device identity changed and must be re-approved",
            "details": {"code": "PAIRING_REQUIRED", "reason": "metadata-upgrade", "requestId": "r-42"}
        })));
        assert_eq!(err.layer(), Layer::Pairing);
        assert!(!err.is_retryable());
        assert!(err.fix().unwrap().contains("openclaw devices approve r-42"));
    }

    #[test]
    fn protocol_mismatch_names_both_versions() {
        let err = classify_connect_error(shape(serde_json::json!({
            "code": "INVALID_REQUEST", "message": "protocol mismatch",
            "details": {"code": "PROTOCOL_MISMATCH", "expectedProtocol": 5}
        })));
        assert_eq!(err.layer(), Layer::Protocol);
        assert!(err.to_string().contains("protocol 5"));
        assert!(!err.is_retryable());
    }

    #[test]
    fn startup_is_retryable_with_the_gateways_delay() {
        let err = classify_connect_error(shape(serde_json::json!({
            "code": "UNAVAILABLE", "message": "gateway starting; retry shortly",
            "retryable": true, "retryAfterMs": 500, "details": {"reason": "startup-sidecars"}
        })));
        assert!(err.is_retryable());
        assert_eq!(
            err,
            GatewayError::Unavailable {
                message: "gateway starting; retry shortly".into(),
                retry_after: Some(Duration::from_millis(500))
            }
        );
    }

    #[test]
    fn missing_scope_explains_the_upgrade() {
        let err = GatewayError::Rpc {
            method: "status".into(),
            error: shape(serde_json::json!({
                "code": "FORBIDDEN", "message": "missing scope: operator.read",
                "details": {"code": "MISSING_SCOPE", "missingScope": "operator.read"}
            })),
        };
        assert_eq!(err.code(), Some("MISSING_SCOPE"));
        assert!(err.fix().unwrap().contains("operator.read"));
        assert_eq!(err.to_json()["layer"], "rpc");
    }

    /// The JSON names the same layer as the one-line text (`dns: cannot resolve …`).
    #[test]
    fn a_transport_failure_keeps_its_own_layer_in_json() {
        use crate::transport::TransportErrorKind;
        for (kind, layer) in [
            (TransportErrorKind::Resolve, "dns"),
            (TransportErrorKind::Tls, "tls"),
            (TransportErrorKind::HostTrust, "host-key"),
            (TransportErrorKind::Connect, "connect"),
            (TransportErrorKind::Config, "config"),
        ] {
            let err = GatewayError::Transport(TransportError::new(kind, "x"));
            assert_eq!(err.to_json()["layer"], layer, "{kind:?}");
            assert_eq!(err.to_json()["layer"], kind.layer());
        }
    }

    #[test]
    fn a_token_sent_to_a_password_gateway_is_told_so() {
        let refusal = || {
            classify_connect_error(shape(serde_json::json!({
                "code": "INVALID_REQUEST",
                "message": "unauthorized: gateway password mismatch",
                "details": {"code": "AUTH_PASSWORD_MISMATCH"}
            })))
        };
        let fix = explain_secret_kind(refusal(), true, false).fix().unwrap();
        assert!(fix.contains("sent a token"), "{fix}");
        assert!(!fix.contains("fix the file named by"), "{fix}");
        // A wrong password keeps the password advice.
        let fix = explain_secret_kind(refusal(), false, true).fix().unwrap();
        assert!(fix.contains("auth.password_file"), "{fix}");
        assert!(!fix.contains("sent a token"), "{fix}");
    }
}
