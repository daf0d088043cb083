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
//!
//! The crate root holds the names, the example settings and the registration; the running
//! feature is [`VoicewakeFeature`] (`feature.rs`), its shared core and status `shared.rs`,
//! what the status reads `state.rs`, and the event loop `detection_loop.rs`.

pub mod chime;
mod control;
mod detection_loop;
pub mod detector;
mod feature;
pub mod forward;
mod gateway_state;
pub mod journal;
pub mod mirror;
pub mod push_to_talk;
pub mod settings;
mod shared;
pub mod source;
mod state;
pub mod transcript;
pub mod trigger;

use std::time::Duration;

use clawlink_core::feature::{Feature, FeatureError};
use clawlink_core::registry::FeatureDescriptor;
use serde_json::Value;

pub use crate::feature::VoicewakeFeature;
pub use crate::gateway_state::triggers_of;
pub use crate::push_to_talk::{send_once, split_push_to_talk};
pub use crate::settings::VoicewakeSettings;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
