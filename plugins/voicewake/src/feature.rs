//! [`VoicewakeFeature`], the `Feature` itself: `run` wires the mirror, the source and the detection loop together; `control` answers `recent`, `send` and `triggers`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::feature::{Feature, FeatureContext, FeatureError};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::chime::CommandChime;
use crate::control::{recent_args, send_args};
use crate::detection_loop::Loop;
use crate::detector::{Detector, Timing};
use crate::journal::Stage;
use crate::mirror::Mirror;
use crate::shared::{lock, Runtime, Shared};
use crate::state::{State, TriggersFrom};
use crate::{forward, source, split_push_to_talk, VoicewakeSettings};
use crate::{ACTION_RECENT, ACTION_SEND, ACTION_TRIGGERS, NAME};

/// How long `send` through the control socket waits for the run's final answer (the
/// control socket's own limit is 60 s).
const SEND_WAIT: Duration = Duration::from_secs(45);

/// The running voicewake feature.
///
/// Its status `details` (camelCase JSON): `source` ([`SourceStatus`](crate::source::SourceStatus)), `triggers`,
/// `triggersFrom` (`gateway|mirror|default`), `triggersUpdatedAt`, `routing` (the gateway's
/// routing config), `sessionKey`, `awaitingCommand` (the trigger whose command is awaited),
/// `inFlight`, `stats`, `lastHeard {text, final, at}`, `version` and `recent` (the last
/// [`Detection`](crate::journal::Detection)s).
pub struct VoicewakeFeature {
    pub(crate) shared: Arc<Shared>,
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
    use crate::DEFAULT_TRIGGERS;

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
