//! User-facing failures: one line naming the failing layer and what to do, plus the exit code.
//!
//! Exit codes: 0 ok, 1 failure (the gateway, the network, the remote side), 2 usage or
//! configuration error (something the user must change before retrying makes sense).

use clawlink_core::gateway::{GatewayError, Layer};
use clawlink_core::text::terminal_safe_lines;
use clawlink_core::transport::{TransportError, TransportErrorKind};

/// An error the app reports to the user and exits with.
#[derive(Debug)]
pub struct Failure {
    /// The layer that failed: config, connect, handshake, auth, pairing, protocol, rpc, …
    pub layer: String,
    pub message: String,
    pub fix: Option<String>,
    pub exit_code: u8,
    /// The structured error for `--json` output.
    pub json: serde_json::Value,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.layer, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// A configuration or usage error (exit 2).
    pub fn config(message: impl Into<String>, fix: Option<String>) -> Self {
        let message = message.into();
        Self {
            json: serde_json::json!({"layer": "config", "message": message, "fix": fix}),
            layer: "config".into(),
            message,
            fix,
            exit_code: 2,
        }
    }
}

impl Failure {
    /// A failure of the running agent or of talking to it (exit 1).
    pub fn agent(message: impl Into<String>, fix: Option<String>) -> Self {
        let message = message.into();
        Self {
            json: serde_json::json!({"layer": "agent", "message": message, "fix": fix}),
            layer: "agent".into(),
            message,
            fix,
            exit_code: 1,
        }
    }

    /// The command already told the user everything (its report shows what is wrong); only
    /// the exit code remains to be given.
    pub fn reported(exit_code: u8) -> Self {
        Self {
            layer: String::new(),
            message: String::new(),
            fix: None,
            exit_code,
            json: serde_json::Value::Null,
        }
    }
}

impl From<GatewayError> for Failure {
    fn from(error: GatewayError) -> Self {
        let layer = error.layer();
        let (layer_name, exit_code) = match (&error, layer) {
            (GatewayError::Transport(t), _) => (t.kind.layer().to_owned(), transport_exit(t.kind)),
            (_, Layer::Config) => ("config".to_owned(), 2),
            (_, layer) => (layer.as_str().to_owned(), 1),
        };
        Self {
            json: error.to_json(),
            layer: layer_name,
            message: error.to_string(),
            fix: error.fix(),
            exit_code,
        }
    }
}

impl From<TransportError> for Failure {
    fn from(error: TransportError) -> Self {
        Failure::from(GatewayError::Transport(error))
    }
}

fn transport_exit(kind: TransportErrorKind) -> u8 {
    match kind {
        TransportErrorKind::Config | TransportErrorKind::Unsupported => 2,
        _ => 1,
    }
}

/// Prints a failure as the JSON object `--json` output ends with on error.
pub fn print_json_error(failure: &Failure) {
    println!(
        "{}",
        serde_json::json!({"ok": false, "error": failure.json})
    );
}

/// Prints `error` for the user and returns the exit code.
pub fn report(error: &anyhow::Error, json: bool) -> u8 {
    match error.downcast_ref::<Failure>() {
        Some(failure) => {
            // A Null `json` means the command already printed its own JSON report.
            if json && !failure.json.is_null() {
                print_json_error(failure);
            }
            if !failure.message.is_empty() {
                // Messages quote the gateway's and the SSH host's words: see clawlink_core::text.
                eprintln!("clawlink: {}", terminal_safe_lines(&failure.to_string()));
            }
            failure.exit_code
        }
        None => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": {"layer": "internal", "message": format!("{error:#}")}})
                );
            }
            eprintln!("clawlink: {}", terminal_safe_lines(&format!("{error:#}")));
            1
        }
    }
}
