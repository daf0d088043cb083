//! The error a plugin returns: one of the ABI's result codes and a one-line message clawlink prints.

use crate::abi::{CLAWLINK_ERR_AUTH, CLAWLINK_ERR_CONFIG, CLAWLINK_ERR_CONNECT};

/// What kind of failure a plugin reports; it decides whether clawlink retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The settings are wrong (missing key, bad value): retrying will not help.
    Config,
    /// The gateway or a hop on the way could not be reached: clawlink retries with backoff.
    Connect,
    /// A hop refused our credentials: retrying will not help.
    Auth,
}

impl ErrorCode {
    /// The ABI value (`CLAWLINK_ERR_*`) of this code.
    pub const fn as_raw(self) -> i32 {
        match self {
            ErrorCode::Config => CLAWLINK_ERR_CONFIG,
            ErrorCode::Connect => CLAWLINK_ERR_CONNECT,
            ErrorCode::Auth => CLAWLINK_ERR_AUTH,
        }
    }

    /// The code for an ABI value, reading anything unknown as `Connect` as the header says.
    pub const fn from_raw(raw: i32) -> ErrorCode {
        match raw {
            CLAWLINK_ERR_CONFIG => ErrorCode::Config,
            CLAWLINK_ERR_AUTH => ErrorCode::Auth,
            _ => ErrorCode::Connect,
        }
    }
}

/// A failure as the host sees it: a code and a one-line message naming the cause and the fix.
///
/// The message is printed by clawlink: it must never contain a secret (a password, a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    /// Whether retrying can help (see [`ErrorCode`]).
    pub code: ErrorCode,
    /// One line of UTF-8 for a human; the SDK folds line breaks into spaces.
    pub message: String,
}

impl PluginError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> PluginError {
        PluginError {
            code,
            message: message.into(),
        }
    }

    /// Wrong settings: `CLAWLINK_ERR_CONFIG`.
    pub fn config(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorCode::Config, message)
    }

    /// Unreachable gateway or hop: `CLAWLINK_ERR_CONNECT`.
    pub fn connect(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorCode::Connect, message)
    }

    /// Credentials refused: `CLAWLINK_ERR_AUTH`.
    pub fn auth(message: impl Into<String>) -> PluginError {
        PluginError::new(ErrorCode::Auth, message)
    }
}
