//! Capability "commands on the gateway host": run the openclaw CLI with a time limit, start a command with a terminal, and explain why a command could not run.
//!
//! A transport that reaches a shell on the gateway's machine (SSH today) offers this through
//! [`super::Transport::commands`]; `clawlink test`, `clawlink remote`, the doctor and
//! `dashboard`'s sign-in minting use it without knowing which transport runs the command. The
//! types carry bytes, sizes and statuses only: the local terminal (raw mode, SIGWINCH) is the
//! caller's business, the wire (SSH channel requests, a child `ssh`) the transport's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{RemoteOutput, TransportError};

/// The capability's name in refusals ("… needs commands on the gateway host, which …").
pub const CAPABILITY: &str = "commands on the gateway host";

/// The exit status shells use for "command not found"; a transport's CLI resolution exits
/// with it when the CLI, its project root or node is missing (see
/// [`HostCommands::explain_failure`]).
pub const NOT_FOUND: i32 = 127;

/// What to run on the gateway host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCommand {
    /// The openclaw CLI with these arguments, found the way the transport finds it
    /// (configured project root or CLI path, the usual install directories).
    OpenclawCli(Vec<String>),
    /// A program and its exact arguments (nothing is re-split or expanded).
    Argv(Vec<String>),
    /// One line of POSIX shell text (`ls | wc -l`).
    Shell(String),
}

impl HostCommand {
    /// What the words after `clawlink remote --` mean: `openclaw …` goes through the CLI
    /// resolution, a single word is shell text, several words are exact arguments (unlike
    /// `ssh`, which would re-split them). `None` for no words.
    pub fn from_words(words: &[String]) -> Option<Self> {
        match words {
            [] => None,
            [first, rest @ ..] if first == "openclaw" => Some(Self::OpenclawCli(rest.to_vec())),
            [single] => Some(Self::Shell(single.clone())),
            words => Some(Self::Argv(words.to_vec())),
        }
    }
}

/// The terminal the remote side should emulate (`TERM`) and its size in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// What a running command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEvent {
    /// Standard output (with a terminal: everything the terminal shows).
    Stdout(Vec<u8>),
    /// Standard error (never with a terminal, where it is part of the terminal's output).
    Stderr(Vec<u8>),
    /// The command ended; nothing follows.
    Exit(RemoteExit),
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteExit {
    /// It exited with this status.
    Code(u32),
    /// A signal killed it.
    Signal {
        /// `TERM`, `KILL`, … (without `SIG`).
        name: String,
        core_dumped: bool,
        /// The remote side's explanation, often empty.
        message: String,
    },
    /// The command ended without a status (some servers do that for killed commands).
    Unknown,
}

impl RemoteExit {
    /// The status a shell would report: the code itself (mod 256), 128 + the signal number for
    /// a signal, 255 when unknown (what `ssh` exits with for its own failures).
    pub fn shell_status(&self) -> u8 {
        match self {
            Self::Code(code) => (*code & 0xff) as u8,
            Self::Signal { name, .. } => signal_number(name).map_or(255, |n| 128 + n),
            Self::Unknown => 255,
        }
    }
}

/// Signals the caller may pass on to the remote command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteSignal {
    Interrupt,
    Terminate,
    Hangup,
}

/// Signal names as remote sides report them (RFC 4254 §6.10) and their POSIX numbers.
pub const SIGNALS: [(&str, u8); 13] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("ABRT", 6),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
];

/// The POSIX number of a signal name (without `SIG`).
pub fn signal_number(name: &str) -> Option<u8> {
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
}

/// Where the input, window changes and signals of a running command go. Shared (`Arc`), so
/// that one task can forward stdin (which may wait for flow control) while another reads the
/// output.
#[async_trait]
pub trait CommandInput: Send + Sync {
    /// Whether the caller should read its stdin and terminal events and pass them here
    /// (false when the transport reads the terminal itself, like a child `ssh -t`; then the
    /// caller must leave the terminal alone).
    fn forwards_input(&self) -> bool;

    /// Sends input bytes (waits while the remote side's window is full).
    async fn send(&self, data: &[u8]) -> Result<(), TransportError>;

    /// Tells the command its input ended.
    async fn eof(&self) -> Result<(), TransportError>;

    /// The local terminal was resized.
    async fn resize(&self, cols: u32, rows: u32) -> Result<(), TransportError>;

    /// Passes a signal on to the command.
    async fn signal(&self, signal: RemoteSignal) -> Result<(), TransportError>;

    /// Ends the command's session: with a terminal the remote side gets a hangup, as when a
    /// terminal closes.
    async fn close(&self);
}

/// A command running on the gateway host.
#[async_trait]
pub trait RunningCommand: Send {
    /// The handle for input, window changes and signals.
    fn input(&self) -> Arc<dyn CommandInput>;

    /// The next piece of output, or the exit; after the exit it keeps answering the same exit.
    async fn next(&mut self) -> Result<RemoteEvent, TransportError>;

    /// After the exit: the transport's explanation when the command could not run at all
    /// (for [`HostCommand::OpenclawCli`]: the CLI, its project root or node missing), with
    /// the fix. The transport kept its own diagnostic lines off the output.
    fn failure(&self) -> Option<TransportError> {
        None
    }
}

/// The capability: commands on the gateway host.
#[async_trait]
pub trait HostCommands: Send + Sync {
    /// The host the commands run on, for messages ("openclaw --version on gw: …").
    fn host(&self) -> String;

    /// Runs `openclaw ARGS` on the gateway host without a terminal and collects its output;
    /// fails (kind `Remote`) when it does not finish within `limit`.
    async fn run_cli(&self, args: &[&str], limit: Duration)
        -> Result<RemoteOutput, TransportError>;

    /// Starts `command`, with a terminal of that size when `pty` is given.
    async fn start(
        &self,
        command: &HostCommand,
        pty: Option<&PtyRequest>,
    ) -> Result<Box<dyn RunningCommand>, TransportError>;

    /// Why a [`HostCommands::run_cli`] run could not run the CLI at all (typically exit
    /// [`NOT_FOUND`]: the CLI not on PATH for non-interactive shells, the project root or
    /// node missing), as an error with the fix; `None` when the output is the CLI's own.
    fn explain_failure(&self, output: &RemoteOutput) -> Option<TransportError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_like_a_shells() {
        assert_eq!(RemoteExit::Code(0).shell_status(), 0);
        assert_eq!(RemoteExit::Code(7).shell_status(), 7);
        assert_eq!(RemoteExit::Code(256 + 3).shell_status(), 3);
        let killed = |name: &str| RemoteExit::Signal {
            name: name.into(),
            core_dumped: false,
            message: String::new(),
        };
        assert_eq!(killed("TERM").shell_status(), 143);
        assert_eq!(killed("INT").shell_status(), 130);
        assert_eq!(killed("WINCH").shell_status(), 255);
        assert_eq!(RemoteExit::Unknown.shell_status(), 255);
    }

    #[test]
    fn remote_words_keep_their_meaning() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(HostCommand::from_words(&[]), None);
        assert_eq!(
            HostCommand::from_words(&words(&["openclaw", "channels", "login"])),
            Some(HostCommand::OpenclawCli(words(&["channels", "login"])))
        );
        assert_eq!(
            HostCommand::from_words(&words(&["ls | wc -l"])),
            Some(HostCommand::Shell("ls | wc -l".into()))
        );
        assert_eq!(
            HostCommand::from_words(&words(&["sh", "-c", "exit 7"])),
            Some(HostCommand::Argv(words(&["sh", "-c", "exit 7"])))
        );
    }
}
