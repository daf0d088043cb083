//! Forwarding one command to the gateway's `agent` method as the macOS app does, and following the run to its final answer.
//!
//! The params are the app's (`VoiceWakeForwarder` + `GatewayConnection.sendAgent`): the
//! machine-hint line, a blank line and the command as `message`; the session key (the main
//! session from hello-ok unless configured — never omitted, or the run lands in a throwaway
//! `agent:main:explicit:<id>` session); `thinking`; `deliver` and `channel`; a fresh
//! idempotency key (which is also the run id); and `voiceWakeTrigger`, whose presence lets
//! the gateway apply its `voicewake.routing` rules. Absent optionals are omitted (the
//! gateway's schema is closed; the app's `to: ""` is the same as no `to`).
//!
//! Better than the app: before sending, the session's `thinkingOptions` (`sessions.describe`)
//! are checked, and a thinking level the session's model does not offer is left out instead
//! of failing the whole run ("Thinking level "low" is not supported for …").
//!
//! `agent` answers twice on one request id — accepted, then final — and the client waits for
//! the final one; "accepted" is noticed from the run's own `agent`/`chat` events.

use std::time::Duration;

use clawlink_core::gateway::{GatewayClient, GatewayError, RequestOptions};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::settings::VoicewakeSettings;

/// The session key used when neither the settings nor hello-ok name one (the app's default;
/// the gateway canonicalises it to the default agent's main session).
pub const FALLBACK_SESSION_KEY: &str = "main";

/// How long a command heard before the first connection waits for it.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// How long the pre-send lookups may take before the command is sent without them.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The app's hint line, naming the machine that heard the command.
pub fn hint_line(machine: &str) -> String {
    let machine = machine.trim();
    let machine = if machine.is_empty() {
        "this computer"
    } else {
        machine
    };
    format!(
        "User talked via voice recognition on {machine} - repeat prompt first + remember some words might be incorrectly transcribed."
    )
}

/// The `message` the app sends: the hint line, a blank line, the command.
pub fn message(machine: &str, command: &str) -> String {
    format!("{}\n\n{}", hint_line(machine), command.trim())
}

/// This host's name, for the hint line.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_owned()
}

/// Everything one `agent` call carries, decided before sending.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub run_id: String,
    pub session_key: String,
    /// The thinking level sent (None: none sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Why the configured thinking level was left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_dropped: Option<String>,
    pub deliver: bool,
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    pub message: String,
}

impl Plan {
    /// The `agent` params (closed schema: absent optionals omitted).
    pub fn params(&self, to: Option<&str>) -> Value {
        let mut params = Map::new();
        params.insert("message".into(), json!(self.message));
        params.insert("sessionKey".into(), json!(self.session_key));
        if let Some(thinking) = &self.thinking {
            params.insert("thinking".into(), json!(thinking));
        }
        params.insert("deliver".into(), json!(self.deliver));
        params.insert("channel".into(), json!(self.channel));
        if let Some(to) = to.filter(|t| !t.is_empty()) {
            params.insert("to".into(), json!(to));
        }
        params.insert("idempotencyKey".into(), json!(self.run_id));
        if let Some(trigger) = &self.trigger {
            params.insert("voiceWakeTrigger".into(), json!(trigger));
        }
        Value::Object(params)
    }
}

/// How a forwarded command ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum Outcome {
    /// The run finished (`status: "ok"`).
    Ok {
        #[serde(skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
    },
    /// The gateway refused the call or the run failed.
    Error {
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
}

impl Outcome {
    fn from_error(error: &GatewayError) -> Self {
        let code = match error {
            GatewayError::Rpc { error, .. } => Some(error.code.clone()),
            GatewayError::Timeout { .. } => Some("TIMEOUT".into()),
            GatewayError::Disconnected { .. } => Some("DISCONNECTED".into()),
            _ => None,
        };
        Outcome::Error {
            message: error.to_string(),
            code,
        }
    }
}

/// Progress reported while a run goes on.
pub trait Progress: Send {
    /// The gateway started the run (its first event for our run id), in `session_key`.
    fn accepted(&mut self, session_key: Option<String>);
}

/// Decides the call: session key, thinking level (checked against the session's model),
/// delivery, the message with the hint line, a fresh run id.
pub async fn plan(
    gateway: &GatewayClient,
    settings: &VoicewakeSettings,
    machine: &str,
    trigger: Option<&str>,
    command: &str,
) -> Plan {
    if settings.session_key.is_none() && gateway.hello().is_none() {
        // The main session key comes with hello-ok: wait for the first connection.
        if let Err(error) = gateway.wait_connected(CONNECT_WAIT).await {
            tracing::debug!(%error, "not connected yet; using the default session key");
        }
    }
    let session_key = settings
        .session_key
        .clone()
        .or_else(|| {
            gateway
                .hello()
                .and_then(|h| h.main_session_key().map(str::to_owned))
        })
        .unwrap_or_else(|| FALLBACK_SESSION_KEY.to_owned());
    let wanted = Some(settings.thinking.trim())
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let (thinking, thinking_dropped) = match wanted {
        None => (None, None),
        Some(level) => match thinking_options(gateway, &session_key).await {
            Some(options) if !options.iter().any(|o| o == &level) => {
                let why = format!(
                    "the session's model does not offer thinking {level:?} (it offers: {})",
                    options.join(", ")
                );
                (None, Some(why))
            }
            _ => (Some(level), None),
        },
    };
    Plan {
        run_id: uuid::Uuid::new_v4().to_string(),
        session_key,
        thinking,
        thinking_dropped,
        deliver: settings.effective_deliver(),
        channel: settings.channel.clone(),
        trigger: trigger.map(str::to_owned),
        message: message(machine, command),
    }
}

/// The thinking levels the session's model offers (`sessions.describe`, else the defaults
/// of `sessions.list` for a session that does not exist yet); None when unknown.
async fn thinking_options(gateway: &GatewayClient, session_key: &str) -> Option<Vec<String>> {
    let options = RequestOptions {
        timeout: Some(LOOKUP_TIMEOUT),
        expect_final: false,
    };
    let pick = |value: &Value, pointer: &str| -> Option<Vec<String>> {
        let list = value.pointer(pointer)?.as_array()?;
        let levels: Vec<String> = list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        (!levels.is_empty()).then_some(levels)
    };
    match gateway
        .request_with("sessions.describe", json!({"key": session_key}), options)
        .await
    {
        Ok(described) => {
            if let Some(levels) = pick(&described, "/session/thinkingOptions") {
                return Some(levels);
            }
        }
        Err(error) => tracing::debug!(%error, session_key, "sessions.describe failed"),
    }
    match gateway
        .request_with("sessions.list", json!({"limit": 1}), options)
        .await
    {
        Ok(list) => pick(&list, "/defaults/thinkingOptions"),
        Err(error) => {
            tracing::debug!(%error, "sessions.list failed; sending the configured thinking level");
            None
        }
    }
}

/// Sends the planned call and waits (at most `timeout`) for its final answer, reporting
/// acceptance on the way.
pub async fn send(
    gateway: &GatewayClient,
    plan: &Plan,
    to: Option<&str>,
    timeout: Duration,
    progress: &mut dyn Progress,
) -> Outcome {
    // Subscribe first: the run's first event may come before the acceptance response.
    let mut events = gateway.subscribe();
    let call = gateway.request_with(
        "agent",
        plan.params(to),
        RequestOptions {
            timeout: Some(timeout),
            expect_final: true,
        },
    );
    tokio::pin!(call);
    let mut accepted = false;
    let mut events_open = true;
    loop {
        tokio::select! {
            result = &mut call => {
                return match result {
                    Ok(payload) => {
                        if !accepted {
                            progress.accepted(payload.get("sessionKey").and_then(Value::as_str).map(str::to_owned));
                        }
                        final_outcome(&payload)
                    }
                    Err(error) => Outcome::from_error(&error),
                };
            }
            event = events.recv(), if events_open && !accepted => match event {
                Ok(event) if matches!(event.event.as_str(), "agent" | "chat")
                    && event.payload.get("runId").and_then(Value::as_str) == Some(plan.run_id.as_str()) =>
                {
                    accepted = true;
                    progress.accepted(
                        event.payload.get("sessionKey").and_then(Value::as_str).map(str::to_owned),
                    );
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => events_open = false,
            },
        }
    }
}

/// The final `agent` payload: `status` "ok", or an error the gateway reported as a result.
fn final_outcome(payload: &Value) -> Outcome {
    let summary = payload
        .get("summary")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match payload.get("status").and_then(Value::as_str) {
        Some("ok") | None => Outcome::Ok { summary },
        Some(other) => Outcome::Error {
            message: summary.unwrap_or_else(|| format!("the run ended with status {other:?}")),
            code: Some(other.to_uppercase()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_for(trigger: Option<&str>, thinking: Option<&str>) -> Plan {
        Plan {
            run_id: "r-1".into(),
            session_key: "agent:main:main".into(),
            thinking: thinking.map(str::to_owned),
            thinking_dropped: None,
            deliver: true,
            channel: "last".into(),
            trigger: trigger.map(str::to_owned),
            message: message("vm", "what's the weather?"),
        }
    }

    #[test]
    fn the_message_is_the_apps_hint_line_then_the_command() {
        assert_eq!(
            message("studio", "  open the pod bay doors "),
            "User talked via voice recognition on studio - repeat prompt first + remember some words might be incorrectly transcribed.\n\nopen the pod bay doors"
        );
        assert!(hint_line(" ").contains("on this computer - repeat"));
    }

    #[test]
    fn params_carry_what_the_app_sends_and_omit_what_is_absent() {
        let params = plan_for(Some("computer"), Some("low")).params(None);
        assert_eq!(
            params,
            json!({
                "message": message("vm", "what's the weather?"),
                "sessionKey": "agent:main:main",
                "thinking": "low",
                "deliver": true,
                "channel": "last",
                "idempotencyKey": "r-1",
                "voiceWakeTrigger": "computer",
            })
        );
        let params = plan_for(None, None).params(Some(""));
        assert!(params.get("thinking").is_none());
        assert!(params.get("voiceWakeTrigger").is_none());
        assert!(params.get("to").is_none());
        assert!(!params.to_string().contains("null"));
        assert_eq!(
            plan_for(None, None).params(Some("+15551234"))["to"],
            "+15551234"
        );
    }

    #[test]
    fn final_payloads_become_outcomes() {
        assert_eq!(
            final_outcome(&json!({"runId": "r", "status": "ok", "summary": "completed"})),
            Outcome::Ok {
                summary: Some("completed".into())
            }
        );
        assert!(matches!(
            final_outcome(&json!({"runId": "r", "status": "timeout", "summary": "took too long"})),
            Outcome::Error { code: Some(c), .. } if c == "TIMEOUT"
        ));
        let json = serde_json::to_value(Outcome::Ok { summary: None }).unwrap();
        assert_eq!(json, json!({"status": "ok"}));
    }

    #[test]
    fn the_host_name_is_known() {
        assert!(!host_name().is_empty());
    }
}
