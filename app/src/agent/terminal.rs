//! The agent's one status line on a terminal: fitted to the terminal's width, rewritten in place, and kept apart from log lines.
//!
//! A line wider than the terminal wraps, and `\r` then returns only to the start of its last
//! row, so every rewrite would leave a row behind; the line is therefore cut to the width
//! (display width, so wide characters count double) and ends with an ellipsis. Log lines go
//! to stderr, usually the same terminal: [`LogWriter`] clears the status line before a log
//! line is written and draws it again after, so the two never share a row.

use std::io::{self, Write};
use std::sync::Mutex;

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// The status line as it is on screen now (with its colour codes), when there is one.
static SHOWN: Mutex<Option<String>> = Mutex::new(None);

fn shown() -> std::sync::MutexGuard<'static, Option<String>> {
    SHOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The terminal's width in columns, when stdout is a terminal that says.
pub fn width() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass; stdout is fd 1.
        let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
        if rc == 0 && size.ws_col > 0 {
            return Some(usize::from(size.ws_col));
        }
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
}

/// Whether stdout is a pipe or socket whose reader has gone (`clawlink up | head -2` after
/// head exited): noticed without waiting for the next write, which may be long in coming.
pub fn stdout_closed() -> bool {
    #[cfg(unix)]
    {
        let mut poll = libc::pollfd {
            fd: libc::STDOUT_FILENO,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & (libc::POLLERR | libc::POLLHUP) != 0
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// `text` cut to at most `columns` display columns, ending with `…` when cut.
pub fn fit(text: &str, columns: usize) -> String {
    if text.width() <= columns {
        return text.to_owned();
    }
    if columns == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        // Room for the ellipsis (one column) must stay.
        if used + w > columns - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// Draws `line` in place of the current status line. An error means stdout is gone.
pub fn show(line: &str) -> io::Result<()> {
    let mut shown = shown();
    let mut out = io::stdout().lock();
    write!(out, "\r\x1b[2K{line}")?;
    out.flush()?;
    *shown = Some(line.to_owned());
    Ok(())
}

/// Ends the status line: the cursor moves to a fresh row and log lines no longer redraw it.
pub fn finish() {
    if shown().take().is_some() {
        let _ = writeln!(io::stdout());
    }
}

/// The log writer: stderr, with the status line moved out of the way of each log line.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

impl Write for LogWriter {
    /// The formatter hands over one whole log line per call.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shown = shown();
        if shown.is_some() {
            let mut out = io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
        io::stderr().lock().write_all(buf)?;
        if let Some(line) = shown.as_deref() {
            let mut out = io::stdout().lock();
            let _ = write!(out, "{line}");
            let _ = out.flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_cut_to_the_width_with_an_ellipsis() {
        let line = "connected · ssh claw@gateway.example.com:22 → 127.0.0.1:18789 · health: ok";
        let fitted = fit(line, 40);
        assert_eq!(fitted.width(), 40);
        assert!(fitted.ends_with('…'), "{fitted}");
        assert!(line.starts_with(fitted.trim_end_matches('…')));
        // A line that fits is left alone.
        assert_eq!(fit("connected", 40), "connected");
    }

    #[test]
    fn wide_characters_count_double() {
        // Each CJK character takes two columns: five of them are ten columns.
        let fitted = fit("網關網關網關", 8);
        assert!(fitted.width() <= 8, "{fitted}");
        assert_eq!(fitted, "網關網…");
        assert_eq!(fit("abc", 0), "");
    }
}
