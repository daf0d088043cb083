//! Long-running children of the benchmarks (tunnels, `ssh -N`) and loopback ports.
//!
//! Every child lives in a [`ChildGuard`], which stops it with SIGTERM and, after
//! [`STOP_GRACE`], SIGKILL — also when a benchmark fails half-way (the guard's Drop).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{describe, say, tail};

/// How long a child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A spawned child that is always stopped and reaped.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin from /dev/null and stderr into `stderr_path`; stdout as configured.
    pub fn spawn(name: &str, cmd: &mut Command, stderr_path: &Path) -> Result<ChildGuard> {
        let stderr = fs::File::create(stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("could not run `{}`", describe(cmd)))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
            stderr_path: stderr_path.to_path_buf(),
        })
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until stopped")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails (with the child's stderr) if it has already exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child_mut().try_wait()? {
            bail!(
                "{} exited early ({status}); its stderr:\n{}",
                self.name,
                tail(&self.stderr_path, 20)
            );
        }
        Ok(())
    }

    /// The last lines of its stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr_path, 20)
    }

    /// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL; returns how it ended.
    pub fn stop(mut self) -> Result<ExitStatus> {
        let child = self.child.take().expect("child present until stopped");
        stop_child(&self.name, child)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = stop_child(&self.name, child);
        }
    }
}

fn stop_child(name: &str, mut child: Child) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory preconditions; pid is our own unreaped child, so it
    // cannot have been recycled for another process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    say("bench", format!("{name} ignored SIGTERM for 3 s: SIGKILL"));
    let _ = child.kill();
    Ok(child.wait()?)
}

/// A loopback port that was free a moment ago (the kernel picks it).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// True if some socket listens on TCP `port` (any local address), read from
/// /proc/net/tcp{,6}. Unlike a probing connect this opens no connection, which would
/// make a forwarder open a channel (and a bulk source start sending).
pub fn listening(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let mut fields = line.split_whitespace();
                let local = fields.nth(1).unwrap_or("");
                let state = fields.nth(1).unwrap_or("");
                state == "0A" && local.ends_with(&wanted)
            })
        })
    })
}

/// Waits until `port` listens, failing early if `guard`'s child exits.
pub fn wait_listening(port: u16, guard: &mut ChildGuard, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if listening(port) {
            return Ok(());
        }
        guard.ensure_running()?;
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on 127.0.0.1:{port} within {timeout:?}; its stderr:\n{}",
                guard.name,
                guard.stderr_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads the first line of the child's piped stdout within `timeout`, then keeps draining
/// the pipe on a thread (which ends at EOF, when the child exits) so it never blocks.
pub fn first_stdout_line(guard: &mut ChildGuard, timeout: Duration) -> Result<String> {
    let stdout = guard
        .child_mut()
        .stdout
        .take()
        .context("child stdout is not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let result = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(result);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(line)) if !line.is_empty() => Ok(line),
        Ok(Ok(_)) => bail!(
            "{} closed its stdout without printing; its stderr:\n{}",
            guard.name,
            guard.stderr_tail()
        ),
        Ok(Err(err)) => Err(err).context("reading the child's stdout"),
        Err(_) => bail!(
            "{} printed nothing within {timeout:?}; its stderr:\n{}",
            guard.name,
            guard.stderr_tail()
        ),
    }
}

/// Connects to 127.0.0.1:port with Nagle off and read/write timeouts.
pub fn connect(port: u16, timeout: Duration) -> Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Reads until EOF and returns the byte count.
pub fn drain(stream: &mut TcpStream, buf: &mut [u8]) -> Result<u64> {
    let mut total = 0u64;
    loop {
        match stream.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err).context(format!("reading after {total} bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_listener_in_proc_net_tcp() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening(port));
        drop(listener);
        assert!(!listening(port));
    }

    #[test]
    fn guard_stops_a_child_that_ignores_nothing() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-procs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut guard = ChildGuard::spawn(
            "sleep",
            Command::new("sleep").arg("30").stdout(Stdio::null()),
            &dir.join("sleep.stderr"),
        )
        .unwrap();
        guard.ensure_running().unwrap();
        let started = Instant::now();
        let status = guard.stop().unwrap();
        assert!(started.elapsed() < STOP_GRACE);
        assert!(!status.success());
        fs::remove_dir_all(&dir).unwrap();
    }
}
