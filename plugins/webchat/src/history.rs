//! `chat.history` results: the transcript lines to paint, and what the history says about one run (its user message, its reply, whether it still runs).

use serde_json::Value;

use crate::stream::message_text;

/// One transcript message, reduced to what a terminal shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    /// `user`, `assistant`, `system`, `tool`, …
    pub role: String,
    pub text: String,
    /// The run that wrote it (assistant messages), or the key it was sent with (user
    /// messages, without the `:user` suffix).
    pub run_id: Option<String>,
    pub timestamp_ms: Option<u64>,
}

/// The idempotency key a transcript message was sent with: the gateway stores a user
/// message of `chat.send` with `<key>:user`.
fn user_key(message: &Value) -> Option<&str> {
    message
        .get("idempotencyKey")
        .or_else(|| message.pointer("/__openclaw/idempotencyKey"))
        .and_then(Value::as_str)
        .and_then(|k| k.strip_suffix(":user"))
}

/// Whether the transcript holds the gateway's summary of queued messages it dropped at its
/// queue cap (`[Queue overflow] Dropped N messages due to cap`), naming `key` among them: the
/// gateway's own verdict on that message, final.
pub fn dropped_at_queue_cap(result: &Value, key: &str) -> bool {
    messages(result).iter().any(|m| {
        role(m) == "user"
            && m.get("idempotencyKey")
                .or_else(|| m.pointer("/__openclaw/idempotencyKey"))
                .and_then(Value::as_str)
                .is_some_and(|k| {
                    k.starts_with("followup-overflow:") && k.split(':').any(|part| part == key)
                })
    })
}

/// The run an assistant message belongs to.
fn assistant_run(message: &Value) -> Option<&str> {
    message
        .pointer("/__openclaw/runId")
        .or_else(|| message.get("runId"))
        .and_then(Value::as_str)
}

/// Why an assistant message ended. The partial reply of an aborted run is stored with
/// `stopReason: "stop"` and the abort in `openclawAbort`, so that one wins.
fn stop_reason(message: &Value) -> Option<&str> {
    if message
        .pointer("/openclawAbort/aborted")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Some("aborted");
    }
    message.get("stopReason").and_then(Value::as_str)
}

fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

/// The displayable lines of a `chat.history` result (or of its `kind: "delta"` form).
pub fn lines(result: &Value) -> Vec<HistoryLine> {
    messages(result)
        .iter()
        .filter_map(|m| {
            let text = message_text(m)?;
            let role = role(m).to_owned();
            let run_id = if role == "user" {
                user_key(m)
            } else {
                assistant_run(m)
            }
            .map(str::to_owned);
            Some(HistoryLine {
                role,
                text,
                run_id,
                timestamp_ms: m.get("timestamp").and_then(Value::as_u64),
            })
        })
        .collect()
}

fn messages(result: &Value) -> &[Value] {
    result
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// What one history page says about the run started with idempotency key `run_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInHistory {
    /// How many user messages carry the key (exactly once is what delivery promises).
    pub user_messages: usize,
    /// How many assistant messages the run wrote.
    pub replies: usize,
    /// The text of the run's last assistant message.
    pub reply_text: Option<String>,
    /// The stop reason of that message (`stop`, `aborted`, `error`, …).
    pub stop_reason: Option<String>,
    /// The run is still going (`inFlightRun`, or listed in `sessionInfo.activeRunIds`).
    pub running: bool,
    /// The in-flight run's text so far.
    pub live_text: Option<String>,
}

impl RunInHistory {
    /// Reads a `chat.history` result (full page or delta).
    pub fn find(result: &Value, run_id: &str) -> Self {
        let mut found = Self {
            user_messages: 0,
            replies: 0,
            reply_text: None,
            stop_reason: None,
            running: false,
            live_text: None,
        };
        for m in messages(result) {
            match role(m) {
                "user" if user_key(m) == Some(run_id) => found.user_messages += 1,
                "assistant" if assistant_run(m) == Some(run_id) => {
                    found.replies += 1;
                    if let Some(text) = message_text(m) {
                        found.reply_text = Some(text);
                    }
                    found.stop_reason = stop_reason(m).map(str::to_owned);
                }
                _ => {}
            }
        }
        let in_flight = result
            .get("inFlightRun")
            .filter(|r| r.get("runId").and_then(Value::as_str) == Some(run_id));
        let active = result
            .pointer("/sessionInfo/activeRunIds")
            .and_then(Value::as_array)
            .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(run_id)));
        found.running = in_flight.is_some() || active;
        found.live_text = in_flight
            .and_then(|r| r.get("text"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        found
    }

    /// The run is over and its reply is in the transcript.
    pub fn finished_with_reply(&self) -> bool {
        !self.running && self.replies > 0
    }
}

/// The cursor for the next incremental read, when the gateway gave one.
pub fn delta_cursor(result: &Value) -> Option<String> {
    result
        .get("deltaCursor")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Whether an incremental read told us to start over (`kind: "reset"`).
pub fn is_reset(result: &Value) -> bool {
    result.get("kind").and_then(Value::as_str) == Some("reset")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shape the real gateway answered (trimmed).
    fn live_page() -> Value {
        json!({
            "sessionKey": "agent:main:explore1",
            "messages": [
                {"__openclaw": {"idempotencyKey": "k1:user", "seq": 1}, "content": "hello explore",
                 "idempotencyKey": "k1:user", "role": "user", "timestamp": 1795550800704u64},
                {"__openclaw": {"runId": "k1", "seq": 2}, "api": "openai-completions",
                 "content": [{"text": "stub reply: hello explore", "type": "text"}],
                 "role": "assistant", "stopReason": "stop", "timestamp": 1795550812033u64},
                {"__openclaw": {"idempotencyKey": "k2:user"}, "content": "second", "role": "user"}
            ],
            "inFlightRun": {"runId": "k2", "text": "stub re", "startedAt": 1},
            "deltaCursor": "eyJ9",
            "sessionInfo": {"activeRunIds": ["k2"]}
        })
    }

    #[test]
    fn a_finished_run_shows_its_user_message_and_reply() {
        let run = RunInHistory::find(&live_page(), "k1");
        assert_eq!(run.user_messages, 1);
        assert_eq!(run.replies, 1);
        assert_eq!(run.reply_text.as_deref(), Some("stub reply: hello explore"));
        assert_eq!(run.stop_reason.as_deref(), Some("stop"));
        assert!(run.finished_with_reply());
    }

    #[test]
    fn a_running_run_is_in_flight_with_its_live_text() {
        let run = RunInHistory::find(&live_page(), "k2");
        assert_eq!(run.user_messages, 1);
        assert_eq!(run.replies, 0);
        assert!(run.running);
        assert_eq!(run.live_text.as_deref(), Some("stub re"));
        assert!(!run.finished_with_reply());
        let absent = RunInHistory::find(&live_page(), "k3");
        assert_eq!(
            (absent.user_messages, absent.replies, absent.running),
            (0, 0, false)
        );
    }

    #[test]
    fn an_aborted_partial_reply_reads_as_aborted() {
        // As the real gateway stores it after `chat.abort`: stopReason "stop", the abort
        // beside it.
        let page = json!({"messages": [
            {"__openclaw": {"idempotencyKey": "k1:user"}, "content": "slow", "role": "user"},
            {"__openclaw": {"runId": "k1"}, "content": [{"text": "stub repl", "type": "text"}],
             "openclawAbort": {"aborted": true, "origin": "rpc", "runId": "k1"},
             "role": "assistant", "stopReason": "stop"}
        ]});
        let run = RunInHistory::find(&page, "k1");
        assert_eq!(run.stop_reason.as_deref(), Some("aborted"));
        assert_eq!(run.reply_text.as_deref(), Some("stub repl"));
    }

    #[test]
    fn lines_carry_roles_text_and_keys() {
        let lines = lines(&live_page());
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].role, "user");
        assert_eq!(lines[0].run_id.as_deref(), Some("k1"));
        assert_eq!(lines[1].role, "assistant");
        assert_eq!(lines[1].run_id.as_deref(), Some("k1"));
        assert_eq!(lines[1].timestamp_ms, Some(1795550812033));
        assert_eq!(delta_cursor(&live_page()).as_deref(), Some("eyJ9"));
        assert!(is_reset(&json!({"kind": "reset"})));
        assert!(!is_reset(&live_page()));
    }
}
