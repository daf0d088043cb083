//! `[PROFILE.features.voicewake]`: where transcripts come from, how triggers are detected, and how commands are forwarded.

use std::path::PathBuf;
use std::time::Duration;

use clawlink_core::feature::FeatureError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::NAME;

/// Where transcripts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Lines on the agent's standard input (`recognizer | clawlink voicewake listen`).
    Stdin,
    /// Lines written to a named pipe by any program (created 0600 when missing).
    Fifo,
    /// The standard output of a supervised recognizer command.
    Command,
    /// No recognizer: only `clawlink voicewake send` forwards.
    None,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Stdin => "stdin",
            SourceKind::Fifo => "fifo",
            SourceKind::Command => "command",
            SourceKind::None => "none",
        }
    }
}

/// When a recognizer command is started again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Always,
    /// After a non-zero exit or a signal; exit 0 means the recognizer finished its input.
    OnFailure,
    Never,
}

/// The settings table (unknown keys are refused).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoicewakeSettings {
    pub source: SourceKind,
    /// The named pipe, for `source = "fifo"` (an absolute path).
    pub fifo_path: Option<PathBuf>,
    /// The recognizer's argv, for `source = "command"`.
    pub command: Vec<String>,
    pub restart: Restart,
    /// Restart the recognizer command when the gateway's triggers change (it receives them
    /// in `CLAWLINK_VOICEWAKE_TRIGGERS`, e.g. to build a grammar).
    pub restart_on_trigger_change: bool,
    /// A trigger anywhere in the utterance fires, not only at its start.
    pub trigger_anywhere: bool,
    /// How long "trigger only" waits for the command (the app: 5 s).
    pub command_window_ms: u64,
    /// Transcripts dropped for this long after a send (the app: 350 ms).
    pub debounce_ms: u64,
    /// Final transcripts with a lower `confidence` are dropped (0 keeps everything).
    pub min_confidence: f64,
    /// Where runs go; default: the main session from the gateway's hello-ok.
    pub session_key: Option<String>,
    /// `thinking` of the `agent` call (the app: "low"); empty sends none. Dropped for a
    /// session whose model does not offer it.
    pub thinking: String,
    /// Deliver the reply to `channel` (the app: true; never for webchat).
    pub deliver: bool,
    pub channel: String,
    /// The recipient on `channel`, when it needs one.
    pub to: Option<String>,
    /// The machine named in the hint line; default: this host's name.
    pub machine_name: Option<String>,
    /// How long to wait for a run's final answer.
    pub run_timeout_secs: u64,
    /// argv run (and not waited for) when a trigger is heard; empty: silent.
    pub trigger_chime: Vec<String>,
    /// argv run when a command is sent; empty: silent.
    pub send_chime: Vec<String>,
}

impl Default for VoicewakeSettings {
    fn default() -> Self {
        Self {
            source: SourceKind::Stdin,
            fifo_path: None,
            command: Vec::new(),
            restart: Restart::OnFailure,
            restart_on_trigger_change: true,
            trigger_anywhere: false,
            command_window_ms: 5_000,
            debounce_ms: 350,
            min_confidence: 0.0,
            session_key: None,
            thinking: "low".into(),
            deliver: true,
            channel: "last".into(),
            to: None,
            machine_name: None,
            run_timeout_secs: 600,
            trigger_chime: Vec::new(),
            send_chime: Vec::new(),
        }
    }
}

/// The app's hard stop for one capture; a longer window makes no sense.
const MAX_COMMAND_WINDOW_MS: u64 = 120_000;

impl VoicewakeSettings {
    /// Reads the settings table (JSON `null` means all defaults); an unknown key or a bad
    /// value is an error naming it.
    pub fn from_json(settings: &Value) -> Result<Self, FeatureError> {
        let invalid = |message: String, fix: &str| FeatureError {
            fix: Some(fix.to_owned()),
            ..FeatureError::settings(NAME, message)
        };
        let see = "see `clawlink features` for the voicewake settings and their defaults";
        let parsed: Self = clawlink_core::feature::parse_settings(NAME, settings)?;
        match parsed.source {
            SourceKind::Fifo => match &parsed.fifo_path {
                None => {
                    return Err(invalid(
                        "source = \"fifo\" needs fifo_path".into(),
                        "add fifo_path = \"/absolute/path/to/pipe\" (created when missing)",
                    ))
                }
                Some(path) if !path.is_absolute() => {
                    return Err(invalid(
                        format!("fifo_path must be absolute, got {}", path.display()),
                        "write the full path, e.g. \"/run/user/1000/clawlink-voice.fifo\"",
                    ))
                }
                Some(_) => {}
            },
            SourceKind::Command if parsed.command.first().is_none_or(|p| p.trim().is_empty()) => {
                return Err(invalid(
                    "source = \"command\" needs command, the recognizer's argv".into(),
                    "e.g. command = [\"python3\", \"/path/to/recognize.py\", \"--json\", \"-\"]",
                ))
            }
            _ => {}
        }
        if parsed.command_window_ms > MAX_COMMAND_WINDOW_MS {
            return Err(invalid(
                format!(
                    "command_window_ms must be at most {MAX_COMMAND_WINDOW_MS} (the app's 120 s hard stop), got {}",
                    parsed.command_window_ms
                ),
                see,
            ));
        }
        if parsed.debounce_ms > 10_000 {
            return Err(invalid(
                format!(
                    "debounce_ms must be at most 10000, got {}",
                    parsed.debounce_ms
                ),
                see,
            ));
        }
        if !(0.0..=1.0).contains(&parsed.min_confidence) {
            return Err(invalid(
                format!(
                    "min_confidence must be between 0 and 1, got {}",
                    parsed.min_confidence
                ),
                see,
            ));
        }
        if parsed.run_timeout_secs == 0 {
            return Err(invalid("run_timeout_secs must be at least 1".into(), see));
        }
        if parsed.channel.trim().is_empty() {
            return Err(invalid(
                "channel must not be empty".into(),
                "use \"last\" (the app's default) or a channel id such as \"whatsapp\"",
            ));
        }
        for (key, value) in [
            ("session_key", &parsed.session_key),
            ("machine_name", &parsed.machine_name),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(invalid(
                    format!("{key} must not be empty"),
                    "remove the key to use the default",
                ));
            }
        }
        for (key, argv) in [
            ("trigger_chime", &parsed.trigger_chime),
            ("send_chime", &parsed.send_chime),
        ] {
            if argv.first().is_some_and(|p| p.trim().is_empty()) {
                return Err(invalid(
                    format!("{key} starts with an empty program name"),
                    "give the player's argv, e.g. [\"paplay\", \"/usr/share/sounds/freedesktop/stereo/message.oga\"]",
                ));
            }
        }
        Ok(parsed)
    }

    pub fn command_window(&self) -> Duration {
        Duration::from_millis(self.command_window_ms)
    }

    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    pub fn run_timeout(&self) -> Duration {
        Duration::from_secs(self.run_timeout_secs)
    }

    /// `deliver` as sent: the app never delivers to webchat (the reply is already there).
    pub fn effective_deliver(&self) -> bool {
        self.deliver && self.channel != "webchat"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_the_apps() {
        let s = VoicewakeSettings::from_json(&Value::Null).unwrap();
        assert_eq!(s, VoicewakeSettings::default());
        assert_eq!(s.command_window(), Duration::from_secs(5));
        assert_eq!(s.debounce(), Duration::from_millis(350));
        assert_eq!(s.thinking, "low");
        assert!(s.effective_deliver());
        assert_eq!(s.channel, "last");
        let s = VoicewakeSettings::from_json(&json!({"channel": "webchat"})).unwrap();
        assert!(!s.effective_deliver());
    }

    #[test]
    fn sources_need_their_parameters() {
        let err = VoicewakeSettings::from_json(&json!({"source": "fifo"})).unwrap_err();
        assert!(err.message.contains("fifo_path"), "{err}");
        let err = VoicewakeSettings::from_json(&json!({"source": "fifo", "fifo_path": "rel/p"}))
            .unwrap_err();
        assert!(err.message.contains("absolute"), "{err}");
        let err = VoicewakeSettings::from_json(&json!({"source": "command"})).unwrap_err();
        assert!(err.message.contains("command"), "{err}");
        let s = VoicewakeSettings::from_json(
            &json!({"source": "command", "command": ["rec", "-"], "restart": "always"}),
        )
        .unwrap();
        assert_eq!(s.restart, Restart::Always);
        let err = VoicewakeSettings::from_json(&json!({"source": "microphone"})).unwrap_err();
        assert!(err.message.contains("microphone"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = VoicewakeSettings::from_json(&json!({"triggers": ["x"]})).unwrap_err();
        assert!(err.message.starts_with("features.voicewake: "), "{err}");
        assert!(err.message.contains("triggers"), "{err}");
        for (key, value) in [
            ("command_window_ms", json!(200_000)),
            ("debounce_ms", json!(60_000)),
            ("min_confidence", json!(1.5)),
            ("run_timeout_secs", json!(0)),
            ("channel", json!(" ")),
            ("session_key", json!("")),
            ("send_chime", json!([""])),
        ] {
            let err = VoicewakeSettings::from_json(&json!({ key: value })).unwrap_err();
            assert!(err.message.contains(key), "{key}: {err}");
        }
    }
}
