//! Interactive remote commands (`clawlink remote`): a session channel with an optional PTY, streamed output, input, window changes and the exit status; or the openssh backend's `ssh -t`/`-T` child.
//!
//! The local terminal (raw mode, SIGWINCH, reading stdin) is the caller's business; this
//! module only carries bytes and requests. Output arrives as [`RemoteEvent`]s, ending with
//! exactly one [`RemoteEvent::Exit`]; input goes through a cloneable [`RemoteInput`], so a task
//! can forward stdin (which may wait for the SSH window) while another reads the output.
//!
//! With the openssh backend, `ssh` itself owns the terminal: it inherits our stdin, puts the
//! terminal in raw mode and forwards window changes, so [`RemoteInput::forwards_input`] is
//! false and the caller must leave the terminal alone.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use clawlink_core::transport::commands::{
    CommandInput, PtyRequest, RemoteEvent, RemoteExit, RemoteSignal, RunningCommand, SIGNALS,
};
use clawlink_core::transport::{TransportError, TransportErrorKind};
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::commands::MarkerSniffer;
use crate::exec;
use crate::openssh::OpenSsh;
use crate::session::SshSession;
use crate::SshTunnel;

fn ssh_signal(signal: RemoteSignal) -> Sig {
    match signal {
        RemoteSignal::Interrupt => Sig::INT,
        RemoteSignal::Terminate => Sig::TERM,
        RemoteSignal::Hangup => Sig::HUP,
    }
}

fn libc_signal(signal: RemoteSignal) -> i32 {
    match signal {
        RemoteSignal::Interrupt => libc::SIGINT,
        RemoteSignal::Terminate => libc::SIGTERM,
        RemoteSignal::Hangup => libc::SIGHUP,
    }
}

fn signal_name(number: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, n)| i32::from(*n) == number)
        .map_or_else(|| format!("SIG{number}"), |(name, _)| (*name).to_owned())
}

/// Where the input of a running command goes.
#[derive(Clone)]
pub struct RemoteInput {
    target: InputTarget,
}

#[derive(Clone)]
enum InputTarget {
    Channel(Arc<ChannelWriteHalf<Msg>>),
    /// The openssh child reads our stdin itself; signals go to its PID.
    OpenSsh(Option<u32>),
}

#[async_trait]
impl CommandInput for RemoteInput {
    /// False for the openssh backend, whose `ssh` reads the terminal itself.
    fn forwards_input(&self) -> bool {
        matches!(self.target, InputTarget::Channel(_))
    }

    async fn send(&self, data: &[u8]) -> Result<(), TransportError> {
        match &self.target {
            InputTarget::Channel(channel) => channel.data(data).await.map_err(lost),
            InputTarget::OpenSsh(_) => Ok(()),
        }
    }

    async fn eof(&self) -> Result<(), TransportError> {
        match &self.target {
            InputTarget::Channel(channel) => channel.eof().await.map_err(lost),
            InputTarget::OpenSsh(_) => Ok(()),
        }
    }

    async fn resize(&self, cols: u32, rows: u32) -> Result<(), TransportError> {
        match &self.target {
            InputTarget::Channel(channel) => {
                channel.window_change(cols, rows, 0, 0).await.map_err(lost)
            }
            InputTarget::OpenSsh(_) => Ok(()),
        }
    }

    /// A `signal` request on the channel (honoured by OpenSSH ≥ 7.9), or the signal itself
    /// to the openssh child.
    async fn signal(&self, signal: RemoteSignal) -> Result<(), TransportError> {
        match &self.target {
            InputTarget::Channel(channel) => channel.signal(ssh_signal(signal)).await.map_err(lost),
            InputTarget::OpenSsh(pid) => {
                if let Some(pid) = pid {
                    // SAFETY: kill(2) on the PID of our own, not yet reaped, child.
                    unsafe {
                        libc::kill(*pid as i32, libc_signal(signal));
                    }
                }
                Ok(())
            }
        }
    }

    /// Closes the channel (or hangs the openssh child up).
    async fn close(&self) {
        match &self.target {
            InputTarget::Channel(channel) => {
                let _ = channel.close().await;
            }
            InputTarget::OpenSsh(pid) => {
                if let Some(pid) = pid {
                    // SAFETY: as in `signal`.
                    unsafe {
                        libc::kill(*pid as i32, libc::SIGHUP);
                    }
                }
            }
        }
    }
}

fn lost(error: russh::Error) -> TransportError {
    TransportError::new(
        TransportErrorKind::Io,
        format!("the SSH channel of the remote command is gone: {error}"),
    )
}

/// Which channel request a `Success`/`Failure` reply answers (replies come in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingReply {
    Pty,
    Exec,
}

/// A command running on the SSH host.
pub struct RemoteCommand {
    input: RemoteInput,
    source: Source,
    /// The exit, once known; repeated by every later `next`.
    finished: Option<RemoteExit>,
    /// For the openclaw CLI: the resolution script's marker line is watched for at the start
    /// of stdout and stderr (with a PTY both arrive as stdout) and kept off the screen.
    markers: Option<Box<[MarkerSniffer; 2]>>,
    /// Events ready to hand out before reading more (what the sniffers held back, then the exit).
    ready: VecDeque<RemoteEvent>,
    /// The host, for the explanation of a missing CLI.
    host: String,
}

enum Source {
    Channel {
        reader: ChannelReadHalf,
        replies: VecDeque<PendingReply>,
        status: Option<RemoteExit>,
        /// Keeps the connection alive, and tells a lost connection from a closed channel.
        session: Arc<SshSession>,
    },
    Child {
        child: Child,
        events: mpsc::Receiver<RemoteEvent>,
    },
}

impl RemoteCommand {
    /// Watches the output for the CLI resolution script's marker lines (see
    /// [`RunningCommand::failure`]).
    pub(crate) fn watch_for_markers(mut self) -> Self {
        self.markers = Some(Box::default());
        self
    }

    async fn next_raw(&mut self) -> Result<RemoteEvent, TransportError> {
        match &mut self.source {
            Source::Channel {
                reader,
                replies,
                status,
                session,
            } => next_from_channel(reader, replies, status, session).await,
            Source::Child { child, events } => match events.recv().await {
                Some(event) => Ok(event),
                None => Ok(RemoteEvent::Exit(child_exit(child).await?)),
            },
        }
    }
}

#[async_trait]
impl RunningCommand for RemoteCommand {
    fn input(&self) -> Arc<dyn CommandInput> {
        Arc::new(self.input.clone())
    }

    async fn next(&mut self) -> Result<RemoteEvent, TransportError> {
        // Bounded: each round either returns or consumes one event of the remote command,
        // whose output ends with its exit.
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if let Some(exit) = &self.finished {
                return Ok(RemoteEvent::Exit(exit.clone()));
            }
            let event = self.next_raw().await?;
            let Some(markers) = self.markers.as_deref_mut() else {
                if let RemoteEvent::Exit(exit) = &event {
                    self.finished = Some(exit.clone());
                }
                return Ok(event);
            };
            match event {
                RemoteEvent::Stdout(data) => {
                    let shown = markers[0].feed(&data);
                    if !shown.is_empty() {
                        return Ok(RemoteEvent::Stdout(shown));
                    }
                }
                RemoteEvent::Stderr(data) => {
                    let shown = markers[1].feed(&data);
                    if !shown.is_empty() {
                        return Ok(RemoteEvent::Stderr(shown));
                    }
                }
                RemoteEvent::Exit(exit) => {
                    for (held, wrap) in [
                        (
                            markers[0].finish(),
                            RemoteEvent::Stdout as fn(Vec<u8>) -> RemoteEvent,
                        ),
                        (markers[1].finish(), RemoteEvent::Stderr),
                    ] {
                        if !held.is_empty() {
                            self.ready.push_back(wrap(held));
                        }
                    }
                    self.finished = Some(exit);
                }
            }
        }
    }

    fn failure(&self) -> Option<TransportError> {
        let exit = self.finished.as_ref()?;
        if i32::from(exit.shell_status()) != exec::NOT_FOUND {
            return None;
        }
        let line = self
            .markers
            .as_deref()?
            .iter()
            .find_map(|m| m.found.clone())?;
        Some(crate::commands::explain_not_found(&line, &self.host))
    }
}

async fn next_from_channel(
    reader: &mut ChannelReadHalf,
    replies: &mut VecDeque<PendingReply>,
    status: &mut Option<RemoteExit>,
    session: &SshSession,
) -> Result<RemoteEvent, TransportError> {
    loop {
        match reader.wait().await {
            Some(ChannelMsg::Data { data }) => return Ok(RemoteEvent::Stdout(data.to_vec())),
            // Extended data type 1 is stderr (RFC 4254 §5.2); there is no other in use.
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                return Ok(RemoteEvent::Stderr(data.to_vec()))
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                *status = Some(RemoteExit::Code(exit_status))
            }
            Some(ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                ..
            }) => {
                *status = Some(RemoteExit::Signal {
                    name: sig_name(&signal_name),
                    core_dumped,
                    message: error_message,
                })
            }
            Some(ChannelMsg::Success) => {
                replies.pop_front();
            }
            Some(ChannelMsg::Failure) => match replies.pop_front() {
                // What OpenSSH does too: say so, and run without a terminal.
                Some(PendingReply::Pty) => {
                    return Ok(RemoteEvent::Stderr(
                        b"clawlink: the SSH server refused a terminal (PTY); running without one\r\n"
                            .to_vec(),
                    ))
                }
                _ => {
                    return Err(TransportError::new(
                        TransportErrorKind::Remote,
                        format!(
                            "{} refused to run the command (its sshd may restrict this key to a forced command or forbid exec)",
                            session.info.endpoint
                        ),
                    )
                    .with_fix("check the server's sshd_config and the key's options in authorized_keys"))
                }
            },
            Some(ChannelMsg::Close) | None => {
                return match status.take() {
                    Some(exit) => Ok(RemoteEvent::Exit(exit)),
                    None if session.is_closed() => Err(TransportError::new(
                        TransportErrorKind::Io,
                        format!(
                            "the SSH connection to {} was lost while the command ran",
                            session.info.endpoint
                        ),
                    )
                    .with_fix("check the network; the command may still be running on the host")),
                    None => Ok(RemoteEvent::Exit(RemoteExit::Unknown)),
                }
            }
            Some(_) => {}
        }
    }
}

fn sig_name(signal: &Sig) -> String {
    match signal {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    }
    .to_owned()
}

async fn child_exit(child: &mut Child) -> Result<RemoteExit, TransportError> {
    let status = child.wait().await.map_err(|e| {
        TransportError::new(TransportErrorKind::Remote, format!("waiting for ssh: {e}"))
    })?;
    if let Some(code) = status.code() {
        return Ok(RemoteExit::Code(code as u32));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return Ok(RemoteExit::Signal {
                name: signal_name(signal),
                core_dumped: status.core_dumped(),
                message: String::new(),
            });
        }
    }
    Ok(RemoteExit::Unknown)
}

impl SshTunnel {
    /// Starts `command` (one shell-safe command line, see [`crate::exec::sh_command`]) on the
    /// SSH host, with a PTY when `pty` is given.
    pub async fn start_command(
        &self,
        command: &str,
        pty: Option<&PtyRequest>,
    ) -> Result<RemoteCommand, TransportError> {
        if let Some(ssh) = &self.openssh {
            return start_openssh(ssh, command, pty.is_some(), &self.target.host);
        }
        let session = self.session().await?;
        let channel = session.session_channel().await?;
        let refused = |e: russh::Error| {
            TransportError::new(
                TransportErrorKind::Remote,
                format!("cannot start the remote command: {e}"),
            )
        };
        let mut replies = VecDeque::new();
        if let Some(pty) = pty {
            channel
                .request_pty(true, &pty.term, pty.cols, pty.rows, 0, 0, &[])
                .await
                .map_err(refused)?;
            replies.push_back(PendingReply::Pty);
        }
        channel
            .exec(true, command.as_bytes())
            .await
            .map_err(refused)?;
        replies.push_back(PendingReply::Exec);
        let (reader, writer) = channel.split();
        Ok(RemoteCommand {
            input: RemoteInput {
                target: InputTarget::Channel(Arc::new(writer)),
            },
            source: Source::Channel {
                reader,
                replies,
                status: None,
                session,
            },
            finished: None,
            markers: None,
            ready: VecDeque::new(),
            host: self.target.host.clone(),
        })
    }
}

fn start_openssh(
    ssh: &OpenSsh,
    command: &str,
    tty: bool,
    host: &str,
) -> Result<RemoteCommand, TransportError> {
    let program = ssh.program().to_path_buf();
    let mut process = ssh.command(ssh.exec_args(command, tty));
    process
        // ssh reads the terminal itself: raw mode, window changes, Ctrl-C as a byte.
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = process.spawn().map_err(|e| {
        TransportError::new(
            TransportErrorKind::Tunnel,
            format!("cannot start {}: {e}", program.display()),
        )
    })?;
    let (sender, events) = mpsc::channel(64);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(pump(stdout, sender.clone(), RemoteEvent::Stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(pump(stderr, sender, RemoteEvent::Stderr));
    }
    Ok(RemoteCommand {
        input: RemoteInput {
            target: InputTarget::OpenSsh(child.id()),
        },
        source: Source::Child { child, events },
        finished: None,
        markers: None,
        ready: VecDeque::new(),
        host: host.to_owned(),
    })
}

/// Copies one output pipe of the ssh child into events until it closes.
async fn pump(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    sender: mpsc::Sender<RemoteEvent>,
    wrap: fn(Vec<u8>) -> RemoteEvent,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(n) = pipe.read(&mut buffer).await {
        if n == 0 || sender.send(wrap(buffer[..n].to_vec())).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::SshTarget;

    #[test]
    fn local_signal_numbers_are_named_like_remote_ones() {
        assert_eq!(signal_name(libc::SIGKILL), "KILL");
        assert_eq!(signal_name(libc::SIGTERM), "TERM");
        assert_eq!(signal_name(64), "SIG64");
    }

    #[test]
    fn openssh_exec_args_keep_the_backends_options_without_the_forward_flags() {
        let settings: crate::SshSettings = serde_json::from_value(serde_json::json!({
            "target": "claw@gw:2222", "identity_file": "/k"
        }))
        .unwrap();
        let home = std::env::temp_dir();
        let ssh = OpenSsh::new(settings, SshTarget::parse("claw@gw:2222").unwrap(), &home).unwrap();
        let args: Vec<String> = ssh
            .exec_args("/bin/sh -c tty", true)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            &args[args.len() - 4..],
            ["-t", "--", "claw@gw", "/bin/sh -c tty"]
        );
        for kept in [
            "BatchMode=yes",
            "ControlMaster=no",
            "ServerAliveInterval=15",
        ] {
            assert!(args.iter().any(|a| a == kept), "{kept} missing: {args:?}");
        }
        assert!(args.windows(2).any(|w| w == ["-p", "2222"]));
        assert!(args.windows(2).any(|w| w == ["-i", "/k"]));
        for gone in ["-N", "-n", "ExitOnForwardFailure=yes"] {
            assert!(!args.iter().any(|a| a == gone), "{gone} left in: {args:?}");
        }
        let args = ssh.exec_args("true", false);
        assert!(args.iter().any(|a| a == "-T"));
    }
}
