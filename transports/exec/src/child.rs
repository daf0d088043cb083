//! One run of the user's command: spawned in its own process group from a thread that lives as long as clawlink, its stderr drained into a small ring, and the whole group killed and reaped when its stream goes.
//!
//! Nothing here may outlive clawlink: the group is sent SIGTERM, then SIGKILL after
//! [`GRACE`], when the stream is dropped or the transport closed; a runtime that shuts down
//! under us kills the group from a drop guard; and on Linux the kernel kills the command
//! (PR_SET_PDEATHSIG) when clawlink itself is SIGKILLed and no code of ours runs at all.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use clawlink_core::transport::{TransportError, TransportErrorKind};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How long the group gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_millis(1500);
/// How many stderr lines are kept for error messages.
pub const STDERR_LINES: usize = 20;
/// How much of one stderr line is kept (a command that never prints a newline must not
/// grow the ring without bound).
const MAX_LINE: usize = 400;

/// The last lines the command wrote to stderr, and whether it has closed stderr.
#[derive(Debug)]
pub struct StderrTail {
    lines: Mutex<VecDeque<String>>,
    closed: watch::Sender<bool>,
}

impl StderrTail {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            lines: Mutex::new(VecDeque::with_capacity(STDERR_LINES)),
            closed: watch::Sender::new(false),
        })
    }

    fn push(&self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes);
        let line = line.trim_end_matches('\r').trim();
        if line.is_empty() {
            return;
        }
        tracing::debug!(target: "clawlink_transport_exec", "command stderr: {line}");
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == STDERR_LINES {
            lines.pop_front();
        }
        lines.push_back(line.to_owned());
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Waits (at most `limit`) until the command has closed its stderr, so that its last
    /// words are in the ring before an error quotes it.
    pub async fn settle(&self, limit: Duration) {
        let mut closed = self.closed.subscribe();
        let _ = tokio::time::timeout(limit, closed.wait_for(|c| *c)).await;
    }
}

/// Reads stderr until it closes, keeping the last lines. It always reads, whatever the
/// ring holds, so the command never blocks on a full stderr pipe.
async fn drain(mut stderr: ChildStderr, tail: Arc<StderrTail>) {
    let mut chunk = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for &byte in &chunk[..n] {
                    if byte == b'\n' {
                        tail.push(&line);
                        line.clear();
                    } else if line.len() < MAX_LINE {
                        line.push(byte);
                    }
                }
            }
        }
    }
    tail.push(&line);
    tail.closed.send_replace(true);
}

/// A running command, as its stream and the transport see it.
pub struct Running {
    pub stdin: tokio::process::ChildStdin,
    pub stdout: tokio::process::ChildStdout,
    /// `None` until the command has exited (and was reaped).
    pub exited: watch::Receiver<Option<ExitStatus>>,
    pub stderr: Arc<StderrTail>,
    /// Cancelled when the stream is dropped or the transport closes: the group is killed.
    pub stop: CancellationToken,
    /// Ends once the group was signalled and the command reaped.
    pub supervisor: tokio::task::JoinHandle<()>,
}

/// Starts `argv` with stdin and stdout piped (the stream), stderr drained, `env` added to
/// an environment without clawlink's secrets, in a process group of its own.
pub async fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Running, TransportError> {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The leader dies with its handle even if the supervisor never runs.
        .kill_on_drop(true)
        // Its own group, so that the whole of it (a `sh -c` and what it started) can be
        // killed at once, and a Ctrl-C in our terminal reaches us, not it, first.
        .process_group(0);
    for name in inherited_secrets() {
        command.env_remove(name);
    }
    command.envs(env);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe, touch only the child being set
        // up, and allocate nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Had clawlink died between fork and prctl, no signal would ever come.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    let mut child = spawn_on_keeper(command)
        .await
        .map_err(|e| spawn_error(&argv[0], env, e))?;
    let pgid = child.id().map(|id| id as libc::pid_t).unwrap_or(0);
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(TransportError::new(
            TransportErrorKind::Tunnel,
            format!("`{}` started without its pipes", argv[0]),
        ));
    };
    no_sigpipe_on(&stdin);
    enlarge_pipe(&stdin);
    enlarge_pipe(&stdout);
    let tail = StderrTail::new();
    tokio::spawn(drain(stderr, tail.clone()));
    let (exit_tx, exited) = watch::channel(None);
    let stop = CancellationToken::new();
    let supervisor = tokio::spawn(supervise(child, pgid, stop.clone(), exit_tx));
    Ok(Running {
        stdin,
        stdout,
        exited,
        stderr: tail,
        stop,
        supervisor,
    })
}

/// Bytes a stream pipe may hold (Linux's default is 64 KiB; 1 MiB is the unprivileged
/// maximum by default).
#[cfg(target_os = "linux")]
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Lets a pipe of the stream hold [`PIPE_BYTES`], best effort: a command like `ssh -W`
/// writes a whole SSH window at once instead of waking us for every 64 KiB (measured in
/// `cargo xtask bench transport-paths`). Elsewhere, or when refused, the default stays.
fn enlarge_pipe(pipe: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: F_SETPIPE_SZ only resizes the pipe behind a descriptor we own; failure
    // (EPERM above the limit, EBUSY) leaves it as it was.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pipe;
}

/// The names of clawlink secret variables still in our environment (the app removes
/// `CLAWLINK_TOKEN`/`CLAWLINK_PASSWORD` at start-up; this also covers a library user who
/// did not, and any other `CLAWLINK_…TOKEN/PASSWORD/SECRET…`), which the command must not
/// inherit. Only names are read, never values.
pub fn inherited_secrets() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_str().is_some_and(is_clawlink_secret))
        .collect()
}

/// Whether a variable name is one of clawlink's secrets: `CLAWLINK_` and a token, password
/// or secret in the name (any case).
pub fn is_clawlink_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("CLAWLINK_")
        && ["TOKEN", "PASSWORD", "SECRET"]
            .iter()
            .any(|word| upper.contains(word))
}

/// Waits for the command; once told to stop (stream dropped, transport closed), signals its
/// group with SIGTERM, then SIGKILL after [`GRACE`], and reaps it.
async fn supervise(
    mut child: Child,
    pgid: libc::pid_t,
    stop: CancellationToken,
    exited: watch::Sender<Option<ExitStatus>>,
) {
    // Dropped with this future when the runtime shuts down before the group is gone.
    let mut guard = GroupGuard { pgid, done: false };
    tokio::select! {
        status = child.wait() => {
            exited.send_replace(status.ok());
            // The group may have outlived its leader (a `sh -c` that backgrounded its work
            // still holding the pipe), so it is still killed when the stream goes.
            stop.cancelled().await;
            signal_group(pgid, libc::SIGTERM);
        }
        () = stop.cancelled() => {
            signal_group(pgid, libc::SIGTERM);
            let status = match tokio::time::timeout(GRACE, child.wait()).await {
                Ok(status) => status.ok(),
                Err(_) => {
                    signal_group(pgid, libc::SIGKILL);
                    child.wait().await.ok()
                }
            };
            exited.send_replace(status);
        }
    }
    // Members that ignored SIGTERM. The leader is reaped, but its PID stays reserved as the
    // group's ID while any member lives, so this reaches only what is left of our group.
    signal_group(pgid, libc::SIGKILL);
    guard.done = true;
}

/// Kills the group when the supervisor is dropped before it finished (runtime shutdown).
struct GroupGuard {
    pgid: libc::pid_t,
    done: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.done {
            signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // kill(0) and kill(-1) would reach our own group or every process we may signal.
    if pgid > 1 {
        // SAFETY: kill(2) on the process group our own child leads.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// A request to the keeper thread: spawn this command within this runtime.
struct SpawnRequest {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Spawns on one thread that lives as long as the process. PR_SET_PDEATHSIG fires when the
/// *thread* that forked the child exits, not the process: a tokio blocking-pool thread (or
/// a worker that `block_in_place` turned into one) exits after a few idle seconds, and the
/// command would be killed under a healthy connection. The keeper never exits, so the
/// signal comes exactly when clawlink dies.
async fn spawn_on_keeper(command: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<Mutex<Option<mpsc::Sender<SpawnRequest>>>> = OnceLock::new();
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let (reply, answer) = oneshot::channel();
    let request = SpawnRequest {
        command,
        runtime,
        reply,
    };
    {
        let keeper = KEEPER.get_or_init(|| Mutex::new(None));
        let mut sender = keeper.lock().unwrap_or_else(|e| e.into_inner());
        if sender.is_none() {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("clawlink-exec-spawn".into())
                .spawn(move || {
                    for mut request in rx {
                        // The child's pipes and reaping belong to the caller's runtime.
                        let _entered = request.runtime.enter();
                        let _ = request.reply.send(request.command.spawn());
                    }
                })?;
            *sender = Some(tx);
        }
        if let Some(tx) = sender.as_ref() {
            tx.send(request)
                .map_err(|_| io::Error::other("the spawning thread is gone"))?;
        }
    }
    answer
        .await
        .map_err(|_| io::Error::other("the spawning thread dropped the request"))?
}

/// A spawn failure: a missing or unusable program is the user's configuration; naming the
/// program and the PATH it was looked up in says what to fix.
fn spawn_error(program: &str, env: &BTreeMap<String, String>, error: io::Error) -> TransportError {
    let where_ = if program.contains('/') {
        String::new()
    } else {
        let path = env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        format!(" on PATH ({path})")
    };
    match error.kind() {
        io::ErrorKind::NotFound => TransportError::config(format!(
            "the exec transport's command `{program}` was not found{where_}"
        ))
        .with_fix("install it, or write its absolute path as the first element of transports.exec.command"),
        io::ErrorKind::PermissionDenied => TransportError::config(format!(
            "the exec transport's command `{program}` cannot be run{where_}: {error}"
        ))
        .with_fix("make it executable (chmod +x), or point transports.exec.command at the right program"),
        _ => TransportError::new(
            TransportErrorKind::Tunnel,
            format!("cannot start the exec transport's command `{program}`: {error}"),
        ),
    }
}

/// Runs one write to the command's stdin (`write` does the write(2) on this thread) so that
/// a command that has gone away is an `EPIPE` error, never a SIGPIPE. The app restores
/// SIGPIPE's default for commands that print and exit (`clawlink status | head` ends
/// quietly), and under that default a write to a dead command's pipe would kill clawlink
/// before it could say why the command died.
///
/// Linux sends that SIGPIPE to the writing thread: blocked here for the one write, and a
/// signal the write raised is taken back (sigtimedwait) before the mask is restored. macOS
/// marks the pipe itself instead ([`no_sigpipe_on`], F_SETNOSIGPIPE).
pub fn write_without_sigpipe(
    write: impl FnOnce() -> std::task::Poll<io::Result<usize>>,
) -> std::task::Poll<io::Result<usize>> {
    #[cfg(target_os = "linux")]
    // SAFETY: signal-set and mask calls on local sets, for the current thread only.
    unsafe {
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending);
        // Not ours to take: a SIGPIPE already waiting for this thread.
        let was_pending = libc::sigismember(&pending, libc::SIGPIPE) == 1;
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old);
        let result = write();
        let broken = matches!(&result, std::task::Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe);
        if broken && !was_pending {
            let now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            while libc::sigtimedwait(&pipe, std::ptr::null_mut(), &now) == -1
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
    #[cfg(not(target_os = "linux"))]
    write()
}

/// Marks the command's stdin so that writing to it after the command died is `EPIPE`, not
/// SIGPIPE, where the system offers that per descriptor (macOS); see
/// [`write_without_sigpipe`] for Linux.
fn no_sigpipe_on(stdin: &tokio::process::ChildStdin) {
    #[cfg(target_vendor = "apple")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            libc::fcntl(stdin.as_raw_fd(), libc::F_SETNOSIGPIPE, 1);
        }
    }
    #[cfg(not(target_vendor = "apple"))]
    let _ = stdin;
}
