//! `clawlink remote -- COMMAND`: runs a command on the SSH host with a terminal, resolving `openclaw` like `clawlink test`.
//!
//! Like `ssh -t host COMMAND`, done in-process: when our stdin is a terminal (and `-T` was not
//! given) the remote side gets a PTY of our size, our terminal goes to raw mode (restored on
//! every way out: normal end, error, signal, panic), window changes follow SIGWINCH, and every
//! keystroke (Ctrl-C included) goes to the remote terminal. Without a terminal, stdin is
//! streamed until EOF and stdout/stderr stay apart. The remote exit status becomes ours.
//!
//! `openclaw` as the first word runs through the same resolution script as `clawlink test`
//! (project root, cli_path, the usual install directories on PATH); when it cannot find the
//! CLI, node or the project root, its marker line is turned into the same fix `test` prints.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use clawlink_core::transport::Transport;
use clawlink_transport_ssh::exec;
use clawlink_transport_ssh::interactive::{
    PtyRequest, RemoteEvent, RemoteExit, RemoteInput, RemoteSignal,
};
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
    let Some(tunnel) = crate::remote::ssh_tunnel(settings)? else {
        return Err(Failure::config(
            format!(
                "`clawlink remote` runs commands over SSH, but profile {:?} uses the {} transport",
                settings.profile_name,
                settings.profile.transport_name()
            ),
            Some(
                "pass --ssh user@host, or select a profile with transport = \"ssh-tunnel\"".into(),
            ),
        )
        .into());
    };
    let runs_openclaw = args.command.first().map(String::as_str) == Some("openclaw");
    let command = remote_command_line(&args.command, tunnel.settings());
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
    let mut process = tunnel
        .start_command(&command, pty.as_ref())
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

    let mut markers = runs_openclaw.then(|| [MarkerSniffer::default(), MarkerSniffer::default()]);
    let outcome = pump(&mut process, &input, pty.is_some(), markers.as_mut()).await;

    if let Some(task) = forwarding {
        task.abort();
    }
    // The terminal first: whatever follows (an error line, the shell prompt) needs it sane.
    drop(raw);
    tunnel.close().await;
    let exit = match outcome? {
        Ended::Remote(exit) => exit,
        Ended::Local { signal, why } => {
            eprintln!("clawlink: stopped by SIG{}; {why}", signal_label(signal));
            std::process::exit(128 + i32::from(signal));
        }
    };
    let status = exit.shell_status();
    if let (Some(markers), exec::NOT_FOUND) = (&markers, i32::from(status)) {
        if let Some(line) = markers.iter().find_map(|m| m.found.clone()) {
            return Err(cli_missing(&line, &tunnel.target().host).into());
        }
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

/// The one remote command line: `openclaw …` through the CLI resolution script, a single
/// word as shell text (`clawlink remote -- 'ls | wc -l'`), several words as exact arguments
/// (`clawlink remote -- sh -c 'exit 7'` runs `sh` with `-c` and `exit 7`, unlike ssh, which
/// would re-split them). Always `/bin/sh -c '…'`, whatever the login shell is.
fn remote_command_line(words: &[String], settings: &clawlink_transport_ssh::SshSettings) -> String {
    match words {
        [first, rest @ ..] if first == "openclaw" => {
            let location = exec::CliLocation {
                project_root: settings.project_root.clone(),
                cli_path: settings.cli_path.clone(),
            };
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            exec::sh_command(&exec::cli_script(&location, &rest))
        }
        [single] => exec::sh_command(single),
        words => exec::sh_command(
            &words
                .iter()
                .map(|w| exec::shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// Moves output to our stdout/stderr, terminal size changes and signals to the remote side,
/// until the command ends.
async fn pump(
    process: &mut clawlink_transport_ssh::interactive::RemoteCommand,
    input: &RemoteInput,
    pty: bool,
    mut markers: Option<&mut [MarkerSniffer; 2]>,
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
                    RemoteEvent::Stdout(data) => {
                        let data = match markers.as_deref_mut() {
                            Some([sniffer, _]) => sniffer.feed(&data),
                            None => data,
                        };
                        write_all(&mut stdout, &data).await;
                    }
                    RemoteEvent::Stderr(data) => {
                        let data = match markers.as_deref_mut() {
                            Some([_, sniffer]) => sniffer.feed(&data),
                            None => data,
                        };
                        write_all(&mut stderr, &data).await;
                    }
                    RemoteEvent::Exit(exit) => {
                        if let Some(markers) = markers.as_deref_mut() {
                            write_all(&mut stdout, &markers[0].finish()).await;
                            write_all(&mut stderr, &markers[1].finish()).await;
                        }
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
async fn forward_stdin(input: RemoteInput) {
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

/// Watches the start of one output stream for the resolution script's marker line
/// (`clawlink:no-cli: …`), which the script prints before anything else; keeps it off the
/// screen and remembers it. Everything else passes through untouched.
#[derive(Debug, Default)]
struct MarkerSniffer {
    held: Vec<u8>,
    passing: bool,
    found: Option<String>,
}

/// What every marker line starts with.
const MARKER_PREFIX: &[u8] = b"clawlink:no-";

impl MarkerSniffer {
    /// The bytes of `chunk` that can be shown now.
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.passing {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
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
    fn finish(&mut self) -> Vec<u8> {
        self.passing = true;
        std::mem::take(&mut self.held)
    }
}

/// The fix for a missing CLI, project root or node, worded as `clawlink test` words it.
fn cli_missing(marker_line: &str, host: &str) -> Failure {
    let (detail, fix) = crate::remote::explain_exit_127(marker_line, host);
    let message = format!("exit 127: {detail} on {host}");
    Failure {
        json: json!({"layer": "remote-cli", "message": message, "fix": fix}),
        layer: "remote-cli".into(),
        message,
        fix: Some(fix),
        exit_code: 127,
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
        let failure = cli_missing(sniffer.found.as_deref().unwrap(), "gw");
        assert_eq!(failure.exit_code, 127);
        assert_eq!(
            failure.message,
            "exit 127: the openclaw CLI is not on PATH for non-interactive shells on gw"
        );
        assert!(failure.fix.unwrap().contains("cli_path"));

        let failure = cli_missing(
            "clawlink:no-project-root: project root not found: /srv/oc",
            "gw",
        );
        assert!(
            failure.message.contains("/srv/oc") && failure.fix.unwrap().contains("--project-root")
        );
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
        let settings: clawlink_transport_ssh::SshSettings = serde_json::from_value(
            json!({"target": "claw@gw", "cli_path": "/opt/oc/openclaw.mjs"}),
        )
        .unwrap();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            remote_command_line(&words(&["sh", "-c", "exit 7"]), &settings),
            exec::sh_command("sh -c 'exit 7'")
        );
        assert_eq!(
            remote_command_line(&words(&["ls | wc -l"]), &settings),
            exec::sh_command("ls | wc -l")
        );
        let openclaw = remote_command_line(
            &words(&["openclaw", "channels", "login", "--verbose"]),
            &settings,
        );
        assert_eq!(
            openclaw,
            exec::sh_command(&exec::cli_script(
                &exec::CliLocation {
                    project_root: None,
                    cli_path: Some("/opt/oc/openclaw.mjs".into())
                },
                &["channels", "login", "--verbose"]
            ))
        );
    }
}
