//! The running feature's shared core: settings, state and the runtime lent by `run` behind locks, the status it publishes, and the forwarding tasks it spawns and records.

use std::sync::{Arc, Mutex, MutexGuard};

use clawlink_core::feature::{FeatureState, StatusReporter};
use clawlink_core::gateway::GatewayClient;
use serde_json::{json, Value};
use tokio::task::AbortHandle;

use crate::forward;
use crate::journal::Stage;
use crate::settings::{self, VoicewakeSettings};
use crate::source::SourceStatus;
use crate::state::State;

/// What `run` lends `control` and the forwarding tasks.
#[derive(Clone)]
pub(crate) struct Runtime {
    pub(crate) gateway: GatewayClient,
    pub(crate) status: StatusReporter,
    pub(crate) machine: String,
    pub(crate) source: Arc<Mutex<SourceStatus>>,
}

pub(crate) struct Shared {
    pub(crate) settings: Arc<VoicewakeSettings>,
    pub(crate) state: Mutex<State>,
    pub(crate) runtime: Mutex<Option<Runtime>>,
    /// Forwarding tasks, aborted when the feature stops.
    pub(crate) tasks: Mutex<Vec<AbortHandle>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(crate) fn runtime(&self) -> Option<Runtime> {
        lock(&self.runtime).clone()
    }

    pub(crate) fn session_key(&self, gateway: Option<&GatewayClient>) -> String {
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

    pub(crate) fn details(&self, runtime: Option<&Runtime>) -> Value {
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
    pub(crate) fn publish(&self) {
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
    pub(crate) fn track(&self, handle: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    pub(crate) fn abort_tasks(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    /// Starts forwarding detection `id` in the background.
    pub(crate) fn spawn_forward(
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
