//! What can go wrong with a chat message, each error saying what to do about it.

use std::path::PathBuf;
use std::time::Duration;

use clawlink_core::gateway::GatewayError;

/// A failure of the web chat library.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The outbox directory or one of its files could not be read or written.
    #[error("outbox {}: {source}", .path.display())]
    Outbox {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The gateway (or the way to it) failed in a way retrying does not fix here.
    #[error(transparent)]
    Gateway(Box<GatewayError>),

    /// The gateway refused the message for good (bad parameters, a reused key with other
    /// text, a missing scope): re-sending the same message cannot succeed.
    #[error("the gateway refused the message: {0}")]
    Rejected(Box<GatewayError>),

    /// An attachment cannot be sent (unreadable, or over the gateway's announced limits).
    #[error("{message}")]
    Attachment { message: String, fix: String },

    /// The connection did not come back, or the reply did not end, in time.
    #[error("{what} within {} s", whole_seconds(*.after))]
    Timeout { what: String, after: Duration },

    /// The run ended, but not with a reply the history can show.
    #[error("{0}")]
    NoReply(String),
}

/// A wait as the user gave it: `--timeout 3` ends a hair before 3 s have passed, and must
/// read "3 s", not "2 s".
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().round() as u64
}

// Boxed so that every `Result<_, ChatError>` stays small; `?` still converts.
impl From<GatewayError> for ChatError {
    fn from(error: GatewayError) -> Self {
        Self::Gateway(Box::new(error))
    }
}

impl ChatError {
    /// What the user can do about it, when we know.
    pub fn fix(&self) -> Option<String> {
        match self {
            Self::Outbox { .. } => Some(
                "check the permissions of clawlink's data directory (CLAWLINK_DATA_DIR); the \
                 outbox lives in its webchat/outbox folder"
                    .into(),
            ),
            Self::Gateway(e) | Self::Rejected(e) => e.fix(),
            Self::Attachment { fix, .. } => Some(fix.clone()),
            Self::Timeout { .. } => Some(
                "the message stays in the outbox when it was not delivered (`clawlink chat \
                 --outbox`); a running agent (`clawlink up`) or the next `clawlink chat` sends \
                 it; raise --timeout for slow replies"
                    .into(),
            ),
            Self::NoReply(_) => Some(
                "look at the conversation (`clawlink chat` paints the history) or at the \
                 gateway log (`clawlink logs`)"
                    .into(),
            ),
        }
    }

    pub(crate) fn outbox(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Outbox {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_names_the_wait_the_user_gave() {
        let error = ChatError::Timeout {
            what: "not connected to the gateway".into(),
            after: Duration::from_millis(2_996),
        };
        assert_eq!(error.to_string(), "not connected to the gateway within 3 s");
    }
}
