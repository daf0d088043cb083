//! The arguments of the feature's control actions (`recent`, `send`), checked with errors that say what to pass.

use clawlink_core::feature::FeatureError;
use serde_json::Value;

/// `recent` arguments: nothing, or `{"since": VERSION, "limit": N}`.
pub(crate) fn recent_args(args: &Value) -> Result<(Option<u64>, usize), FeatureError> {
    let bad = |message: String| FeatureError {
        message,
        fix: Some("pass nothing, or {\"since\": VERSION, \"limit\": N}".into()),
    };
    match args {
        Value::Null => Ok((None, 20)),
        Value::Object(map) => {
            if let Some(key) = map
                .keys()
                .find(|k| !matches!(k.as_str(), "since" | "limit"))
            {
                return Err(bad(format!("voicewake recent: unknown argument {key:?}")));
            }
            let number = |key: &str| -> Result<Option<u64>, FeatureError> {
                match map.get(key) {
                    None => Ok(None),
                    Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                        bad(format!(
                            "voicewake recent: {key} must be a non-negative integer, got {v}"
                        ))
                    }),
                }
            };
            let since = number("since")?;
            let limit = number("limit")?.unwrap_or(20) as usize;
            Ok((since, limit))
        }
        other => Err(bad(format!(
            "voicewake recent: arguments must be a JSON object, got {other}"
        ))),
    }
}

/// `send` arguments: `{"text": "…", "trigger"?: "…"}`.
pub(crate) fn send_args(args: &Value) -> Result<(String, Option<String>), FeatureError> {
    let bad = |message: String| FeatureError {
        message,
        fix: Some("pass {\"text\": \"what to send\"} and optionally \"trigger\"".into()),
    };
    let Value::Object(map) = args else {
        return Err(bad(format!(
            "voicewake send: arguments must be a JSON object, got {args}"
        )));
    };
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "text" | "trigger"))
    {
        return Err(bad(format!("voicewake send: unknown argument {key:?}")));
    }
    let text = match map.get("text") {
        Some(Value::String(text)) => text.clone(),
        Some(other) => {
            return Err(bad(format!(
                "voicewake send: text must be a string, got {other}"
            )))
        }
        None => return Err(bad("voicewake send: text is missing".into())),
    };
    let trigger = match map.get("trigger") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(other) => {
            return Err(bad(format!(
                "voicewake send: trigger must be a string, got {other}"
            )))
        }
    };
    Ok((text, trigger))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
