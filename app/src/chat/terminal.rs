//! The interactive chat's terminal while the line editor is not reading: keys typed before the prompt appears are dropped rather than sent as messages, and `/quit` or Ctrl-D still leave while a message waits for the gateway or its reply.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

/// How often the watching thread looks whether it should stop.
const WATCH_TICK: Duration = Duration::from_millis(100);

/// Echo off on the terminal until dropped; then what was typed meanwhile is discarded
/// (`tcflush`) and the terminal restored. Nothing happens when stdin is not a terminal.
pub(super) struct Unechoed {
    saved: Option<libc::termios>,
}

impl Unechoed {
    pub(super) fn start() -> Self {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it or fails on a non-terminal.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Self { saved: None };
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a termios read from this terminal with one flag cleared.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
        Self { saved: Some(saved) }
    }
}

impl Drop for Unechoed {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let fd = std::io::stdin().as_raw_fd();
            // SAFETY: flushing the input queue and restoring the settings read in start().
            unsafe {
                libc::tcflush(fd, libc::TCIFLUSH);
                libc::tcsetattr(fd, libc::TCSANOW, saved);
            }
        }
    }
}

/// What was typed on the terminal while the line editor was idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Typed {
    /// `/quit`, `/exit` or Ctrl-D.
    Leave,
    /// Any other line (queued: it is handled once the message on its way is done).
    Line(String),
}

/// Reads whole lines from the terminal (canonical mode) on a thread of its own until
/// dropped; the thread polls, so it stops without swallowing what the line editor reads
/// next.
pub(super) struct InputWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    typed: mpsc::UnboundedReceiver<Typed>,
    /// Lines typed meanwhile, in order.
    queued: Vec<String>,
}

impl InputWatch {
    pub(super) fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (report, typed) = mpsc::unbounded_channel();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let fd = std::io::stdin().as_raw_fd();
            let mut buffer = [0u8; 4096];
            while !stopping.load(Ordering::SeqCst) {
                let mut poll = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let ready = unsafe { libc::poll(&mut poll, 1, WATCH_TICK.as_millis() as i32) };
                if ready <= 0 || stopping.load(Ordering::SeqCst) {
                    continue;
                }
                // SAFETY: reading into a buffer of the length given.
                let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
                let Ok(n) = usize::try_from(n) else { break };
                let events = typed_lines(&buffer[..n]);
                let leave = events.contains(&Typed::Leave);
                for event in events {
                    if report.send(event).is_err() {
                        return;
                    }
                }
                if leave {
                    return;
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
            typed,
            queued: Vec::new(),
        }
    }

    /// Resolves when the user asks to leave; other lines are queued.
    pub(super) async fn leave_requested(&mut self) {
        while let Some(typed) = self.typed.recv().await {
            match typed {
                Typed::Leave => return,
                Typed::Line(line) => self.queued.push(line),
            }
        }
        // The thread ended without a request (stdin failed): never resolve.
        std::future::pending::<()>().await
    }
}

impl InputWatch {
    /// Stops watching: whether the user asked to leave meanwhile (a `/quit` typed just as
    /// the reply ended must not be lost between the watch and the line editor), and the
    /// lines typed before that, in order.
    pub(super) fn finish(mut self) -> (bool, Vec<String>) {
        self.stop_thread();
        let mut leave = false;
        while let Ok(typed) = self.typed.try_recv() {
            match typed {
                Typed::Leave => leave = true,
                Typed::Line(line) if !leave => self.queued.push(line),
                Typed::Line(_) => {}
            }
        }
        (leave, std::mem::take(&mut self.queued))
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for InputWatch {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// What one read of the terminal means: an empty read is Ctrl-D; each line is a
/// request to leave or a line typed.
fn typed_lines(read: &[u8]) -> Vec<Typed> {
    if read.is_empty() {
        return vec![Typed::Leave];
    }
    String::from_utf8_lossy(read)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| match line {
            "/quit" | "/exit" => Typed::Leave,
            other => Typed::Line(other.to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_d_and_quit_leave_other_lines_are_reported() {
        assert_eq!(typed_lines(b""), vec![Typed::Leave]);
        assert_eq!(typed_lines(b"/quit\n"), vec![Typed::Leave]);
        assert_eq!(
            typed_lines(b"hello\n  /exit \n"),
            vec![Typed::Line("hello".into()), Typed::Leave]
        );
        assert_eq!(typed_lines(b"\n"), vec![]);
    }
}
