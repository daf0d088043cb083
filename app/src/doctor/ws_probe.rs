//! A bare WebSocket probe for `clawlink doctor`: sends the HTTP upgrade itself and reads the first frame, so that "not HTTP", "HTTP but no upgrade" and "upgraded but silent" (the "Web Chat stuck" case) are told apart.
//!
//! The gateway client does all of this in one go and reports only the first error; here every
//! answer is kept: the status line, the first bytes of a body, the close code, how long the
//! `connect.challenge` took and the gateway's clock. The doctor opens it only when its real
//! connection did not show a healthy upgrade (`doctor/tap.rs`): the gateway logs a socket
//! that leaves before `connect` as a warning.

use std::time::{Duration, Instant, SystemTime};

use clawlink_core::transport::DuplexStream;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the gateway may take to send `connect.challenge` after the upgrade (it sends it
/// at once; the reference client gives up after 15 s).
pub const CHALLENGE_WAIT: Duration = Duration::from_secs(5);
/// Largest HTTP head or frame we read.
const MAX_READ: usize = 64 * 1024;

/// What a healthy gateway socket showed.
#[derive(Debug)]
pub struct Challenge {
    pub upgrade_ms: u64,
    pub challenge_ms: u64,
    /// The gateway's clock minus ours, in ms (device signatures expire beyond ±2 min).
    pub clock_offset_ms: Option<i64>,
    pub capabilities: Vec<String>,
}

/// Why the socket is not a healthy gateway socket.
#[derive(Debug)]
pub struct ProbeFailure {
    pub detail: String,
    pub fix: String,
    pub data: Value,
}

fn failure(detail: String, fix: &str, data: Value) -> ProbeFailure {
    ProbeFailure {
        detail,
        fix: fix.to_owned(),
        data,
    }
}

const NOT_THE_GATEWAY_FIX: &str = "point remote_port (--remote-port) or the URL at the gateway's WebSocket port: \
     `openclaw gateway status` on the gateway host shows the port it listens on; a reverse proxy in front of it \
     must pass the Upgrade and Connection headers";
const STUCK_FIX: &str = "the gateway accepted the socket but does not serve it: on the gateway host restart it \
     (`openclaw gateway restart`, or restart its service), and look at its log (`openclaw logs`) for a stalled \
     event loop; `openclaw status --json` there shows whether it is healthy";

/// Sends the upgrade for `request_url` over `stream` and waits for `connect.challenge`.
pub async fn probe(
    mut stream: Box<dyn DuplexStream>,
    request_url: &str,
    answer_limit: Duration,
) -> Result<Challenge, ProbeFailure> {
    let started = Instant::now();
    let (authority, path) = split_url(request_url);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: clawlink-doctor/{}\r\n\r\n",
        websocket_key(),
        env!("CARGO_PKG_VERSION")
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Err(failure(
            format!(
                "the connection to the gateway port broke before the upgrade could be sent: {e}"
            ),
            STUCK_FIX,
            Value::Null,
        ));
    }
    let _ = stream.flush().await;

    let mut buffer = Vec::new();
    let head_end = match tokio::time::timeout(answer_limit, read_head(&mut stream, &mut buffer)).await {
        Err(_) => {
            return Err(failure(
                format!(
                    "sent the WebSocket upgrade to {request_url}; no HTTP answer within {} s: something that is not the gateway listens there, or the gateway is hung",
                    answer_limit.as_secs()
                ),
                STUCK_FIX,
                json!({"stage": "http"}),
            ))
        }
        Ok(Err(e)) => {
            return Err(failure(
                format!("reading the answer to the WebSocket upgrade failed: {e}"),
                STUCK_FIX,
                json!({"stage": "http"}),
            ))
        }
        Ok(Ok(None)) if buffer.is_empty() => {
            return Err(failure(
                "the gateway port accepted the connection and closed it without answering the WebSocket upgrade".into(),
                NOT_THE_GATEWAY_FIX,
                json!({"stage": "http"}),
            ))
        }
        Ok(Ok(None)) => return Err(not_http(&buffer)),
        Ok(Ok(Some(end))) => end,
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    let Some(status) = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
    else {
        return Err(not_http(&buffer));
    };
    let body = String::from_utf8_lossy(&buffer[(head_end + 4).min(buffer.len())..])
        .chars()
        .take(160)
        .collect::<String>();
    if status != 101 {
        return Err(refused_upgrade(status, &status_line, &head, &body));
    }
    let upgrade_ms = started.elapsed().as_millis() as u64;
    let mut pending: Vec<u8> = buffer[head_end + 4..].to_vec();

    let challenge_started = Instant::now();
    let first =
        tokio::time::timeout(CHALLENGE_WAIT, first_message(&mut stream, &mut pending)).await;
    let text = match first {
        Err(_) => {
            return Err(failure(
                format!(
                    "the WebSocket opened but no connect.challenge came within {} s: the tunnel is up but the gateway's WebSocket is unhealthy (the \"Web Chat stuck\" symptom)",
                    CHALLENGE_WAIT.as_secs()
                ),
                STUCK_FIX,
                json!({"stage": "challenge", "upgradeMs": upgrade_ms}),
            ))
        }
        Ok(Err(e)) => {
            return Err(failure(
                format!("the WebSocket opened, then reading its first frame failed: {e}"),
                STUCK_FIX,
                json!({"stage": "challenge", "upgradeMs": upgrade_ms}),
            ))
        }
        Ok(Ok(Message::Closed { code, reason })) => {
            return Err(failure(
                format!(
                    "the WebSocket opened and the server closed it at once (code {}{}) instead of sending connect.challenge",
                    code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
                    if reason.is_empty() { String::new() } else { format!(": {reason}") }
                ),
                STUCK_FIX,
                json!({"stage": "challenge", "closeCode": code, "closeReason": reason}),
            ))
        }
        Ok(Ok(Message::Text(text))) => text,
    };
    let challenge_ms = challenge_started.elapsed().as_millis() as u64;
    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let is_challenge = frame["type"] == "event"
        && frame["event"] == "connect.challenge"
        && frame["payload"]["nonce"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
    if !is_challenge {
        let shown: String = text.chars().take(120).collect();
        return Err(failure(
            format!("the WebSocket opened but its first message is not the gateway's connect.challenge: {shown}"),
            NOT_THE_GATEWAY_FIX,
            json!({"stage": "challenge", "firstMessage": shown}),
        ));
    }
    let clock_offset_ms = frame["payload"]["ts"].as_i64().map(|ts| {
        let now = clawlink_core::time::unix_millis(SystemTime::now()) as i64;
        ts - now
    });
    let capabilities = frame["payload"]["capabilities"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // A polite close; the gateway would drop a socket that never sends connect anyway.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&masked_close_frame()).await;
        let _ = stream.shutdown().await;
    })
    .await;
    Ok(Challenge {
        upgrade_ms,
        challenge_ms,
        clock_offset_ms,
        capabilities,
    })
}

fn not_http(buffer: &[u8]) -> ProbeFailure {
    let text = String::from_utf8_lossy(&buffer[..buffer.len().min(60)]).into_owned();
    if text.starts_with("SSH-") {
        return failure(
            format!(
                "an SSH server answers on that port ({}), not the gateway",
                text.lines().next().unwrap_or_default().trim()
            ),
            NOT_THE_GATEWAY_FIX,
            json!({"stage": "http", "firstBytes": text}),
        );
    }
    failure(
        format!("the port does not answer in HTTP (first bytes: {:?}): it is not the gateway's WebSocket port", text),
        NOT_THE_GATEWAY_FIX,
        json!({"stage": "http", "firstBytes": text}),
    )
}

fn refused_upgrade(status: u16, status_line: &str, head: &str, body: &str) -> ProbeFailure {
    let data = json!({"stage": "http", "httpStatus": status, "body": body});
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    match status {
        403 if body.contains("proxy_attribution_required") => failure(
            format!("the gateway refused the upgrade ({status_line}): the connection carries forwarding headers from an address that is not in gateway.trustedProxies"),
            "a proxy on the gateway host adds X-Forwarded-*/Forwarded headers: add its address to gateway.trustedProxies on the gateway, or connect without it",
            data,
        ),
        429 => failure(
            format!(
                "the gateway refused the upgrade: too many failed attempts ({status_line}{})",
                header("retry-after").map(|s| format!(", retry after {s} s")).unwrap_or_default()
            ),
            "wait for the rate limit to pass, then fix the credentials that failed",
            data,
        ),
        503 => failure(
            format!("the gateway refused the upgrade ({status_line}): {}", if body.is_empty() { "unavailable" } else { body }),
            "too many unauthenticated sockets from this address, or the gateway is starting: close other clients stuck before login, then retry",
            data,
        ),
        401 | 407 => failure(
            format!("an authenticating proxy answered the upgrade ({status_line}), not the gateway"),
            "log in to the proxy in front of the gateway (e.g. Cloudflare Access), or connect to the gateway without it",
            data,
        ),
        _ => failure(
            format!(
                "the port answers HTTP ({status_line}) but does not upgrade to a WebSocket: it is not the OpenClaw gateway, or a proxy in front of it drops the upgrade{}",
                if body.is_empty() { String::new() } else { format!(" (body: {body})") }
            ),
            NOT_THE_GATEWAY_FIX,
            data,
        ),
    }
}

/// Reads until the end of the HTTP head; `Some(index of "\r\n\r\n")`, or `None` at EOF.
async fn read_head(
    stream: &mut Box<dyn DuplexStream>,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            // Keep reading a short body of a refusal, for the message; never wait for it.
            if !buffer.starts_with(b"HTTP/1.1 101") && !buffer.starts_with(b"HTTP/1.0 101") {
                let mut chunk = [0u8; 1024];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(200), stream.read(&mut chunk)).await
                {
                    buffer.extend_from_slice(&chunk[..n]);
                }
            }
            return Ok(Some(end));
        }
        if buffer.len() > MAX_READ {
            return Ok(None);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
        // Not HTTP at all (an SSH banner, a TLS alert): no point waiting for a head.
        if buffer.len() >= 5 && !buffer.starts_with(b"HTTP/") {
            return Ok(None);
        }
    }
}

/// The first data-bearing message of the socket.
enum Message {
    Text(String),
    Closed { code: Option<u16>, reason: String },
}

/// Reads frames until a text frame or a close (pings and binary frames are skipped).
async fn first_message(
    stream: &mut Box<dyn DuplexStream>,
    pending: &mut Vec<u8>,
) -> std::io::Result<Message> {
    loop {
        let Some((opcode, payload)) = read_frame(stream, pending).await? else {
            return Ok(Message::Closed {
                code: None,
                reason: "the connection ended".into(),
            });
        };
        match opcode {
            0x1 => {
                return Ok(Message::Text(
                    String::from_utf8_lossy(&payload).into_owned(),
                ))
            }
            0x8 => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let reason =
                    String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                return Ok(Message::Closed { code, reason });
            }
            _ => continue,
        }
    }
}

/// One frame: `(opcode, unmasked payload)`, or `None` at EOF.
async fn read_frame(
    stream: &mut Box<dyn DuplexStream>,
    pending: &mut Vec<u8>,
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    loop {
        if let Some((opcode, payload, used)) = split_frame(pending)? {
            pending.drain(..used);
            return Ok(Some((opcode, payload)));
        }
        let have = pending.len();
        if !fill(stream, pending, have + 1).await? {
            return Ok(None);
        }
    }
}

/// The first frame of `buffer`: `(opcode, unmasked payload, bytes it took)`, or `None` while
/// it is incomplete.
pub(super) fn split_frame(buffer: &[u8]) -> std::io::Result<Option<(u8, Vec<u8>, usize)>> {
    if buffer.len() < 2 {
        return Ok(None);
    }
    let opcode = buffer[0] & 0x0f;
    let masked = buffer[1] & 0x80 != 0;
    let (length, mut header) = match buffer[1] & 0x7f {
        126 if buffer.len() < 4 => return Ok(None),
        126 => (u16::from_be_bytes([buffer[2], buffer[3]]) as usize, 4),
        127 if buffer.len() < 10 => return Ok(None),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buffer[2..10]);
            (u64::from_be_bytes(bytes) as usize, 10)
        }
        short => (short as usize, 2),
    };
    if length > MAX_READ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {length}-byte first frame; the gateway's challenge is a few hundred bytes"),
        ));
    }
    let mask = if masked {
        if buffer.len() < header + 4 {
            return Ok(None);
        }
        let mask = [
            buffer[header],
            buffer[header + 1],
            buffer[header + 2],
            buffer[header + 3],
        ];
        header += 4;
        Some(mask)
    } else {
        None
    };
    if buffer.len() < header + length {
        return Ok(None);
    }
    let mut payload: Vec<u8> = buffer[header..header + length].to_vec();
    if let Some(mask) = mask {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
    }
    Ok(Some((opcode, payload, header + length)))
}

/// Reads until `pending` holds `want` bytes; false at EOF.
async fn fill(
    stream: &mut Box<dyn DuplexStream>,
    pending: &mut Vec<u8>,
    want: usize,
) -> std::io::Result<bool> {
    while pending.len() < want {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        pending.extend_from_slice(&chunk[..n]);
    }
    Ok(true)
}

/// A client close frame (code 1000), masked as RFC 6455 requires of clients.
fn masked_close_frame() -> Vec<u8> {
    let mut mask = [0u8; 4];
    let _ = getrandom::fill(&mut mask);
    let payload = 1000u16.to_be_bytes();
    let mut frame = vec![0x88, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// `(host:port, path)` of a `ws://` / `wss://` URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .unwrap_or(url);
    match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
fn websocket_key() -> String {
    use base64::Engine;
    let mut nonce = [0u8; 16];
    let _ = getrandom::fill(&mut nonce);
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_are_16_random_bytes_in_base64() {
        use base64::Engine;
        let key = websocket_key();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        assert_eq!((key.len(), bytes.len()), (24, 16));
        assert_ne!(key, websocket_key());
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("ws://127.0.0.1:18789/"),
            ("127.0.0.1:18789".into(), "/".into())
        );
        assert_eq!(
            split_url("wss://[::1]:443/x?y=1"),
            ("[::1]:443".into(), "/x?y=1".into())
        );
        assert_eq!(split_url("ws://h:1"), ("h:1".into(), "/".into()));
    }

    #[tokio::test]
    async fn a_server_frame_is_read_and_a_masked_one_unmasked() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut client: Box<dyn DuplexStream> = Box::new(client);
        server.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
        let mut close = masked_close_frame();
        close.extend_from_slice(&[]);
        server.write_all(&close).await.unwrap();
        let mut pending = Vec::new();
        let (opcode, payload) = read_frame(&mut client, &mut pending)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((opcode, payload.as_slice()), (1, &b"hi"[..]));
        let (opcode, payload) = read_frame(&mut client, &mut pending)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((opcode, payload), (8, 1000u16.to_be_bytes().to_vec()));
    }
}
