//! `clawlink remote -- COMMAND`: runs a command on the gateway host with a terminal, through any transport offering commands on the gateway host, resolving `openclaw` like `clawlink test`.
//!
//! Like `ssh -t host COMMAND`, done in-process: when our stdin is a terminal (and `-T` was not
//! given) the remote side gets a PTY of our size, our terminal goes to raw mode (restored on
//! every way out: normal end, error, signal, panic), window changes follow SIGWINCH, and every
//! keystroke (Ctrl-C included) goes to the remote terminal. Without a terminal, stdin is
//! streamed until EOF and stdout/stderr stay apart. The remote exit status becomes ours.
//!
//! `openclaw` as the first word runs through the transport's CLI resolution, as in `clawlink
//! test`; when the CLI, node or the project root is missing, the transport's explanation
//! becomes the same fix `test` prints.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use clawlink_core::registry;
use clawlink_core::transport::commands::{
    CommandInput, HostCommand, PtyRequest, RemoteEvent, RemoteExit, RemoteSignal, RunningCommand,
};
use clawlink_core::transport::{Capability, TransportError};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::cli::{GlobalArgs, RemoteArgs};
use crate::failure::Failure;
use crate::settings::Settings;

/// How long a command without a terminal gets to end after we passed a signal on, before we
/// stop waiting for it.
const SIGNAL_GRACE: Duration = Duration::from_secs(3);

/// `clawlink remote`.
pub async fn run(_global: &GlobalArgs, settings: &Settings, args: &RemoteArgs) -> Result<()> {
    let transport = crate::connect::build_transport(settings)?;
    let Some(commands) = transport.commands() else {
        return Err(Failure::from(registry::refuse_missing(
            "`clawlink remote`",
            transport.name(),
            Capability::HostCommands,
        ))
        .into());
    };
    let command = HostCommand::from_words(&args.command).ok_or_else(|| {
        Failure::config(
            "`clawlink remote` needs a command",
            Some("e.g. `clawlink remote -- openclaw status`".into()),
        )
    })?;
    let stdin_is_tty = std::io::stdin().is_terminal();
    let pty = (stdin_is_tty && !args.no_tty).then(|| {
        // A terminal that cannot tell its size (e.g. under `script` without one) gets the
        // classic 80×24, as a real terminal would.
        let (cols, rows) = window_size().unwrap_or((80, 24));
        PtyRequest {
            term: std::env::var("TERM")
                .ok()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "xterm-256color".into()),
            cols,
            rows,
        }
    });
    let mut process = commands
        .start(&command, pty.as_ref())
        .await
        .map_err(Failure::from)?;
    let input = process.input();
    let raw = if pty.is_some() && input.forwards_input() {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let forwarding = input
        .forwards_input()
        .then(|| tokio::spawn(forward_stdin(input.clone())));

    let outcome = pump(process.as_mut(), input.as_ref(), pty.is_some()).await;

    if let Some(task) = forwarding {
        task.abort();
    }
    // The terminal first: whatever follows (an error line, the shell prompt) needs it sane.
    drop(raw);
    let failure = process.failure();
    transport.close().await;
    let exit = match outcome? {
        Ended::Remote(exit) => exit,
        Ended::Local { signal, why } => {
            eprintln!("clawlink: stopped by SIG{}; {why}", signal_label(signal));
            std::process::exit(128 + i32::from(signal));
        }
    };
    let status = exit.shell_status();
    if let Some(failure) = failure {
        return Err(could_not_run(failure, status).into());
    }
    if let RemoteExit::Signal { name, message, .. } = &exit {
        eprintln!(
            "clawlink: the remote command was killed by SIG{name}{}",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        );
    }
    if status != 0 {
        // The remote status is ours, as with ssh; the command already said what went wrong.
        std::process::exit(i32::from(status));
    }
    Ok(())
}

/// How the command's run ended.
enum Ended {
    /// The remote command ended by itself (or by a signal we passed on).
    Remote(RemoteExit),
    /// We stopped on a local signal (its number), for the reason given.
    Local { signal: u8, why: String },
}

/// Moves output to our stdout/stderr, terminal size changes and signals to the remote side,
/// until the command ends.
async fn pump(
    process: &mut dyn RunningCommand,
    input: &dyn CommandInput,
    pty: bool,
) -> Result<Ended> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut winch = signal(SignalKind::window_change())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut last_signal: u8 = 0;
    loop {
        let received = tokio::select! {
            event = process.next() => {
                match event.map_err(Failure::from)? {
                    RemoteEvent::Stdout(data) => write_all(&mut stdout, &data).await,
                    RemoteEvent::Stderr(data) => write_all(&mut stderr, &data).await,
                    RemoteEvent::Exit(exit) => {
                        // The system ssh ends with 255 on the signal we passed on; say
                        // which signal stopped us instead.
                        if last_signal != 0 && !input.forwards_input() && exit.shell_status() != 0 {
                            return Ok(Ended::Local { signal: last_signal, why: "ssh ended on it".into() });
                        }
                        return Ok(Ended::Remote(exit));
                    }
                }
                None
            }
            _ = winch.recv(), if pty => {
                if let Some((cols, rows)) = window_size() {
                    let _ = input.resize(cols, rows).await;
                }
                None
            }
            _ = interrupt.recv() => Some((RemoteSignal::Interrupt, 2)),
            _ = terminate.recv() => Some((RemoteSignal::Terminate, 15)),
            _ = hangup.recv() => Some((RemoteSignal::Hangup, 1)),
            _ = sleep_until(deadline) => {
                // The command ignored the signal we passed on: stop waiting for it.
                input.close().await;
                return Ok(Ended::Local {
                    signal: last_signal,
                    why: format!(
                        "the remote command did not end within {} s of it; no longer waiting for it",
                        SIGNAL_GRACE.as_secs()
                    ),
                });
            }
        };
        let Some((remote_signal, number)) = received else {
            continue;
        };
        if !input.forwards_input() {
            // The openssh child: it got the terminal's signals itself; pass the others on and
            // let its exit status tell how it ended.
            let _ = input.signal(remote_signal).await;
            last_signal = number;
            continue;
        }
        if pty || deadline.is_some() {
            // With a PTY, Ctrl-C arrives as a byte; a signal here comes from outside (kill,
            // a closing terminal): end like a closing terminal, with a hangup over there.
            input.close().await;
            return Ok(Ended::Local {
                signal: number,
                why: if pty {
                    "the remote terminal was closed (its programs get a hangup)".into()
                } else {
                    "a second signal: no longer waiting for the remote command".into()
                },
            });
        }
        let _ = input.signal(remote_signal).await;
        last_signal = number;
        deadline = Some(tokio::time::Instant::now() + SIGNAL_GRACE);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn signal_label(number: u8) -> String {
    match number {
        1 => "HUP",
        2 => "INT",
        _ => "TERM",
    }
    .into()
}

/// Writes and flushes; a closed local stdout/stderr (a pipe whose reader left) only means
/// nobody reads the output any more, which must not stop the remote command.
async fn write_all(out: &mut (impl AsyncWriteExt + Unpin), data: &[u8]) {
    if data.is_empty() {
        return;
    }
    if out.write_all(data).await.is_ok() {
        let _ = out.flush().await;
    }
}

/// Reads our stdin on a plain thread (a blocking read cannot be cancelled; a detached
/// thread does not hold up the exit the way tokio's stdin would) and forwards it, then EOF.
async fn forward_stdin(input: std::sync::Arc<dyn CommandInput>) {
    let (sender, mut chunks) = mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buffer = vec![0u8; 8192];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    while let Some(chunk) = chunks.recv().await {
        if input.send(&chunk).await.is_err() {
            return;
        }
    }
    let _ = input.eof().await;
}

/// The size of our terminal in characters (columns, rows), from stdin or stdout.
fn window_size() -> Option<(u32, u32)> {
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0;
        if ok && size.ws_col > 0 && size.ws_row > 0 {
            return Some((u32::from(size.ws_col), u32::from(size.ws_row)));
        }
    }
    None
}

/// The terminal settings to restore, also reachable from the panic hook (a release build
/// aborts on panic, so no destructor would run).
static SAVED_TERMINAL: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Our terminal in raw mode for as long as this lives.
struct RawTerminal;

impl RawTerminal {
    fn enable() -> Result<Self, Failure> {
        // SAFETY: tcgetattr fills the termios we own; fd 0 is a terminal (checked by caller).
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(terminal_failure("cannot read the terminal settings"));
        }
        *SAVED_TERMINAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        install_panic_restore();
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct; tcsetattr applies it to our terminal.
        unsafe { libc::cfmakeraw(&mut raw) };
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &raw) } != 0 {
            return Err(terminal_failure("cannot switch the terminal to raw mode"));
        }
        Ok(Self)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let saved = SAVED_TERMINAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(saved) = saved {
        // SAFETY: re-applies the settings read from this terminal.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &saved);
        }
    }
}

fn install_panic_restore() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}

fn terminal_failure(what: &str) -> Failure {
    Failure {
        layer: "terminal".into(),
        message: format!("{what}: {}", std::io::Error::last_os_error()),
        fix: Some("run with -T to go without a remote terminal".into()),
        exit_code: 1,
        json: json!({"layer": "terminal", "message": what}),
    }
}

/// The transport's explanation of a command that could not run (the CLI, node or the
/// project root missing), worded as `clawlink test` words it; the exit status stays the
/// remote one (127).
fn could_not_run(error: TransportError, status: u8) -> Failure {
    Failure {
        json: json!({"layer": "remote-cli", "message": error.message, "fix": error.fix}),
        layer: "remote-cli".into(),
        message: error.message,
        fix: error.fix,
        exit_code: status,
    }
}
