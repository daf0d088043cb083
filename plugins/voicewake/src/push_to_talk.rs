//! Push-to-talk: one transcript forwarded now, its leading trigger taken off, with or without a running feature (`clawlink voicewake send`).

use clawlink_core::feature::FeatureError;
use clawlink_core::gateway::{GatewayClient, RequestOptions};
use serde_json::Value;

use crate::forward;
use crate::journal::{Detection, Journal, Stage};
use crate::trigger::TriggerSet;
use crate::{gateway_state::triggers_of, VoicewakeSettings, DEFAULT_TRIGGERS, TRIGGER_RPC_TIMEOUT};

/// Push-to-talk: the whole text is the command. A leading trigger phrase is taken off and
/// sent as `voiceWakeTrigger` (so the gateway's routes apply); an explicit `trigger` is sent
/// as given (and taken off the text when the text starts with it).
pub fn split_push_to_talk(
    triggers: &TriggerSet,
    text: &str,
    explicit: Option<&str>,
) -> Result<(Option<String>, String), FeatureError> {
    let text = text.trim();
    let nothing = |what: &str| FeatureError {
        message: format!("voicewake send: {what}"),
        fix: Some(
            "say what to send, e.g. `clawlink voicewake send \"what's the weather?\"`".into(),
        ),
    };
    if text.is_empty() {
        return Err(nothing("the text is empty"));
    }
    let (trigger, command) = match explicit.map(str::trim).filter(|t| !t.is_empty()) {
        Some(explicit) => {
            let own = TriggerSet::new(&[explicit]);
            let command = own
                .find(text, false)
                .map(|m| m.command)
                .unwrap_or_else(|| text.to_owned());
            (Some(explicit.to_owned()), command)
        }
        None => match triggers.find(text, false) {
            Some(found) => (Some(found.trigger), found.command),
            None => (None, text.to_owned()),
        },
    };
    if command.trim().is_empty() {
        return Err(nothing("there is nothing after the trigger"));
    }
    Ok((trigger, command))
}

/// Forwards one transcript on `gateway` without a running feature (`clawlink voicewake send`
/// when no agent runs): the gateway's triggers (for a leading trigger), the `agent` call,
/// its final answer. Returns the detection as the feature would record it.
pub async fn send_once(
    gateway: &GatewayClient,
    settings: &VoicewakeSettings,
    text: &str,
    explicit_trigger: Option<&str>,
) -> Result<Detection, FeatureError> {
    let triggers = match gateway
        .request_with(
            "voicewake.get",
            Value::Null,
            RequestOptions {
                timeout: Some(TRIGGER_RPC_TIMEOUT),
                expect_final: false,
            },
        )
        .await
    {
        Ok(payload) => triggers_of(&payload),
        Err(error) => {
            tracing::warn!(%error, "voicewake.get failed; using the default triggers");
            None
        }
    }
    .unwrap_or_else(|| DEFAULT_TRIGGERS.iter().map(|t| t.to_string()).collect());
    let (trigger, command) =
        split_push_to_talk(&TriggerSet::new(&triggers), text, explicit_trigger)?;
    let machine = settings
        .machine_name
        .clone()
        .unwrap_or_else(forward::host_name);
    let mut journal = Journal::default();
    let id = journal.add(
        "send",
        text,
        trigger.as_deref(),
        Some(&command),
        Stage::Sending,
    );
    let plan = forward::plan(gateway, settings, &machine, trigger.as_deref(), &command).await;
    journal.update(id, |d| {
        d.run_id = Some(plan.run_id.clone());
        d.session_key = Some(plan.session_key.clone());
        d.thinking = plan.thinking.clone();
        d.thinking_dropped = plan.thinking_dropped.clone();
    });
    struct Accepted(Option<String>, bool);
    impl forward::Progress for Accepted {
        fn accepted(&mut self, session_key: Option<String>) {
            self.1 = true;
            if session_key.is_some() {
                self.0 = session_key;
            }
        }
    }
    let mut accepted = Accepted(None, false);
    let outcome = forward::send(
        gateway,
        &plan,
        settings.to.as_deref(),
        settings.run_timeout(),
        &mut accepted,
    )
    .await;
    journal.update(id, |d| {
        if let Some(key) = accepted.0 {
            d.session_key = Some(key);
        }
        match outcome {
            forward::Outcome::Ok { summary } => {
                d.stage = Stage::Ok;
                d.summary = summary;
            }
            forward::Outcome::Error { message, code } => {
                d.stage = Stage::Error;
                d.error = Some(message);
                d.error_code = code;
            }
        }
    });
    Ok(journal
        .get(id)
        .cloned()
        .expect("the detection was just recorded"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
