//! The command's stdin and stdout as one duplex byte stream for the gateway client, which turns a command that dies or stays silent before answering into the transport error that says why.
//!
//! `connect` cannot know whether the command reached the gateway: nothing comes back
//! before the client sends its upgrade request. So the stream watches the first bytes. An
//! end of output (or a broken pipe) before any byte came is the command's failure: the
//! stream waits briefly for its exit status and last stderr lines and fails the read with
//! a [`TransportError`] inside the `io::Error` ([`TransportError::into_io`]), which the
//! client reports as the transport's error. Silence past `connect_timeout_ms` fails the same
//! way. After the first byte, an end is an ordinary end of stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use clawlink_core::text::terminal_safe;
use clawlink_core::transport::{TransportError, TransportErrorKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::watch;
use tokio_util::sync::DropGuard;

use crate::child::{Running, StderrTail};

/// How long a command that closed its output gets to exit, for its status in the error.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// How long its stderr gets to close after that, for its last words.
const STDERR_WAIT: Duration = Duration::from_millis(500);

/// What an error about the command says about it.
#[derive(Debug, Clone)]
pub struct Report {
    /// The command as the user wrote it (for messages).
    pub command: String,
    /// The gateway address the command is meant to reach.
    pub gateway: String,
    pub connect_timeout: Duration,
}

type Failing = Pin<Box<dyn Future<Output = TransportError> + Send>>;

/// The command's stdin (writes) and stdout (reads). Dropping it kills the command's group.
pub struct ChildStream {
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Whether a byte came from the command yet.
    answered: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
    exited: watch::Receiver<Option<ExitStatus>>,
    stderr: Arc<StderrTail>,
    report: Arc<Report>,
    failing: Option<Failing>,
    failed: Option<TransportError>,
    _stop: DropGuard,
}

impl ChildStream {
    pub fn new(running: Running, report: Arc<Report>) -> (Self, super::Tracked) {
        let tracked = super::Tracked {
            stop: running.stop.clone(),
            supervisor: running.supervisor,
        };
        let stream = Self {
            stdin: running.stdin,
            stdout: running.stdout,
            answered: false,
            deadline: Box::pin(tokio::time::sleep(report.connect_timeout)),
            exited: running.exited,
            stderr: running.stderr,
            report,
            failing: None,
            failed: None,
            _stop: running.stop.drop_guard(),
        };
        (stream, tracked)
    }

    /// Starts building the error for a command that ended before answering.
    fn fail_ended(&mut self) {
        if self.failing.is_some() || self.failed.is_some() {
            return;
        }
        let mut exited = self.exited.clone();
        let stderr = self.stderr.clone();
        let report = self.report.clone();
        self.failing = Some(Box::pin(async move {
            let status = tokio::time::timeout(EXIT_WAIT, exited.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|s| *s));
            stderr.settle(STDERR_WAIT).await;
            ended_error(&report, status, &stderr.lines())
        }));
    }

    /// The error the stream fails with, once known; `Pending` while it is being built;
    /// `None` while nothing failed.
    fn poll_failure(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Error>> {
        if let Some(failing) = self.failing.as_mut() {
            match failing.as_mut().poll(cx) {
                Poll::Ready(error) => {
                    self.failing = None;
                    self.failed = Some(error);
                }
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        self.failed
            .as_ref()
            .map(|error| Poll::Ready(error.clone().into_io()))
    }
}

/// The error for a command that closed its output (or its input) before the gateway's
/// first byte: its exit status when it has one, and its last stderr lines.
pub fn ended_error(
    report: &Report,
    status: Option<ExitStatus>,
    stderr: &[String],
) -> TransportError {
    let how = match status {
        Some(status) => format!("exited ({status})"),
        None => "closed its output".to_owned(),
    };
    let said = stderr_summary(stderr);
    // A shell's "command not found" / "not executable": the configuration, not the network.
    let code = status.and_then(|s| s.code());
    let kind = if matches!(code, Some(126 | 127)) {
        TransportErrorKind::Config
    } else {
        classify(stderr)
    };
    TransportError::new(
        kind,
        format!(
            "the exec transport's command `{}` {how} before the gateway answered{said}",
            report.command
        ),
    )
    .with_fix(format!(
        "run the command by hand to see why it cannot reach the gateway ({}): it must connect its stdin and stdout to that port",
        report.gateway
    ))
}

/// The error for a command that said nothing within `connect_timeout_ms`.
fn silent_error(report: &Report, stderr: &[String]) -> TransportError {
    TransportError::new(
        TransportErrorKind::Connect,
        format!(
            "the exec transport's command `{}` did not bring an answer from the gateway within {} ms{}",
            report.command,
            report.connect_timeout.as_millis(),
            stderr_summary(stderr)
        ),
    )
    .with_fix(format!(
        "check that the command reaches {} (run it by hand), or raise connect_timeout_ms",
        report.gateway
    ))
}

/// `; its stderr: …` with the kept lines, filtered for the terminal; nothing when it said
/// nothing.
fn stderr_summary(lines: &[String]) -> String {
    if lines.is_empty() {
        return "; it printed nothing on stderr".to_owned();
    }
    let joined: Vec<String> = lines
        .iter()
        .map(|line| terminal_safe(line).into_owned())
        .collect();
    format!("; its stderr: {}", joined.join(" / "))
}

/// The layer a failed command's last words point at, so that the agent does not retry
/// what only the user can fix. Common wording of ssh, nc and friends; anything else is a
/// tunnel that could not be opened (retried).
fn classify(stderr: &[String]) -> TransportErrorKind {
    let has = |needle: &str| stderr.iter().any(|l| l.contains(needle));
    if has("Permission denied") || has("Too many authentication failures") {
        TransportErrorKind::Authentication
    } else if has("Host key verification failed") || has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        TransportErrorKind::HostTrust
    } else if has("Could not resolve hostname") || has("Name or service not known") {
        TransportErrorKind::Resolve
    } else {
        TransportErrorKind::Tunnel
    }
}

impl AsyncRead for ChildStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(failure) = this.poll_failure(cx) {
            return failure.map(Err);
        }
        if this.answered || buf.remaining() == 0 {
            return Pin::new(&mut this.stdout).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stdout).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.answered = true;
                Poll::Ready(Ok(()))
            }
            // End of output, or a read error, before the gateway's first byte.
            Poll::Ready(_) => {
                this.fail_ended();
                this.poll_failure(cx).unwrap_or(Poll::Pending).map(Err)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.failed = Some(silent_error(&this.report, &this.stderr.lines()));
                    return this.poll_failure(cx).unwrap_or(Poll::Pending).map(Err);
                }
                Poll::Pending
            }
        }
    }
}

impl ChildStream {
    /// A write error before the first answer is the command's failure (it exited and its
    /// stdin is a broken pipe); after it, the error as is.
    fn on_write_error<T>(&mut self, cx: &mut Context<'_>, error: io::Error) -> Poll<io::Result<T>> {
        if self.answered {
            return Poll::Ready(Err(error));
        }
        self.fail_ended();
        self.poll_failure(cx).unwrap_or(Poll::Pending).map(Err)
    }
}

impl AsyncWrite for ChildStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(failure) = this.poll_failure(cx) {
            return failure.map(Err);
        }
        let stdin = &mut this.stdin;
        match crate::child::write_without_sigpipe(|| Pin::new(stdin).poll_write(cx, data)) {
            Poll::Ready(Err(e)) => this.on_write_error(cx, e),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(failure) = this.poll_failure(cx) {
            return failure.map(Err);
        }
        match Pin::new(&mut this.stdin).poll_flush(cx) {
            Poll::Ready(Err(e)) => this.on_write_error(cx, e),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_shutdown(cx)
    }
}
