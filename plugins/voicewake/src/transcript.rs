//! One recognizer output line → one transcript: plain text, or a JSON line (`{"text", "final"?, "confidence"?}`, or Vosk's `{"partial"}`).

use serde::Deserialize;

/// What a recognizer heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// Partial (non-final) hypotheses are never sent; they only show the recognizer is alive.
    pub is_final: bool,
    pub confidence: Option<f64>,
}

/// A line the recognizer wrote that is not a transcript.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recognizer line is not a transcript: {reason}")]
pub struct LineError {
    pub reason: String,
}

#[derive(Deserialize)]
struct JsonLine {
    text: Option<String>,
    /// Vosk writes `{"partial": "…"}` while the utterance goes on.
    partial: Option<String>,
    #[serde(rename = "final")]
    is_final: Option<bool>,
    confidence: Option<f64>,
}

/// Parses one line; `Ok(None)` for a line with nothing in it.
///
/// A line that starts with `{` must be a JSON object with `text` (or `partial`); anything
/// else is the transcript itself. Plain lines are final.
pub fn parse_line(line: &str) -> Result<Option<Transcript>, LineError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    if !line.starts_with('{') {
        return Ok(Some(Transcript {
            text: line.to_owned(),
            is_final: true,
            confidence: None,
        }));
    }
    let parsed: JsonLine = serde_json::from_str(line).map_err(|e| LineError {
        reason: format!("invalid JSON ({e})"),
    })?;
    let (text, is_final) = match (parsed.text, parsed.partial) {
        (Some(text), _) => (text, parsed.is_final.unwrap_or(true)),
        (None, Some(partial)) => (partial, false),
        (None, None) => {
            return Err(LineError {
                reason: "a JSON line needs \"text\" (or \"partial\")".into(),
            })
        }
    };
    if let Some(confidence) = parsed.confidence {
        if !(0.0..=1.0).contains(&confidence) {
            return Err(LineError {
                reason: format!("confidence must be between 0 and 1, got {confidence}"),
            });
        }
    }
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(Transcript {
        text,
        is_final,
        confidence: parsed.confidence,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_are_final_transcripts() {
        let t = parse_line("  Computer, what's the weather?\n")
            .unwrap()
            .unwrap();
        assert_eq!(t.text, "Computer, what's the weather?");
        assert!(t.is_final);
        assert_eq!(t.confidence, None);
        assert_eq!(parse_line("   ").unwrap(), None);
    }

    #[test]
    fn json_lines_carry_finality_and_confidence() {
        let t = parse_line(r#"{"text":"computer open","final":false,"confidence":0.4}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.text.as_str(), t.is_final, t.confidence),
            ("computer open", false, Some(0.4))
        );
        let t = parse_line(r#"{"text":"computer open the doors"}"#)
            .unwrap()
            .unwrap();
        assert!(t.is_final);
        let t = parse_line(r#"{"partial":"comp"}"#).unwrap().unwrap();
        assert!(!t.is_final);
        assert_eq!(parse_line(r#"{"text":""}"#).unwrap(), None);
    }

    #[test]
    fn bad_json_lines_are_errors_that_say_why() {
        assert!(parse_line("{not json")
            .unwrap_err()
            .reason
            .contains("invalid JSON"));
        assert!(parse_line(r#"{"result":[]}"#)
            .unwrap_err()
            .reason
            .contains("text"));
        assert!(parse_line(r#"{"text":"x","confidence":7}"#)
            .unwrap_err()
            .reason
            .contains("confidence"));
    }
}
