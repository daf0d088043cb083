//! Fixed-budget fuzzing of recognizer transcript lines: any line a recognizer writes parses or is refused with a reason, never panics or hangs, and what parses keeps its text.

use std::time::Duration;

use clawlink_feature_voicewake::transcript::{parse_line, Transcript};
use clawlink_fuzz_budget::{arbitrary, check, json_with_keys, Arbitrary, Unstructured};
use serde_json::{json, Value};

const BUDGET: Duration = Duration::from_secs(3);

/// A JSON value whose objects mostly use the keys recognizers write, with values of any type.
#[derive(Debug)]
struct RecognizerJson(Value);

impl<'a> Arbitrary<'a> for RecognizerJson {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        json_with_keys(u, 2, &["text", "partial", "final", "confidence", "result"])
            .map(RecognizerJson)
    }
}

fn assert_transcript_invariants(line: &str) -> Option<Transcript> {
    match parse_line(line) {
        Ok(Some(t)) => {
            assert!(!t.text.is_empty(), "{line:?} → {t:?}");
            assert_eq!(t.text, t.text.trim(), "{line:?} → {t:?}");
            if let Some(c) = t.confidence {
                assert!((0.0..=1.0).contains(&c), "{line:?} → {t:?}");
            }
            Some(t)
        }
        Ok(None) => None,
        Err(err) => {
            assert!(!err.reason.is_empty(), "{line:?}");
            None
        }
    }
}

#[test]
fn arbitrary_lines_never_panic_and_plain_ones_are_their_own_text() {
    check("transcript text", BUDGET, |line: String| {
        let parsed = assert_transcript_invariants(&line);
        let trimmed = line.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('{') {
            let t = parsed.expect("a plain line is a transcript");
            assert_eq!((t.text.as_str(), t.is_final), (trimmed, true));
        }
    });
}

#[test]
fn json_shaped_lines_never_panic() {
    check("transcript JSON", BUDGET, |RecognizerJson(value)| {
        assert_transcript_invariants(&value.to_string());
    });
}

#[test]
fn json_transcripts_round_trip() {
    check(
        "transcript round trip",
        BUDGET,
        |(text, is_final, confidence): (String, bool, Option<u16>)| {
            // Confidences are written as recognizers do: a number from 0 to 1, with few
            // digits (serde_json may read a float with many digits one unit in the last
            // place off, which is no concern of the transcript parser).
            let confidence = confidence.map(|c| f64::from(c % 1001) / 1000.0);
            let mut line = json!({"text": text, "final": is_final});
            if let Some(c) = confidence {
                line["confidence"] = c.into();
            }
            let parsed = parse_line(&line.to_string()).expect("a well-formed JSON line");
            let text = text.trim();
            match parsed {
                None => assert!(text.is_empty(), "{line}"),
                Some(t) => assert_eq!(
                    t,
                    Transcript {
                        text: text.to_owned(),
                        is_final,
                        confidence
                    },
                    "{line}"
                ),
            }
        },
    );
}
