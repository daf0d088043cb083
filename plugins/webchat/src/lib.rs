//! Feature plugin `webchat`: the gateway's chat over its WebSocket (history, send, streamed replies, abort) with an exactly-once outbox.
//!
//! The library ([`client`], [`outbox`], [`stream`], [`history`], [`session`], [`attach`])
//! is what `clawlink chat` uses. The feature, run by `clawlink up`, delivers what waits in
//! the outbox whenever the gateway is connected, so a message typed while the connection
//! was down (by `clawlink chat`, which gave up waiting, or through the `send` action) is
//! delivered once when it comes back. A message stays in the outbox until the session's
//! transcript shows it, not only until `chat.send` is acknowledged: the gateway queues a
//! message that arrives while a reply runs, in memory, and a gateway restart loses that
//! queue; such a message is sent again, once, to the new gateway process.
//!
//! Settings (`[PROFILE.features.webchat]`; unknown keys are refused):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `drain_interval_secs` | 10 | how often the outbox is looked at while connected (also on every reconnect and on `send`/`drain`) |
//! | `ack_timeout_ms` | 30000 | how long one `chat.send` may wait for its acknowledgement before it is sent again |
//!
//! Control actions: `outbox` lists the messages waiting for this gateway (`{pending:
//! [{idempotencyKey, sessionKey, preview, createdAtMs, attempts, lastError}]}`); `send`
//! (`{"message": "…", "sessionKey"?: "…"}`) puts a message in the outbox and delivers it
//! at once if connected (answers its `idempotencyKey`); `drain` delivers what waits now.

pub mod attach;
pub mod client;
pub mod error;
pub mod history;
pub mod outbox;
pub mod session;
pub mod stream;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::feature::{Feature, FeatureContext, FeatureError, FeatureState, StatusReporter};
use clawlink_core::registry::FeatureDescriptor;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::{ChatClient, Settled};
use crate::outbox::{Outbox, OutboxEntry};
use clawlink_core::time::now_unix_millis;

pub use crate::error::ChatError;
/// How a caller asks [`client::ChatClient::follow`] to abort the run.
pub use tokio_util::sync::CancellationToken;

/// The name profiles use (`[features.webchat]`).
pub const NAME: &str = "webchat";

/// `control` action: list what waits in the outbox.
pub const ACTION_OUTBOX: &str = "outbox";
/// `control` action: queue a message and deliver it.
pub const ACTION_SEND: &str = "send";
/// `control` action: deliver what waits now.
pub const ACTION_DRAIN: &str = "drain";

/// The outbox folder inside the feature's state directory.
pub const OUTBOX_DIR: &str = "outbox";

/// The settings table as `clawlink features` shows it.
pub const EXAMPLE_CONFIG: &str = "\
drain_interval_secs = 10    # look at the outbox every N seconds while connected (and on every reconnect)
ack_timeout_ms = 30000      # one chat.send waits this long for its acknowledgement, then goes out again";

clawlink_core::inventory::submit! {
    FeatureDescriptor {
        name: NAME,
        summary: "web chat over the gateway socket: `clawlink chat`, and delivery of messages queued while disconnected, exactly once",
        example_config: EXAMPLE_CONFIG,
        enabled_by_default: true,
        factory: build,
    }
}

fn build(settings: &Value) -> Result<Box<dyn Feature>, FeatureError> {
    Ok(Box::new(WebchatFeature::new(WebchatSettings::from_json(
        settings,
    )?)))
}

/// `[PROFILE.features.webchat]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebchatSettings {
    pub drain_interval_secs: u64,
    pub ack_timeout_ms: u64,
}

impl Default for WebchatSettings {
    fn default() -> Self {
        Self {
            drain_interval_secs: 10,
            ack_timeout_ms: 30_000,
        }
    }
}

impl WebchatSettings {
    /// Reads the settings table (JSON `null`: all defaults); an unknown key or a bad value
    /// is an error naming it.
    pub fn from_json(settings: &Value) -> Result<Self, FeatureError> {
        let invalid = |message: String| FeatureError::invalid_settings(NAME, message);
        let parsed: Self = clawlink_core::feature::parse_settings(NAME, settings)?;
        if parsed.drain_interval_secs == 0 {
            return Err(invalid("drain_interval_secs must be at least 1".into()));
        }
        if parsed.ack_timeout_ms < 100 {
            return Err(invalid(format!(
                "ack_timeout_ms must be at least 100 (milliseconds), got {}",
                parsed.ack_timeout_ms
            )));
        }
        Ok(parsed)
    }
}

/// What the feature reports in `clawlink status --json` (details): `pending` (messages
/// waiting for this gateway), `delivered` (acknowledged since start), `lastDeliveredAt`
/// (Unix ms), `lastError`, `outbox` (the directory).
pub struct WebchatFeature {
    settings: WebchatSettings,
    shared: Arc<Shared>,
}

struct Shared {
    runtime: Mutex<Option<Runtime>>,
    stats: Mutex<Stats>,
    /// Wakes the drain loop (`send`, `drain`).
    wake: Notify,
}

#[derive(Clone)]
struct Runtime {
    chat: ChatClient,
    outbox: Outbox,
    status: StatusReporter,
}

#[derive(Debug, Default)]
struct Stats {
    delivered: u64,
    last_delivered_at: Option<u64>,
    last_error: Option<String>,
}

impl WebchatFeature {
    pub fn new(settings: WebchatSettings) -> Self {
        Self {
            settings,
            shared: Arc::new(Shared {
                runtime: Mutex::new(None),
                stats: Mutex::new(Stats::default()),
                wake: Notify::new(),
            }),
        }
    }

    fn runtime(&self) -> Option<Runtime> {
        self.shared
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running(&self) -> Result<Runtime, FeatureError> {
        self.runtime().ok_or_else(|| FeatureError {
            message: "the webchat feature is not running (no outbox)".into(),
            fix: Some(
                "start the agent (`clawlink up`) with features.webchat enabled and a writable data directory".into(),
            ),
        })
    }

    /// Publishes the feature status from the outbox and the counters.
    fn publish(&self, runtime: &Runtime) {
        let pending = runtime
            .outbox
            .list(Some(&runtime.chat.gateway_key()))
            .map(|l| l.len());
        let stats = self.stats();
        let (state, summary) = match (&pending, &stats.last_error) {
            (Err(e), _) => (FeatureState::Degraded, format!("outbox unreadable: {e}")),
            (Ok(0), _) => (
                FeatureState::Running,
                format!("outbox empty · {} delivered", stats.delivered),
            ),
            (Ok(n), Some(error)) => (
                FeatureState::Degraded,
                format!("{n} message(s) waiting in the outbox · last attempt: {error}"),
            ),
            (Ok(n), None) => (
                FeatureState::Running,
                format!("{n} message(s) waiting in the outbox"),
            ),
        };
        runtime.status.set(
            state,
            summary,
            json!({
                "pending": pending.as_ref().ok(),
                "delivered": stats.delivered,
                "lastDeliveredAt": stats.last_delivered_at,
                "lastError": stats.last_error,
                "outbox": runtime.outbox.dir(),
            }),
        );
    }

    /// Settles every unclaimed entry of this gateway, oldest first (sends what is not yet
    /// acknowledged, removes what the transcript shows); stops at the first entry that
    /// cannot be delivered now (the connection is down again). Returns whether entries
    /// still wait to be seen in the transcript.
    async fn drain(&self, runtime: &Runtime) -> bool {
        let entries = match runtime.outbox.list(Some(&runtime.chat.gateway_key())) {
            Ok(entries) => entries,
            Err(e) => {
                self.stats().last_error = Some(e.to_string());
                self.publish(runtime);
                return false;
            }
        };
        let ack_timeout = Duration::from_millis(self.settings.ack_timeout_ms);
        let mut unrecorded = false;
        let mut transcripts = std::collections::HashMap::new();
        // Sessions with a message at the gateway not yet in their transcript: the next one
        // waits here, on disk, instead of in the gateway's queue, which a restart loses
        // and which drops messages past its cap. One at a time per session keeps order too.
        let mut busy_sessions = std::collections::HashSet::new();
        for mut entry in entries {
            if !runtime.chat.gateway().state().borrow().is_connected() {
                break;
            }
            let session = match &entry.acknowledged {
                Some(acknowledged) => acknowledged.session_key.clone(),
                None => runtime
                    .chat
                    .session_defaults()
                    .canonical(entry.session_key.as_deref()),
            };
            if entry.acknowledged.is_none() && busy_sessions.contains(&session) {
                unrecorded = true;
                continue;
            }
            // Another process (a `clawlink chat` waiting for its reply) is on it.
            let Ok(Some(_claim)) = runtime.outbox.try_claim(&entry.idempotency_key) else {
                continue;
            };
            let deadline = Instant::now() + ack_timeout * 2;
            match runtime
                .chat
                .settle(&mut entry, ack_timeout, deadline, &mut transcripts)
                .await
            {
                Ok(Settled::Acknowledged(ack)) => {
                    tracing::info!(key = %entry.idempotency_key, status = %ack.status, attempts = ack.attempts, "outbox message acknowledged");
                    self.stats().last_error = None;
                    unrecorded = true;
                    busy_sessions.insert(session);
                }
                Ok(Settled::Waiting) => {
                    unrecorded = true;
                    busy_sessions.insert(session);
                }
                Ok(Settled::DroppedByGateway) => {
                    self.stats().last_error = Some(format!(
                        "the gateway dropped message {} at its queue cap (its transcript has a summary)",
                        entry.idempotency_key
                    ));
                }
                Ok(Settled::Recorded) => {
                    tracing::info!(key = %entry.idempotency_key, "outbox message recorded in the transcript");
                    let mut stats = self.stats();
                    stats.delivered += 1;
                    stats.last_delivered_at = Some(now_unix_millis());
                    stats.last_error = None;
                }
                Err(ChatError::Rejected(e)) => {
                    tracing::warn!(key = %entry.idempotency_key, error = %e, "the gateway refused an outbox message; dropped");
                    self.stats().last_error =
                        Some(format!("message {} refused: {e}", entry.idempotency_key));
                }
                Err(e) => {
                    tracing::info!(key = %entry.idempotency_key, error = %e, "outbox message not delivered yet");
                    self.stats().last_error = Some(e.to_string());
                    self.publish(runtime);
                    break;
                }
            }
            self.publish(runtime);
        }
        self.publish(runtime);
        unrecorded
    }

    fn pending_json(runtime: &Runtime) -> Result<Value, FeatureError> {
        let entries = runtime
            .outbox
            .list(Some(&runtime.chat.gateway_key()))
            .map_err(|e| FeatureError {
                message: e.to_string(),
                fix: e.fix(),
            })?;
        Ok(json!({ "pending": entries.iter().map(entry_json).collect::<Vec<_>>() }))
    }

    fn send_args(args: &Value) -> Result<(String, Option<String>), FeatureError> {
        let usage = || FeatureError {
            message: "webchat send: arguments must be {\"message\": \"…\", \"sessionKey\"?: \"…\"}"
                .into(),
            fix: Some(
                "pass the text as `message`; `sessionKey` defaults to the main session".into(),
            ),
        };
        let Value::Object(map) = args else {
            return Err(usage());
        };
        if let Some(key) = map
            .keys()
            .find(|k| k.as_str() != "message" && k.as_str() != "sessionKey")
        {
            return Err(FeatureError {
                message: format!("webchat send: unknown argument {key:?}"),
                ..usage()
            });
        }
        let message = map
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(usage)?;
        let session_key = match map.get("sessionKey") {
            None | Some(Value::Null) => None,
            Some(Value::String(key)) => Some(key.clone()),
            Some(_) => return Err(usage()),
        };
        Ok((message.to_owned(), session_key))
    }
}

/// One outbox entry as listings show it (never the attachment contents).
pub fn entry_json(entry: &OutboxEntry) -> Value {
    json!({
        "idempotencyKey": entry.idempotency_key,
        "sessionKey": entry.session_key,
        "preview": entry.preview(80),
        "attachments": entry.attachments.iter().map(|a| json!({"fileName": a.file_name, "sizeBytes": a.size_bytes})).collect::<Vec<_>>(),
        "createdAtMs": entry.created_at_ms,
        "attempts": entry.attempts,
        "lastError": entry.last_error,
        "gateway": entry.gateway,
        // Acknowledged and waiting to show in the transcript (not sent again unless the
        // gateway restarts before recording it).
        "acknowledgedAtMs": entry.acknowledged.as_ref().map(|a| a.at_ms),
    })
}

/// How soon the outbox looks again at messages acknowledged but not yet in the transcript.
const UNRECORDED_RECHECK: Duration = Duration::from_secs(2);

#[async_trait]
impl Feature for WebchatFeature {
    async fn run(&self, ctx: FeatureContext) -> Result<(), FeatureError> {
        let outbox = ctx.services.state_dir(NAME).and_then(|dir| {
            Outbox::open(dir.join(OUTBOX_DIR)).map_err(|e| FeatureError {
                message: e.to_string(),
                fix: e.fix(),
            })
        });
        let outbox = match outbox {
            Ok(outbox) => outbox,
            Err(e) => {
                // Without a place to keep messages there is nothing to deliver; chat over
                // `clawlink chat` still works. Not a failure of the agent.
                ctx.status.set(
                    FeatureState::Degraded,
                    format!("no outbox: {}", e.message),
                    json!({"lastError": e.message}),
                );
                ctx.shutdown.cancelled().await;
                return Ok(());
            }
        };
        let runtime = Runtime {
            chat: ChatClient::new(ctx.gateway.clone(), Some(outbox.clone())),
            outbox,
            status: ctx.status.clone(),
        };
        *self
            .shared
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(runtime.clone());
        self.publish(&runtime);
        let mut states = ctx.gateway.state();
        // A ticker, not a sleep per pass: while reconnecting the state changes every few
        // seconds, and a sleep restarted on each change would never fire.
        let mut ticker =
            tokio::time::interval(Duration::from_secs(self.settings.drain_interval_secs));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let connected = states.borrow_and_update().is_connected();
            // Messages acknowledged but not yet in the transcript are looked at again soon.
            let mut recheck = None;
            if connected {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    unrecorded = self.drain(&runtime) => {
                        recheck = unrecorded.then_some(UNRECORDED_RECHECK);
                    }
                }
            } else {
                // What waits (typed by `clawlink chat` meanwhile) shows in the status even
                // while the gateway is away.
                self.publish(&runtime);
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                changed = states.changed() => if changed.is_err() {
                    ctx.shutdown.cancelled().await;
                    break;
                },
                _ = self.shared.wake.notified() => {}
                _ = ticker.tick() => {}
                _ = tokio::time::sleep(recheck.unwrap_or(Duration::MAX)), if recheck.is_some() => {}
            }
        }
        *self
            .shared
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    async fn control(&self, action: &str, args: Value) -> Result<Value, FeatureError> {
        match action {
            ACTION_OUTBOX => Self::pending_json(&self.running()?),
            ACTION_SEND => {
                let (message, session_key) = Self::send_args(&args)?;
                let runtime = self.running()?;
                let entry = runtime
                    .chat
                    .compose(session_key, message, Vec::new())
                    .map_err(|e| FeatureError {
                        message: e.to_string(),
                        fix: e.fix(),
                    })?;
                self.shared.wake.notify_one();
                Ok(json!({"queued": true, "idempotencyKey": entry.idempotency_key}))
            }
            ACTION_DRAIN => {
                let runtime = self.running()?;
                self.shared.wake.notify_one();
                Self::pending_json(&runtime)
            }
            other => Err(FeatureError {
                message: format!("the webchat feature has no action {other:?}"),
                fix: Some(format!(
                    "use `{ACTION_OUTBOX}`, `{ACTION_SEND}` ({{\"message\": \"…\"}}) or `{ACTION_DRAIN}`"
                )),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_override_and_refusals() {
        assert_eq!(
            WebchatSettings::from_json(&Value::Null).unwrap(),
            WebchatSettings::default()
        );
        let s = WebchatSettings::from_json(&json!({"drain_interval_secs": 3})).unwrap();
        assert_eq!(s.drain_interval_secs, 3);
        assert_eq!(s.ack_timeout_ms, 30_000);
        let err = WebchatSettings::from_json(&json!({"drain_intervall": 3})).unwrap_err();
        assert!(err.message.contains("drain_intervall"), "{err}");
        assert!(err.message.starts_with("features.webchat: "), "{err}");
        assert!(WebchatSettings::from_json(&json!({"drain_interval_secs": 0})).is_err());
        assert!(WebchatSettings::from_json(&json!({"ack_timeout_ms": 5})).is_err());
    }

    #[test]
    fn the_example_config_shows_every_setting_with_its_default() {
        let mut table = serde_json::Map::new();
        for line in EXAMPLE_CONFIG.lines() {
            let (key, rest) = line.split_once('=').unwrap();
            let value: Value =
                serde_json::from_str(rest.split('#').next().unwrap().trim()).unwrap();
            table.insert(key.trim().to_owned(), value);
        }
        assert_eq!(
            WebchatSettings::from_json(&Value::Object(table)).unwrap(),
            WebchatSettings::default()
        );
    }

    #[test]
    fn the_descriptor_is_registered() {
        let descriptor = clawlink_core::registry::feature(NAME).expect("registered");
        assert!(descriptor.enabled_by_default);
        assert!((descriptor.factory)(&json!({"ack_timeout_ms": 1000})).is_ok());
        assert!((descriptor.factory)(&json!({"bogus": 1})).is_err());
    }

    #[test]
    fn send_arguments_are_checked() {
        assert_eq!(
            WebchatFeature::send_args(&json!({"message": "hi"})).unwrap(),
            ("hi".to_owned(), None)
        );
        assert_eq!(
            WebchatFeature::send_args(&json!({"message": "hi", "sessionKey": "main"})).unwrap(),
            ("hi".to_owned(), Some("main".to_owned()))
        );
        let err = WebchatFeature::send_args(&json!({"message": "hi", "to": "x"})).unwrap_err();
        assert!(err.message.contains("\"to\""), "{err}");
        assert!(WebchatFeature::send_args(&json!({"message": "  "})).is_err());
        assert!(WebchatFeature::send_args(&json!("hi")).is_err());
    }

    #[tokio::test]
    async fn control_without_run_explains_itself() {
        let feature = WebchatFeature::new(WebchatSettings::default());
        let err = feature
            .control(ACTION_OUTBOX, Value::Null)
            .await
            .unwrap_err();
        assert!(err.message.contains("not running"), "{err}");
        let err = feature.control("reboot", Value::Null).await.unwrap_err();
        assert!(err.message.contains("\"reboot\""));
        assert!(err.fix.unwrap().contains(ACTION_SEND));
    }
}
