//! The doctor's websocket layer on the real connection: a transport wrapper that records what the gateway sends on the client's first stream (the upgrade answer and `connect.challenge`, with arrival times).
//!
//! A separate probe socket that upgrades and leaves before `connect` is what the gateway logs
//! as a warning ("closed before connect"), whatever close code it sends. So on the healthy
//! path the doctor reads the websocket layer off the operator connection it makes anyway, and
//! opens the bare probe only when that connection did not show a healthy upgrade — to tell
//! apart what went wrong.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use clawlink_core::transport::{Connected, DuplexStream, LocalEndpoint, Transport, TransportError};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ws_probe::{split_frame, Challenge};

/// Most bytes recorded: the head and the challenge are well under this.
const MAX_RECORDED: usize = 64 * 1024;

/// What the gateway sent on the recorded stream.
#[derive(Debug, Default)]
struct Recording {
    started: Option<Instant>,
    /// The URL the client asked for on the recorded stream.
    request_url: Option<String>,
    /// Bytes received so far, and when each read brought its part (cumulative length).
    bytes: Vec<u8>,
    arrivals: Vec<(Instant, SystemTime, usize)>,
}

impl Recording {
    /// When the byte at `offset` (exclusive end) had arrived.
    fn arrival_of(&self, end: usize) -> Option<(Instant, SystemTime)> {
        self.arrivals
            .iter()
            .find(|(_, _, total)| *total >= end)
            .map(|(at, wall, _)| (*at, *wall))
    }

    /// The healthy case only: a `101` answer and then `connect.challenge` as the first
    /// message. Anything else is left to the bare probe to explain.
    fn challenge(&self) -> Option<Challenge> {
        let started = self.started?;
        let head_end = self.bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = &self.bytes[..head_end];
        if !(head.starts_with(b"HTTP/1.1 101") || head.starts_with(b"HTTP/1.0 101")) {
            return None;
        }
        let mut offset = head_end;
        let text = loop {
            let (opcode, payload, used) = split_frame(&self.bytes[offset..]).ok()??;
            offset += used;
            match opcode {
                0x1 => break String::from_utf8(payload).ok()?,
                0x9 | 0xA => continue,
                _ => return None,
            }
        };
        let frame: Value = serde_json::from_str(&text).ok()?;
        let is_challenge = frame["type"] == "event"
            && frame["event"] == "connect.challenge"
            && frame["payload"]["nonce"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
        if !is_challenge {
            return None;
        }
        let (head_at, _) = self.arrival_of(head_end)?;
        let (challenge_at, challenge_wall) = self.arrival_of(offset)?;
        let received_ms = clawlink_core::time::unix_millis(challenge_wall) as i64;
        Some(Challenge {
            upgrade_ms: head_at.duration_since(started).as_millis() as u64,
            challenge_ms: challenge_at.duration_since(head_at).as_millis() as u64,
            clock_offset_ms: frame["payload"]["ts"].as_i64().map(|ts| ts - received_ms),
            capabilities: frame["payload"]["capabilities"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// The profile's transport, recording its first stream.
pub(super) struct TapTransport {
    inner: Arc<dyn Transport>,
    recording: Arc<Mutex<Recording>>,
    tapped: AtomicBool,
}

impl TapTransport {
    pub(super) fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            recording: Arc::default(),
            tapped: AtomicBool::new(false),
        }
    }

    /// The URL the client asked for on its first stream.
    pub(super) fn request_url(&self) -> Option<String> {
        self.recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request_url
            .clone()
    }

    /// What the first stream showed, when it was a healthy gateway WebSocket.
    pub(super) fn challenge(&self) -> Option<Challenge> {
        self.recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .challenge()
    }
}

#[async_trait]
impl Transport for TapTransport {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn gateway_key(&self) -> String {
        self.inner.gateway_key()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_loopback_to_gateway(&self) -> bool {
        self.inner.is_loopback_to_gateway()
    }

    fn gateway_url(&self) -> Option<String> {
        self.inner.gateway_url()
    }

    async fn connect(&self) -> Result<Connected, TransportError> {
        let first = !self.tapped.swap(true, Ordering::SeqCst);
        if first {
            self.recording
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .started = Some(Instant::now());
        }
        let mut connected = self.inner.connect().await?;
        if first {
            self.recording
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .request_url = Some(connected.request_url.clone());
            connected.stream = Box::new(TapStream {
                inner: connected.stream,
                recording: self.recording.clone(),
            });
        }
        Ok(connected)
    }

    fn local_endpoints(&self) -> Vec<LocalEndpoint> {
        self.inner.local_endpoints()
    }

    fn commands(&self) -> Option<&dyn clawlink_core::transport::HostCommands> {
        self.inner.commands()
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

/// A stream that copies what it reads into the recording.
struct TapStream {
    inner: Box<dyn DuplexStream>,
    recording: Arc<Mutex<Recording>>,
}

impl AsyncRead for TapStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            let mut recording = self.recording.lock().unwrap_or_else(|e| e.into_inner());
            if !fresh.is_empty() && recording.bytes.len() < MAX_RECORDED {
                recording.bytes.extend_from_slice(fresh);
                let total = recording.bytes.len();
                recording
                    .arrivals
                    .push((Instant::now(), SystemTime::now(), total));
            }
        }
        polled
    }
}

impl AsyncWrite for TapStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(parts: &[&[u8]]) -> Recording {
        let started = Instant::now();
        let mut recording = Recording {
            started: Some(started),
            ..Recording::default()
        };
        for part in parts {
            recording.bytes.extend_from_slice(part);
            recording
                .arrivals
                .push((Instant::now(), SystemTime::now(), recording.bytes.len()));
        }
        recording
    }

    fn text_frame(text: &str) -> Vec<u8> {
        let mut frame = vec![0x81, text.len() as u8];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    #[test]
    fn an_upgrade_then_the_challenge_is_read_off_the_real_stream() {
        let challenge = r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n-1","ts":1795530938660,"capabilities":["a"]}}"#;
        let seen = recording(&[
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            &[0x89, 0x00], // a ping first is skipped
            &text_frame(challenge),
        ])
        .challenge()
        .expect("a healthy upgrade");
        assert_eq!(seen.capabilities, vec!["a".to_owned()]);
        assert!(seen.clock_offset_ms.is_some());
    }

    #[test]
    fn anything_else_is_left_to_the_probe() {
        let refused = recording(&[b"HTTP/1.1 403 Forbidden\r\n\r\n"]);
        assert!(refused.challenge().is_none());
        let other = recording(&[
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            &text_frame(r#"{"type":"event","event":"tick"}"#),
        ]);
        assert!(other.challenge().is_none());
        let silent = recording(&[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"]);
        assert!(silent.challenge().is_none());
    }
}
