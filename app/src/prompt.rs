//! The app's answer to transport questions: a human on the terminal when there is one, files and batch "no" otherwise.
//!
//! Transports never read the terminal; they ask this. A passphrase comes from the file named
//! by `CLAWLINK_SSH_PASSPHRASE_FILE` (mode 0600) first, then from a no-echo prompt when both
//! stdin and stderr are terminals. Without a terminal every question is answered "no", which
//! is OpenSSH's `BatchMode=yes`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawlink_core::prompt::{Confirmation, Prompter};
use clawlink_core::text::terminal_safe;
use secrecy::SecretString;

use crate::failure::Failure;
use crate::state;

/// Time this process spent waiting for a human at a prompt, in ms.
static WAITED_MS: AtomicU64 = AtomicU64::new(0);

/// How long this process has waited for answers at prompts so far: timings of connections
/// ("connected in N ms") leave it out, since it is the user's time, not the network's.
pub fn time_waited() -> Duration {
    Duration::from_millis(WAITED_MS.load(Ordering::Relaxed))
}

/// Counts the time from its creation to its drop as time spent at a prompt.
struct Waiting(Instant);

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITED_MS.fetch_add(self.0.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

pub struct AppPrompter {
    interactive: bool,
    passphrase_file: Option<PathBuf>,
}

impl AppPrompter {
    /// Interactive when stdin and stderr are terminals.
    pub fn from_environment() -> Self {
        Self {
            interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
            passphrase_file: std::env::var_os("CLAWLINK_SSH_PASSPHRASE_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

#[async_trait]
impl Prompter for AppPrompter {
    async fn confirm(&self, question: &Confirmation) -> bool {
        if !self.interactive {
            return false;
        }
        let question = question.clone();
        let _waiting = Waiting(Instant::now());
        tokio::task::spawn_blocking(move || {
            let mut err = std::io::stderr().lock();
            // Details name what the SSH host presented: see clawlink_core::text.
            for line in &question.details {
                let _ = writeln!(err, "  {}", terminal_safe(line));
            }
            let _ = write!(err, "{} [y/N] ", terminal_safe(&question.question));
            let _ = err.flush();
            let mut answer = String::new();
            if std::io::stdin().lock().read_line(&mut answer).is_err() {
                return false;
            }
            matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
        })
        .await
        .unwrap_or(false)
    }

    async fn secret(&self, prompt: &str) -> Option<SecretString> {
        if let Some(file) = &self.passphrase_file {
            match state::read_secret_file(file, "the SSH passphrase file") {
                Ok(secret) => return Some(secret),
                Err(e) => {
                    tracing::error!("{e}");
                    return None;
                }
            }
        }
        if !self.interactive {
            return None;
        }
        let prompt = format!("{prompt}: ");
        let _waiting = Waiting(Instant::now());
        tokio::task::spawn_blocking(move || {
            rpassword::prompt_password(prompt)
                .ok()
                .map(SecretString::from)
        })
        .await
        .ok()
        .flatten()
    }

    fn is_interactive(&self) -> bool {
        self.interactive
    }
}

/// The trust commands' consent: `--yes`, else a "y" on the terminal. Without a terminal
/// and without `--yes` it refuses (exit 2) rather than guessing; a "no" is refused too.
/// `what` names the action for the messages ("trusting [host]:22", "pinning the key").
pub async fn consent(yes: bool, what: &str, question: String) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    let prompter = AppPrompter::from_environment();
    if !prompter.is_interactive() {
        return Err(Failure::config(
            format!("not {what} without confirmation (no terminal to ask on)"),
            Some("re-run with --yes once you have checked the fingerprint".into()),
        ));
    }
    if prompter
        .confirm(&Confirmation {
            question,
            details: vec![],
        })
        .await
    {
        Ok(())
    } else {
        Err(Failure::config(format!("declined: not {what}"), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_at_a_prompt_is_counted() {
        let before = time_waited();
        let two_seconds_ago = Instant::now()
            .checked_sub(Duration::from_secs(2))
            .expect("the clock runs longer than 2 s");
        drop(Waiting(two_seconds_ago));
        assert!(time_waited() - before >= Duration::from_secs(2));
    }
}
