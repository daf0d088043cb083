//! Feature plugin `notify`: a second gateway connection with role `node` that answers `system.notify` with a desktop notification and a sound.
//!
//! Enabling it (`[PROFILE.features.notify] enabled = true`; it is off by default, because it
//! makes this machine a node agents can notify) makes `clawlink up`:
//!
//! - open a node connection over the same transport (its own stable device key, `node`;
//!   client id `openclaw-linux`/`openclaw-macos`, mode `node`, no scopes), declaring the
//!   command `system.notify` and a permission map with only what it can determine:
//!   `notifications` is whether a notification service is there (on Linux: a server owning
//!   or activating `org.freedesktop.Notifications` on the session bus); on macOS it is left
//!   out, as the app leaves out what it cannot know;
//! - get the node's command surface approved: with `auto_approve_own_node` (by default
//!   whenever the agent's operator connection holds `operator.pairing` + `operator.write`)
//!   the agent approves its own node's pending request — only a request whose node id is
//!   this node's device id — and reconnects the node; otherwise the status and the log say
//!   which command approves it;
//! - answer each `node.invoke.request` for `system.notify` ([`request`]: trimmed title and
//!   body, priority → urgency, `delivery` system / overlay / auto) through [`desktop`], play
//!   the requested sound ([`sound`]: macOS names and freedesktop names → a file, decoded in
//!   pure Rust, played with rodio in builds with the `sound` cargo feature, passed to the
//!   notification service as hints in any case), and reply with `node.invoke.result`: ok
//!   with what happened, or `INVALID_REQUEST`, `NOTIFICATIONS_UNAVAILABLE`,
//!   `NOT_AUTHORIZED`, `UNKNOWN_SOUND` (listing the names it knows).
//!
//! Settings (`[PROFILE.features.notify]`; unknown keys are refused):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `auto_approve_own_node` | when the operator connection may | approve this node's own command surface |
//! | `display_name` | the profile's client name | the node's name in `openclaw nodes list` |
//! | `delivery_timeout_ms` | 5000 | longest wait for the notification service (then `NOTIFICATIONS_UNAVAILABLE`) |
//! | `sound_theme` | `freedesktop` | the freedesktop sound theme searched first |
//! | `sound_dirs` | `[]` | directories searched before the themes for `NAME.oga/.ogg/.wav` |
//! | `play_sounds` | true | play requested sounds in-process (builds with the `sound` feature) |
//!
//! Control actions: `snapshot` (the status details) and `sounds` (the names this node
//! knows, and where the macOS names map to).

pub mod deliver;
pub mod desktop;
pub mod node;
pub mod request;
pub mod sound;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::feature::{Feature, FeatureContext, FeatureError, FeatureState, StatusReporter};
use clawlink_core::gateway::{ConnectionState, GatewayClient, Phase};
use clawlink_core::registry::FeatureDescriptor;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::deliver::Deliverer;
use crate::desktop::Availability;
use crate::node::{NodeSession, COMMAND, NODE_DEVICE};
use crate::request::InvokeError;
use crate::sound::{SoundLibrary, SoundPlayer, MACOS_SOUNDS};

/// The name profiles use (`[features.notify]`).
pub const NAME: &str = "notify";

/// `control` action: the status details.
pub const ACTION_SNAPSHOT: &str = "snapshot";
/// `control` action: the sound names this node knows.
pub const ACTION_SOUNDS: &str = "sounds";

/// The settings table as `clawlink features` shows it.
pub const EXAMPLE_CONFIG: &str = "\
# auto_approve_own_node = true         # approve this node's own command surface (default: when the agent's operator connection holds operator.pairing + operator.write)
# display_name = \"clawlink on laptop\"   # the node's name on the gateway (default: the profile's client name)
delivery_timeout_ms = 5000             # longest wait for the desktop notification service
sound_theme = \"freedesktop\"            # freedesktop sound theme searched for sound names (Linux)
sound_dirs = []                        # directories searched first for NAME.oga / .ogg / .wav
play_sounds = true                     # play requested sounds in-process (builds with the `sound` cargo feature)";

clawlink_core::inventory::submit! {
    FeatureDescriptor {
        name: NAME,
        summary: "this machine as a gateway node: system.notify shows desktop notifications with sound (macOS sound names work)",
        example_config: EXAMPLE_CONFIG,
        enabled_by_default: false,
        factory: build,
    }
}

fn build(settings: &Value) -> Result<Box<dyn Feature>, FeatureError> {
    Ok(Box::new(NotifyFeature::new(NotifySettings::from_json(
        settings,
    )?)))
}

/// `[PROFILE.features.notify]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// `None`: approve when the operator connection holds the scopes.
    pub auto_approve_own_node: Option<bool>,
    pub display_name: Option<String>,
    pub delivery_timeout_ms: u64,
    pub sound_theme: String,
    pub sound_dirs: Vec<PathBuf>,
    pub play_sounds: bool,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            auto_approve_own_node: None,
            display_name: None,
            delivery_timeout_ms: 5_000,
            sound_theme: sound::FALLBACK_THEME.into(),
            sound_dirs: Vec::new(),
            play_sounds: true,
        }
    }
}

impl NotifySettings {
    /// Reads the settings table (JSON `null` means all defaults); an unknown key or a bad
    /// value is an error naming it.
    pub fn from_json(settings: &Value) -> Result<Self, FeatureError> {
        let invalid = |message: String| FeatureError::invalid_settings(NAME, message);
        let parsed: Self = clawlink_core::feature::parse_settings(NAME, settings)?;
        if !(100..=60_000).contains(&parsed.delivery_timeout_ms) {
            return Err(invalid(format!(
                "delivery_timeout_ms must be between 100 and 60000 (milliseconds), got {}",
                parsed.delivery_timeout_ms
            )));
        }
        if parsed.sound_theme.trim().is_empty() || parsed.sound_theme.contains('/') {
            return Err(invalid(format!(
                "sound_theme must be a theme name (a directory under …/sounds), got {:?}",
                parsed.sound_theme
            )));
        }
        if parsed
            .display_name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(invalid("display_name must not be empty".into()));
        }
        Ok(parsed)
    }
}

/// The feature.
pub struct NotifyFeature {
    settings: NotifySettings,
    shared: Arc<Shared>,
}

/// What `run`, the node session, the invoke tasks and `control` share: the status view.
pub struct Shared {
    view: Mutex<View>,
    status: Mutex<Option<StatusReporter>>,
    player: Option<Arc<dyn SoundPlayer>>,
}

/// The node as the status shows it.
#[derive(Default)]
struct View {
    node_id: Option<String>,
    display_name: Option<String>,
    /// The node socket's state label, `None` before it starts.
    connection: Option<String>,
    connected: bool,
    /// Why the node cannot start (no host services, …).
    blocked: Option<String>,
    approval: Option<String>,
    pending_request: Option<String>,
    commands: Vec<String>,
    permissions: Option<bool>,
    availability: Option<Availability>,
    /// What an operator must do, when something waits on one.
    hint: Option<String>,
    approved_requests: Vec<String>,
    delivered: u64,
    refused: u64,
    last: Option<Value>,
}

impl Shared {
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_reporter(&self, reporter: Option<StatusReporter>) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = reporter;
    }

    /// Publishes the current view.
    pub fn publish(&self) {
        let reporter = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(reporter) = reporter {
            let (state, summary) = self.summary();
            reporter.set(state, summary, self.details());
        }
    }

    fn summary(&self) -> (FeatureState, String) {
        let view = self.view();
        if let Some(blocked) = &view.blocked {
            return (FeatureState::Degraded, blocked.clone());
        }
        let Some(connection) = &view.connection else {
            return (FeatureState::Starting, "starting the node".into());
        };
        let notifications = match view.permissions {
            Some(true) => "notifications on",
            Some(false) => "no notification service",
            None => "notification centre",
        };
        if !view.connected {
            let state = if connection.starts_with("connecting") {
                FeatureState::Starting
            } else {
                FeatureState::Degraded
            };
            let hint = view
                .hint
                .as_deref()
                .map(|h| format!(" — {h}"))
                .unwrap_or_default();
            return (state, format!("node {connection}{hint}"));
        }
        match view.approval.as_deref() {
            Some("approved") if view.commands.iter().any(|c| c == COMMAND) => (
                FeatureState::Running,
                format!("node ready: {COMMAND} · {notifications}"),
            ),
            Some(state) if state.starts_with("pending") => (
                FeatureState::Degraded,
                format!(
                    "node awaits approval of {COMMAND}{}",
                    view.hint
                        .as_deref()
                        .map(|h| format!(" — {h}"))
                        .unwrap_or_default()
                ),
            ),
            Some(state) => (
                FeatureState::Degraded,
                format!(
                    "node connected, approval {state}{}",
                    view.hint
                        .as_deref()
                        .map(|h| format!(" — {h}"))
                        .unwrap_or_default()
                ),
            ),
            None => (
                FeatureState::Running,
                format!(
                    "node connected · {notifications}{}",
                    view.hint
                        .as_deref()
                        .map(|h| format!(" — {h}"))
                        .unwrap_or_default()
                ),
            ),
        }
    }

    fn details(&self) -> Value {
        let view = self.view();
        json!({
            "nodeId": view.node_id,
            "displayName": view.display_name,
            "connection": view.connection,
            "connected": view.connected,
            "approval": view.approval,
            "pendingRequestId": view.pending_request,
            "commands": view.commands,
            "permissions": view.permissions.map(|p| json!({"notifications": p})),
            "notifications": view.availability.as_ref().map(Availability::to_json),
            "hint": view.hint,
            "selfApproved": view.approved_requests,
            "soundPlayer": self.player.as_ref().map(|p| p.name()),
            "delivered": view.delivered,
            "refused": view.refused,
            "last": view.last,
        })
    }

    pub(crate) fn observe_node(&self, state: &ConnectionState) {
        let mut view = self.view();
        view.connected = state.is_connected();
        view.connection = Some(state.label());
        if state.is_connected() {
            // The device is paired (we got a hello): a device-pairing hint is stale.
            if view
                .hint
                .as_deref()
                .is_some_and(|h| h.contains("devices approve"))
            {
                view.hint = None;
            }
        } else if matches!(state.phase, Phase::Closed) {
            view.approval = None;
        }
    }

    pub(crate) fn observe_describe(&self, described: &Value) {
        let mut view = self.view();
        view.approval = described
            .get("approvalState")
            .and_then(Value::as_str)
            .map(str::to_owned);
        view.pending_request = described
            .get("pendingRequestId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        view.commands = described
            .get("commands")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if view.approval.as_deref() == Some("approved") {
            view.hint = None;
        }
    }

    pub(crate) fn pairing_unknown(&self, why: String) {
        tracing::warn!("{why}");
        self.view().hint = Some(why);
    }

    pub(crate) fn awaiting_approval(&self, request_id: &str, why: &str) {
        let hint = format!(
            "{why}: approve it with `clawlink nodes approve {request_id}` (or `openclaw nodes approve {request_id}`) from an operator with operator.pairing"
        );
        let mut view = self.view();
        if view.hint.as_deref() != Some(hint.as_str()) {
            tracing::warn!(
                request = request_id,
                "this machine's node awaits approval of {COMMAND}: {hint}"
            );
        }
        view.pending_request = Some(request_id.to_owned());
        view.hint = Some(hint);
    }

    pub(crate) fn device_pairing_pending(&self, request_id: Option<&str>) {
        let command = match request_id {
            Some(id) => format!("`openclaw devices approve {id}`"),
            None => "`openclaw devices list`, then `openclaw devices approve <requestId>`".into(),
        };
        let hint =
            format!("the node's device awaits pairing approval on the gateway host: run {command}");
        let mut view = self.view();
        if view.hint.as_deref() != Some(hint.as_str()) {
            tracing::warn!("{hint}");
            view.hint = Some(hint);
        }
    }

    pub(crate) fn self_approved(&self, request_id: &str) {
        let mut view = self.view();
        view.approved_requests.push(request_id.to_owned());
        view.hint = None;
    }

    pub(crate) fn record_invoke(&self, command: &str, outcome: &Result<Value, InvokeError>) {
        {
            let mut view = self.view();
            match outcome {
                Ok(payload) => {
                    view.delivered += 1;
                    view.last = Some(json!({"command": command, "ok": true, "result": payload}));
                }
                Err(error) => {
                    view.refused += 1;
                    view.last = Some(json!({"command": command, "ok": false,
                        "error": {"code": error.code, "message": error.message}}));
                }
            }
        }
        self.publish();
    }
}

impl NotifyFeature {
    pub fn new(settings: NotifySettings) -> Self {
        Self {
            settings,
            shared: Arc::new(Shared {
                view: Mutex::new(View::default()),
                status: Mutex::new(None),
                player: sound::default_player(),
            }),
        }
    }

    fn library(&self) -> SoundLibrary {
        SoundLibrary::from_environment(&self.settings.sound_theme, self.settings.sound_dirs.clone())
    }

    /// Waits for shutdown with a status that says why the node cannot start.
    async fn blocked(&self, ctx: &FeatureContext, why: String) {
        tracing::warn!("notify: {why}");
        self.shared.view().blocked = Some(why);
        self.shared.publish();
        ctx.shutdown.cancelled().await;
    }

    fn sounds(&self) -> Value {
        let library = self.library();
        let mac: Vec<Value> = MACOS_SOUNDS
            .iter()
            .map(|(name, _)| {
                let resolved = library.resolve(name).ok();
                json!({
                    "name": name,
                    "plays": resolved.as_ref().map(|r| r.name.clone()),
                    "file": resolved.and_then(|r| r.file).map(|f| f.display().to_string()),
                })
            })
            .collect();
        json!({
            "platform": format!("{:?}", library.platform()).to_lowercase(),
            "known": library.known_names(),
            "macos": mac,
            "player": self.shared.player.as_ref().map(|p| p.name()),
        })
    }
}

#[async_trait]
impl Feature for NotifyFeature {
    async fn run(&self, ctx: FeatureContext) -> Result<(), FeatureError> {
        self.shared.set_reporter(Some(ctx.status.clone()));
        self.shared.publish();
        let options = match ctx.services.client_options(NODE_DEVICE) {
            Ok(options) => options,
            Err(error) => {
                let fix = error.fix.map(|f| format!(" ({f})")).unwrap_or_default();
                self.blocked(
                    &ctx,
                    format!("cannot open the node connection: {}{fix}", error.message),
                )
                .await;
                self.shared.set_reporter(None);
                return Ok(());
            }
        };
        let timeout = Duration::from_millis(self.settings.delivery_timeout_ms);
        let deliverer = Arc::new(Deliverer {
            notifier: desktop::native(timeout),
            library: self.library(),
            player: self.shared.player.clone(),
            play_sounds: self.settings.play_sounds,
        });
        let availability = tokio::select! {
            availability = deliverer.notifier.probe() => availability,
            _ = ctx.shutdown.cancelled() => {
                self.shared.set_reporter(None);
                return Ok(());
            }
        };
        if let Availability::Unavailable { reason } = &availability {
            tracing::warn!("notify: {reason}; the node reports notifications = false");
        }
        let options = node::node_options(
            options,
            self.settings.display_name.as_deref(),
            availability.permission(),
        );
        let node_id = options.identity.id().to_owned();
        {
            let mut view = self.shared.view();
            view.node_id = Some(node_id.clone());
            view.display_name = options.display_name.clone();
            view.permissions = availability.permission();
            view.availability = Some(availability);
        }
        tracing::info!(node = %node_id, "starting the notify node connection");
        let node = GatewayClient::start(ctx.gateway.transport().clone(), options);
        NodeSession {
            ctx: &ctx,
            shared: &self.shared,
            deliverer,
            auto_approve: self.settings.auto_approve_own_node,
            node,
            node_id,
        }
        .run()
        .await;
        self.shared.set_reporter(None);
        Ok(())
    }

    async fn control(&self, action: &str, _args: Value) -> Result<Value, FeatureError> {
        match action {
            ACTION_SNAPSHOT => Ok(self.shared.details()),
            ACTION_SOUNDS => Ok(self.sounds()),
            other => Err(FeatureError {
                message: format!("the notify feature has no action {other:?}"),
                fix: Some(format!("use `{ACTION_SNAPSHOT}` or `{ACTION_SOUNDS}`")),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Value {
        let mut table = serde_json::Map::new();
        for line in EXAMPLE_CONFIG.lines() {
            let line = line.trim_start_matches("# ");
            let (key, rest) = line.split_once('=').unwrap();
            let value = rest.split('#').next().unwrap().trim();
            table.insert(key.trim().to_owned(), serde_json::from_str(value).unwrap());
        }
        Value::Object(table)
    }

    #[test]
    fn the_example_config_shows_every_setting() {
        let table = example();
        assert_eq!(table.as_object().unwrap().len(), 6);
        let parsed = NotifySettings::from_json(&table).unwrap();
        assert_eq!(parsed.auto_approve_own_node, Some(true));
        assert_eq!(parsed.display_name.as_deref(), Some("clawlink on laptop"));
        let defaults = NotifySettings {
            auto_approve_own_node: Some(true),
            display_name: Some("clawlink on laptop".into()),
            ..NotifySettings::default()
        };
        assert_eq!(parsed, defaults);
    }

    #[test]
    fn unknown_and_bad_settings_name_the_key() {
        assert_eq!(
            NotifySettings::from_json(&Value::Null).unwrap(),
            NotifySettings::default()
        );
        let err = NotifySettings::from_json(&json!({"play_sound": true})).unwrap_err();
        assert!(err.message.starts_with("features.notify: "), "{err}");
        assert!(err.message.contains("play_sound"), "{err}");
        let err = NotifySettings::from_json(&json!({"delivery_timeout_ms": 5})).unwrap_err();
        assert!(err.message.contains("delivery_timeout_ms"), "{err}");
        let err = NotifySettings::from_json(&json!({"sound_theme": "../x"})).unwrap_err();
        assert!(err.message.contains("sound_theme"), "{err}");
        let err = NotifySettings::from_json(&json!({"display_name": " "})).unwrap_err();
        assert!(err.message.contains("display_name"), "{err}");
    }

    #[test]
    fn the_descriptor_is_registered_and_off_by_default() {
        let descriptor = clawlink_core::registry::feature(NAME).expect("registered");
        assert!(!descriptor.enabled_by_default);
        assert!((descriptor.factory)(&json!({"play_sounds": false})).is_ok());
        assert!((descriptor.factory)(&json!({"bogus": 1})).is_err());
    }

    #[tokio::test]
    async fn control_answers_snapshot_and_sounds_and_refuses_the_rest() {
        let feature = NotifyFeature::new(NotifySettings::default());
        let snapshot = feature.control(ACTION_SNAPSHOT, Value::Null).await.unwrap();
        assert_eq!(snapshot["connected"], false);
        assert_eq!(snapshot["commands"], json!([]));
        let sounds = feature.control(ACTION_SOUNDS, Value::Null).await.unwrap();
        assert_eq!(sounds["macos"].as_array().unwrap().len(), 14);
        assert!(sounds["known"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "Glass"));
        let err = feature.control("ring", Value::Null).await.unwrap_err();
        assert!(err.message.contains("\"ring\""), "{err}");
    }
}
