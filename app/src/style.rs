//! Our own colours on the terminal: the styles (anstyle) and one decision whether to use them, anstream's (a terminal that supports colour, `NO_COLOR` unset; `CLICOLOR_FORCE` forces them).
//!
//! Text from the other side goes through `core::text`'s terminal-safe filter first; our
//! styles are added after it, so that they are the only escapes that reach the terminal.

use anstyle::{AnsiColor, Color, Style};

/// A prompt of ours, and the local user's own lines (`you ›`).
pub const PROMPT: Style = AnsiColor::Cyan.on_default();
/// The agent's voice (`agent ›`).
#[cfg_attr(not(feature = "feature-webchat"), allow(dead_code))] // only the chat speaks
pub const AGENT: Style = Style::new().bold();
/// Notes, roles and the other side's less important text.
pub const DIM: Style = Style::new().dimmed();
pub const OK: Style = AnsiColor::Green.on_default();
pub const WARN: Style = AnsiColor::Yellow.on_default();
pub const ERROR: Style = AnsiColor::Red.on_default();
/// Grey: unknown or idle states.
pub const QUIET: Style = AnsiColor::BrightBlack.on_default();
/// A QR code's light modules on black, so that it scans on light and dark terminals alike.
pub const QR: Style = Style::new()
    .fg_color(Some(Color::Ansi(AnsiColor::BrightWhite)))
    .bg_color(Some(Color::Ansi(AnsiColor::Black)));

/// Whether our colours may go to stdout.
pub fn stdout_colours() -> bool {
    anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
}

/// Whether our colours may go to stderr.
#[cfg_attr(not(feature = "feature-webchat"), allow(dead_code))] // only the chat's notes
pub fn stderr_colours() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

/// `text` in `style` when `colours`, else as it is. `text` must already be terminal-safe.
pub fn paint(style: Style, text: &str, colours: bool) -> String {
    if colours && !text.is_empty() && style != Style::new() {
        format!("{style}{text}{style:#}")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paints_only_when_asked_and_resets_after() {
        assert_eq!(paint(WARN, "warn", true), "\x1b[33mwarn\x1b[0m");
        assert_eq!(paint(WARN, "warn", false), "warn");
        assert_eq!(paint(WARN, "", true), "");
        assert_eq!(paint(Style::new(), "plain", true), "plain");
    }
}
