//! The feature's event loop: the gateway's connection state and trigger events, trigger fetches on each connect, transcripts from the source through the detector, and the "trigger only" window.

use std::time::SystemTime;

use clawlink_core::feature::FeatureContext;
use clawlink_core::time::unix_millis;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::chime::{Chime, ChimeKind, CommandChime};
use crate::detector::{Decision, Detector, Ignored};
use crate::gateway_state::{fetch, triggers_of, Fetched};
use crate::journal::Stage;
use crate::mirror::Mirror;
use crate::shared::Runtime;
use crate::source::SourceEvent;
use crate::state::TriggersFrom;
use crate::transcript::Transcript;
use crate::VoicewakeFeature;

/// What the detection loop keeps between events.
pub(crate) struct Loop {
    pub(crate) detector: Detector,
    pub(crate) chime: CommandChime,
    pub(crate) triggers_tx: watch::Sender<Vec<String>>,
    pub(crate) mirror: Option<Mirror>,
    pub(crate) changes_applied: u64,
    pub(crate) origin: &'static str,
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

    pub(crate) async fn watch(
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
