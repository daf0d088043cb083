//! The interactive `clawlink chat`: the history painted, a line editor with history, the reply streamed as it comes, slash commands, Ctrl-C or /abort to stop a reply, Ctrl-D or /quit to leave (at any time, also while a message waits).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clawlink_feature_webchat::attach::{self, human_bytes, Attachment};
use clawlink_feature_webchat::client::ChatUpdate;
use clawlink_feature_webchat::history;
use clawlink_feature_webchat::stream::{ChatState, TextChange};
use clawlink_feature_webchat::{CancellationToken, ChatError};
use rustyline::error::ReadlineError;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::render::{Notes, Printer};
use super::terminal::{InputWatch, Unechoed};
use super::{chat_failure, ChatArgs, ChatConnection};
use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::settings::Settings;
use crate::style;

/// How long the first connection may take before the prompt appears anyway (messages then
/// wait in the outbox).
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(15);
/// One `chat.send` waits this long for its acknowledgement, then goes out again.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the line editor's history kept on disk.
const LINE_HISTORY: usize = 1000;

const HELP: &str = "\
commands:
  /sessions          list the gateway's sessions
  /session KEY       talk in another session (main: the main session)
  /history [N]       paint the last N messages again (default 20)
  /attach FILE       attach a file to the next message (checked against the gateway's limits)
  /outbox            list messages waiting for an acknowledgement
  /abort             abort the session's running reply (Ctrl-C does it while a reply streams)
  /quit              leave (Ctrl-D too)
other lines starting with / (e.g. /new, /model) go to the gateway as chat commands";

/// What the line editor read.
enum Read {
    Line(String),
    Interrupted,
    Eof,
    Failed(String),
}

/// The line editor, on a thread of its own (it blocks on the terminal).
struct LineEditor {
    requests: std::sync::mpsc::Sender<(String, oneshot::Sender<Read>)>,
}

impl LineEditor {
    fn spawn(history_file: Option<PathBuf>) -> Result<Self, Failure> {
        let (requests, incoming) = std::sync::mpsc::channel::<(String, oneshot::Sender<Read>)>();
        let config = rustyline::Config::builder()
            .max_history_size(LINE_HISTORY)
            .map_err(|e| Failure::config(format!("line editor: {e}"), None))?
            .auto_add_history(false)
            .build();
        let mut editor = rustyline::DefaultEditor::with_config(config).map_err(|e| {
            Failure::config(
                format!("cannot start the line editor: {e}"),
                Some("run `clawlink chat` on a terminal, or use -m TEXT".into()),
            )
        })?;
        if let Some(file) = &history_file {
            let _ = editor.load_history(file);
        }
        std::thread::spawn(move || {
            while let Ok((prompt, reply)) = incoming.recv() {
                let read = match editor.readline(&prompt) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                            if let Some(file) = &history_file {
                                let _ = editor.save_history(file);
                            }
                        }
                        Read::Line(line)
                    }
                    Err(ReadlineError::Interrupted) => Read::Interrupted,
                    Err(ReadlineError::Eof) => Read::Eof,
                    Err(e) => Read::Failed(e.to_string()),
                };
                if reply.send(read).is_err() {
                    break;
                }
            }
        });
        Ok(Self { requests })
    }

    async fn read(&self, prompt: String) -> Read {
        let (reply, answer) = oneshot::channel();
        if self.requests.send((prompt, reply)).is_err() {
            return Read::Eof;
        }
        answer.await.unwrap_or(Read::Eof)
    }
}

/// The interactive session's state.
struct Session {
    connection: ChatConnection,
    printer: Printer,
    session_key: String,
    /// The history cursor after the last paint, for catch-up reads.
    cursor: Option<String>,
    staged: Vec<Attachment>,
    /// Lines typed while a message was on its way, handled before the next prompt.
    typed_ahead: std::collections::VecDeque<String>,
    /// Whether our own styles (prompts, roles) are shown: see [`style::stdout_colours`].
    colours: bool,
}

pub(crate) async fn run(global: &GlobalArgs, settings: &Settings, args: &ChatArgs) -> Result<()> {
    if global.json {
        return Err(Failure::config(
            "the interactive chat has no --json output",
            Some(
                "send one message with `clawlink --json chat -m TEXT` to get JSON event lines"
                    .into(),
            ),
        )
        .into());
    }
    let connection = ChatConnection::open(settings).await?;
    let describe = connection.client().transport().describe();
    let colours = style::stdout_colours();
    let mut printer = Printer::text(true, Notes::Stdout, true, colours);
    // Until the prompt is shown, keys are neither echoed nor kept: a line typed into the
    // wait (a shell command after giving up on it) must not become a message.
    let unechoed = Unechoed::start();
    printer.note(&format!("connecting to {describe}… (Ctrl-C to stop)"));
    let waited = tokio::select! {
        waited = super::wait_for_gateway(
            &connection,
            &mut printer,
            Instant::now() + FIRST_CONNECT_WAIT,
            None,
            None,
        ) => waited,
        _ = tokio::signal::ctrl_c() => {
            drop(unechoed);
            connection.close().await;
            return Err(Failure::agent("interrupted while connecting", None).into());
        }
    };
    match waited {
        Ok(()) => {}
        Err(ChatError::Timeout { what, .. }) => printer.note(&format!(
            "{what}; messages you type wait in the outbox until the gateway is back"
        )),
        Err(e) => {
            drop(unechoed);
            connection.close().await;
            return Err(chat_failure(e).into());
        }
    }
    let session_key = connection
        .chat
        .session_defaults()
        .canonical(args.session.as_deref());
    let history_file = connection
        .outbox
        .dir()
        .parent()
        .map(|dir| dir.join("line-history"));
    let editor = LineEditor::spawn(history_file)?;
    let mut session = Session {
        connection,
        printer,
        session_key,
        cursor: None,
        staged: Vec::new(),
        typed_ahead: Default::default(),
        colours,
    };
    session.paint_history(args.history).await;
    super::deliver_leftovers(&session.connection, &mut session.printer).await;
    // What was typed so far is dropped now; from here on the keys are the prompt's.
    drop(unechoed);
    session.printer.note(&format!(
        "chatting in {} — /help for commands, Ctrl-D to leave",
        session.session_key
    ));
    let result = session.repl(&editor).await;
    session.connection.close().await;
    result
}

impl Session {
    /// One of our own labels in `style`, when colours are on.
    fn paint(&self, style: anstyle::Style, label: &str) -> String {
        style::paint(style, label, self.colours)
    }

    fn prompt(&self) -> String {
        let attached = if self.staged.is_empty() {
            String::new()
        } else {
            format!(" +{}📎", self.staged.len())
        };
        format!(
            "{} ",
            self.paint(style::PROMPT, &format!("you{attached} ›"))
        )
    }

    async fn repl(&mut self, editor: &LineEditor) -> Result<()> {
        loop {
            let read = match self.typed_ahead.pop_front() {
                Some(line) => {
                    self.printer
                        .write_text(&format!("{}{line}\n", self.prompt()));
                    Read::Line(line)
                }
                None => editor.read(self.prompt()).await,
            };
            let line = match read {
                Read::Line(line) => line,
                Read::Interrupted => {
                    self.printer.note("(Ctrl-D or /quit to leave)");
                    continue;
                }
                Read::Eof => return Ok(()),
                Read::Failed(e) => {
                    return Err(Failure::config(format!("the terminal failed: {e}"), None).into())
                }
            };
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            let (command, rest) = match text.split_once(char::is_whitespace) {
                Some((command, rest)) => (command, rest.trim()),
                None => (text, ""),
            };
            match command {
                "/quit" | "/exit" => return Ok(()),
                "/help" => self.printer.note(HELP),
                "/sessions" => self.list_sessions().await,
                "/session" if rest.is_empty() => self
                    .printer
                    .note("usage: /session KEY (main: the main session)"),
                "/session" => {
                    self.session_key = self
                        .connection
                        .chat
                        .session_defaults()
                        .canonical(Some(rest));
                    self.paint_history(20).await;
                    self.printer
                        .note(&format!("chatting in {}", self.session_key));
                }
                "/history" => {
                    let limit = rest.parse().unwrap_or(20);
                    self.paint_history(limit).await;
                }
                "/attach" if rest.is_empty() => self.printer.note("usage: /attach FILE"),
                "/attach" => self.stage(rest),
                "/outbox" => self.show_outbox(),
                "/abort" => self.abort_session().await,
                _ => {
                    if self.send(line.trim_end().to_owned()).await == AfterSend::Leave {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn paint_history(&mut self, limit: u32) {
        if !self.connection.client().state().borrow().is_connected() {
            return;
        }
        let page = match self.connection.chat.history(&self.session_key, limit).await {
            Ok(page) => page,
            Err(e) => {
                self.printer.note(&format!("history unavailable: {e}"));
                return;
            }
        };
        self.cursor = history::delta_cursor(&page);
        let lines = history::lines(&page);
        if lines.is_empty() {
            self.printer.note("(no messages yet in this session)");
        }
        for line in lines {
            let who = match line.role.as_str() {
                "user" => self.paint(style::PROMPT, "you ›"),
                "assistant" => self.paint(style::AGENT, "agent ›"),
                other => self.paint(style::DIM, &format!("[{other}]")),
            };
            self.printer.write_own(&format!("{who} "));
            self.printer
                .write_text(&format!("{}\n", line.text.trim_end()));
        }
    }

    async fn list_sessions(&mut self) {
        match self.connection.chat.sessions(30).await {
            Ok(rows) if rows.is_empty() => self.printer.note("(no sessions)"),
            Ok(rows) => {
                let now = clawlink_core::time::now_unix_millis();
                for row in rows {
                    let text = |k: &str| row.get(k).and_then(Value::as_str);
                    let key = text("key").unwrap_or("?");
                    let title = text("derivedTitle")
                        .or_else(|| text("label"))
                        .or_else(|| text("displayName"))
                        .unwrap_or("");
                    let age = row
                        .get("updatedAt")
                        .and_then(Value::as_u64)
                        .map(|t| ago(now.saturating_sub(t)))
                        .unwrap_or_default();
                    let mark = if key == self.session_key { "*" } else { " " };
                    self.printer
                        .write_text(&format!("{mark} {key:<32} {age:>8}  {title}\n"));
                }
            }
            Err(e) => self.printer.note(&format!("sessions unavailable: {e}")),
        }
    }

    fn stage(&mut self, path: &str) {
        let limits = self.connection.chat.attachment_limits();
        match attach::load(std::path::Path::new(path), &limits) {
            Ok(attachment) => {
                self.printer.note(&format!(
                    "attached {} ({}) to the next message",
                    attachment.file_name,
                    human_bytes(attachment.size_bytes)
                ));
                self.staged.push(attachment);
            }
            Err(e) => {
                let fix = e.fix().map(|f| format!(" — {f}")).unwrap_or_default();
                self.printer.note(&format!("{e}{fix}"));
            }
        }
    }

    fn show_outbox(&mut self) {
        let gateway = self.connection.chat.gateway_key();
        match self.connection.outbox.list(Some(&gateway)) {
            Ok(entries) if entries.is_empty() => self.printer.note("the outbox is empty"),
            Ok(entries) => {
                for entry in entries {
                    self.printer.note(&format!(
                        "waiting: {} ({} attempt(s))",
                        entry.preview(60),
                        entry.attempts
                    ));
                }
            }
            Err(e) => self.printer.note(&e.to_string()),
        }
    }

    async fn abort_session(&mut self) {
        let result = self
            .connection
            .client()
            .request(
                "chat.abort",
                serde_json::json!({"sessionKey": self.session_key}),
            )
            .await;
        match result {
            Ok(answer) if answer.get("aborted").and_then(Value::as_bool) == Some(true) => {
                self.printer.note("aborted the running reply")
            }
            Ok(_) => self.printer.note("nothing is running in this session"),
            Err(e) => self.printer.note(&format!("abort failed: {e}")),
        }
    }

    /// Sends one message and streams its reply; Ctrl-C aborts the reply, `/quit` or
    /// Ctrl-D typed meanwhile leave.
    async fn send(&mut self, text: String) -> AfterSend {
        let attachments = std::mem::take(&mut self.staged);
        if let Err(e) = attach::check_total(
            &text,
            &attachments,
            &self.connection.chat.attachment_limits(),
        ) {
            self.printer.note(&e.to_string());
            self.staged = attachments;
            return AfterSend::Stay;
        }
        let chat = self.connection.chat.clone();
        let mut events = self.connection.client().subscribe();
        let mut entry = match chat.compose(Some(self.session_key.clone()), text, attachments) {
            Ok(entry) => entry,
            Err(e) => {
                self.printer.note(&e.to_string());
                return AfterSend::Stay;
            }
        };
        let mut typed = InputWatch::start();
        let _claim = self.connection.outbox.try_claim(&entry.idempotency_key);
        let abort = CancellationToken::new();
        let interrupts = {
            let abort = abort.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    abort.cancel();
                }
            })
        };
        // No deadline a person would notice: Ctrl-C stops the wait.
        let deadline = Instant::now() + Duration::from_secs(24 * 3600);
        let printer = &mut self.printer;
        let mut observe = |update: ChatUpdate| printer.update(&update);
        let ack = tokio::select! {
            ack = chat.deliver(&mut entry, ACK_TIMEOUT, deadline, &mut observe) => ack,
            _ = abort.cancelled() => {
                interrupts.abort();
                self.printer.note("stopped waiting; the message stays in the outbox and is sent when the gateway is back (by `clawlink up` or the next chat)");
                return AfterSend::Stay;
            }
            _ = typed.leave_requested() => {
                interrupts.abort();
                self.printer.note("leaving; the message was not acknowledged and stays in the outbox (`clawlink chat --outbox`): a running agent or the next chat sends it");
                return AfterSend::Leave;
            }
        };
        let ack = match ack {
            Ok(ack) => ack,
            Err(e) => {
                interrupts.abort();
                let fix = e.fix().map(|f| format!(" — {f}")).unwrap_or_default();
                self.printer.note(&format!("not sent: {e}{fix}"));
                return AfterSend::Stay;
            }
        };
        let prefix = format!("{} ", self.paint(style::AGENT, "agent ›"));
        self.printer.begin_reply(&prefix);
        let mut streamed = 0usize;
        let printer = &mut self.printer;
        let mut observe = |update: ChatUpdate| {
            if let ChatUpdate::Text(TextChange::Appended(s) | TextChange::Replaced(s)) = &update {
                streamed += s.len();
            }
            printer.update(&update);
        };
        let outcome = tokio::select! {
            outcome = chat.follow(
                &ack,
                &mut events,
                self.cursor.as_deref(),
                deadline,
                &abort,
                &mut observe,
            ) => outcome,
            _ = typed.leave_requested() => {
                interrupts.abort();
                self.printer.end_line();
                self.printer.note("leaving; the message was delivered (its reply is in the session's history)");
                return AfterSend::Leave;
            }
        };
        interrupts.abort();
        let (leave, queued) = typed.finish();
        self.typed_ahead.extend(queued);
        match outcome {
            Ok(outcome) => {
                self.printer.finish(&outcome, streamed);
                match outcome.state {
                    ChatState::Final => {}
                    ChatState::Aborted => self.printer.note("(aborted)"),
                    _ => self.printer.note(&format!(
                        "(the run failed: {})",
                        outcome.error.as_deref().unwrap_or("no detail")
                    )),
                }
            }
            Err(e) => {
                self.printer.end_line();
                let fix = e.fix().map(|f| format!(" — {f}")).unwrap_or_default();
                self.printer.note(&format!("{e}{fix}"));
            }
        }
        if leave {
            AfterSend::Leave
        } else {
            AfterSend::Stay
        }
    }
}

/// Whether the chat goes on after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterSend {
    Stay,
    Leave,
}

/// `5m ago`-style ages.
fn ago(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(5_000), "5s ago");
        assert_eq!(ago(125_000), "2m ago");
        assert_eq!(ago(7_200_000), "2h ago");
        assert_eq!(ago(3 * 86_400_000), "3d ago");
    }
}
