//! Feature plugin `health`: polls and follows the gateway's health and reports it as the macOS app does.
//!
//! What it does, once `clawlink up` starts it (it is on by default):
//!
//! - on every new gateway connection (each `hello-ok`), calls `health` at once as the
//!   readiness check, with `connect_timeout_ms`; then every `interval_secs`, with
//!   `timeout_ms` (and `probe`);
//! - consumes the `health` events the gateway pushes (about once a minute, and on changes)
//!   and its `heartbeat` events, without extra calls; on each connection it also asks
//!   `last-heartbeat` once, so the heartbeat line is not empty until the next beat;
//! - times every call ("Ping N ms"), keeps the last good snapshot apart from the last error
//!   (a blip does not blank the status), turns degraded at once when the connection is lost
//!   (with the connection's reason) and checks again as soon as it is back;
//! - publishes the app's states — ok (green), degraded (orange), linking needed (red),
//!   unknown (gray) — and summary lines ("linked · auth 12m", "Gateway healthy", …) through
//!   the feature status; the `--json` details are described on [`HealthFeature`].
//!
//! Settings (`[PROFILE.features.health]`; unknown keys are refused):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `interval_secs` | 60 | seconds between background `health` calls |
//! | `timeout_ms` | 15000 | timeout of background calls and of `refresh` |
//! | `connect_timeout_ms` | 5000 | timeout of the readiness call made on every (re)connect |
//! | `probe` | false | background calls send `{"probe": true}`: the gateway probes each channel live instead of answering from its ≤60 s cache |
//!
//! Control actions (another clawlink invocation, through the agent): `refresh` calls
//! `health` now (args: nothing, `{}` or `{"probe": true|false}`; default: the `probe`
//! setting) and answers the details afterwards — a failed refresh answers them too, degraded,
//! with `lastError`, and forgets the snapshot as the app does; `snapshot` answers the
//! current details without calling.
//!
//! The pure part — states, selection logic, summary and detail lines — is [`model`], which
//! the app's one-shot commands use directly.

pub mod model;
mod tracker;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use clawlink_core::feature::{Feature, FeatureContext, FeatureError, StatusReporter};
use clawlink_core::gateway::{GatewayClient, GatewayEvent, RequestOptions};
use clawlink_core::registry::FeatureDescriptor;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::tracker::Tracker;

/// The name profiles use (`[features.health]`).
pub const NAME: &str = "health";

/// `control` action: call `health` now and answer the details.
pub const ACTION_REFRESH: &str = "refresh";
/// `control` action: answer the current details without calling.
pub const ACTION_SNAPSHOT: &str = "snapshot";

/// The settings table as `clawlink features` shows it.
pub const EXAMPLE_CONFIG: &str = "\
interval_secs = 60          # background `health` call every N seconds
timeout_ms = 15000          # timeout of background calls and of an on-demand refresh
connect_timeout_ms = 5000   # timeout of the readiness call on every (re)connect
probe = false               # true: background calls ask the gateway to probe channels live (health {probe:true})";

clawlink_core::inventory::submit! {
    FeatureDescriptor {
        name: NAME,
        summary: "the gateway's health as the macOS app shows it: polled every minute and on reconnect, pushed events, ping, heartbeat",
        example_config: EXAMPLE_CONFIG,
        enabled_by_default: true,
        factory: build,
    }
}

fn build(settings: &Value) -> Result<Box<dyn Feature>, FeatureError> {
    Ok(Box::new(HealthFeature::new(HealthSettings::from_json(
        settings,
    )?)))
}

/// `[PROFILE.features.health]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    pub interval_secs: u64,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub probe: bool,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval_secs: 60,
            timeout_ms: 15_000,
            connect_timeout_ms: 5_000,
            probe: false,
        }
    }
}

impl HealthSettings {
    /// Reads the settings table (JSON `null` means all defaults); an unknown key or a bad
    /// value is an error naming it.
    pub fn from_json(settings: &Value) -> Result<Self, FeatureError> {
        let invalid = |message: String| FeatureError::invalid_settings(NAME, message);
        let parsed: Self = clawlink_core::feature::parse_settings(NAME, settings)?;
        if parsed.interval_secs == 0 {
            return Err(invalid("interval_secs must be at least 1".into()));
        }
        for (key, value) in [
            ("timeout_ms", parsed.timeout_ms),
            ("connect_timeout_ms", parsed.connect_timeout_ms),
        ] {
            if value < 100 {
                return Err(invalid(format!(
                    "{key} must be at least 100 (milliseconds), got {value}"
                )));
            }
        }
        Ok(parsed)
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// The running health feature.
///
/// Its status `details` (and what `control` answers) is one camelCase JSON object:
/// `state` (`ok|degraded|linking-needed|unknown`), `color`, `label`, `summary`, `detail`,
/// `pingMs`, `lastCheckAt`, `lastOkAt`, `lastEventAt`, `snapshotAt` (Unix ms),
/// `lastError {message, layer, fix, code, detail, at}`, `channels` ([`model::ChannelRow`]),
/// `heartbeat` (the gateway's heartbeat object plus `ageMs`, `receivedAt`, `line`),
/// `authSource`, `gateway` (the transport's endpoint), `connection {state, connected,
/// generation}` and `snapshot` (the last good raw snapshot).
pub struct HealthFeature {
    settings: HealthSettings,
    shared: Arc<Shared>,
}

/// What `run` and `control` share.
struct Shared {
    tracker: Mutex<Tracker>,
    /// Set while `run` runs: what `control` needs to call the gateway and publish.
    runtime: Mutex<Option<Runtime>>,
}

#[derive(Clone)]
struct Runtime {
    gateway: GatewayClient,
    status: StatusReporter,
}

/// Why a check is made: decides its timeout, probing, and what a failure forgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckKind {
    Readiness,
    Background,
    Manual { probe: bool },
}

impl HealthFeature {
    pub fn new(settings: HealthSettings) -> Self {
        Self {
            settings,
            shared: Arc::new(Shared {
                tracker: Mutex::new(Tracker::new(String::new())),
                runtime: Mutex::new(None),
            }),
        }
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.shared
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn runtime(&self) -> Option<Runtime> {
        self.shared
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_runtime(&self, runtime: Option<Runtime>) {
        *self
            .shared
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = runtime;
    }

    /// Publishes what the tracker says now.
    fn publish(&self) {
        let Some(runtime) = self.runtime() else {
            return;
        };
        let (state, summary, details) = self.tracker().status(SystemTime::now());
        runtime.status.set(state, summary, details);
    }

    /// One timed `health` call, recorded and published.
    async fn check(&self, gateway: &GatewayClient, kind: CheckKind) {
        let (timeout_ms, probe) = match kind {
            // The readiness call stays cheap: the cached snapshot, no live channel probes.
            CheckKind::Readiness => (self.settings.connect_timeout_ms, false),
            CheckKind::Background => (self.settings.timeout_ms, self.settings.probe),
            CheckKind::Manual { probe } => (self.settings.timeout_ms, probe),
        };
        let params = if probe {
            json!({"probe": true})
        } else {
            Value::Null
        };
        let options = RequestOptions {
            timeout: Some(Duration::from_millis(timeout_ms)),
            expect_final: false,
        };
        let started = Instant::now();
        let result = gateway.request_with("health", params, options).await;
        let took = started.elapsed();
        let now = SystemTime::now();
        {
            let mut tracker = self.tracker();
            match result {
                Ok(snapshot) => tracker.record_success(snapshot, took, now),
                Err(err) => {
                    tracing::debug!(error = %err, ?kind, "health check failed");
                    let manual = matches!(kind, CheckKind::Manual { .. });
                    tracker.record_failure(&err, manual, now)
                }
            }
        }
        self.publish();
    }

    /// Seeds the heartbeat line on a new connection. Best effort: `last-heartbeat` needs
    /// `operator.read`, and the `heartbeat` events carry the same object anyway.
    async fn fetch_last_heartbeat(&self, gateway: &GatewayClient) {
        let options = RequestOptions {
            timeout: Some(Duration::from_millis(self.settings.connect_timeout_ms)),
            expect_final: false,
        };
        match gateway
            .request_with("last-heartbeat", Value::Null, options)
            .await
        {
            Ok(beat) if beat.is_object() => {
                self.tracker().record_heartbeat(beat, SystemTime::now());
                self.publish();
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(error = %err, "last-heartbeat unavailable"),
        }
    }

    /// Consumes the events health cares about.
    fn on_event(&self, event: &GatewayEvent) {
        let now = SystemTime::now();
        match event.event.as_str() {
            "health" => self.tracker().record_event(event.payload.clone(), now),
            "heartbeat" => self.tracker().record_heartbeat(event.payload.clone(), now),
            _ => return,
        }
        self.publish();
    }

    /// The watch loop; returns when `shutdown` is cancelled.
    ///
    /// Checks run inside the loop, concurrently with watching the connection and the
    /// events, so a connection that goes silent during a slow check still shows at once.
    async fn watch(&self, ctx: &FeatureContext) {
        let gateway = &ctx.gateway;
        let mut states = gateway.state();
        let mut events = gateway.subscribe();
        let mut events_open = true;
        let mut state_changed = true;
        let mut checked_generation = 0;
        let mut next_poll: Option<Instant> = None;
        let mut in_flight: Option<InFlight<'_>> = None;
        loop {
            if state_changed {
                state_changed = false;
                let (connected, generation) = {
                    let state = states.borrow_and_update();
                    self.tracker().observe_connection(&state);
                    (state.is_connected(), state.generation)
                };
                self.publish();
                if !connected {
                    next_poll = None;
                } else if generation != checked_generation {
                    // A new connection: check at once (replacing a check still waiting on
                    // the old one), then keep the cadence from there.
                    checked_generation = generation;
                    next_poll = None;
                    in_flight = Some(Box::pin(async move {
                        self.check(gateway, CheckKind::Readiness).await;
                        self.fetch_last_heartbeat(gateway).await;
                    }));
                } else if next_poll.is_none() && in_flight.is_none() {
                    // Back on the same connection after a silence: check now.
                    next_poll = Some(Instant::now());
                }
            }
            let poll_at = next_poll.filter(|_| in_flight.is_none());
            let mut check_done = false;
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                changed = states.changed() => match changed {
                    Ok(()) => state_changed = true,
                    // The client is gone for good: nothing more to watch.
                    Err(_) => {
                        ctx.shutdown.cancelled().await;
                        return;
                    }
                },
                event = events.recv(), if events_open => match event {
                    Ok(event) => self.on_event(&event),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "health fell behind the gateway's events");
                    }
                    Err(RecvError::Closed) => events_open = false,
                },
                _ = finish(&mut in_flight), if in_flight.is_some() => check_done = true,
                _ = sleep_until(poll_at), if poll_at.is_some() => {
                    next_poll = None;
                    in_flight = Some(Box::pin(self.check(gateway, CheckKind::Background)));
                }
            }
            if check_done {
                in_flight = None;
                if states.borrow().is_connected() {
                    next_poll = Some(Instant::now() + self.settings.interval());
                }
            }
        }
    }

    fn refresh_probe(&self, args: &Value) -> Result<bool, FeatureError> {
        let usage = "pass no arguments, {} or {\"probe\": true}";
        let bad = |message: String| FeatureError {
            message,
            fix: Some(usage.into()),
        };
        match args {
            Value::Null => Ok(self.settings.probe),
            Value::Object(map) => {
                if let Some(key) = map.keys().find(|k| k.as_str() != "probe") {
                    return Err(bad(format!("health refresh: unknown argument {key:?}")));
                }
                match map.get("probe") {
                    None => Ok(self.settings.probe),
                    Some(Value::Bool(probe)) => Ok(*probe),
                    Some(other) => Err(bad(format!(
                        "health refresh: probe must be true or false, got {other}"
                    ))),
                }
            }
            other => Err(bad(format!(
                "health refresh: arguments must be a JSON object, got {other}"
            ))),
        }
    }
}

/// An automatic check (readiness or background) being made.
type InFlight<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Drives the check in flight to its end; pending forever when there is none (the select
/// guard prevents that case).
async fn finish(in_flight: &mut Option<InFlight<'_>>) {
    match in_flight {
        Some(check) => check.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; never called without a deadline (the select guard checks it).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[async_trait]
impl Feature for HealthFeature {
    async fn run(&self, ctx: FeatureContext) -> Result<(), FeatureError> {
        self.tracker()
            .set_endpoint(ctx.gateway.transport().describe());
        self.set_runtime(Some(Runtime {
            gateway: ctx.gateway.clone(),
            status: ctx.status.clone(),
        }));
        self.watch(&ctx).await;
        self.set_runtime(None);
        Ok(())
    }

    async fn control(&self, action: &str, args: Value) -> Result<Value, FeatureError> {
        match action {
            ACTION_REFRESH => {
                let probe = self.refresh_probe(&args)?;
                let runtime = self.runtime().ok_or_else(|| FeatureError {
                    message: "the health feature is not running".into(),
                    fix: Some(
                        "start the agent (`clawlink up`) with features.health enabled".into(),
                    ),
                })?;
                self.check(&runtime.gateway, CheckKind::Manual { probe })
                    .await;
                Ok(self.tracker().details_now())
            }
            ACTION_SNAPSHOT => Ok(self.tracker().details_now()),
            other => Err(FeatureError {
                message: format!("the health feature has no action {other:?}"),
                fix: Some(format!(
                    "use `{ACTION_REFRESH}` (optionally {{\"probe\": true}}) or `{ACTION_SNAPSHOT}`"
                )),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_override() {
        assert_eq!(
            HealthSettings::from_json(&Value::Null).unwrap(),
            HealthSettings::default()
        );
        let s = HealthSettings::from_json(&json!({"interval_secs": 30, "probe": true})).unwrap();
        assert_eq!(s.interval_secs, 30);
        assert!(s.probe);
        assert_eq!(s.timeout_ms, 15_000);
        assert_eq!(s.connect_timeout_ms, 5_000);
    }

    #[test]
    fn unknown_and_bad_settings_name_the_key() {
        let err = HealthSettings::from_json(&json!({"intervall_secs": 30})).unwrap_err();
        assert!(err.message.starts_with("features.health: "), "{err}");
        assert!(err.message.contains("intervall_secs"), "{err}");
        assert!(err.fix.unwrap().contains("clawlink features"));
        let err = HealthSettings::from_json(&json!({"timeout_ms": "soon"})).unwrap_err();
        assert!(err.message.contains("soon"), "{err}");
        let err = HealthSettings::from_json(&json!({"interval_secs": 0})).unwrap_err();
        assert!(err.message.contains("interval_secs"), "{err}");
        let err = HealthSettings::from_json(&json!({"connect_timeout_ms": 5})).unwrap_err();
        assert!(err.message.contains("connect_timeout_ms"), "{err}");
    }

    #[test]
    fn the_example_config_shows_every_setting_and_parses() {
        let defaults = HealthSettings::default();
        let mut table = serde_json::Map::new();
        for line in EXAMPLE_CONFIG.lines() {
            let (key, rest) = line.split_once('=').unwrap();
            let value = rest.split('#').next().unwrap().trim();
            let value: Value = serde_json::from_str(value).unwrap();
            table.insert(key.trim().to_owned(), value);
        }
        assert_eq!(table.len(), 4);
        assert_eq!(
            HealthSettings::from_json(&Value::Object(table)).unwrap(),
            defaults
        );
    }

    #[test]
    fn the_descriptor_is_registered() {
        let descriptor = clawlink_core::registry::feature(NAME).expect("registered");
        assert!(descriptor.enabled_by_default);
        assert!((descriptor.factory)(&json!({"probe": true})).is_ok());
        assert!((descriptor.factory)(&json!({"bogus": 1})).is_err());
    }

    #[test]
    fn refresh_arguments_are_checked() {
        let feature = HealthFeature::new(HealthSettings::default());
        assert_eq!(feature.refresh_probe(&Value::Null), Ok(false));
        assert_eq!(feature.refresh_probe(&json!({})), Ok(false));
        assert_eq!(feature.refresh_probe(&json!({"probe": true})), Ok(true));
        let err = feature.refresh_probe(&json!({"prob": true})).unwrap_err();
        assert!(err.message.contains("\"prob\""));
        assert!(feature.refresh_probe(&json!({"probe": "yes"})).is_err());
        assert!(feature.refresh_probe(&json!([1])).is_err());
    }

    #[tokio::test]
    async fn control_without_run_explains_itself() {
        let feature = HealthFeature::new(HealthSettings::default());
        let err = feature
            .control(ACTION_REFRESH, Value::Null)
            .await
            .unwrap_err();
        assert!(err.message.contains("not running"));
        let details = feature.control(ACTION_SNAPSHOT, Value::Null).await.unwrap();
        assert_eq!(details["state"], "unknown");
        let err = feature.control("reboot", Value::Null).await.unwrap_err();
        assert!(err.message.contains("\"reboot\""));
        assert!(err.fix.unwrap().contains("refresh"));
    }
}
