//! Fixed-budget fuzzing of gateway frame decoding: arbitrary text and JSON never panic or hang, well-formed frames round-trip, and an oversized frame is refused without being parsed.

use std::time::Duration;

use clawlink_core::gateway::protocol::{
    decode_frame, Challenge, FrameError, HelloOk, Incoming, MAX_FRAME_BYTES,
};
use clawlink_fuzz_budget::{
    arbitrary, check, json_with_keys, peak_allocation, Arbitrary, Json, MeteredAllocator,
    Unstructured,
};
use serde_json::{json, Value};

#[global_allocator]
static METER: MeteredAllocator = MeteredAllocator;

const BUDGET: Duration = Duration::from_secs(3);

/// Every key the frame and hello-ok decoders look for, so generated objects often carry
/// them (with values of any type).
const FRAME_KEYS: &[&str] = &[
    "type",
    "id",
    "ok",
    "payload",
    "error",
    "event",
    "seq",
    "code",
    "message",
    "details",
    "retryable",
    "retryAfterMs",
    "protocol",
    "server",
    "features",
    "snapshot",
    "auth",
    "policy",
    "version",
    "connId",
    "methods",
    "events",
    "deviceToken",
    "maxPayload",
    "nonce",
    "ts",
];

/// A JSON value shaped like what a gateway (or something pretending to be one) sends.
#[derive(Debug)]
struct FrameLike(Value);

impl<'a> Arbitrary<'a> for FrameLike {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut frame = json_with_keys(u, 3, FRAME_KEYS)?;
        if let Value::Object(object) = &mut frame {
            // Most cases name a real frame type, so the typed fields get exercised.
            let kind = *u.choose(&["res", "event", "hello-ok", "req", ""])?;
            object.insert("type".into(), Value::String(kind.into()));
        }
        Ok(FrameLike(frame))
    }
}

/// `value` with each float replaced by an integer: serde_json (without its slower
/// `float_roundtrip` feature) may read a float back one unit in the last place off, which no
/// frame decoder can help; everything else must come through exactly.
fn without_floats(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => Value::from(n.as_f64().unwrap_or_default() as i64),
        Value::Array(items) => items.into_iter().map(without_floats).collect(),
        Value::Object(object) => object
            .into_iter()
            .map(|(k, v)| (k, without_floats(v)))
            .collect(),
        other => other,
    }
}

fn assert_error_says_something(err: &FrameError) {
    assert!(!err.to_string().trim().is_empty(), "{err:?}");
}

#[test]
fn arbitrary_text_never_panics_and_errors_say_why() {
    check("frame text", BUDGET, |text: String| {
        if let Err(err) = decode_frame(&text) {
            assert_error_says_something(&err);
        }
    });
}

#[test]
fn frame_shaped_json_decodes_or_is_refused_with_a_reason() {
    check(
        "frame-shaped JSON",
        BUDGET,
        |FrameLike(frame)| match decode_frame(&frame.to_string()) {
            Ok(Incoming::Response(res)) => {
                assert_eq!(frame["type"], "res");
                assert_eq!(Some(res.id.as_str()), frame["id"].as_str());
            }
            Ok(Incoming::Event(ev)) => {
                assert_eq!(frame["type"], "event");
                assert_eq!(Some(ev.event.as_str()), frame["event"].as_str());
            }
            Err(err) => assert_error_says_something(&err),
        },
    );
}

#[test]
fn responses_and_events_round_trip() {
    check(
        "frame round trip",
        BUDGET,
        |(id, ok, Json(payload), event, seq): (String, bool, Json, String, Option<u64>)| {
            let payload = without_floats(payload);
            let response = json!({"type": "res", "id": id, "ok": ok, "payload": payload});
            let Incoming::Response(res) = decode_frame(&response.to_string()).unwrap() else {
                panic!("a response decoded as something else: {response}")
            };
            assert_eq!(
                (res.id.as_str(), res.ok, &res.payload),
                (id.as_str(), ok, &payload)
            );
            assert!(res.error.is_none());

            let mut frame = json!({"type": "event", "event": event, "payload": payload});
            if let Some(seq) = seq {
                frame["seq"] = seq.into();
            }
            let Incoming::Event(ev) = decode_frame(&frame.to_string()).unwrap() else {
                panic!("an event decoded as something else: {frame}")
            };
            assert_eq!(
                (ev.event.as_str(), &ev.payload, ev.seq),
                (event.as_str(), &payload, seq)
            );
        },
    );
}

#[test]
fn hello_ok_and_challenge_payloads_never_panic() {
    check("hello-ok payload", BUDGET, |FrameLike(payload)| {
        // Payloads reach these decoders as values (after the frame) and as text.
        let _ = serde_json::from_value::<HelloOk>(payload.clone());
        let _ = serde_json::from_value::<Challenge>(payload.clone());
        if let Ok(hello) = serde_json::from_str::<HelloOk>(&payload.to_string()) {
            let _ = (hello.main_session_key(), hello.auth_mode());
        }
    });
}

#[test]
fn damaged_real_frames_never_panic() {
    let real = [
        r#"{"type":"res","id":"7","ok":false,"error":{"code":"INVALID_REQUEST","message":"m","details":{"code":"AUTH_TOKEN_MISMATCH"}},"payload":{"x":1}}"#,
        r#"{"type":"event","event":"tick","payload":{"ts":5},"seq":9}"#,
        r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":1}}"#,
    ];
    check(
        "damaged frames",
        BUDGET,
        move |(which, edits): (u8, Vec<(u16, u8)>)| {
            let mut bytes = real[usize::from(which) % real.len()].as_bytes().to_vec();
            for (at, byte) in edits {
                let at = usize::from(at) % (bytes.len() + 1);
                // Even bytes overwrite, odd ones insert: both kinds of damage happen on a wire.
                if byte % 2 == 0 && at < bytes.len() {
                    bytes[at] = byte;
                } else {
                    bytes.insert(at, byte);
                }
            }
            if let Err(err) = decode_frame(&String::from_utf8_lossy(&bytes)) {
                assert_error_says_something(&err);
            }
        },
    );
}

#[test]
fn an_oversized_frame_is_refused_before_any_parsing() {
    let oversized = format!(
        r#"{{"type":"event","event":"{}"}}"#,
        "x".repeat(MAX_FRAME_BYTES)
    );
    let (result, peak) = peak_allocation(|| decode_frame(&oversized));
    let err = result.unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    // The message names the limit; decoding allocated nothing in proportion to the frame.
    assert!(
        err.to_string().contains(&MAX_FRAME_BYTES.to_string()),
        "{err}"
    );
    assert!(
        peak < 4096,
        "refusing a {} byte frame allocated {peak} bytes",
        oversized.len()
    );
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack_or_memory() {
    let depth = 1_000_000;
    let nested = format!(
        r#"{{"type":"res","id":"1","ok":true,"payload":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let (result, peak) = peak_allocation(|| decode_frame(&nested));
    assert!(result.unwrap_err().to_string().contains("recursion limit"));
    // The internally tagged frame is buffered before its type is known: still bounded by
    // serde_json's nesting limit, not by the frame's length.
    assert!(peak < 64 * 1024, "a refused nested frame held {peak} bytes");
}
