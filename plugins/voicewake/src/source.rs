//! Transcript sources, the recognizer plugin point: standard input, a named pipe, or a supervised recognizer command.
//!
//! Every source turns lines into [`SourceEvent`]s on one channel. The command source is
//! supervised: its stdout lines are transcripts, its stderr lines are logged (target
//! `voicewake.recognizer`) and the last ones kept for the status; it gets the gateway's
//! current triggers as a JSON array in `CLAWLINK_VOICEWAKE_TRIGGERS` (to build a grammar),
//! is restarted when they change (`restart_on_trigger_change`), and after it exits according
//! to `restart` with capped exponential backoff. It runs in its own process group, which is
//! signalled as a whole when the feature stops (SIGTERM, then SIGKILL), and on Linux it dies
//! with us (PR_SET_PDEATHSIG) should the agent itself be killed: no orphaned recognizers.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::settings::{Restart, SourceKind, VoicewakeSettings};
use crate::transcript::{parse_line, LineError, Transcript};

/// The environment variable carrying the gateway's triggers to the recognizer command.
pub const TRIGGERS_ENV: &str = "CLAWLINK_VOICEWAKE_TRIGGERS";

/// What a source reports to the feature.
#[derive(Debug)]
pub enum SourceEvent {
    Transcript(Transcript),
    /// A line that is not a transcript (logged and counted).
    BadLine(LineError),
    /// The source's status changed (see [`SourceStatus`]).
    Changed,
    /// The source will produce nothing more.
    Ended,
}

/// What the status shows about the source.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub kind: SourceKind,
    /// `starting`, `running`, `backing-off`, `ended`, `failed`.
    pub state: String,
    /// What the state means, in words.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How many times the command was started.
    pub starts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// The command's last stderr lines.
    #[serde(skip_serializing_if = "VecDeque::is_empty")]
    pub stderr_tail: VecDeque<String>,
}

impl SourceStatus {
    fn new(settings: &VoicewakeSettings) -> Self {
        Self {
            kind: settings.source,
            state: "starting".into(),
            detail: String::new(),
            path: settings.fifo_path.clone(),
            command: if settings.source == SourceKind::Command {
                settings.command.clone()
            } else {
                Vec::new()
            },
            pid: None,
            starts: 0,
            last_exit: None,
            stderr_tail: VecDeque::new(),
        }
    }

    /// Whether the source failed or is waiting to restart a dead command.
    pub fn is_troubled(&self) -> bool {
        matches!(self.state.as_str(), "failed" | "backing-off")
    }

    /// Whether the source will produce nothing more (a failed command is retried instead).
    pub fn has_ended(&self) -> bool {
        self.state == "ended" || (self.state == "failed" && self.kind != SourceKind::Command)
    }
}

/// How many stderr lines of the recognizer are kept.
const STDERR_TAIL: usize = 10;
/// Restart backoff of the recognizer command: first delay, cap, and the run time after
/// which a crash counts as new trouble (the delay starts over).
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
/// How long a stopping recognizer gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(400);

/// A running source; `stop` ends it (and its command) before returning.
pub struct RunningSource {
    pub status: Arc<Mutex<SourceStatus>>,
    task: Option<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl RunningSource {
    pub fn snapshot(&self) -> SourceStatus {
        lock(&self.status).clone()
    }

    /// Stops the source: the command's process group is terminated and waited for.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            // The task ends within TERM_GRACE plus a little; never hang the agent's stop.
            let mut task = task;
            if tokio::time::timeout(TERM_GRACE * 2, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for RunningSource {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the configured source; its events go to `events`.
pub fn start(
    settings: &VoicewakeSettings,
    triggers: watch::Receiver<Vec<String>>,
    events: mpsc::Sender<SourceEvent>,
) -> RunningSource {
    let status = Arc::new(Mutex::new(SourceStatus::new(settings)));
    let shutdown = CancellationToken::new();
    let task = match settings.source {
        SourceKind::None => {
            set(&status, "ended", "no recognizer configured (source = \"none\"): only `clawlink voicewake send` forwards");
            None
        }
        SourceKind::Stdin => {
            set(
                &status,
                "running",
                "reading transcripts from standard input",
            );
            Some(tokio::spawn(read_stdin(events, status.clone())))
        }
        SourceKind::Fifo => {
            let path = settings
                .fifo_path
                .clone()
                .expect("settings validation requires fifo_path for source = fifo");
            Some(tokio::spawn(read_fifo(
                path,
                events,
                status.clone(),
                shutdown.clone(),
            )))
        }
        SourceKind::Command => Some(tokio::spawn(
            Supervisor {
                argv: settings.command.clone(),
                restart: settings.restart,
                restart_on_trigger_change: settings.restart_on_trigger_change,
                triggers,
                events,
                status: status.clone(),
                shutdown: shutdown.clone(),
            }
            .run(),
        )),
    };
    RunningSource {
        status,
        task,
        shutdown,
    }
}

fn set(status: &Mutex<SourceStatus>, state: &str, detail: impl Into<String>) {
    let mut s = lock(status);
    s.state = state.to_owned();
    s.detail = detail.into();
}

async fn report_line(events: &mpsc::Sender<SourceEvent>, line: &str) -> bool {
    let event = match parse_line(line) {
        Ok(Some(transcript)) => SourceEvent::Transcript(transcript),
        Ok(None) => return true,
        Err(error) => SourceEvent::BadLine(error),
    };
    events.send(event).await.is_ok()
}

/// Standard input, read on a thread of its own: a blocking read of stdin cannot be
/// cancelled, and on the runtime's blocking pool it would hold up the agent's exit.
async fn read_stdin(events: mpsc::Sender<SourceEvent>, status: Arc<Mutex<SourceStatus>>) {
    let (lines_tx, mut lines_rx) = mpsc::channel::<Option<String>>(64);
    let spawned = std::thread::Builder::new()
        .name("voicewake-stdin".into())
        .spawn(move || {
            use std::io::BufRead;
            let stdin = std::io::stdin();
            let mut line = String::new();
            loop {
                line.clear();
                match stdin.lock().read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = lines_tx.blocking_send(None);
                        return;
                    }
                    Ok(_) => {
                        if lines_tx.blocking_send(Some(line.clone())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    if let Err(error) = spawned {
        set(
            &status,
            "failed",
            format!("cannot read standard input: {error}"),
        );
        let _ = events.send(SourceEvent::Ended).await;
        return;
    }
    while let Some(Some(line)) = lines_rx.recv().await {
        if !report_line(&events, &line).await {
            return;
        }
    }
    set(&status, "ended", "standard input closed");
    let _ = events.send(SourceEvent::Ended).await;
}

/// A named pipe: created (0600) when missing; writers may come and go.
async fn read_fifo(
    path: PathBuf,
    events: mpsc::Sender<SourceEvent>,
    status: Arc<Mutex<SourceStatus>>,
    shutdown: CancellationToken,
) {
    if let Err(error) = ensure_fifo(&path) {
        set(&status, "failed", error);
        let _ = events.send(SourceEvent::Changed).await;
        let _ = events.send(SourceEvent::Ended).await;
        return;
    }
    loop {
        let receiver = open_fifo(&path);
        let receiver = match receiver {
            Ok(r) => r,
            Err(error) => {
                set(
                    &status,
                    "failed",
                    format!("cannot open {}: {error}", path.display()),
                );
                let _ = events.send(SourceEvent::Changed).await;
                let _ = events.send(SourceEvent::Ended).await;
                return;
            }
        };
        set(
            &status,
            "running",
            format!("reading transcripts from {}", path.display()),
        );
        let _ = events.send(SourceEvent::Changed).await;
        let mut lines = BufReader::new(receiver).lines();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if !report_line(&events, &line).await {
                            return;
                        }
                    }
                    // Every writer closed (only where the pipe cannot be held open for
                    // writing ourselves): open it again for the next writer.
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "voicewake: reading the FIFO failed; reopening");
                        break;
                    }
                },
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn ensure_fifo(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match std::fs::metadata(path) {
        // Whoever can write the pipe speaks as the user (its lines become wake words and
        // agent requests): only the user's own pipe, writable by nobody else, is read.
        Ok(meta) if meta.file_type().is_fifo() => {
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me {
                return Err(format!(
                    "the FIFO {} belongs to another user (uid {}); refusing to take commands from it: remove it, or point fifo_path at a pipe of your own",
                    path.display(),
                    meta.uid()
                ));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(format!(
                    "the FIFO {} is writable by other users (mode {:03o}); refusing to take commands from it: chmod 600 {}",
                    path.display(),
                    meta.mode() & 0o777,
                    path.display()
                ));
            }
            Ok(())
        }
        Ok(_) => Err(format!(
            "{} exists and is not a FIFO; remove it or point fifo_path elsewhere",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
            // SAFETY: mkfifo reads the NUL-terminated path we own.
            if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
                return Err(format!(
                    "cannot create the FIFO {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                ));
            }
            Ok(())
        }
        Err(e) => Err(format!("cannot use {}: {e}", path.display())),
    }
}

fn open_fifo(path: &Path) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    let mut options = tokio::net::unix::pipe::OpenOptions::new();
    // Holding the pipe open for writing too means no EOF when a writer leaves (Linux).
    #[cfg(target_os = "linux")]
    options.read_write(true);
    options.open_receiver(path)
}

/// The recognizer command's supervisor.
struct Supervisor {
    argv: Vec<String>,
    restart: Restart,
    restart_on_trigger_change: bool,
    triggers: watch::Receiver<Vec<String>>,
    events: mpsc::Sender<SourceEvent>,
    status: Arc<Mutex<SourceStatus>>,
    shutdown: CancellationToken,
}

/// Why one run of the command ended.
enum RunEnd {
    Shutdown,
    TriggersChanged,
    Exited(std::process::ExitStatus),
    Lost,
}

/// Kills the command's whole process group if the supervisor is dropped without stopping it
/// (the runtime shutting down), so not even a grandchild is left behind.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn signal(&self, signal: i32) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg only sends a signal to the group we created.
            unsafe {
                libc::killpg(pgid, signal);
            }
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

impl Supervisor {
    async fn changed(&self) {
        let _ = self.events.send(SourceEvent::Changed).await;
    }

    async fn run(mut self) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let triggers = self.triggers.borrow_and_update().clone();
            let started = Instant::now();
            let trouble = match self.spawn(&triggers) {
                Ok(child) => match self.watch(child).await {
                    RunEnd::Shutdown => return,
                    RunEnd::TriggersChanged => {
                        tracing::info!(target: "voicewake.recognizer", "triggers changed: restarting the recognizer");
                        continue;
                    }
                    RunEnd::Lost => "lost track of the recognizer".to_owned(),
                    RunEnd::Exited(status) => {
                        let description = describe_exit(status);
                        lock(&self.status).last_exit = Some(description.clone());
                        let again = match self.restart {
                            Restart::Always => true,
                            Restart::OnFailure => !status.success(),
                            Restart::Never => false,
                        };
                        if !again {
                            tracing::info!(target: "voicewake.recognizer", exit = %description, "the recognizer finished");
                            set(
                                &self.status,
                                "ended",
                                format!("the recognizer finished ({description})"),
                            );
                            self.changed().await;
                            let _ = self.events.send(SourceEvent::Ended).await;
                            return;
                        }
                        tracing::warn!(target: "voicewake.recognizer", exit = %description, "the recognizer exited");
                        format!("the recognizer exited ({description})")
                    }
                },
                Err(error) => {
                    let program = &self.argv[0];
                    tracing::warn!(target: "voicewake.recognizer", %program, %error, "cannot start the recognizer");
                    format!("cannot start the recognizer {program:?}: {error}")
                }
            };
            if started.elapsed() >= BACKOFF_RESET_AFTER {
                backoff = BACKOFF_FIRST;
            }
            set(
                &self.status,
                "backing-off",
                format!("{trouble}; restarting in {} s", backoff.as_secs()),
            );
            self.changed().await;
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn spawn(&self, triggers: &[String]) -> std::io::Result<Child> {
        let (program, args) = self
            .argv
            .split_first()
            .expect("settings validation requires a non-empty command");
        let mut command = Command::new(program);
        command
            .args(args)
            .env(
                TRIGGERS_ENV,
                serde_json::to_string(triggers).expect("strings serialise"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: stopping it reaches whatever it started.
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and only affects the child being set up.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        let mut s = lock(&self.status);
        s.starts += 1;
        s.pid = child.id();
        s.state = "running".into();
        s.detail = format!("recognizer running (pid {})", child.id().unwrap_or(0));
        tracing::info!(target: "voicewake.recognizer", pid = child.id(), argv = ?self.argv, "recognizer started");
        Ok(child)
    }

    /// Follows one run of the command until it exits, the triggers change or we stop.
    async fn watch(&mut self, mut child: Child) -> RunEnd {
        self.changed().await;
        let mut guard = GroupGuard {
            pgid: child.id().map(|p| p as i32),
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_task = tokio::spawn(log_stderr(stderr, self.status.clone()));
        let mut lines = BufReader::new(stdout).lines();
        let mut stdout_open = true;
        let end = loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break RunEnd::Shutdown,
                changed = self.triggers.changed(), if self.restart_on_trigger_change => {
                    if changed.is_ok() {
                        break RunEnd::TriggersChanged;
                    }
                }
                line = lines.next_line(), if stdout_open => match line {
                    Ok(Some(line)) => {
                        if !report_line(&self.events, &line).await {
                            break RunEnd::Shutdown;
                        }
                    }
                    Ok(None) | Err(_) => stdout_open = false,
                },
                status = child.wait(), if !stdout_open => match status {
                    Ok(status) => {
                        // Whatever it left running in its group goes with it.
                        guard.signal(libc::SIGKILL);
                        guard.disarm();
                        break RunEnd::Exited(status);
                    }
                    Err(error) => {
                        tracing::warn!(target: "voicewake.recognizer", %error, "lost track of the recognizer");
                        break RunEnd::Lost;
                    }
                },
            }
        };
        if matches!(
            end,
            RunEnd::Shutdown | RunEnd::TriggersChanged | RunEnd::Lost
        ) {
            stop_group(&mut child, &mut guard).await;
        }
        lock(&self.status).pid = None;
        // Whatever it still had to say on stderr is logged; then the reader goes.
        if tokio::time::timeout(Duration::from_millis(100), stderr_task)
            .await
            .is_err()
        {
            tracing::debug!(target: "voicewake.recognizer", "stderr reader still busy; dropped");
        }
        end
    }
}

/// SIGTERM to the group, SIGKILL after a grace period, and the child reaped.
async fn stop_group(child: &mut Child, guard: &mut GroupGuard) {
    guard.signal(libc::SIGTERM);
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        guard.signal(libc::SIGKILL);
        let _ = tokio::time::timeout(TERM_GRACE, child.wait()).await;
    }
    // Grandchildren that ignored SIGTERM go too.
    guard.signal(libc::SIGKILL);
    guard.disarm();
}

async fn log_stderr(stderr: impl AsyncRead + Unpin, status: Arc<Mutex<SourceStatus>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            continue;
        }
        tracing::info!(target: "voicewake.recognizer", "{line}");
        let mut s = lock(&status);
        s.stderr_tail.push_back(line);
        while s.stderr_tail.len() > STDERR_TAIL {
            s.stderr_tail.pop_front();
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "exited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(table: serde_json::Value) -> VoicewakeSettings {
        VoicewakeSettings::from_json(&table).unwrap()
    }

    fn command(script: &str, restart: &str) -> VoicewakeSettings {
        settings(json!({"source": "command", "command": ["sh", "-c", script], "restart": restart}))
    }

    async fn next_transcript(events: &mut mpsc::Receiver<SourceEvent>) -> Transcript {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(SourceEvent::Transcript(t))) => return t,
                Ok(Some(_)) => continue,
                other => panic!("no transcript: {other:?}"),
            }
        }
    }

    async fn until_ended(events: &mut mpsc::Receiver<SourceEvent>) -> Vec<SourceEvent> {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(SourceEvent::Ended)) => return seen,
                Ok(Some(event)) => seen.push(event),
                other => panic!("the source did not end: {other:?} after {seen:?}"),
            }
        }
    }

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn a_command_s_stdout_lines_are_transcripts_and_its_stderr_is_kept() {
        let (_triggers_tx, triggers) = watch::channel(vec!["computer".to_owned()]);
        let (tx, mut rx) = mpsc::channel(16);
        let script = r#"echo "Computer, hello"; echo '{"partial":"comp"}'; echo '{oops'; echo 'mic ready' >&2"#;
        let source = start(&command(script, "never"), triggers, tx);
        let events = until_ended(&mut rx).await;
        let transcripts: Vec<&Transcript> = events
            .iter()
            .filter_map(|e| match e {
                SourceEvent::Transcript(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(transcripts.len(), 2, "{events:?}");
        assert_eq!(
            (transcripts[0].text.as_str(), transcripts[0].is_final),
            ("Computer, hello", true)
        );
        assert!(!transcripts[1].is_final);
        assert!(events.iter().any(|e| matches!(e, SourceEvent::BadLine(_))));
        let status = source.snapshot();
        assert_eq!(status.state, "ended");
        assert!(status.has_ended());
        assert_eq!(status.last_exit.as_deref(), Some("exit code 0"));
        assert_eq!(status.stderr_tail, ["mic ready"]);
        assert_eq!(status.starts, 1);
        source.stop().await;
    }

    #[tokio::test]
    async fn a_failing_command_is_restarted_with_backoff() {
        let (_triggers_tx, triggers) = watch::channel(vec![]);
        let (tx, mut rx) = mpsc::channel(16);
        let source = start(&command("echo once; exit 2", "on-failure"), triggers, tx);
        next_transcript(&mut rx).await;
        let status = source.status.clone();
        let started = std::time::Instant::now();
        next_transcript(&mut rx).await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "restarted after the 1 s backoff"
        );
        let status = lock(&status).clone();
        assert!(status.starts >= 2);
        assert_eq!(status.last_exit.as_deref(), Some("exit code 2"));
        source.stop().await;
    }

    #[tokio::test]
    async fn the_command_gets_the_triggers_and_restarts_when_they_change() {
        let (triggers_tx, triggers) = watch::channel(vec!["computer".to_owned()]);
        let (tx, mut rx) = mpsc::channel(16);
        let source = start(
            &command(
                r#"echo "$CLAWLINK_VOICEWAKE_TRIGGERS"; exec sleep 30"#,
                "on-failure",
            ),
            triggers,
            tx,
        );
        assert_eq!(next_transcript(&mut rx).await.text, r#"["computer"]"#);
        triggers_tx.send_replace(vec!["jarvis".to_owned(), "hal 9000".to_owned()]);
        assert_eq!(
            next_transcript(&mut rx).await.text,
            r#"["jarvis","hal 9000"]"#
        );
        assert_eq!(source.snapshot().starts, 2);
        source.stop().await;
    }

    #[tokio::test]
    async fn stopping_ends_the_whole_process_group_within_a_second() {
        let (_triggers_tx, triggers) = watch::channel(vec![]);
        let (tx, mut rx) = mpsc::channel(16);
        let source = start(
            &command("sleep 30 & echo started; wait", "always"),
            triggers,
            tx,
        );
        next_transcript(&mut rx).await;
        let pid = source.snapshot().pid.expect("running");
        let children: Vec<u32> =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
        assert!(!children.is_empty(), "sleep runs under the recognizer");
        let started = std::time::Instant::now();
        source.stop().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        // The grandchild was reparented; give init a moment to reap it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for process in std::iter::once(pid).chain(children) {
            assert!(!alive(process), "{process} outlived the source");
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_retried_and_says_why() {
        let (_triggers_tx, triggers) = watch::channel(vec![]);
        let (tx, mut rx) = mpsc::channel(16);
        let table = json!({"source": "command", "command": ["/nonexistent/recognizer"]});
        let source = start(&settings(table), triggers, tx);
        while !source.snapshot().is_troubled() {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap();
        }
        let status = source.snapshot();
        assert_eq!(status.state, "backing-off");
        assert!(
            status.detail.contains("/nonexistent/recognizer"),
            "{}",
            status.detail
        );
        assert!(!status.has_ended());
        source.stop().await;
    }

    #[tokio::test]
    async fn a_fifo_is_created_and_outlives_its_writers() {
        let dir = std::env::temp_dir().join(format!("clawlink-vw-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("voice.fifo");
        let (_triggers_tx, triggers) = watch::channel(vec![]);
        let (tx, mut rx) = mpsc::channel(16);
        let source = start(
            &settings(json!({"source": "fifo", "fifo_path": path})),
            triggers,
            tx,
        );
        for line in ["computer, first writer", "computer, second writer"] {
            // Wait for the pipe, then write as a separate writer that closes.
            while !path.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let writer_path = path.clone();
            let text = format!("{line}\n");
            tokio::task::spawn_blocking(move || std::fs::write(writer_path, text))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(next_transcript(&mut rx).await.text, line);
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        source.stop().await;

        // A regular file is not a pipe.
        let not_fifo = dir.join("plain");
        std::fs::write(&not_fifo, "x").unwrap();
        let (_triggers_tx, triggers) = watch::channel(vec![]);
        let (tx, mut rx) = mpsc::channel(16);
        let source = start(
            &settings(json!({"source": "fifo", "fifo_path": not_fifo})),
            triggers,
            tx,
        );
        until_ended(&mut rx).await;
        let status = source.snapshot();
        assert_eq!(status.state, "failed");
        assert!(status.detail.contains("not a FIFO"), "{}", status.detail);
        source.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fifo_others_can_write_or_own_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("clawlink-vw-foreign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("voice.fifo");
        ensure_fifo(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622)).unwrap();
        let error = ensure_fifo(&path).unwrap_err();
        assert!(
            error.contains("writable by other users") && error.contains("chmod 600"),
            "{error}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        ensure_fifo(&path).unwrap();
        // Another user's pipe (needs root to hand it over, as the test harness runs).
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test plays another user: run it as root"
        );
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let error = ensure_fifo(&path).unwrap_err();
        assert!(error.contains("belongs to another user"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
