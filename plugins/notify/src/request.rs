//! The `system.notify` node command: its parameters as the gateway forwards them, their validation, and the error codes a node answers with.
//!
//! The parameters (`gateway-protocol.md` §4.16) are `{title, body, sound?, priority?,
//! delivery?}`. Like the macOS app and the Linux node host, title and body are trimmed and
//! at least one must remain (`INVALID_REQUEST: empty notification`); priority maps to the
//! freedesktop urgency levels (passive → low, active → normal, timeSensitive → critical) and
//! `delivery` defaults to `system`. Unknown keys are ignored (newer gateways may add some);
//! values of the wrong type or outside the closed sets are refused, naming what is accepted.

use serde_json::{Map, Value};

pub use clawlink_core::notify::{codes, Priority};

/// A node error as `node.invoke.result` carries it (`error: {code, message}`; the gateway
/// refuses any other key there).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct InvokeError {
    pub code: &'static str,
    pub message: String,
}

impl InvokeError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_REQUEST, message)
    }
}

/// The freedesktop urgency of a priority (the `urgency` hint: 0 low, 1 normal, 2 critical),
/// the same mapping as the Linux node host's `notify-send --urgency`.
impl From<Priority> for Urgency {
    fn from(priority: Priority) -> Self {
        match priority {
            Priority::Passive => Urgency::Low,
            Priority::Active => Urgency::Normal,
            Priority::TimeSensitive => Urgency::Critical,
        }
    }
}

/// Urgency levels of the freedesktop notification spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Low,
    Normal,
    Critical,
}

impl Urgency {
    /// The byte the `urgency` hint carries.
    pub fn level(self) -> u8 {
        match self {
            Self::Low => 0,
            Self::Normal => 1,
            Self::Critical => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::Critical => "critical",
        }
    }
}

/// `delivery`: where the notification shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// The desktop notification service; fails when there is none.
    #[default]
    System,
    /// The agent's own console (the app's in-app toast).
    Overlay,
    /// The notification service, else the console.
    Auto,
}

impl Delivery {
    pub const NAMES: [&'static str; 3] = ["system", "overlay", "auto"];

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "system" => Some(Self::System),
            "overlay" => Some(Self::Overlay),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Overlay => "overlay",
            Self::Auto => "auto",
        }
    }
}

/// A validated `system.notify` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRequest {
    /// Trimmed; may be empty when the body is not.
    pub title: String,
    /// Trimmed; may be empty when the title is not.
    pub body: String,
    /// Trimmed; `None` when absent or blank (no sound is played then).
    pub sound: Option<String>,
    pub priority: Priority,
    pub delivery: Delivery,
}

impl NotifyRequest {
    /// Reads the `paramsJSON` string of a `node.invoke.request` (`None` or JSON `null` when
    /// the caller sent no params).
    pub fn from_params_json(params_json: Option<&str>) -> Result<Self, InvokeError> {
        let params = match params_json.map(str::trim) {
            None | Some("") | Some("null") => Value::Object(Map::new()),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                InvokeError::invalid(format!("system.notify params are not valid JSON: {e}"))
            })?,
        };
        Self::from_params(&params)
    }

    /// Reads the params object.
    pub fn from_params(params: &Value) -> Result<Self, InvokeError> {
        let empty = Map::new();
        let map = match params {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => {
                return Err(InvokeError::invalid(format!(
                    "system.notify params must be an object, got {other}"
                )))
            }
        };
        let title = optional_string(map, "title")?.unwrap_or_default();
        let body = optional_string(map, "body")?.unwrap_or_default();
        if title.is_empty() && body.is_empty() {
            return Err(InvokeError::invalid("empty notification"));
        }
        let sound = optional_string(map, "sound")?.filter(|s| !s.is_empty());
        let priority = match optional_string(map, "priority")? {
            None => Priority::default(),
            Some(value) => Priority::parse(&value).ok_or_else(|| {
                InvokeError::invalid(format!(
                    "unknown priority {value:?} (use {})",
                    Priority::NAMES.join(", ")
                ))
            })?,
        };
        let delivery = match optional_string(map, "delivery")? {
            None => Delivery::default(),
            Some(value) => Delivery::parse(&value).ok_or_else(|| {
                InvokeError::invalid(format!(
                    "unknown delivery {value:?} (use {})",
                    Delivery::NAMES.join(", ")
                ))
            })?,
        };
        Ok(Self {
            title,
            body,
            sound,
            priority,
            delivery,
        })
    }
}

/// A trimmed string field; absent and `null` are `None`, other types are refused.
fn optional_string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, InvokeError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(other) => Err(InvokeError::invalid(format!(
            "system.notify {key} must be a string, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn title_and_body_are_trimmed_and_one_is_needed() {
        let r =
            NotifyRequest::from_params(&json!({"title": "  Ping ", "body": "\tbody\n"})).unwrap();
        assert_eq!((r.title.as_str(), r.body.as_str()), ("Ping", "body"));
        assert_eq!(r.priority, Priority::Active);
        assert_eq!(r.delivery, Delivery::System);
        assert_eq!(r.sound, None);

        let only_body = NotifyRequest::from_params(&json!({"title": "", "body": "b"})).unwrap();
        assert_eq!(only_body.title, "");

        for params in [
            json!({"title": "  ", "body": " \n"}),
            json!({}),
            Value::Null,
        ] {
            let err = NotifyRequest::from_params(&params).unwrap_err();
            assert_eq!(err.code, codes::INVALID_REQUEST);
            assert_eq!(err.message, "empty notification");
        }
    }

    #[test]
    fn priority_maps_to_urgency() {
        let urgency = |p: &str| -> Urgency {
            NotifyRequest::from_params(&json!({"title": "t", "priority": p}))
                .unwrap()
                .priority
                .into()
        };
        assert_eq!(urgency("passive"), Urgency::Low);
        assert_eq!(urgency("active"), Urgency::Normal);
        assert_eq!(urgency("timeSensitive"), Urgency::Critical);
        assert_eq!(Urgency::Critical.level(), 2);
        let err =
            NotifyRequest::from_params(&json!({"title": "t", "priority": "urgent"})).unwrap_err();
        assert!(err.message.contains("\"urgent\""), "{err}");
        assert!(err.message.contains("timeSensitive"), "{err}");
    }

    #[test]
    fn delivery_sound_and_types_are_checked() {
        let r = NotifyRequest::from_params(
            &json!({"body": "b", "delivery": "auto", "sound": " Glass ", "extra": 1}),
        )
        .unwrap();
        assert_eq!(r.delivery, Delivery::Auto);
        assert_eq!(r.sound.as_deref(), Some("Glass"));
        let blank = NotifyRequest::from_params(&json!({"body": "b", "sound": "  "})).unwrap();
        assert_eq!(blank.sound, None);
        let err =
            NotifyRequest::from_params(&json!({"body": "b", "delivery": "toast"})).unwrap_err();
        assert!(err.message.contains("overlay"), "{err}");
        let err = NotifyRequest::from_params(&json!({"title": 3})).unwrap_err();
        assert!(err.message.contains("title must be a string"), "{err}");
        assert!(NotifyRequest::from_params(&json!([1])).is_err());
    }

    #[test]
    fn params_json_comes_as_a_string_or_null() {
        let r = NotifyRequest::from_params_json(Some(r#"{"title":"Hi","body":"x"}"#)).unwrap();
        assert_eq!(r.title, "Hi");
        assert!(NotifyRequest::from_params_json(None).is_err());
        assert!(NotifyRequest::from_params_json(Some("null")).is_err());
        let err = NotifyRequest::from_params_json(Some("{nope")).unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{err}");
    }
}
