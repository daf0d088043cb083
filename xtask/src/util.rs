//! Small helpers shared by every xtask command: progress lines, running
//! commands with clear errors, detaching daemons, files with exact modes.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Process start, so every progress line can say how long we have been at it.
static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Starts the clock that progress lines measure from (call first thing in main).
pub fn start_clock() {
    LazyLock::force(&STARTED);
}

/// Prints `[tag] +1.2s message` on stderr (stdout is reserved for machine-readable output).
pub fn say(tag: &str, message: impl std::fmt::Display) {
    let elapsed = STARTED.elapsed().as_secs_f64();
    eprintln!("[{tag}] +{elapsed:.1}s {message}");
}

pub fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// The workspace root is the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

pub fn xtask_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// Renders a command for messages. Callers never put secrets in argv, so this is safe to print.
pub fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs a command to completion with inherited stdio; a non-zero exit is an error naming the command.
pub fn run_command(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not run `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs a command and returns its stdout; stderr is shown in the error when it fails.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{}`", describe(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command with piped stdout/stderr, killing it after `timeout` (a CLI that hangs
/// must not hang `peer start`). Returns the output even on non-zero exit.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not run `{}`", describe(cmd)))?;
    // Readers on threads so a chatty child cannot block on a full pipe while we wait.
    let mut stdout_pipe = child.stdout.take().context("stdout pipe")?;
    let mut stderr_pipe = child.stderr.take().context("stderr pipe")?;
    let stdout_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut buf);
        buf
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{}` timed out after {}", describe(cmd), secs(timeout));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: stdout_reader.join().unwrap_or_default(),
        stderr: stderr_reader.join().unwrap_or_default(),
    })
}

/// Makes a spawned command a daemon: its own session (no terminal signals, survives
/// xtask's exit) and no inherited file descriptors beyond 0-2. The latter matters
/// because a caller that reads our stdout/stderr until EOF (a test harness, `| tee`)
/// would otherwise hang for as long as a leaked pipe stays open in the daemon.
pub fn detach(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure only calls async-signal-safe syscalls (setsid, close_range).
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            // Mark instead of close so std's exec-error pipe still works; ENOSYS on old
            // kernels is fine to ignore (std opens its own fds with O_CLOEXEC anyway).
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        })
    }
}

/// Random lowercase hex of `bytes` bytes from the kernel CSPRNG (for tokens and passwords).
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a file atomically (temp file + rename) with exactly `mode`, so a secret is
/// never readable by others, not even for a moment, and readers never see half a file.
pub fn write_file_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("file path has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(OsStr::to_str).unwrap_or("file"),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)?;
    // The umask may have removed bits from `mode`; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    drop(file);
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Like [`write_file_mode`] but leaves the file alone when it already has these
/// contents, so repeated installs do not touch anything.
pub fn ensure_file(path: &Path, contents: &str, mode: u32) -> Result<bool> {
    let same = fs::read_to_string(path).is_ok_and(|old| old == contents);
    let mode_ok = fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode);
    if same && mode_ok {
        return Ok(false);
    }
    write_file_mode(path, contents.as_bytes(), mode)?;
    Ok(true)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The last `lines` lines of a text file, for showing why a daemon failed.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})\n", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Finds an executable on PATH, like `command -v`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_has_requested_length_and_alphabet() {
        let hex = random_hex(24).unwrap();
        assert_eq!(hex.len(), 48);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(hex, random_hex(24).unwrap());
    }

    #[test]
    fn write_file_mode_sets_exact_mode() {
        let dir = std::env::temp_dir().join(format!("xtask-util-test-{}", std::process::id()));
        let path = dir.join("secret");
        write_file_mode(&path, b"x=1\n", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!ensure_file(&path, "x=1\n", 0o600).unwrap());
        assert!(ensure_file(&path, "x=2\n", 0o600).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "x=2\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
