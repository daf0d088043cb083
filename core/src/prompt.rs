//! How a transport asks the user something (host-key trust, a passphrase) without knowing who answers.
//!
//! Transports never touch the terminal. They describe the question; the app decides whether a
//! human is there to answer it (interactive TTY) or whether the answer is "no" (batch mode,
//! services, CI). This is the WezTerm pattern: ask through an interface, let the app decide.

use async_trait::async_trait;
use secrecy::SecretString;

/// A yes/no question, with the facts the user needs to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    /// One line: what is being asked ("Trust host key of gw.example.com:22?").
    pub question: String,
    /// Supporting facts shown before the question (fingerprints, file paths).
    pub details: Vec<String>,
}

/// Answers the questions a transport asks.
///
/// Contract: implementations must not block forever; a prompter that cannot reach a human
/// answers `false` / `None` at once. Both methods may be called from any tokio task.
#[async_trait]
pub trait Prompter: Send + Sync {
    /// Returns true only when the user explicitly agreed.
    async fn confirm(&self, question: &Confirmation) -> bool;

    /// Asks for a secret (passphrase, password). `None` means "no answer": the caller must fail
    /// with an error that says how to provide the secret non-interactively.
    async fn secret(&self, prompt: &str) -> Option<SecretString>;

    /// Whether a human can answer at all. Transports use this to choose between asking and
    /// failing fast with a message that names the non-interactive fix.
    fn is_interactive(&self) -> bool {
        false
    }
}

/// The batch-mode prompter (`ssh -o BatchMode=yes`): every question is answered "no".
#[derive(Debug, Default, Clone, Copy)]
pub struct NonInteractive;

#[async_trait]
impl Prompter for NonInteractive {
    async fn confirm(&self, _question: &Confirmation) -> bool {
        false
    }

    async fn secret(&self, _prompt: &str) -> Option<SecretString> {
        None
    }
}
