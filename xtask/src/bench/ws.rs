//! A minimal blocking WebSocket client (RFC 6455, std only) and the gateway's
//! device-less `cli` handshake, enough to time `health` round trips on one connection.
//!
//! Client frames are masked text frames; server frames are read unmasked, fragments
//! reassembled, pings answered with pongs. No extensions are offered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::procs;

/// The RFC 6455 example key, and the accept value the server must derive from it.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Bigger than any frame the benchmarks expect (hello-ok is ~60 KiB); guards allocations.
const MAX_MESSAGE: usize = 32 << 20;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

pub struct WsClient {
    stream: TcpStream,
    /// Bytes read from the socket and not consumed yet.
    buf: Vec<u8>,
    /// Varies the masking key per frame (RFC 6455 wants it unpredictable; for a
    /// loopback benchmark a counter-derived key is fine).
    mask_seed: u32,
}

impl WsClient {
    /// Opens `ws://127.0.0.1:port/` (no Origin header, as the gateway wants from non-browsers).
    pub fn connect(port: u16, timeout: Duration) -> Result<WsClient> {
        let mut stream = procs::connect(port, timeout)?;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes())?;
        let mut buf = Vec::with_capacity(64 * 1024);
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                bail!("WebSocket upgrade response has no end of headers");
            }
            let mut chunk = [0u8; 4096];
            let n = stream
                .read(&mut chunk)
                .context("reading the upgrade response")?;
            if n == 0 {
                bail!("connection closed during the WebSocket upgrade");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status_line = head.lines().next().unwrap_or("");
        if status_line.split_whitespace().nth(1) != Some("101") {
            bail!("WebSocket upgrade refused: {status_line}");
        }
        let accept = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-accept")
                .then(|| value.trim().to_string())
        });
        if accept.as_deref() != Some(WS_ACCEPT) {
            bail!("bad Sec-WebSocket-Accept: {accept:?}");
        }
        buf.drain(..head_end);
        Ok(WsClient {
            stream,
            buf,
            mask_seed: 0x9e37_79b9,
        })
    }

    /// Sends one masked text frame.
    pub fn send_text(&mut self, text: &str) -> Result<()> {
        self.send_frame(OP_TEXT, text.as_bytes())
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        self.mask_seed = self
            .mask_seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let mask = self.mask_seed.to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream
            .write_all(&frame)
            .context("writing a WebSocket frame")
    }

    /// Makes sure `n` unconsumed bytes are buffered.
    fn fill(&mut self, n: usize) -> Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        while self.buf.len() < n {
            let got = self
                .stream
                .read(&mut chunk)
                .context("reading from the WebSocket")?;
            if got == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }

    /// The next text (or binary) message; answers pings and skips pongs on the way.
    pub fn recv_text(&mut self) -> Result<String> {
        let mut message: Vec<u8> = Vec::new();
        let mut in_message = false;
        loop {
            self.fill(2)?;
            let fin = self.buf[0] & 0x80 != 0;
            let opcode = self.buf[0] & 0x0f;
            let masked = self.buf[1] & 0x80 != 0;
            let (len, mut offset) = match self.buf[1] & 0x7f {
                126 => {
                    self.fill(4)?;
                    (u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4)
                }
                127 => {
                    self.fill(10)?;
                    let mut be = [0u8; 8];
                    be.copy_from_slice(&self.buf[2..10]);
                    (u64::from_be_bytes(be), 10)
                }
                n => (u64::from(n), 2),
            };
            let len = usize::try_from(len)
                .ok()
                .filter(|&n| n <= MAX_MESSAGE)
                .context("WebSocket frame too large")?;
            let mut mask = None;
            if masked {
                // Servers must not mask, but unmasking is cheap, so accept it.
                self.fill(offset + 4)?;
                mask = Some([
                    self.buf[offset],
                    self.buf[offset + 1],
                    self.buf[offset + 2],
                    self.buf[offset + 3],
                ]);
                offset += 4;
            }
            self.fill(offset + len)?;
            let mut payload: Vec<u8> = self.buf[offset..offset + len].to_vec();
            self.buf.drain(..offset + len);
            if let Some(mask) = mask {
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= mask[i % 4]);
            }
            match opcode {
                OP_PING => self.send_frame(OP_PONG, &payload)?,
                OP_PONG => {}
                OP_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                    bail!("the server closed the WebSocket (code {code:?}, reason {reason:?})");
                }
                OP_TEXT | OP_BINARY | OP_CONT => {
                    if (opcode == OP_CONT) != in_message {
                        bail!("WebSocket fragmentation out of order");
                    }
                    message.extend_from_slice(&payload);
                    if message.len() > MAX_MESSAGE {
                        bail!("WebSocket message too large");
                    }
                    if fin {
                        return String::from_utf8(message).context("non-UTF-8 WebSocket message");
                    }
                    in_message = true;
                }
                other => bail!("unknown WebSocket opcode {other:#x}"),
            }
        }
    }

    /// Waits for the gateway's `res` with this id, skipping events and other responses.
    pub fn wait_response(&mut self, id: &str, deadline: Instant) -> Result<Value> {
        loop {
            if Instant::now() > deadline {
                bail!("no response to request {id:?} in time");
            }
            let text = self.recv_text()?;
            // Cheap pre-check before parsing: events (ticks, health, presence) are skipped.
            if !text.contains(id) {
                continue;
            }
            let frame: Value = serde_json::from_str(&text).context("gateway frame is not JSON")?;
            if frame.get("type").and_then(Value::as_str) == Some("res")
                && frame.get("id").and_then(Value::as_str) == Some(id)
            {
                return Ok(frame);
            }
        }
    }

    /// Best effort: a close frame (code 1000), so the gateway logs a clean disconnect.
    pub fn close(mut self) {
        let _ = self.send_frame(OP_CLOSE, &1000u16.to_be_bytes());
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Opens a WebSocket to 127.0.0.1:port and completes the gateway handshake as a
/// device-less `cli`/`cli` operator with the shared token (accepted on loopback).
/// Returns the client and `{method, role, scopes}` from the hello-ok's `auth`.
pub fn gateway_connect(port: u16, token: &str, timeout: Duration) -> Result<(WsClient, Value)> {
    let deadline = Instant::now() + timeout;
    let mut ws = WsClient::connect(port, timeout)?;
    loop {
        if Instant::now() > deadline {
            bail!("no connect.challenge event in time");
        }
        let text = ws.recv_text()?;
        let frame: Value = serde_json::from_str(&text).context("gateway frame is not JSON")?;
        if frame.get("type").and_then(Value::as_str) == Some("event")
            && frame.get("event").and_then(Value::as_str) == Some("connect.challenge")
        {
            break;
        }
    }
    let connect = json!({
        "type": "req",
        "id": "c",
        "method": "connect",
        "params": {
            "minProtocol": 4,
            "maxProtocol": 4,
            "client": {"id": "cli", "version": "bench", "platform": "linux", "mode": "cli"},
            "role": "operator",
            "scopes": ["operator.read"],
            "caps": [],
            "auth": {"token": token},
        },
    });
    ws.send_text(&connect.to_string())?;
    let res = ws.wait_response("c", deadline)?;
    if res.get("ok").and_then(Value::as_bool) != Some(true) {
        let error = res
            .get("error")
            .map_or_else(String::new, |e| format!("{e:#}"));
        bail!(
            "the gateway refused the device-less cli connect: {}",
            error.trim()
        );
    }
    // Only the non-secret parts (hello-ok's auth may carry tokens).
    let auth = res.get("payload").and_then(|p| p.get("auth"));
    let keep = |key: &str| {
        auth.and_then(|a| a.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let auth = json!({"method": keep("method"), "role": keep("role"), "scopes": keep("scopes")});
    Ok((ws, auth))
}

/// One `health` request/response on an established connection; returns its wall time.
pub fn health_round_trip(ws: &mut WsClient, index: usize, timeout: Duration) -> Result<Duration> {
    let id = format!("h{index}");
    let request = json!({"type": "req", "id": id, "method": "health"}).to_string();
    let started = Instant::now();
    ws.send_text(&request)?;
    let res = ws.wait_response(&id, started + timeout)?;
    let elapsed = started.elapsed();
    if res.get("ok").and_then(Value::as_bool) != Some(true) {
        let error = res
            .get("error")
            .map_or_else(String::new, |e| format!("{e:#}"));
        bail!("health failed: {}", error.trim());
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    /// A fake server: upgrade, a challenge event, a ping, then a fragmented response.
    #[test]
    fn speaks_enough_websocket() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            assert!(String::from_utf8_lossy(&head).contains(WS_KEY));
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
            )
            .into_bytes();
            let unmasked = |op: u8, fin: bool, payload: &[u8]| {
                let mut f = vec![if fin { 0x80 } else { 0 } | op, payload.len() as u8];
                f.extend_from_slice(payload);
                f
            };
            out.extend(unmasked(
                OP_TEXT,
                true,
                br#"{"type":"event","event":"tick"}"#,
            ));
            out.extend(unmasked(OP_PING, true, b"p"));
            out.extend(unmasked(OP_TEXT, false, br#"{"type":"res","#));
            out.extend(unmasked(OP_CONT, true, br#""id":"h1","ok":true}"#));
            conn.write_all(&out).unwrap();
            // Expect the client's pong (masked): 0x8A, 0x81, 4 mask bytes, 1 payload byte.
            let mut pong = [0u8; 7];
            conn.read_exact(&mut pong).unwrap();
            assert_eq!(pong[0], 0x80 | OP_PONG);
            assert_eq!(pong[6] ^ pong[2], b'p');
        });
        let mut ws = WsClient::connect(port, Duration::from_secs(5)).unwrap();
        let res = ws
            .wait_response("h1", Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(res.get("ok").and_then(Value::as_bool), Some(true));
        server.join().unwrap();
    }
}
