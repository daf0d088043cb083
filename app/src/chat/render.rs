//! How chat updates reach the user: JSON lines (`--json`), or the reply streamed as it comes with one dim line per tool or connection event.

use std::io::Write;
use std::sync::{Arc, Mutex};

use clawlink_core::text::terminal_safe_lines;
use clawlink_feature_webchat::client::{ChatUpdate, Outcome};
use clawlink_feature_webchat::stream::TextChange;
use serde_json::{json, Value};

/// Where notes (waiting, retrying, tool activity) go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notes {
    /// Inline with the reply, dimmed (the interactive chat).
    Stdout,
    /// On stderr, dimmed when `dim` (one-shot on a terminal).
    Stderr,
    /// Nowhere (one-shot into a pipe, where stderr is not a terminal either).
    Hidden,
}

/// Prints updates for one conversation.
pub(crate) struct Printer {
    json: bool,
    /// Stream the reply text to stdout as it comes (else only the final text is printed).
    live_text: bool,
    notes: Notes,
    /// Tool activity lines (not connection notes) are shown.
    activity: bool,
    dim: bool,
    /// Whether stdout's cursor is at the start of a line.
    at_line_start: bool,
    /// What goes before the reply's text (`agent ›`), printed with its first text so
    /// that notes (progress, tools) come before it, not between it and the reply…
    reply_prefix: Option<String>,
    /// …and again when a note interrupted the reply's line.
    prefix_due: bool,
    /// Tests read what would go to stdout here.
    captured: Option<Arc<Mutex<Vec<u8>>>>,
}

impl Printer {
    pub(crate) fn json() -> Self {
        Self {
            json: true,
            live_text: false,
            notes: Notes::Hidden,
            activity: false,
            dim: false,
            at_line_start: true,
            reply_prefix: None,
            prefix_due: false,
            captured: None,
        }
    }

    pub(crate) fn text(live_text: bool, notes: Notes, activity: bool, dim: bool) -> Self {
        Self {
            json: false,
            live_text,
            notes,
            activity,
            dim,
            at_line_start: true,
            reply_prefix: None,
            prefix_due: false,
            captured: None,
        }
    }

    /// The next reply's text is introduced by `prefix` (shown with the first text).
    pub(crate) fn begin_reply(&mut self, prefix: &str) {
        self.reply_prefix = Some(prefix.to_owned());
        self.prefix_due = true;
    }

    /// Reply text: the prefix first when it is due.
    fn reply_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.prefix_due {
            self.prefix_due = false;
            if let Some(prefix) = self.reply_prefix.clone() {
                // Our own prompt (with its bold escape), not remote text.
                self.write_own(&prefix);
            }
        }
        self.write_text(text);
    }

    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Prints one JSON line and flushes (a reader may be waiting for it).
    pub(crate) fn line(&self, value: Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    /// Writes text from the gateway (a reply, history, session titles) to stdout: it goes
    /// through `terminal_safe_lines` (lines and tabs kept, escape sequences not).
    pub(crate) fn write_text(&mut self, text: &str) {
        self.write_own(&terminal_safe_lines(text));
    }

    /// Writes our own text to stdout, our own colour codes included.
    pub(crate) fn write_own(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        match &self.captured {
            Some(buffer) => buffer
                .lock()
                .expect("capture buffer")
                .extend_from_slice(text.as_bytes()),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{text}");
                let _ = out.flush();
            }
        }
        self.at_line_start = text.ends_with('\n');
    }

    /// Ends the current line of reply text, if one is open (a reply resumed after it gets
    /// its prefix again).
    pub(crate) fn end_line(&mut self) {
        if !self.at_line_start {
            self.write_text("\n");
            if self.reply_prefix.is_some() {
                self.prefix_due = true;
            }
        }
    }

    /// A dim note on the notes channel.
    pub(crate) fn note(&mut self, text: &str) {
        // Notes quote the gateway (errors, tool activity): their lines, not their escapes.
        let text = terminal_safe_lines(text);
        let shown = if self.dim {
            crate::style::paint(crate::style::DIM, &text, true)
        } else {
            text.into_owned()
        };
        match self.notes {
            Notes::Stdout => {
                self.end_line();
                self.write_own(&format!("{shown}\n"));
            }
            Notes::Stderr => {
                // On a terminal stdout and stderr share the screen: the note gets a line
                // of its own there too.
                if self.live_text {
                    self.end_line();
                }
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{shown}");
            }
            Notes::Hidden => {}
        }
    }

    /// Shows one update.
    pub(crate) fn update(&mut self, update: &ChatUpdate) {
        if self.json {
            if let Some(line) = update_json(update) {
                self.line(line);
            }
            return;
        }
        match update {
            ChatUpdate::Text(TextChange::Appended(suffix)) if self.live_text => {
                self.reply_text(suffix)
            }
            ChatUpdate::Text(TextChange::Replaced(full)) if self.live_text => {
                // The gateway corrected earlier text: show the whole reply again.
                self.note("↺ (the reply was revised)");
                self.prefix_due = self.reply_prefix.is_some();
                self.reply_text(full);
            }
            ChatUpdate::Activity(line) if self.activity => self.note(line),
            ChatUpdate::WaitingForGateway { reason, .. } => self.note(&format!(
                "waiting for the gateway ({reason}); the message is kept in the outbox"
            )),
            ChatUpdate::Retrying {
                attempt, reason, ..
            } => self.note(&format!(
                "no acknowledgement ({reason}); sending it again with the same key (attempt {})",
                attempt + 1
            )),
            ChatUpdate::Reconnected { .. } => self.note("reconnected; catching up with the reply"),
            ChatUpdate::AbortRequested { .. } => self.note("aborting the reply…"),
            _ => {}
        }
    }

    /// The end of a reply: the final text when it was not streamed, then a clean line.
    pub(crate) fn finish(&mut self, outcome: &Outcome, streamed_len: usize) {
        if self.json {
            self.line(outcome_json(outcome));
            return;
        }
        if !self.live_text {
            self.reply_text(&outcome.text);
        } else if streamed_len == 0 && !outcome.text.is_empty() {
            // Nothing came as events (all read from the history).
            self.reply_text(&outcome.text);
        }
        self.end_line();
        self.reply_prefix = None;
        self.prefix_due = false;
    }
}

/// One update as a JSON line (`None`: nothing a script needs beyond the events).
pub(crate) fn update_json(update: &ChatUpdate) -> Option<Value> {
    Some(match update {
        ChatUpdate::WaitingForGateway { key, reason } => {
            json!({"event": "waiting", "idempotencyKey": key, "reason": reason})
        }
        ChatUpdate::Sending {
            key,
            attempt,
            session_key,
        } => {
            json!({"event": "send", "idempotencyKey": key, "attempt": attempt, "sessionKey": session_key})
        }
        ChatUpdate::Retrying {
            key,
            attempt,
            reason,
        } => json!({"event": "retry", "idempotencyKey": key, "attempt": attempt, "reason": reason}),
        ChatUpdate::Acknowledged { key, status } => {
            json!({"event": "ack", "idempotencyKey": key, "status": status})
        }
        ChatUpdate::Chat { payload, .. } => json!({"event": "chat", "payload": payload}),
        ChatUpdate::Agent { payload } => json!({"event": "agent", "payload": payload}),
        ChatUpdate::Reconnected { generation } => {
            json!({"event": "reconnected", "generation": generation})
        }
        ChatUpdate::Resynced { running, replies } => {
            json!({"event": "resync", "running": running, "replies": replies})
        }
        ChatUpdate::AbortRequested { run_id } => json!({"event": "abort", "runId": run_id}),
        ChatUpdate::Text(_) | ChatUpdate::Activity(_) => return None,
    })
}

/// The last line of a one-shot `--json` run.
pub(crate) fn outcome_json(outcome: &Outcome) -> Value {
    json!({
        "event": "done",
        "state": outcome.state.as_str(),
        "runId": outcome.run_id,
        "sessionKey": outcome.session_key,
        "text": outcome.text,
        "error": outcome.error,
        "fromHistory": outcome.from_history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawlink_feature_webchat::stream::{ChatEvent, ChatState};

    #[test]
    fn progress_lines_come_before_the_agent_prefix_not_inside_the_reply() {
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut printer = Printer::text(true, Notes::Stdout, true, false);
        printer.captured = Some(screen.clone());
        printer.begin_reply("agent › ");
        printer.update(&ChatUpdate::Activity("… thinking".into()));
        printer.update(&ChatUpdate::Text(TextChange::Appended("Hello".into())));
        printer.update(&ChatUpdate::Activity("⚙ exec".into()));
        printer.update(&ChatUpdate::Text(TextChange::Appended(" world".into())));
        let outcome = Outcome {
            run_id: "r".into(),
            session_key: "s".into(),
            state: ChatState::Final,
            text: "Hello world".into(),
            error: None,
            from_history: false,
        };
        printer.finish(&outcome, 11);
        let shown = String::from_utf8(screen.lock().unwrap().clone()).unwrap();
        assert_eq!(shown, "… thinking\nagent › Hello\n⚙ exec\nagent ›  world\n");
    }

    #[test]
    fn updates_become_event_lines() {
        let send = update_json(&ChatUpdate::Sending {
            key: "k".into(),
            attempt: 2,
            session_key: "agent:main:main".into(),
        })
        .unwrap();
        assert_eq!(send["event"], "send");
        assert_eq!(send["attempt"], 2);
        let payload =
            json!({"runId": "k", "sessionKey": "s", "seq": 1, "state": "delta", "deltaText": "hi"});
        let chat = update_json(&ChatUpdate::Chat {
            event: ChatEvent::parse(&payload).unwrap(),
            payload: payload.clone(),
        })
        .unwrap();
        assert_eq!(chat, json!({"event": "chat", "payload": payload}));
        assert!(update_json(&ChatUpdate::Activity("⚙ exec".into())).is_none());
        let done = outcome_json(&Outcome {
            run_id: "k".into(),
            session_key: "s".into(),
            state: ChatState::Aborted,
            text: "par".into(),
            error: Some("rpc".into()),
            from_history: false,
        });
        assert_eq!(done["state"], "aborted");
        assert_eq!(done["error"], "rpc");
    }
}
