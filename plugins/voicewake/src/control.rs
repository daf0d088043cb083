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
