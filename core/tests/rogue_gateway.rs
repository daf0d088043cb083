//! Rogue gateways in-process: oversized and malformed frames, a missing challenge, a silent socket, a close mid-frame, floods and absurd hello-ok limits; each must end in bounded time with an error naming its layer, retried only where retrying helps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawlink_core::gateway::{
    ClientOptions, Credentials, DeviceIdentity, GatewayClient, GatewayError, Layer,
    MemoryTokenStore, Phase, EARLY_EVENTS_MAX, MAX_FRAME_BYTES,
};
use clawlink_core::transport::{Connected, Transport, TransportError};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The hang guard of every scenario: far above the client's own limits (a 1 s connect timeout
/// here), so reaching it means the client has no bound of its own.
const HANG_GUARD: Duration = Duration::from_secs(15);
/// The connect timeout the scenarios give the client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

type Serve = Arc<dyn Fn(DuplexStream) + Send + Sync>;

/// A transport whose far end is an in-memory pipe served by a rogue.
struct Pipe {
    serve: Serve,
}

#[async_trait]
impl Transport for Pipe {
    fn name(&self) -> &str {
        "pipe"
    }
    fn gateway_key(&self) -> String {
        "pipe://rogue".into()
    }
    fn describe(&self) -> String {
        "the rogue gateway".into()
    }
    async fn connect(&self) -> Result<Connected, TransportError> {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        (self.serve)(theirs);
        Ok(Connected {
            stream: Box::new(ours),
            request_url: "ws://127.0.0.1:18789/".into(),
        })
    }
}

/// A rogue that runs `script` on each accepted connection.
fn rogue<F, Fut>(script: F) -> Arc<Pipe>
where
    F: Fn(DuplexStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let script = Arc::new(script);
    Arc::new(Pipe {
        serve: Arc::new(move |io| {
            tokio::spawn(script(io));
        }),
    })
}

fn options() -> ClientOptions {
    let mut options = ClientOptions::operator(
        Arc::new(DeviceIdentity::from_seed([7; 32])),
        Credentials {
            token: Some("t0k3n".to_owned().into()),
            password: None,
        },
        Arc::new(MemoryTokenStore::default()),
    );
    options.connect_timeout = CONNECT_TIMEOUT;
    options
}

/// Connects once; the error, and how long it took, under the hang guard.
async fn connect_error(transport: Arc<Pipe>) -> (GatewayError, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(HANG_GUARD, GatewayClient::connect(transport, options()))
        .await
        .expect("the client did not return within the hang guard");
    match result {
        Ok(_) => panic!("the client connected to a rogue gateway"),
        Err(error) => (error, started.elapsed()),
    }
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

fn challenge() -> Message {
    text(json!({"type":"event","event":"connect.challenge","payload":{"nonce":"n-1","ts":1}}))
}

fn hello_ok(id: &Value, policy: Value, protocol: Value) -> Message {
    text(json!({"type":"res","id":id,"ok":true,"payload":{
        "type":"hello-ok","protocol":protocol,"server":{"version":"rogue","connId":"c1"},
        "features":{"methods":["health"],"events":["tick"]},"snapshot":{},
        "auth":{"role":"operator","scopes":["operator.read"],"method":"token"},
        "policy":policy}}))
}

fn live_policy() -> Value {
    json!({"maxPayload":26_214_400,"maxBufferedBytes":52_428_800,"tickIntervalMs":30_000})
}

/// Accepts the upgrade, sends the challenge and reads `connect`; returns the socket and the
/// request id to answer.
async fn until_connect(io: DuplexStream) -> Option<(WebSocketStream<DuplexStream>, Value)> {
    let mut ws = tokio_tungstenite::accept_async(io).await.ok()?;
    ws.send(challenge()).await.ok()?;
    let Some(Ok(Message::Text(connect))) = ws.next().await else {
        return None;
    };
    let connect: Value = serde_json::from_str(&connect).ok()?;
    Some((ws, connect["id"].clone()))
}

/// Answers `health` requests until the client goes away.
async fn answer_health(ws: &mut WebSocketStream<DuplexStream>) {
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(req) = message {
            let req: Value = serde_json::from_str(&req).unwrap_or_default();
            let answer = json!({"type":"res","id":req["id"],"ok":true,"payload":{"ok":true}});
            if ws.send(text(answer)).await.is_err() {
                return;
            }
        }
    }
}

/// The raw header of an unmasked server text frame of `len` bytes (RFC 6455 §5.2).
fn text_frame_header(len: u64) -> Vec<u8> {
    let mut header = vec![0x81];
    match len {
        0..=125 => header.push(len as u8),
        126..=0xffff => {
            header.push(126);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            header.push(127);
            header.extend_from_slice(&len.to_be_bytes());
        }
    }
    header
}

/// Completes the upgrade and hands back the raw pipe, for bytes no WebSocket library sends.
async fn upgraded_raw(io: DuplexStream) -> Option<DuplexStream> {
    let ws = tokio_tungstenite::accept_async(io).await.ok()?;
    Some(ws.into_inner())
}

#[tokio::test]
async fn an_oversized_message_is_refused_from_its_header_naming_both_sizes() {
    let transport = rogue(|io| async move {
        let Some(mut raw) = upgraded_raw(io).await else {
            return;
        };
        // Announce 70 MiB and send a few bytes of it: the client must refuse on the header,
        // not buffer toward 70 MiB.
        let _ = raw.write_all(&text_frame_header(70 << 20)).await;
        let _ = raw.write_all(b"{\"type\":\"event\"").await;
        std::future::pending::<()>().await;
    });
    let (error, took) = connect_error(transport).await;
    assert_eq!(error.layer(), Layer::Protocol, "{error}");
    assert!(!error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(message.contains("70 MiB"), "{message}");
    assert!(
        message.contains(&format!("at most {} MiB", MAX_FRAME_BYTES >> 20)),
        "{message}"
    );
    assert!(error.fix().is_some());
    assert!(
        took < CONNECT_TIMEOUT,
        "refused by the timeout, not the limit: {took:?}"
    );
}

#[tokio::test]
async fn a_message_of_many_small_fragments_is_refused_at_the_same_limit() {
    const FRAGMENT: usize = 1 << 20;
    let transport = rogue(|io| async move {
        let Some(mut raw) = upgraded_raw(io).await else {
            return;
        };
        let payload = vec![b' '; FRAGMENT];
        // A text frame without FIN, then continuation frames without FIN, until the client
        // hangs up: each frame is small, the message grows without end.
        let mut opcode = 0x01;
        loop {
            let mut header = text_frame_header(FRAGMENT as u64);
            header[0] = opcode;
            opcode = 0x00;
            if raw.write_all(&header).await.is_err() || raw.write_all(&payload).await.is_err() {
                return;
            }
        }
    });
    let (error, _took) = connect_error(transport).await;
    assert_eq!(error.layer(), Layer::Protocol, "{error}");
    assert!(!error.is_retryable(), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("at most {} MiB", MAX_FRAME_BYTES >> 20)),
        "{error}"
    );
}

#[tokio::test]
async fn an_oversized_message_after_hello_fails_the_connection_for_good() {
    let transport = rogue(|io| async move {
        let Some((ws, id)) = until_connect(io).await else {
            return;
        };
        let mut ws = ws;
        let _ = ws.send(hello_ok(&id, live_policy(), json!(4))).await;
        let mut raw = ws.into_inner();
        let _ = raw.write_all(&text_frame_header(1 << 40)).await;
        std::future::pending::<()>().await;
    });
    let client = GatewayClient::start(transport, options());
    let mut state = client.state();
    let failed = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let now = state.borrow_and_update().clone();
            if now.phase == Phase::Failed {
                return now.last_error;
            }
            assert!(
                !matches!(now.phase, Phase::Reconnecting { .. }),
                "an oversized message is retried"
            );
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("the client neither failed nor returned")
    .expect("failed without an error");
    assert_eq!(failed.layer(), Layer::Protocol, "{failed}");
    assert!(!failed.is_retryable());
    assert!(failed.to_string().contains("1048576 MiB"), "{failed}");
    client.shutdown().await;
}

#[tokio::test]
async fn a_challenge_that_never_comes_is_a_retryable_handshake_timeout_naming_the_challenge() {
    let transport = rogue(|io| async move {
        let Ok(ws) = tokio_tungstenite::accept_async(io).await else {
            return;
        };
        std::future::pending::<()>().await;
        drop(ws);
    });
    let (error, took) = connect_error(transport).await;
    assert_eq!(error.layer(), Layer::Handshake, "{error}");
    assert!(error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(message.contains("no connect challenge"), "{message}");
    assert!(message.contains("within 1 s"), "{message}");
    assert!(
        took >= CONNECT_TIMEOUT && took < CONNECT_TIMEOUT * 3,
        "{took:?}"
    );
}

#[tokio::test]
async fn a_socket_that_stays_open_and_silent_times_out_at_the_websocket_upgrade() {
    let transport = rogue(|io| async move {
        std::future::pending::<()>().await;
        drop(io);
    });
    let (error, took) = connect_error(transport).await;
    assert_eq!(error.layer(), Layer::Handshake, "{error}");
    assert!(error.is_retryable(), "{error}");
    assert!(
        error
            .to_string()
            .contains("no answer to the WebSocket upgrade"),
        "{error}"
    );
    assert!(took < CONNECT_TIMEOUT * 3, "{took:?}");
}

#[tokio::test]
async fn an_endless_answer_to_the_upgrade_is_cut_off_and_not_retried() {
    let transport = rogue(|mut io| async move {
        let _ = io
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nX-Endless: ")
            .await;
        while io.write_all(&[b'a'; 4096]).await.is_ok() {}
    });
    let (error, took) = connect_error(transport).await;
    assert_eq!(error.layer(), Layer::Handshake, "{error}");
    assert!(!error.is_retryable(), "{error}");
    assert!(error.to_string().contains("more than 64 KiB"), "{error}");
    assert!(took < CONNECT_TIMEOUT, "ended by the timeout: {took:?}");
}

#[tokio::test]
async fn a_silent_socket_after_hello_is_declared_dead_and_left_for_a_fresh_connection() {
    let transport = rogue(|io| async move {
        let Some((mut ws, id)) = until_connect(io).await else {
            return;
        };
        // Then nothing: no tick, no pong, the socket open.
        let policy = json!({"maxPayload":26_214_400,"maxBufferedBytes":1,"tickIntervalMs":30_000});
        let _ = ws.send(hello_ok(&id, policy, json!(4))).await;
        let raw = ws.into_inner();
        std::future::pending::<()>().await;
        drop(raw);
    });
    let client = GatewayClient::start(transport, options());
    client
        .wait_connected(HANG_GUARD)
        .await
        .expect("the handshake itself was fine");
    let started = std::time::Instant::now();
    let mut state = client.state();
    // The verdict and the fresh connection follow each other within milliseconds here (the
    // rogue accepts at once), so the record is what the test reads, not a passing phase.
    let recovery = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let now = state.borrow_and_update().clone();
            if let (true, Some(recovery)) = (now.generation >= 2, now.last_recovery) {
                return recovery;
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("a silent gateway was never noticed");
    assert!(recovery.cause.contains("dead path"), "{recovery:?}");
    // Liveness with defaults: a probe after 1 s, the verdict 3 s later; not the 60 s of two
    // missed 30 s ticks.
    let detected = recovery.detected_after_ms.expect("silent for a while");
    assert!((3_000..=5_000).contains(&detected), "{recovery:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    client.shutdown().await;
}

#[tokio::test]
async fn text_that_is_not_utf8_is_a_protocol_error() {
    let transport = rogue(|io| async move {
        let Some(mut raw) = upgraded_raw(io).await else {
            return;
        };
        let _ = raw.write_all(&text_frame_header(3)).await;
        let _ = raw.write_all(&[0xff, 0xfe, 0xfd]).await;
        std::future::pending::<()>().await;
    });
    let (error, took) = connect_error(transport).await;
    assert_eq!(error.layer(), Layer::Protocol, "{error}");
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("not UTF-8"), "{error}");
    assert!(took < CONNECT_TIMEOUT, "{took:?}");
}

#[tokio::test]
async fn text_that_is_not_json_is_a_protocol_error_while_unknown_json_is_skipped() {
    let transport = rogue(|io| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(io).await else {
            return;
        };
        // A newer gateway's frame: valid JSON of a shape we do not know, skipped.
        let _ = ws.send(text(json!({"type":"future","x":1}))).await;
        let _ = ws.send(Message::Text("{\"type\":\"event\",".into())).await;
        std::future::pending::<()>().await;
    });
    let (error, took) = connect_error(transport).await;
    assert_eq!(error.layer(), Layer::Protocol, "{error}");
    assert!(!error.is_retryable());
    let message = error.to_string();
    assert!(message.contains("not JSON"), "{message}");
    assert!(message.contains("connect challenge"), "{message}");
    assert!(took < CONNECT_TIMEOUT, "{took:?}");
}

#[tokio::test]
async fn a_close_in_the_middle_of_a_frame_is_a_retryable_lost_connection() {
    let transport = rogue(|io| async move {
        let Some(mut raw) = upgraded_raw(io).await else {
            return;
        };
        let _ = raw.write_all(&text_frame_header(1000)).await;
        let _ = raw.write_all(&[b' '; 10]).await;
        let _ = raw.shutdown().await;
        drop(raw);
    });
    let (error, took) = connect_error(transport).await;
    assert!(error.is_retryable(), "{error}");
    assert!(
        matches!(error.layer(), Layer::Connect | Layer::Handshake),
        "{error}"
    );
    assert!(error.to_string().contains("connect challenge"), "{error}");
    assert!(took < CONNECT_TIMEOUT, "{took:?}");
}

#[tokio::test]
async fn an_event_flood_before_hello_keeps_only_a_bounded_number_of_events() {
    const FLOOD: usize = 20_000;
    let transport = rogue(|io| async move {
        let Some((mut ws, id)) = until_connect(io).await else {
            return;
        };
        for n in 0..FLOOD {
            let event = json!({"type":"event","event":"presence","payload":{"n":n}});
            if ws.feed(text(event)).await.is_err() {
                return;
            }
        }
        let _ = ws.send(hello_ok(&id, live_policy(), json!(4))).await;
        answer_health(&mut ws).await;
    });
    let mut opts = options();
    opts.connect_timeout = HANG_GUARD;
    let client = GatewayClient::start(transport, opts);
    let mut events = client.subscribe();
    tokio::time::timeout(HANG_GUARD, async {
        client.wait_connected(HANG_GUARD).await.unwrap();
        // The early events are published before the session reads its first request.
        client.request("health", Value::Null).await.unwrap();
    })
    .await
    .expect("the flood stalled the handshake");
    let mut delivered = 0;
    while let Ok(event) = events.try_recv() {
        assert_eq!(event.event, "presence");
        delivered += 1;
    }
    assert_eq!(delivered, EARLY_EVENTS_MAX);
    client.shutdown().await;
}

#[tokio::test]
async fn an_event_flood_after_hello_lags_a_slow_subscriber_and_leaves_requests_working() {
    const FLOOD: usize = 20_000;
    let transport = rogue(|io| async move {
        let Some((ws, id)) = until_connect(io).await else {
            return;
        };
        let (mut sink, mut stream) = ws.split();
        let _ = sink.send(hello_ok(&id, live_policy(), json!(4))).await;
        let sink = Arc::new(tokio::sync::Mutex::new(sink));
        let flooder = sink.clone();
        tokio::spawn(async move {
            for n in 0..FLOOD {
                let event =
                    json!({"type":"event","event":"presence","payload":{"n":n},"seq":n + 1});
                if flooder.lock().await.send(text(event)).await.is_err() {
                    return;
                }
            }
        });
        while let Some(Ok(Message::Text(req))) = stream.next().await {
            let req: Value = serde_json::from_str(&req).unwrap_or_default();
            let answer = json!({"type":"res","id":req["id"],"ok":true,"payload":{"ok":true}});
            let _ = sink.lock().await.send(text(answer)).await;
        }
    });
    let client = GatewayClient::connect(transport, options()).await.unwrap();
    // A subscriber that never reads while the flood runs.
    let mut slow = client.subscribe();
    let answered = tokio::time::timeout(HANG_GUARD, async {
        // Requests keep working through the flood: the reader never waits on subscribers.
        for _ in 0..5 {
            client.request("health", Value::Null).await.unwrap();
        }
        // Let the flood finish (its last event is the highest seq).
        let mut watcher = client.subscribe();
        loop {
            match watcher.recv().await {
                Ok(event) if event.seq == Some(FLOOD as u64) => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "the flood starved requests");
    match slow.recv().await {
        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
            assert!(missed > 0);
        }
        other => panic!("a slow subscriber was not lagged: {other:?}"),
    }
    client.shutdown().await;
}

#[tokio::test]
async fn a_hello_ok_with_absurd_limits_is_clamped_and_the_connection_works() {
    for policy in [
        json!({"maxPayload":1e300,"maxBufferedBytes":-1,"tickIntervalMs":18_446_744_073_709_551_615u64}),
        json!({"maxPayload":0,"maxBufferedBytes":0,"tickIntervalMs":-5}),
        json!({"maxPayload":-1,"tickIntervalMs":0.5}),
    ] {
        let answer = policy.clone();
        let transport = rogue(move |io| {
            let answer = answer.clone();
            async move {
                let Some((mut ws, id)) = until_connect(io).await else {
                    return;
                };
                let _ = ws.send(hello_ok(&id, answer, json!(4))).await;
                answer_health(&mut ws).await;
            }
        });
        let client = tokio::time::timeout(HANG_GUARD, GatewayClient::connect(transport, options()))
            .await
            .expect("hang")
            .unwrap_or_else(|e| panic!("{policy}: {e}"));
        let hello = client.hello().unwrap();
        let tick = hello.policy.tick_interval_ms;
        assert!((1_000..=300_000).contains(&tick), "{policy}: tick {tick}");
        let payload = hello.policy.max_payload;
        assert!(
            (64 * 1024..=MAX_FRAME_BYTES as u64).contains(&payload),
            "{policy}: maxPayload {payload}"
        );
        // The supervisor survived the numbers (an unclamped tick overflowed it).
        let health = tokio::time::timeout(HANG_GUARD, client.request("health", Value::Null))
            .await
            .expect("hang");
        assert_eq!(health.unwrap()["ok"], true, "{policy}");
        client.shutdown().await;
    }
}

#[tokio::test]
async fn a_hello_ok_with_an_absurd_protocol_number_is_a_final_protocol_error() {
    for protocol in [json!(99), json!(-1), json!(1e30), json!("4")] {
        let answer = protocol.clone();
        let transport = rogue(move |io| {
            let answer = answer.clone();
            async move {
                let Some((mut ws, id)) = until_connect(io).await else {
                    return;
                };
                let _ = ws.send(hello_ok(&id, live_policy(), answer)).await;
                std::future::pending::<()>().await;
            }
        });
        let (error, took) = connect_error(transport).await;
        assert_eq!(error.layer(), Layer::Protocol, "{protocol}: {error}");
        assert!(!error.is_retryable(), "{protocol}");
        assert!(
            error.to_string().contains("hello-ok"),
            "{protocol}: {error}"
        );
        assert!(took < CONNECT_TIMEOUT, "{protocol}: {took:?}");
    }
}
