//! The reply stream: `chat` events (status, delta, final, aborted, error) assembled into the reply text, and `agent` events turned into one line of tool activity.
//!
//! Deltas come in two shapes depending on the gateway's code path: a suffix to append
//! (`deltaText`, coalesced deltas concatenated), or the whole text so far (`replace: true`,
//! usually with the cumulative `message`). The cumulative `message` wins when present;
//! otherwise `replace` decides. Deltas may be dropped when the client is slow, which the
//! cumulative forms repair.

use serde_json::Value;

/// The `state` of a `chat` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatState {
    /// Before any text: `phase` says what the run is doing.
    Status,
    Delta,
    Final,
    Aborted,
    Error,
    /// A state this version does not know (ignored, kept for `--json`).
    Other(String),
}

impl ChatState {
    fn parse(text: &str) -> Self {
        match text {
            "status" => Self::Status,
            "delta" => Self::Delta,
            "final" => Self::Final,
            "aborted" => Self::Aborted,
            "error" => Self::Error,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Whether the run is over.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Final | Self::Aborted | Self::Error)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Status => "status",
            Self::Delta => "delta",
            Self::Final => "final",
            Self::Aborted => "aborted",
            Self::Error => "error",
            Self::Other(s) => s,
        }
    }
}

/// One `chat` event payload, decoded leniently.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatEvent {
    pub run_id: String,
    pub session_key: String,
    /// Per-run counter, from 1.
    pub seq: u64,
    pub state: ChatState,
    pub delta_text: Option<String>,
    pub replace: bool,
    /// The cumulative assistant message (`{role, content, …}`), when sent.
    pub message: Option<Value>,
    pub error_message: Option<String>,
    pub stop_reason: Option<String>,
    /// `status` events: `preparing_context`, `starting_model`, …
    pub phase: Option<String>,
}

impl ChatEvent {
    /// Decodes a `chat` event payload; `None` when it lacks a run id or a state.
    pub fn parse(payload: &Value) -> Option<Self> {
        let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            run_id: text("runId")?,
            session_key: text("sessionKey").unwrap_or_default(),
            seq: payload.get("seq").and_then(Value::as_u64).unwrap_or(0),
            state: ChatState::parse(payload.get("state").and_then(Value::as_str)?),
            delta_text: text("deltaText"),
            replace: payload.get("replace").and_then(Value::as_bool) == Some(true),
            message: payload.get("message").filter(|m| !m.is_null()).cloned(),
            error_message: text("errorMessage"),
            stop_reason: text("stopReason"),
            phase: text("phase"),
        })
    }
}

/// The text of a transcript or event message: `content` as a string, or the `text` parts
/// of a content array joined.
pub fn message_text(message: &Value) -> Option<String> {
    match message.get("content")? {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join(""))
        }
        _ => None,
    }
}

/// How the shown text changed with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextChange {
    /// Only new text at the end: print this suffix.
    Appended(String),
    /// The text changed before its end (a correction): show the whole of it again.
    Replaced(String),
}

/// Assembles the reply of one run from its events.
#[derive(Debug, Clone, Default)]
pub struct ReplyAssembler {
    text: String,
    last_seq: u64,
    state: Option<ChatState>,
    error: Option<String>,
}

impl ReplyAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// The reply so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The terminal state, once the run is over.
    pub fn outcome(&self) -> Option<&ChatState> {
        self.state.as_ref().filter(|s| s.is_terminal())
    }

    /// The error or abort message of a run that did not end well.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Applies one event of this run and says how the text changed. Deltas older than one
    /// already applied (a replay) are ignored, as is anything after the end. The end itself
    /// is never taken for a replay: the real gateway sends `final` with the `seq` of the
    /// last delta.
    pub fn apply(&mut self, event: &ChatEvent) -> Option<TextChange> {
        if self.outcome().is_some() {
            return None;
        }
        if !event.state.is_terminal() && event.seq != 0 && event.seq <= self.last_seq {
            return None;
        }
        self.last_seq = self.last_seq.max(event.seq);
        match event.state {
            ChatState::Status | ChatState::Other(_) => return None,
            ChatState::Aborted | ChatState::Error => {
                self.error = event
                    .error_message
                    .clone()
                    .or_else(|| event.stop_reason.clone());
            }
            ChatState::Delta | ChatState::Final => {}
        }
        if event.state.is_terminal() {
            self.state = Some(event.state.clone());
        }
        let cumulative = event.message.as_ref().and_then(message_text);
        let next = match (cumulative, &event.delta_text) {
            (Some(full), _) => full,
            (None, Some(delta)) if event.replace => delta.clone(),
            (None, Some(delta)) => format!("{}{delta}", self.text),
            (None, None) => return None,
        };
        self.set_text(next)
    }

    /// Sets the whole text (e.g. from `chat.history` after a reconnect).
    pub fn set_text(&mut self, next: String) -> Option<TextChange> {
        if next == self.text {
            return None;
        }
        let change = match next.strip_prefix(self.text.as_str()) {
            Some(suffix) => TextChange::Appended(suffix.to_owned()),
            None => TextChange::Replaced(next.clone()),
        };
        self.text = next;
        Some(change)
    }

    /// Ends the run with what the history says (its events were missed).
    pub fn finish(&mut self, state: ChatState, error: Option<String>) {
        self.state = Some(state);
        if error.is_some() {
            self.error = error;
        }
    }
}

/// One dim line about what the agent is doing (a tool starting, a run phase), from an
/// `agent` event; `None` for events that need no line (text, usage, …).
pub fn activity_line(payload: &Value) -> Option<String> {
    let stream = payload.get("stream").and_then(Value::as_str)?;
    let data = payload.get("data").unwrap_or(&Value::Null);
    let text = |key: &str| data.get(key).and_then(Value::as_str);
    match stream {
        "tool" => {
            let name = text("name").or_else(|| text("toolName")).unwrap_or("tool");
            match text("phase") {
                Some("start") | None => {
                    let detail = text("title")
                        .or_else(|| text("summary"))
                        .or_else(|| data.pointer("/meta/title").and_then(Value::as_str))
                        .or_else(|| data.pointer("/args/command").and_then(Value::as_str))
                        .or_else(|| data.pointer("/args/path").and_then(Value::as_str))
                        .map(one_line);
                    Some(match detail {
                        Some(detail) => format!("⚙ {name}: {detail}"),
                        None => format!("⚙ {name}"),
                    })
                }
                Some("result") | Some("end") => {
                    let failed = data.get("isError").and_then(Value::as_bool) == Some(true);
                    Some(if failed {
                        format!("⚙ {name} failed")
                    } else {
                        format!("⚙ {name} done")
                    })
                }
                Some(_) => None,
            }
        }
        "run_status" => text("phase").map(|p| format!("… {}", p.replace('_', " "))),
        "lifecycle" => match text("phase") {
            Some("error") => Some(format!("✗ {}", text("error").unwrap_or("run failed"))),
            _ => None,
        },
        _ => None,
    }
}

fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 80 {
        let mut cut: String = flat.chars().take(79).collect();
        cut.push('…');
        cut
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: Value) -> ChatEvent {
        ChatEvent::parse(&value).unwrap()
    }

    #[test]
    fn suffix_deltas_append_and_coalesced_ones_concatenate() {
        let mut reply = ReplyAssembler::new();
        let change = reply.apply(&event(
            json!({"runId":"r","sessionKey":"s","seq":1,"state":"delta","deltaText":"Hel"}),
        ));
        assert_eq!(change, Some(TextChange::Appended("Hel".into())));
        let change = reply.apply(&event(
            json!({"runId":"r","sessionKey":"s","seq":2,"state":"delta","deltaText":"lo, wor"}),
        ));
        assert_eq!(change, Some(TextChange::Appended("lo, wor".into())));
        assert_eq!(reply.text(), "Hello, wor");
        assert!(reply.outcome().is_none());
    }

    #[test]
    fn full_text_replacements_and_cumulative_messages_win() {
        let mut reply = ReplyAssembler::new();
        // The chat-broadcast path: whole text, replace, and the cumulative message.
        reply.apply(&event(json!({"runId":"r","sessionKey":"s","seq":1,"state":"delta","deltaText":"stub","replace":true,
            "message":{"role":"assistant","content":[{"type":"text","text":"stub"}]}})));
        let change = reply.apply(&event(json!({"runId":"r","sessionKey":"s","seq":2,"state":"delta","deltaText":"stub reply","replace":true})));
        assert_eq!(change, Some(TextChange::Appended(" reply".into())));
        // A correction that does not extend the text is a replacement.
        let change = reply.apply(&event(json!({"runId":"r","sessionKey":"s","seq":3,"state":"delta","deltaText":"Stub reply","replace":true})));
        assert_eq!(change, Some(TextChange::Replaced("Stub reply".into())));
        // The final message is authoritative.
        let change = reply.apply(&event(json!({"runId":"r","sessionKey":"s","seq":4,"state":"final",
            "message":{"role":"assistant","content":[{"type":"text","text":"Stub reply: "},{"type":"text","text":"done"}]}})));
        assert_eq!(change, Some(TextChange::Appended(": done".into())));
        assert_eq!(reply.outcome(), Some(&ChatState::Final));
        // Nothing after the end, and no replays.
        assert_eq!(
            reply.apply(&event(
                json!({"runId":"r","sessionKey":"s","seq":5,"state":"delta","deltaText":"late"})
            )),
            None
        );
        assert_eq!(reply.text(), "Stub reply: done");
    }

    #[test]
    fn a_final_with_the_seq_of_the_last_delta_ends_the_run() {
        // As the real gateway sends them: the last delta and the final share seq 11.
        let mut reply = ReplyAssembler::new();
        reply.apply(&event(
            json!({"runId":"r","sessionKey":"s","seq":11,"state":"delta","deltaText":"stub reply",
            "message":{"role":"assistant","content":[{"type":"text","text":"stub reply"}]}}),
        ));
        reply.apply(&event(
            json!({"runId":"r","sessionKey":"s","seq":11,"state":"final","stopReason":"stop",
            "message":{"role":"assistant","content":[{"type":"text","text":"stub reply"}]}}),
        ));
        assert_eq!(reply.outcome(), Some(&ChatState::Final));
        assert_eq!(reply.text(), "stub reply");
    }

    #[test]
    fn a_dropped_delta_is_repaired_and_a_replay_is_ignored() {
        let mut reply = ReplyAssembler::new();
        reply.apply(&event(
            json!({"runId":"r","sessionKey":"s","seq":1,"state":"delta","deltaText":"a"}),
        ));
        reply.apply(&event(
            json!({"runId":"r","sessionKey":"s","seq":1,"state":"delta","deltaText":"a"}),
        ));
        assert_eq!(reply.text(), "a");
        // seq 2 was dropped (drop-if-slow); seq 3 carries the whole text.
        reply.apply(&event(json!({"runId":"r","sessionKey":"s","seq":3,"state":"delta","deltaText":"abc","replace":true})));
        assert_eq!(reply.text(), "abc");
    }

    #[test]
    fn aborted_and_error_end_the_run_with_their_reason() {
        let mut reply = ReplyAssembler::new();
        reply.apply(&event(
            json!({"runId":"r","sessionKey":"s","seq":1,"state":"delta","deltaText":"partial"}),
        ));
        reply.apply(&event(
            json!({"runId":"r","sessionKey":"s","seq":2,"state":"aborted","stopReason":"rpc"}),
        ));
        assert_eq!(reply.outcome(), Some(&ChatState::Aborted));
        assert_eq!(reply.error(), Some("rpc"));
        assert_eq!(reply.text(), "partial");

        let mut failed = ReplyAssembler::new();
        failed.apply(&event(
            json!({"runId":"r","sessionKey":"s","seq":2,"state":"error",
            "errorMessage":"No route-compatible authentication source is configured for openai."}),
        ));
        assert_eq!(failed.outcome(), Some(&ChatState::Error));
        assert!(failed.error().unwrap().contains("openai"));
    }

    #[test]
    fn status_events_and_bad_payloads() {
        let status = event(
            json!({"runId":"r","sessionKey":"s","seq":1,"state":"status","phase":"starting_model"}),
        );
        assert_eq!(status.phase.as_deref(), Some("starting_model"));
        let mut reply = ReplyAssembler::new();
        assert_eq!(reply.apply(&status), None);
        assert!(ChatEvent::parse(&json!({"state":"delta"})).is_none());
        assert_eq!(
            event(json!({"runId":"r","state":"weird"})).state,
            ChatState::Other("weird".into())
        );
    }

    #[test]
    fn message_text_reads_both_content_shapes() {
        assert_eq!(
            message_text(&json!({"content":"plain"})).as_deref(),
            Some("plain")
        );
        assert_eq!(
            message_text(&json!({"content":[{"type":"text","text":"a"},{"type":"image"},{"type":"text","text":"b"}]})).as_deref(),
            Some("ab")
        );
        assert_eq!(
            message_text(&json!({"content":[{"type":"toolCall"}]})),
            None
        );
        assert_eq!(message_text(&json!({})), None);
    }

    #[test]
    fn tool_activity_is_one_short_line() {
        let start = json!({"runId":"r","stream":"tool","data":{"phase":"start","name":"exec","args":{"command":"ls   -la\n/tmp"}}});
        assert_eq!(
            activity_line(&start).as_deref(),
            Some("⚙ exec: ls -la /tmp")
        );
        let done = json!({"runId":"r","stream":"tool","data":{"phase":"result","name":"exec","isError":true}});
        assert_eq!(activity_line(&done).as_deref(), Some("⚙ exec failed"));
        let phase = json!({"runId":"r","stream":"run_status","data":{"phase":"preparing_context"}});
        assert_eq!(
            activity_line(&phase).as_deref(),
            Some("… preparing context")
        );
        let text = json!({"runId":"r","stream":"assistant","data":{"text":"hi"}});
        assert_eq!(activity_line(&text), None);
        let long = json!({"stream":"tool","data":{"name":"read","args":{"path": "x".repeat(200)}}});
        assert!(activity_line(&long).unwrap().chars().count() < 100);
    }
}
