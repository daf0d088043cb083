//! Wire frames of the OpenClaw Gateway protocol v4: strict for what we send, lenient for what we read.
//!
//! The gateway's schemas are closed (`additionalProperties: false`): one unknown key or one
//! `null` where a value was expected kills the handshake. So every optional field we send is
//! skipped when absent, never serialized as null. Results, on the other hand, grow between
//! releases and are not schema-checked by the server: we decode them with defaults and keep
//! unknown parts as JSON.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The protocol version this client speaks (`minProtocol` = `maxProtocol` = 4).
pub const PROTOCOL_VERSION: u32 = 4;

/// The largest message clawlink accepts from the gateway; a larger one ends the connection
/// with a protocol error naming both sizes, refused from its frame header before any of it is
/// buffered (the client's WebSocket configuration), and [`decode_frame`] holds any other
/// caller to it. The gateway's own frames stay within what it queues for one client
/// (`policy.maxBufferedBytes`, 50 MiB, past which it drops a slow consumer), and what it
/// accepts is 25 MiB (`policy.maxPayload`, base64 attachments included): 64 MiB is above every
/// legitimate message and still bounds one connection's memory.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Why a frame from the gateway could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "a gateway frame of {len} bytes exceeds clawlink's limit of {MAX_FRAME_BYTES} bytes; \
         if the gateway really sends such frames, its maxPayload is larger than clawlink supports"
    )]
    TooLarge { len: usize },
    #[error("unreadable gateway frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes one text frame from the gateway. A frame above [`MAX_FRAME_BYTES`] is refused
/// before parsing, and serde_json's nesting limit (128) refuses a deeply nested one, so a
/// hostile frame costs neither memory beyond its own text nor stack.
pub fn decode_frame(text: &str) -> Result<Incoming, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: text.len() });
    }
    Ok(serde_json::from_str(text)?)
}

/// A request frame (`{"type":"req",…}`).
#[derive(Debug, Serialize)]
pub struct RequestFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a str,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<&'a Value>,
}

impl<'a> RequestFrame<'a> {
    pub fn new(id: &'a str, method: &'a str, params: Option<&'a Value>) -> Self {
        Self {
            kind: "req",
            id,
            method,
            params,
        }
    }
}

/// A frame from the gateway.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum Incoming {
    #[serde(rename = "res")]
    Response(ResponseFrame),
    #[serde(rename = "event")]
    Event(EventFrame),
}

/// A response to one of our requests.
#[derive(Debug, Deserialize)]
pub struct ResponseFrame {
    pub id: String,
    pub ok: bool,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub error: Option<ErrorShape>,
}

/// An event pushed by the gateway.
#[derive(Debug, Clone, Deserialize)]
pub struct EventFrame {
    pub event: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub seq: Option<u64>,
}

/// The gateway's error object.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorShape {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
    #[serde(default)]
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorShape {
    /// `details.code`, the machine-readable reason the gateway gives for most failures.
    pub fn detail_code(&self) -> Option<&str> {
        self.details.get("code").and_then(Value::as_str)
    }

    /// A string field of `details`.
    pub fn detail_str(&self, key: &str) -> Option<&str> {
        self.details.get(key).and_then(Value::as_str)
    }
}

/// `connect` params (closed schema on the server: only the keys below exist).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectParams {
    pub min_protocol: u32,
    pub max_protocol: u32,
    pub client: ClientInfo,
    pub role: String,
    pub scopes: Vec<String>,
    pub caps: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<BTreeMap<String, bool>>,
    #[serde(skip_serializing_if = "AuthParams::is_empty")]
    pub auth: AuthParams,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub device: DeviceProof,
}

/// `connect.client`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// One of the gateway's closed list of client ids (e.g. `openclaw-linux`).
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub version: String,
    /// Pinned at pairing: keep it stable for a device key.
    pub platform: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    /// One of the gateway's closed list of client modes (e.g. `ui`).
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// `connect.auth`. Serialized only with the fields that are set. The strings are secrets:
/// this type exists only inside the handshake, serialized straight into the frame.
#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl AuthParams {
    fn is_empty(&self) -> bool {
        self.token.is_none() && self.device_token.is_none() && self.password.is_none()
    }
}

impl std::fmt::Debug for AuthParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mask = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("AuthParams")
            .field("token", &mask(&self.token))
            .field("device_token", &mask(&self.device_token))
            .field("password", &mask(&self.password))
            .finish()
    }
}

/// `connect.device`: the signed proof of the device key.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProof {
    pub id: String,
    pub public_key: String,
    pub signature: String,
    pub signed_at: u64,
    pub nonce: String,
}

/// The `connect.challenge` event payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Challenge {
    pub nonce: String,
    pub ts: u64,
}

/// The `hello-ok` payload, decoded leniently.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloOk {
    pub protocol: u32,
    #[serde(default)]
    pub server: ServerInfo,
    #[serde(default)]
    pub features: Features,
    /// Presence, health, session defaults… kept as JSON; see the accessors.
    #[serde(default)]
    pub snapshot: Value,
    #[serde(default)]
    pub auth: HelloAuth,
    #[serde(default)]
    pub policy: Policy,
}

impl HelloOk {
    /// The canonical main session key (`agent:main:main`), when the gateway announced it.
    pub fn main_session_key(&self) -> Option<&str> {
        self.snapshot
            .pointer("/sessionDefaults/mainSessionKey")
            .and_then(Value::as_str)
    }

    /// The gateway's auth mode (`token`, `password`, `none`, …), when announced.
    pub fn auth_mode(&self) -> Option<&str> {
        self.snapshot.get("authMode").and_then(Value::as_str)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServerInfo {
    pub version: String,
    pub conn_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Features {
    pub methods: Vec<String>,
    pub events: Vec<String>,
    pub capabilities: Vec<String>,
}

/// `hello-ok.auth`: the live authority of this socket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HelloAuth {
    /// `token`, `password`, `device-token`, `none`, …
    pub method: Option<String>,
    pub role: String,
    pub scopes: Vec<String>,
    /// Issued when the device has an approved pairing; persist it per gateway.
    #[serde(deserialize_with = "optional_secret")]
    pub device_token: Option<SecretString>,
    pub issued_at_ms: Option<u64>,
}

fn optional_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
}

/// `hello-ok.policy`. The numbers decode leniently (a negative or fractional value is read as
/// the nearest whole number of milliseconds or bytes) and [`Policy::clamped`] then holds them to
/// what clawlink can act on: a gateway's absurd limit must neither overflow a timer nor let us
/// build a frame larger than we would accept ourselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Policy {
    #[serde(deserialize_with = "lenient_u64")]
    pub max_payload: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub max_buffered_bytes: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub tick_interval_ms: u64,
    /// Attachment limits (`maxBytes`, `maxImageBytes`), kept as JSON.
    pub attachments: Value,
}

/// The tick intervals clawlink follows. Below 1 s our pings (every half tick) would be a flood;
/// above 5 min a dead gateway (dropped after two silent ticks) would go unnoticed for ten.
/// The live gateway ticks every 30 s.
pub const TICK_INTERVAL_MS_BOUNDS: (u64, u64) = (1_000, 300_000);

/// The smallest `maxPayload` clawlink believes: the gateway accepts 64 KiB frames before
/// `hello-ok` (`MAX_PREAUTH_PAYLOAD_BYTES`), so it cannot accept less after it.
pub const MIN_MAX_PAYLOAD: u64 = 64 * 1024;

impl Policy {
    /// This policy with each limit inside what clawlink acts on (`largest_frame`: the largest
    /// message clawlink accepts, which also caps what it sends), and one sentence for each
    /// limit that had to be changed.
    pub fn clamped(mut self, largest_frame: u64) -> (Self, Vec<String>) {
        let mut changed = Vec::new();
        let (low, high) = TICK_INTERVAL_MS_BOUNDS;
        let tick = self.tick_interval_ms.clamp(low, high);
        if tick != self.tick_interval_ms {
            changed.push(format!(
                "policy.tickIntervalMs {} is outside {low}–{high} ms; using {tick} ms",
                self.tick_interval_ms
            ));
            self.tick_interval_ms = tick;
        }
        let payload = self.max_payload.clamp(MIN_MAX_PAYLOAD, largest_frame);
        if payload != self.max_payload {
            changed.push(format!(
                "policy.maxPayload {} is outside {MIN_MAX_PAYLOAD}–{largest_frame} bytes; using {payload}",
                self.max_payload
            ));
            self.max_payload = payload;
        }
        (self, changed)
    }
}

/// A whole non-negative number from any JSON number: negatives become 0, fractions are cut,
/// values beyond `u64` saturate (the clamp then decides). Anything else is refused.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(d)?;
    Ok(match (number.as_u64(), number.as_i64(), number.as_f64()) {
        (Some(n), _, _) => n,
        (None, Some(_negative), _) => 0,
        // `as` saturates: NaN and negatives become 0, huge values u64::MAX.
        (None, None, Some(f)) => f as u64,
        (None, None, None) => 0,
    })
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_payload: 25 * 1024 * 1024,
            max_buffered_bytes: 50 * 1024 * 1024,
            tick_interval_ms: 30_000,
            attachments: Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn request_frames_omit_absent_params() {
        let frame = RequestFrame::new("1", "health", None);
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"req","id":"1","method":"health"}"#
        );
        let params = serde_json::json!({"probe": true});
        let frame = RequestFrame::new("2", "health", Some(&params));
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"req","id":"2","method":"health","params":{"probe":true}}"#
        );
    }

    #[test]
    fn connect_params_never_carry_null_or_empty_optionals() {
        let params = ConnectParams {
            min_protocol: 4,
            max_protocol: 4,
            client: ClientInfo {
                id: "openclaw-linux".into(),
                display_name: None,
                version: "0.1.0".into(),
                platform: "linux".into(),
                device_family: Some("Linux".into()),
                mode: "ui".into(),
                instance_id: None,
            },
            role: "operator".into(),
            scopes: vec!["operator.read".into()],
            caps: vec![],
            commands: vec![],
            permissions: None,
            auth: AuthParams {
                token: Some("t".into()),
                ..AuthParams::default()
            },
            locale: None,
            user_agent: None,
            device: DeviceProof {
                id: "d".into(),
                public_key: "k".into(),
                signature: "s".into(),
                signed_at: 1,
                nonce: "n".into(),
            },
        };
        let json = serde_json::to_value(&params).unwrap();
        let text = json.to_string();
        assert!(!text.contains("null"), "{text}");
        assert!(json.get("commands").is_none());
        assert!(json.get("permissions").is_none());
        assert_eq!(json["auth"], serde_json::json!({"token": "t"}));
        assert_eq!(json["client"]["deviceFamily"], "Linux");
        assert!(json["client"].get("displayName").is_none());
        assert_eq!(json["minProtocol"], 4);
        assert_eq!(json["device"]["signedAt"], 1);
        assert_eq!(format!("{:?}", params.auth).matches("***").count(), 1);
    }

    #[test]
    fn frames_decode_leniently() {
        let res: Incoming = serde_json::from_str(
            r#"{"type":"res","id":"7","ok":false,"error":{"code":"INVALID_REQUEST","message":"m","details":{"code":"AUTH_TOKEN_MISMATCH","extra":1}},"payload":{"x":1},"future":true}"#,
        )
        .unwrap();
        let Incoming::Response(res) = res else {
            panic!("not a response")
        };
        assert_eq!(res.id, "7");
        assert!(!res.ok);
        let err = res.error.unwrap();
        assert_eq!(err.detail_code(), Some("AUTH_TOKEN_MISMATCH"));
        assert_eq!(res.payload["x"], 1);

        let ev: Incoming =
            serde_json::from_str(r#"{"type":"event","event":"tick","payload":{"ts":5},"seq":9}"#)
                .unwrap();
        let Incoming::Event(ev) = ev else {
            panic!("not an event")
        };
        assert_eq!((ev.event.as_str(), ev.seq), ("tick", Some(9)));
    }

    #[test]
    fn oversized_and_deeply_nested_frames_are_refused_with_the_reason() {
        let oversized = " ".repeat(MAX_FRAME_BYTES + 1);
        let err = decode_frame(&oversized).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len } if len == MAX_FRAME_BYTES + 1));
        assert!(err.to_string().contains("limit of 67108864 bytes"), "{err}");

        let nested = format!(
            r#"{{"type":"event","event":"x","payload":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = decode_frame(&nested).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    #[test]
    fn hello_ok_keeps_what_we_need_and_ignores_the_rest() {
        let hello: HelloOk = serde_json::from_str(
            r#"{"type":"hello-ok","protocol":4,"server":{"version":"2026.9.6","connId":"c","newField":1},
                "features":{"methods":["health"],"events":["tick"]},
                "snapshot":{"sessionDefaults":{"mainSessionKey":"agent:main:main"},"authMode":"token"},
                "auth":{"method":"token","role":"operator","scopes":["operator.read"],"deviceToken":"dt"},
                "policy":{"maxPayload":1,"maxBufferedBytes":2,"tickIntervalMs":30000}}"#,
        )
        .unwrap();
        assert_eq!(hello.server.version, "2026.9.6");
        assert_eq!(hello.main_session_key(), Some("agent:main:main"));
        assert_eq!(hello.auth_mode(), Some("token"));
        assert_eq!(
            hello.auth.device_token.as_ref().unwrap().expose_secret(),
            "dt"
        );
        assert!(!format!("{hello:?}").contains("\"dt\""));
        assert_eq!(hello.policy.tick_interval_ms, 30_000);
    }

    #[test]
    fn absurd_policy_numbers_are_read_and_clamped_with_a_note_each() {
        let policy: Policy = serde_json::from_str(
            r#"{"maxPayload":1e300,"maxBufferedBytes":-1,"tickIntervalMs":-30000}"#,
        )
        .unwrap();
        assert_eq!(policy.max_payload, u64::MAX);
        assert_eq!(policy.max_buffered_bytes, 0);
        let (policy, notes) = policy.clamped(64 << 20);
        assert_eq!(policy.tick_interval_ms, TICK_INTERVAL_MS_BOUNDS.0);
        assert_eq!(policy.max_payload, 64 << 20);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("tickIntervalMs"), "{notes:?}");
        assert!(notes[1].contains("maxPayload"), "{notes:?}");

        let (live, notes) = Policy::default().clamped(64 << 20);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(live.tick_interval_ms, 30_000);
        assert!(serde_json::from_str::<Policy>(r#"{"tickIntervalMs":"soon"}"#).is_err());
    }
}
