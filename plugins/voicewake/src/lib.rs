//! Feature plugin `voicewake`: trigger phrases shared with the gateway, transcripts from a pluggable recognizer, commands forwarded to the gateway's `agent`.
//!
//! What it does, once enabled (`[PROFILE.features.voicewake] enabled = true`; it is off by
//! default, like the app's Voice Wake):
//!
//! - **Triggers are the gateway's** global state: `voicewake.get` on every (re)connect, the
//!   `voicewake.changed` event kept live, and a local mirror (a file in the feature's private
//!   state directory, per gateway) used while disconnected; before anything is known, the
//!   gateway's defaults. `voicewake.routing.get` / `voicewake.routing.changed` are followed
//!   for the status (the gateway applies the routes itself).
//! - **Transcripts come from a source** ([`source`]): `stdin`, a `fifo`, or a supervised
//!   recognizer `command` whose stdout lines are transcripts — plain text, or JSON lines
//!   `{"text", "final"?, "confidence"?}` (Vosk's `{"partial"}` too).
//! - **Detection** ([`trigger`], [`detector`]) has the app's semantics: case, punctuation and
//!   diacritics ignored; the trigger starts the utterance (or anywhere, `trigger_anywhere`);
//!   the command is what follows; "trigger only" waits `command_window_ms` (5 s) for the next
//!   final transcript; `debounce_ms` (350 ms) after a send; partial lines never send.
//! - **Forwarding** ([`forward`]) calls `agent` as the app does and waits for the final
//!   answer; each detection's progress (awaiting-command, sending, accepted, ok, error,
//!   no-command) is logged (target `voicewake.forward`) and kept for the status and the
//!   control actions.
//! - Optional chimes on trigger and on send ([`chime`]): a configured player command.
//!
//! Control actions (through the agent's control socket): `recent` (args: nothing, or
//! `{"since": VERSION, "limit": N}`) answers the last detections and their outcomes;
//! `send` (`{"text": "…", "trigger"?: "…"}`) forwards one transcript now, as push-to-talk
//! does — a leading trigger is taken off and sent as `voiceWakeTrigger` — and answers the
//! detection once the run finished (or after 45 s, still accepted); `triggers` answers the
//! triggers in use and where they came from.

pub mod chime;
mod control;
pub mod detector;
pub mod forward;
mod gateway_state;
pub mod journal;
pub mod mirror;
pub mod push_to_talk;
pub mod settings;
pub mod source;
pub mod transcript;
pub mod trigger;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use clawlink_core::feature::{Feature, FeatureContext, FeatureError, FeatureState, StatusReporter};
use clawlink_core::gateway::GatewayClient;
use clawlink_core::registry::FeatureDescriptor;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::chime::{Chime, ChimeKind, CommandChime};
use crate::control::{recent_args, send_args};
use crate::detector::{Decision, Detector, Ignored, Timing};
pub use crate::gateway_state::triggers_of;
use crate::gateway_state::{fetch, Fetched};
use crate::journal::{Journal, Stage};
use crate::mirror::Mirror;
pub use crate::push_to_talk::{send_once, split_push_to_talk};
pub use crate::settings::VoicewakeSettings;
use crate::source::{SourceEvent, SourceStatus};
use crate::transcript::Transcript;
use crate::trigger::TriggerSet;
use clawlink_core::time::unix_millis;

/// The name profiles use (`[features.voicewake]`).
pub const NAME: &str = "voicewake";

/// `control` action: the last detections and their outcomes.
pub const ACTION_RECENT: &str = "recent";
/// `control` action: forward one transcript now.
pub const ACTION_SEND: &str = "send";
/// `control` action: the triggers in use.
pub const ACTION_TRIGGERS: &str = "triggers";

/// The gateway's defaults, used until it (or the mirror) says otherwise.
pub const DEFAULT_TRIGGERS: [&str; 3] = ["openclaw", "claude", "computer"];

/// How long `send` through the control socket waits for the run's final answer (the
/// control socket's own limit is 60 s).
const SEND_WAIT: Duration = Duration::from_secs(45);
/// Timeout of `voicewake.get` / `voicewake.routing.get` (the app's 10 s).
const TRIGGER_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings table as `clawlink features` shows it.
pub const EXAMPLE_CONFIG: &str = r#"source = "stdin"                # stdin | fifo | command | none
# fifo_path = "/run/user/1000/clawlink-voice.fifo"     # source = "fifo": any program writes transcript lines here
# command = ["python3", "/opt/recognize.py", "--json"] # source = "command": stdout lines are transcripts
restart = "on-failure"          # command: always | on-failure | never (exit 0 = finished)
restart_on_trigger_change = true  # command gets the triggers in CLAWLINK_VOICEWAKE_TRIGGERS (JSON)
trigger_anywhere = false        # true: a trigger anywhere in the utterance fires, not only at its start
command_window_ms = 5000        # "trigger only": wait this long for the command
debounce_ms = 350               # transcripts dropped this long after a send
min_confidence = 0.0            # drop final transcripts with a lower confidence
# session_key = "agent:main:main"   # default: the main session from the gateway's hello-ok
thinking = "low"                # the app's level; left out when the session's model does not offer it
deliver = true                  # deliver the reply to `channel` (never for webchat)
channel = "last"
# to = "+15551234567"           # recipient on `channel`, when it needs one
# machine_name = "studio"       # named in the hint line; default: this host's name
run_timeout_secs = 600          # how long to wait for a run's final answer
trigger_chime = []              # e.g. ["paplay", "/usr/share/sounds/freedesktop/stereo/message.oga"]
send_chime = []"#;

clawlink_core::inventory::submit! {
    FeatureDescriptor {
        name: NAME,
        summary: "Voice Wake: the gateway's trigger phrases, transcripts from a pluggable recognizer (stdin, FIFO, command), commands forwarded to the gateway's agent",
        example_config: EXAMPLE_CONFIG,
        enabled_by_default: false,
        factory: build,
    }
}

fn build(settings: &Value) -> Result<Box<dyn Feature>, FeatureError> {
    Ok(Box::new(VoicewakeFeature::new(
        VoicewakeSettings::from_json(settings)?,
    )))
}

/// Where the triggers in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TriggersFrom {
    Default,
    Mirror,
    Gateway,
}

impl TriggersFrom {
    fn as_str(self) -> &'static str {
        match self {
            TriggersFrom::Default => "default",
            TriggersFrom::Mirror => "mirror",
            TriggersFrom::Gateway => "gateway",
        }
    }
}

/// Counters for the status.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    lines: u64,
    partial: u64,
    without_trigger: u64,
    debounced: u64,
    low_confidence: u64,
    bad_lines: u64,
}

/// Everything the status and the control actions read.
struct State {
    triggers: Vec<String>,
    trigger_set: TriggerSet,
    triggers_from: TriggersFrom,
    triggers_at: Option<u64>,
    routing: Option<Value>,
    journal: Journal,
    stats: Stats,
    last_heard: Option<Value>,
    /// The detection whose command is awaited ("trigger only").
    awaiting: Option<u64>,
    connected: bool,
    connection: String,
}

impl State {
    fn new() -> Self {
        let defaults: Vec<String> = DEFAULT_TRIGGERS.iter().map(|t| t.to_string()).collect();
        Self {
            trigger_set: TriggerSet::new(&defaults),
            triggers: defaults,
            triggers_from: TriggersFrom::Default,
            triggers_at: None,
            routing: None,
            journal: Journal::default(),
            stats: Stats::default(),
            last_heard: None,
            awaiting: None,
            connected: false,
            connection: "not started".into(),
        }
    }

    fn set_triggers(&mut self, triggers: Vec<String>, from: TriggersFrom, at: Option<u64>) -> bool {
        let changed = self.triggers != triggers;
        self.trigger_set = TriggerSet::new(&triggers);
        self.triggers = triggers;
        self.triggers_from = from;
        self.triggers_at = at;
        changed
    }
}

/// What `run` lends `control` and the forwarding tasks.
#[derive(Clone)]
struct Runtime {
    gateway: GatewayClient,
    status: StatusReporter,
    machine: String,
    source: Arc<Mutex<SourceStatus>>,
}

struct Shared {
    settings: Arc<VoicewakeSettings>,
    state: Mutex<State>,
    runtime: Mutex<Option<Runtime>>,
    /// Forwarding tasks, aborted when the feature stops.
    tasks: Mutex<Vec<AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running voicewake feature.
///
/// Its status `details` (camelCase JSON): `source` ([`SourceStatus`]), `triggers`,
/// `triggersFrom` (`gateway|mirror|default`), `triggersUpdatedAt`, `routing` (the gateway's
/// routing config), `sessionKey`, `awaitingCommand` (the trigger whose command is awaited),
/// `inFlight`, `stats`, `lastHeard {text, final, at}`, `version` and `recent` (the last
/// [`Detection`]s).
pub struct VoicewakeFeature {
    shared: Arc<Shared>,
}

impl VoicewakeFeature {
    pub fn new(settings: VoicewakeSettings) -> Self {
        Self {
            shared: Arc::new(Shared {
                settings: Arc::new(settings),
                state: Mutex::new(State::new()),
                runtime: Mutex::new(None),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn runtime(&self) -> Option<Runtime> {
        lock(&self.runtime).clone()
    }

    fn session_key(&self, gateway: Option<&GatewayClient>) -> String {
        self.settings
            .session_key
            .clone()
            .or_else(|| {
                gateway
                    .and_then(GatewayClient::hello)
                    .and_then(|h| h.main_session_key().map(str::to_owned))
            })
            .unwrap_or_else(|| forward::FALLBACK_SESSION_KEY.to_owned())
    }

    fn details(&self, runtime: Option<&Runtime>) -> Value {
        let source = runtime.map(|r| lock(&r.source).clone());
        let state = self.state();
        json!({
            "source": source,
            "triggers": state.triggers,
            "triggersFrom": state.triggers_from.as_str(),
            "triggersUpdatedAt": state.triggers_at,
            "routing": state.routing,
            "sessionKey": self.session_key(runtime.map(|r| &r.gateway)),
            "awaitingCommand": state.awaiting.and_then(|id| state.journal.get(id)).and_then(|d| d.trigger.clone()),
            "inFlight": state.journal.in_flight(),
            "stats": state.stats,
            "lastHeard": state.last_heard,
            "connection": {"connected": state.connected, "state": state.connection},
            "version": state.journal.version(),
            "recent": state.journal.last(10),
        })
    }

    /// Publishes the status as it is now.
    fn publish(&self) {
        let Some(runtime) = self.runtime() else {
            return;
        };
        let source = lock(&runtime.source).clone();
        let details = self.details(Some(&runtime));
        let state = self.state();
        let listening = match source.kind {
            settings::SourceKind::Stdin => "stdin".to_owned(),
            settings::SourceKind::Fifo => format!(
                "FIFO {}",
                source
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            settings::SourceKind::Command => format!(
                "recognizer {}",
                source.command.first().map(String::as_str).unwrap_or("?")
            ),
            settings::SourceKind::None => "no recognizer".to_owned(),
        };
        let mut summary = if source.has_ended() || source.is_troubled() {
            format!("{listening}: {}", source.detail)
        } else {
            format!("listening: {listening}")
        };
        summary.push_str(&format!(
            " · triggers ({}): {}",
            state.triggers_from.as_str(),
            state.triggers.join(", ")
        ));
        if let Some(last) = state.journal.last(1).pop() {
            summary.push_str(&format!(
                " · last: {} {:?}",
                last.stage.as_str(),
                last.command.as_deref().unwrap_or(&last.heard)
            ));
        }
        let health =
            if source.is_troubled() || (!state.connected && state.connection != "not started") {
                if !state.connected {
                    summary.push_str(" · gateway not connected (triggers from the local mirror)");
                }
                FeatureState::Degraded
            } else {
                FeatureState::Running
            };
        drop(state);
        runtime.status.set(health, summary, details);
    }

    /// Keeps a forwarding task so that stopping the feature aborts it.
    fn track(&self, handle: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    fn abort_tasks(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    /// Starts forwarding detection `id` in the background.
    fn spawn_forward(
        self: &Arc<Self>,
        runtime: &Runtime,
        id: u64,
        trigger: Option<String>,
        command: String,
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.clone();
        let runtime = runtime.clone();
        let handle = tokio::spawn(async move {
            shared
                .forward(&runtime, id, trigger.as_deref(), &command)
                .await;
        });
        self.track(handle.abort_handle());
        handle
    }

    /// Forwards detection `id` and records its progress.
    async fn forward(
        self: &Arc<Self>,
        runtime: &Runtime,
        id: u64,
        trigger: Option<&str>,
        command: &str,
    ) {
        let settings = &self.settings;
        let plan = forward::plan(
            &runtime.gateway,
            settings,
            &runtime.machine,
            trigger,
            command,
        )
        .await;
        if let Some(why) = &plan.thinking_dropped {
            tracing::info!(target: "voicewake.forward", run = %plan.run_id, "{why}; sending without a thinking level");
        }
        self.state().journal.update(id, |d| {
            d.stage = Stage::Sending;
            d.run_id = Some(plan.run_id.clone());
            d.session_key = Some(plan.session_key.clone());
            d.thinking = plan.thinking.clone();
            d.thinking_dropped = plan.thinking_dropped.clone();
        });
        self.publish();
        tracing::info!(
            target: "voicewake.forward",
            run = %plan.run_id,
            session = %plan.session_key,
            trigger = trigger.unwrap_or(""),
            "forwarding {command:?}"
        );
        let mut progress = JournalProgress {
            shared: self.clone(),
            id,
        };
        let outcome = forward::send(
            &runtime.gateway,
            &plan,
            settings.to.as_deref(),
            settings.run_timeout(),
            &mut progress,
        )
        .await;
        match &outcome {
            forward::Outcome::Ok { summary } => tracing::info!(
                target: "voicewake.forward",
                run = %plan.run_id,
                summary = summary.as_deref().unwrap_or(""),
                "voice wake forward ok"
            ),
            forward::Outcome::Error { message, .. } => tracing::warn!(
                target: "voicewake.forward",
                run = %plan.run_id,
                "voice wake forward failed: {message}"
            ),
        }
        self.state().journal.update(id, |d| match outcome {
            forward::Outcome::Ok { summary } => {
                d.stage = Stage::Ok;
                d.summary = summary;
            }
            forward::Outcome::Error { message, code } => {
                d.stage = Stage::Error;
                d.error = Some(message);
                d.error_code = code;
            }
        });
        self.publish();
    }
}

/// Marks a detection accepted when its run starts.
struct JournalProgress {
    shared: Arc<Shared>,
    id: u64,
}

impl forward::Progress for JournalProgress {
    fn accepted(&mut self, session_key: Option<String>) {
        self.shared.state().journal.update(self.id, |d| {
            if d.stage == Stage::Sending {
                d.stage = Stage::Accepted;
            }
            if let Some(key) = session_key {
                d.session_key = Some(key);
            }
        });
        tracing::info!(target: "voicewake.forward", detection = self.id, "run accepted");
        self.shared.publish();
    }
}

/// What the detection loop keeps between events.
struct Loop {
    detector: Detector,
    chime: CommandChime,
    triggers_tx: watch::Sender<Vec<String>>,
    mirror: Option<Mirror>,
    changes_applied: u64,
    origin: &'static str,
}

impl VoicewakeFeature {
    fn apply_triggers(&self, lp: &mut Loop, triggers: Vec<String>, from: TriggersFrom) {
        let previous_from = self.shared.state().triggers_from;
        let changed = self.shared.state().set_triggers(
            triggers.clone(),
            from,
            Some(unix_millis(SystemTime::now())),
        );
        if changed {
            tracing::info!(target: "voicewake", from = from.as_str(), "triggers: {}", triggers.join(", "));
            lp.triggers_tx.send_replace(triggers.clone());
        }
        if from == TriggersFrom::Gateway && (changed || previous_from != TriggersFrom::Gateway) {
            if let Some(mirror) = &lp.mirror {
                if let Err(error) = mirror.save(&triggers) {
                    tracing::warn!(path = %mirror.path().display(), %error, "voicewake: cannot save the trigger mirror");
                }
            }
        }
        self.shared.publish();
    }

    fn on_fetched(&self, lp: &mut Loop, fetched: Fetched) {
        match fetched.triggers {
            Ok(payload) => match triggers_of(&payload) {
                // A `voicewake.changed` applied since the fetch began is at least as new.
                Some(_) if lp.changes_applied > fetched.changes_at_start => {}
                Some(triggers) => self.apply_triggers(lp, triggers, TriggersFrom::Gateway),
                None => tracing::warn!(%payload, "voicewake.get answered without triggers"),
            },
            Err(error) => {
                tracing::warn!(%error, "voicewake.get failed; keeping the triggers in use")
            }
        }
        match fetched.routing {
            Ok(payload) => {
                self.shared.state().routing = payload.get("config").cloned().or(Some(payload));
                self.shared.publish();
            }
            Err(error) => tracing::debug!(%error, "voicewake.routing.get failed"),
        }
    }

    fn on_transcript(&self, lp: &mut Loop, runtime: &Runtime, transcript: Transcript) {
        let shared = &self.shared;
        {
            let mut state = shared.state();
            state.stats.lines += 1;
            state.last_heard = Some(json!({
                "text": transcript.text,
                "final": transcript.is_final,
                "confidence": transcript.confidence,
                "at": unix_millis(SystemTime::now()),
            }));
            if !transcript.is_final {
                state.stats.partial += 1;
                return;
            }
            if transcript
                .confidence
                .is_some_and(|c| c < shared.settings.min_confidence)
            {
                state.stats.low_confidence += 1;
                tracing::debug!(text = %transcript.text, confidence = ?transcript.confidence, "voicewake: below min_confidence");
                return;
            }
        }
        let now = Instant::now().into_std();
        let decision = {
            let state = shared.state();
            lp.detector
                .on_final(&state.trigger_set, &transcript.text, now)
        };
        match decision {
            Decision::Forward {
                trigger,
                command,
                after_trigger_only,
            } => {
                let id = {
                    let mut state = shared.state();
                    let awaiting = state.awaiting.take();
                    match awaiting {
                        Some(id) if after_trigger_only => {
                            state.journal.update(id, |d| {
                                d.heard = format!("{} / {}", d.heard, transcript.text);
                                d.command = Some(command.clone());
                                d.stage = Stage::Sending;
                            });
                            id
                        }
                        other => {
                            if let Some(old) = other {
                                state.journal.update(old, |d| {
                                    d.stage = Stage::NoCommand;
                                    d.summary = Some("another trigger was heard".into());
                                });
                            }
                            state.journal.add(
                                lp.origin,
                                &transcript.text,
                                Some(&trigger),
                                Some(&command),
                                Stage::Sending,
                            )
                        }
                    }
                };
                tracing::info!(target: "voicewake", %trigger, "heard {:?} → command {command:?}", transcript.text);
                lp.chime.play(ChimeKind::Send);
                lp.detector.note_sent(now);
                shared.spawn_forward(runtime, id, Some(trigger), command);
            }
            Decision::AwaitCommand { trigger } => {
                {
                    let mut state = shared.state();
                    if let Some(old) = state.awaiting.take() {
                        state.journal.update(old, |d| {
                            d.stage = Stage::NoCommand;
                            d.summary = Some("another trigger was heard".into());
                        });
                    }
                    let id = state.journal.add(
                        lp.origin,
                        &transcript.text,
                        Some(&trigger),
                        None,
                        Stage::AwaitingCommand,
                    );
                    state.awaiting = Some(id);
                }
                tracing::info!(target: "voicewake", %trigger, "trigger heard; waiting for the command");
                lp.chime.play(ChimeKind::Trigger);
            }
            Decision::Ignore(Ignored::NoTrigger) => {
                shared.state().stats.without_trigger += 1;
                tracing::debug!(text = %transcript.text, "voicewake: no trigger");
            }
            Decision::Ignore(Ignored::Debounced) => {
                shared.state().stats.debounced += 1;
                tracing::debug!(text = %transcript.text, "voicewake: dropped right after a send");
            }
        }
        shared.publish();
    }

    /// The "trigger only" window closed (or the input ended) without a command.
    fn close_window(&self, trigger: String, why: String) {
        let mut state = self.shared.state();
        if let Some(id) = state.awaiting.take() {
            state.journal.update(id, |d| {
                d.stage = Stage::NoCommand;
                d.summary = Some(why.clone());
            });
        }
        drop(state);
        tracing::info!(target: "voicewake", %trigger, "{why}");
        self.shared.publish();
    }

    async fn watch(
        &self,
        ctx: &FeatureContext,
        runtime: &Runtime,
        mut lp: Loop,
        mut source_events: mpsc::Receiver<SourceEvent>,
    ) {
        let gateway = &ctx.gateway;
        let mut states = gateway.state();
        let mut events = gateway.subscribe();
        let mut events_open = true;
        let mut source_open = true;
        let mut state_changed = true;
        let mut fetched_generation = 0;
        let mut fetches: JoinSet<Fetched> = JoinSet::new();
        loop {
            if state_changed {
                state_changed = false;
                let (connected, generation, label) = {
                    let state = states.borrow_and_update();
                    (state.is_connected(), state.generation, state.label())
                };
                {
                    let mut state = self.shared.state();
                    state.connected = connected;
                    state.connection = label;
                }
                if connected && generation != fetched_generation {
                    fetched_generation = generation;
                    fetches.spawn(fetch(gateway.clone(), lp.changes_applied));
                }
                self.shared.publish();
            }
            let deadline = lp.detector.deadline().map(Instant::from_std);
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                changed = states.changed() => match changed {
                    Ok(()) => state_changed = true,
                    Err(_) => {
                        ctx.shutdown.cancelled().await;
                        return;
                    }
                },
                event = events.recv(), if events_open => match event {
                    Ok(event) => match event.event.as_str() {
                        "voicewake.changed" => match triggers_of(&event.payload) {
                            Some(triggers) => {
                                lp.changes_applied += 1;
                                self.apply_triggers(&mut lp, triggers, TriggersFrom::Gateway);
                            }
                            None => tracing::warn!(payload = %event.payload, "voicewake.changed without triggers"),
                        },
                        "voicewake.routing.changed" => {
                            self.shared.state().routing = event.payload.get("config").cloned();
                            self.shared.publish();
                        }
                        _ => {}
                    },
                    Err(RecvError::Lagged(missed)) => {
                        // A change may be among the missed events: ask again.
                        tracing::debug!(missed, "voicewake fell behind the gateway's events; re-reading the triggers");
                        fetches.spawn(fetch(gateway.clone(), lp.changes_applied));
                    }
                    Err(RecvError::Closed) => events_open = false,
                },
                Some(joined) = fetches.join_next(), if !fetches.is_empty() => {
                    if let Ok(fetched) = joined {
                        self.on_fetched(&mut lp, fetched);
                    }
                }
                event = source_events.recv(), if source_open => match event {
                    Some(SourceEvent::Transcript(transcript)) => self.on_transcript(&mut lp, runtime, transcript),
                    Some(SourceEvent::BadLine(error)) => {
                        self.shared.state().stats.bad_lines += 1;
                        tracing::warn!(target: "voicewake.recognizer", "{error}");
                    }
                    Some(SourceEvent::Changed) => self.shared.publish(),
                    Some(SourceEvent::Ended) | None => {
                        if let Some(trigger) = lp.detector.abandon() {
                            self.close_window(trigger, "the input ended after the trigger, before any command".into());
                        }
                        source_open = false;
                        self.shared.publish();
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if let Some(trigger) = lp.detector.expire(Instant::now().into_std()) {
                        let why = format!(
                            "nothing was said within {} ms after the trigger",
                            self.shared.settings.command_window_ms
                        );
                        self.close_window(trigger, why);
                    }
                }
            }
        }
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
impl Feature for VoicewakeFeature {
    async fn run(&self, ctx: FeatureContext) -> Result<(), FeatureError> {
        let settings = self.shared.settings.clone();
        let machine = settings
            .machine_name
            .clone()
            .unwrap_or_else(forward::host_name);
        let mirror = match ctx.services.state_dir(NAME) {
            Ok(dir) => Some(Mirror::new(&dir, &ctx.gateway.transport().gateway_key())),
            Err(error) => {
                tracing::debug!(%error, "voicewake: no state directory; triggers are not mirrored");
                None
            }
        };
        if let Some(mirrored) = mirror.as_ref().and_then(Mirror::load) {
            self.shared.state().set_triggers(
                mirrored.triggers,
                TriggersFrom::Mirror,
                Some(mirrored.saved_at_ms),
            );
        }
        let initial = self.shared.state().triggers.clone();
        let (triggers_tx, triggers_rx) = watch::channel(initial);
        let (events_tx, source_events) = mpsc::channel(256);
        let source = source::start(&settings, triggers_rx, events_tx);
        let runtime = Runtime {
            gateway: ctx.gateway.clone(),
            status: ctx.status.clone(),
            machine,
            source: source.status.clone(),
        };
        *lock(&self.shared.runtime) = Some(runtime.clone());
        let lp = Loop {
            detector: Detector::new(Timing {
                command_window: settings.command_window(),
                debounce: settings.debounce(),
                anywhere: settings.trigger_anywhere,
            }),
            chime: CommandChime {
                trigger: settings.trigger_chime.clone(),
                send: settings.send_chime.clone(),
            },
            triggers_tx,
            mirror,
            changes_applied: 0,
            origin: settings.source.as_str(),
        };
        self.shared.publish();
        self.watch(&ctx, &runtime, lp, source_events).await;
        source.stop().await;
        self.shared.abort_tasks();
        *lock(&self.shared.runtime) = None;
        Ok(())
    }

    async fn control(&self, action: &str, args: Value) -> Result<Value, FeatureError> {
        match action {
            ACTION_RECENT => {
                let (since, limit) = recent_args(&args)?;
                let runtime = self.shared.runtime();
                let mut details = self.shared.details(runtime.as_ref());
                let state = self.shared.state();
                let detections = match since {
                    Some(version) => state.journal.since(version),
                    None => state.journal.last(limit),
                };
                details["detections"] = json!(detections);
                details["running"] = json!(runtime.is_some());
                Ok(details)
            }
            ACTION_TRIGGERS => {
                let state = self.shared.state();
                Ok(json!({
                    "triggers": state.triggers,
                    "from": state.triggers_from.as_str(),
                    "updatedAt": state.triggers_at,
                }))
            }
            ACTION_SEND => {
                let (text, trigger) = send_args(&args)?;
                let runtime = self.shared.runtime().ok_or_else(|| FeatureError {
                    message: "the voicewake feature is not running".into(),
                    fix: Some("start the agent (`clawlink up`) with features.voicewake enabled".into()),
                })?;
                let (trigger, command) = {
                    let state = self.shared.state();
                    split_push_to_talk(&state.trigger_set, &text, trigger.as_deref())?
                };
                let id = self.shared.state().journal.add(
                    "send",
                    &text,
                    trigger.as_deref(),
                    Some(&command),
                    Stage::Sending,
                );
                self.shared.publish();
                let task = self.shared.spawn_forward(&runtime, id, trigger, command);
                // The run goes on in the background if it takes longer.
                let _ = tokio::time::timeout(SEND_WAIT, task).await;
                let state = self.shared.state();
                let detection = state.journal.get(id).cloned();
                Ok(json!(detection))
            }
            other => Err(FeatureError {
                message: format!("the voicewake feature has no action {other:?}"),
                fix: Some(format!(
                    "use `{ACTION_RECENT}` (optionally {{\"since\": VERSION, \"limit\": N}}), `{ACTION_SEND}` ({{\"text\": \"…\"}}) or `{ACTION_TRIGGERS}`"
                )),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let mut table = serde_json::Map::new();
        for line in EXAMPLE_CONFIG.lines().filter(|l| !l.starts_with('#')) {
            let (key, rest) = line.split_once('=').unwrap();
            let value = rest.split(" #").next().unwrap().trim();
            let value: Value =
                serde_json::from_str(value).unwrap_or_else(|e| panic!("{line}: {e}"));
            table.insert(key.trim().to_owned(), value);
        }
        assert_eq!(
            VoicewakeSettings::from_json(&Value::Object(table)).unwrap(),
            VoicewakeSettings::default()
        );
    }

    #[test]
    fn the_descriptor_is_registered_and_off_by_default() {
        let descriptor = clawlink_core::registry::feature(NAME).expect("registered");
        assert!(!descriptor.enabled_by_default);
        assert!((descriptor.factory)(&json!({"source": "none"})).is_ok());
        assert!((descriptor.factory)(&json!({"bogus": 1})).is_err());
    }

    #[test]
    fn push_to_talk_takes_a_leading_trigger_off() {
        let triggers = TriggerSet::new(&DEFAULT_TRIGGERS);
        assert_eq!(
            split_push_to_talk(&triggers, "Computer, what's the weather?", None).unwrap(),
            (Some("computer".into()), "what's the weather?".into())
        );
        assert_eq!(
            split_push_to_talk(&triggers, "turn the lights off", None).unwrap(),
            (None, "turn the lights off".into())
        );
        assert_eq!(
            split_push_to_talk(&triggers, "lights off", Some("jarvis")).unwrap(),
            (Some("jarvis".into()), "lights off".into())
        );
        assert_eq!(
            split_push_to_talk(&triggers, "Jarvis, lights off", Some("jarvis")).unwrap(),
            (Some("jarvis".into()), "lights off".into())
        );
        assert!(split_push_to_talk(&triggers, "  ", None).is_err());
        assert!(split_push_to_talk(&triggers, "claude!", None)
            .unwrap_err()
            .message
            .contains("nothing after the trigger"));
    }

    #[test]
    fn control_arguments_are_checked() {
        assert_eq!(recent_args(&Value::Null).unwrap(), (None, 20));
        assert_eq!(
            recent_args(&json!({"since": 4, "limit": 2})).unwrap(),
            (Some(4), 2)
        );
        assert!(recent_args(&json!({"sinse": 4}))
            .unwrap_err()
            .message
            .contains("\"sinse\""));
        assert!(recent_args(&json!({"since": -1})).is_err());
        assert_eq!(
            send_args(&json!({"text": "hi"})).unwrap(),
            ("hi".into(), None)
        );
        assert!(send_args(&json!({})).unwrap_err().message.contains("text"));
        assert!(send_args(&json!({"text": 3})).is_err());
        assert!(send_args(&json!({"text": "x", "extra": 1}))
            .unwrap_err()
            .message
            .contains("extra"));
        assert!(send_args(&Value::Null).is_err());
    }

    #[test]
    fn trigger_payloads_are_read_leniently() {
        assert_eq!(
            triggers_of(&json!({"triggers": ["a", 3, "b"]})),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(triggers_of(&json!({"triggers": []})), None);
        assert_eq!(triggers_of(&json!({})), None);
    }

    #[tokio::test]
    async fn control_without_run_explains_itself() {
        let feature = VoicewakeFeature::new(VoicewakeSettings::default());
        let err = feature
            .control(ACTION_SEND, json!({"text": "computer, hi"}))
            .await
            .unwrap_err();
        assert!(err.message.contains("not running"), "{err}");
        let recent = feature.control(ACTION_RECENT, Value::Null).await.unwrap();
        assert_eq!(recent["running"], false);
        assert_eq!(recent["triggers"], json!(DEFAULT_TRIGGERS));
        let triggers = feature.control(ACTION_TRIGGERS, Value::Null).await.unwrap();
        assert_eq!(triggers["from"], "default");
        let err = feature.control("reboot", Value::Null).await.unwrap_err();
        assert!(err.message.contains("\"reboot\""));
    }
}
