//! Text from the gateway or the SSH host made safe to show in a terminal: the one filter every
//! human-output sink uses.
//!
//! A string the remote side chose (a server version, a log line, a chat reply, an error
//! message) must not drive the user's terminal: an escape sequence could set the window title,
//! recolour or erase what is shown, move the cursor to forge earlier output, or, on some
//! terminals, answer back into the input. And bidirectional override characters can make
//! text read differently from what it is ("Trojan Source", CVE-2021-42574). Both kinds are
//! replaced by U+FFFD, which shows the user that something was there; JSON output needs none
//! of this (its escaping already makes every character inert).

use std::borrow::Cow;

/// What stands in for a character that must not reach the terminal.
pub const REPLACEMENT: char = '\u{fffd}';

/// `text` for one line of terminal output: every C0 and C1 control character (ESC, CSI
/// U+009B, BEL, DEL, …) and every bidirectional embedding, override or isolate becomes
/// U+FFFD; tab, line feed and carriage return become a space, so that the text stays on the
/// line it was given (it cannot forge a line of its own). Borrows when nothing changes.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    filter(text, false)
}

/// [`terminal_safe`] for a field whose text legitimately spans lines (a chat reply, a
/// multi-line error): line feeds and tabs are kept, a CR LF pair becomes a line feed, and
/// everything else is filtered the same way.
pub fn terminal_safe_lines(text: &str) -> Cow<'_, str> {
    filter(text, true)
}

/// Whether `c` reorders the text around it when displayed: the embeddings and overrides
/// (U+202A–U+202E) and the isolates (U+2066–U+2069).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn needs_change(c: char, multiline: bool) -> bool {
    if multiline && matches!(c, '\n' | '\t') {
        return false;
    }
    c.is_control() || is_bidi_control(c)
}

fn filter(text: &str, multiline: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| needs_change(c, multiline)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if multiline && chars.peek() == Some(&'\n') => {}
            '\t' | '\n' | '\r' if !multiline => out.push(' '),
            c if needs_change(c, multiline) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_escape(text: &str) -> bool {
        text.chars().any(|c| c == '\x1b' || c == '\u{9b}')
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = "openclaw 2026.9.6 — ok · 3 channels ⠋ ünïcödé";
        assert!(matches!(terminal_safe(text), Cow::Borrowed(t) if t == text));
        assert!(matches!(
            terminal_safe_lines("a\n\tb"),
            Cow::Borrowed("a\n\tb")
        ));
    }

    #[test]
    fn osc_and_csi_sequences_lose_their_escape_byte() {
        let hostile = "2026.9.6\x1b]0;pwned\x07\x1b[31mred\x1b[0m";
        let shown = terminal_safe(hostile);
        assert!(!has_escape(&shown), "{shown:?}");
        assert!(!shown.contains('\x07'), "{shown:?}");
        assert_eq!(
            shown,
            "2026.9.6\u{fffd}]0;pwned\u{fffd}\u{fffd}[31mred\u{fffd}[0m"
        );
        assert!(!has_escape(&terminal_safe_lines(hostile)));
    }

    #[test]
    fn c1_controls_del_and_nul_are_replaced() {
        // U+009B is the one-character CSI, U+009D the one-character OSC.
        let shown = terminal_safe("a\u{9b}31mb\u{9d}0;x\u{9c}c\x7fd\0e");
        assert_eq!(shown, "a\u{fffd}31mb\u{fffd}0;x\u{fffd}c\u{fffd}d\u{fffd}e");
    }

    #[test]
    fn bidi_overrides_and_isolates_are_replaced() {
        // "Trojan Source": RLO makes "txt.exe" display as "exe.txt".
        let shown = terminal_safe("invoice\u{202e}txt.exe \u{2066}x\u{2069} \u{202a}");
        assert_eq!(shown, "invoice\u{fffd}txt.exe \u{fffd}x\u{fffd} \u{fffd}");
        assert_eq!(
            terminal_safe_lines("\u{2067}a\u{202d}"),
            "\u{fffd}a\u{fffd}"
        );
    }

    #[test]
    fn one_line_text_cannot_start_a_line_of_its_own() {
        assert_eq!(terminal_safe("ok\nAuth  forged\r\tx"), "ok Auth  forged  x");
    }

    #[test]
    fn multi_line_text_keeps_its_lines_and_tabs_only() {
        assert_eq!(
            terminal_safe_lines("line one\r\n\tline two\rover\x1b[2K"),
            "line one\n\tline two\u{fffd}over\u{fffd}[2K"
        );
    }
}
