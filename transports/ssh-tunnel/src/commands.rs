//! The ssh-tunnel transport's `HostCommands`: the openclaw CLI and commands with a terminal over SSH, and what an exit 127 of the CLI resolution script means.
//!
//! Every command goes out as one `/bin/sh -c '…'` (see [`crate::exec`]); `openclaw …` goes
//! through the resolution script, whose marker lines on stderr tell a missing CLI, project
//! root or node apart. Both backends (russh, the system ssh) share this.

use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::transport::commands::{
    HostCommand, HostCommands, PtyRequest, RunningCommand, NOT_FOUND,
};
use clawlink_core::transport::{RemoteOutput, TransportError, TransportErrorKind};

use crate::exec::{self, CliLocation};
use crate::{SshSettings, SshTunnel};

#[async_trait]
impl HostCommands for SshTunnel {
    fn host(&self) -> String {
        self.target().host.clone()
    }

    async fn run_cli(
        &self,
        args: &[&str],
        limit: Duration,
    ) -> Result<RemoteOutput, TransportError> {
        SshTunnel::run_cli(self, args, limit).await
    }

    async fn start(
        &self,
        command: &HostCommand,
        pty: Option<&PtyRequest>,
    ) -> Result<Box<dyn RunningCommand>, TransportError> {
        let line = command_line(command, self.settings());
        let running = self.start_command(&line, pty).await?;
        Ok(match command {
            HostCommand::OpenclawCli(_) => Box::new(running.watch_for_markers()),
            _ => Box::new(running),
        })
    }

    fn explain_failure(&self, output: &RemoteOutput) -> Option<TransportError> {
        (output.exit_code == Some(NOT_FOUND)).then(|| {
            explain_not_found(
                &String::from_utf8_lossy(&output.stderr),
                &self.target().host,
            )
        })
    }
}

/// The one remote command line for `command`: `/bin/sh -c '…'` whatever the login shell is;
/// the openclaw CLI through the resolution script with the profile's project root and CLI path.
pub fn command_line(command: &HostCommand, settings: &SshSettings) -> String {
    match command {
        HostCommand::OpenclawCli(args) => {
            let location = CliLocation {
                project_root: settings.project_root.clone(),
                cli_path: settings.cli_path.clone(),
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            exec::sh_command(&exec::cli_script(&location, &args))
        }
        HostCommand::Shell(text) => exec::sh_command(text),
        HostCommand::Argv(words) => exec::sh_command(
            &words
                .iter()
                .map(|w| exec::shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// What an exit 127 of the CLI resolution script means, from the marker line it printed on
/// stderr (project root missing, node missing, or the CLI itself), and how to fix it.
pub fn explain_not_found(stderr: &str, host: &str) -> TransportError {
    let line = |marker: &str| {
        stderr
            .lines()
            .find(|l| l.contains(marker))
            .map(|l| l.replace(&format!("{marker}: "), ""))
    };
    let (detail, fix) = if let Some(detail) = line(exec::MARK_NO_PROJECT) {
        (
            detail,
            "fix project_root (--project-root) to the directory of the openclaw checkout on the host".to_owned(),
        )
    } else if let Some(detail) = line(exec::MARK_NO_NODE) {
        (
            detail,
            "install Node.js ≥ 24 on the host so that non-interactive shells find it (e.g. in /usr/local/bin)".to_owned(),
        )
    } else {
        (
            line(exec::MARK_NO_CLI).unwrap_or_else(|| stderr.trim().to_owned()),
            format!(
                "on {host}, link it into a standard directory: `sudo ln -s \"$(command -v openclaw)\" /usr/local/bin/openclaw` \
                 (run in an interactive shell there); or set cli_path (--cli-path) to its full path; or add its directory to \
                 PATH in ~/.profile / ~/.zshenv, which non-interactive shells read"
            ),
        )
    };
    TransportError::new(
        TransportErrorKind::Remote,
        format!("exit {NOT_FOUND}: {detail} on {host}"),
    )
    .with_fix(fix)
}

/// Watches the start of one output stream for the resolution script's marker line
/// (`clawlink:no-cli: …`), which the script prints before anything else; keeps it off the
/// screen and remembers it. Everything else passes through untouched.
#[derive(Debug, Default)]
pub(crate) struct MarkerSniffer {
    held: Vec<u8>,
    passing: bool,
    pub(crate) found: Option<String>,
}

/// What every marker line starts with.
const MARKER_PREFIX: &[u8] = b"clawlink:no-";

impl MarkerSniffer {
    /// The bytes of `chunk` that can be shown now.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.passing {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
        // Bounded: every round drains one line from `held` or returns.
        loop {
            let common = self.held.len().min(MARKER_PREFIX.len());
            if self.held[..common] != MARKER_PREFIX[..common] {
                self.passing = true;
                return std::mem::take(&mut self.held);
            }
            if self.held.len() < MARKER_PREFIX.len() {
                return Vec::new();
            }
            let Some(end) = self.held.iter().position(|&b| b == b'\n') else {
                return Vec::new();
            };
            let line: Vec<u8> = self.held.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_owned();
            self.found.get_or_insert(line);
            if self.held.is_empty() {
                return Vec::new();
            }
        }
    }

    /// What is still held back when the stream ends (a partial line that was no marker).
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        self.passing = true;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_line_is_kept_off_the_screen_and_remembered() {
        let mut sniffer = MarkerSniffer::default();
        // Arriving in pieces, with a PTY's CRLF.
        assert!(sniffer.feed(b"claw").is_empty());
        assert!(sniffer
            .feed(b"link:no-cli: the openclaw CLI is not on PATH")
            .is_empty());
        assert!(sniffer.feed(b" for non-interactive shells\r\n").is_empty());
        assert_eq!(
            sniffer.found.as_deref(),
            Some("clawlink:no-cli: the openclaw CLI is not on PATH for non-interactive shells")
        );
        let error = explain_not_found(sniffer.found.as_deref().unwrap(), "gw");
        assert_eq!(error.kind, TransportErrorKind::Remote);
        assert_eq!(
            error.message,
            "exit 127: the openclaw CLI is not on PATH for non-interactive shells on gw"
        );
        assert!(error.fix.unwrap().contains("cli_path"));

        let error = explain_not_found(
            "clawlink:no-project-root: project root not found: /srv/oc",
            "gw",
        );
        assert!(error.message.contains("/srv/oc") && error.fix.unwrap().contains("--project-root"));
        let error = explain_not_found("clawlink:no-node: node is not installed", "gw");
        assert!(error.fix.unwrap().contains("Node.js"));
    }

    #[test]
    fn other_output_passes_untouched_even_when_it_starts_alike() {
        let mut sniffer = MarkerSniffer::default();
        assert!(sniffer.feed(b"cla").is_empty());
        assert_eq!(sniffer.feed(b"ws out\n"), b"claws out\n");
        assert_eq!(
            sniffer.feed(b"clawlink:no-cli: later\n"),
            b"clawlink:no-cli: later\n"
        );
        assert_eq!(sniffer.found, None);

        let mut sniffer = MarkerSniffer::default();
        assert!(sniffer.feed(b"c").is_empty());
        assert_eq!(sniffer.finish(), b"c");
    }

    #[test]
    fn commands_keep_their_words_and_openclaw_goes_through_the_resolution_script() {
        let settings: SshSettings = serde_json::from_value(
            serde_json::json!({"target": "claw@gw", "cli_path": "/opt/oc/openclaw.mjs"}),
        )
        .unwrap();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(
                &HostCommand::Argv(words(&["sh", "-c", "exit 7"])),
                &settings
            ),
            exec::sh_command("sh -c 'exit 7'")
        );
        assert_eq!(
            command_line(&HostCommand::Shell("ls | wc -l".into()), &settings),
            exec::sh_command("ls | wc -l")
        );
        assert_eq!(
            command_line(
                &HostCommand::OpenclawCli(words(&["channels", "login", "--verbose"])),
                &settings
            ),
            exec::sh_command(&exec::cli_script(
                &CliLocation {
                    project_root: None,
                    cli_path: Some("/opt/oc/openclaw.mjs".into())
                },
                &["channels", "login", "--verbose"]
            ))
        );
    }
}
