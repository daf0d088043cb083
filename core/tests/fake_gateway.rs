//! Fault injection with an in-process fake gateway (the real one is tested in `tests/`): request headers, early events, protocol mismatch, a gateway that stops reading.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::gateway::{
    ClientOptions, Credentials, DeviceIdentity, GatewayClient, GatewayError, Layer,
    MemoryTokenStore, ShutdownOutcome,
};
use clawlink_core::transport::{Connected, Transport, TransportError};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// A transport whose far end is an in-memory pipe served by `serve`.
struct Pipe {
    serve: Arc<dyn Fn(tokio::io::DuplexStream) + Send + Sync>,
}

#[async_trait]
impl Transport for Pipe {
    fn name(&self) -> &str {
        "pipe"
    }
    fn gateway_key(&self) -> String {
        "pipe://fake".into()
    }
    fn describe(&self) -> String {
        "the fake gateway".into()
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

fn options() -> ClientOptions {
    ClientOptions::operator(
        Arc::new(DeviceIdentity::from_seed([9; 32])),
        Credentials {
            token: Some("t0k3n".to_owned().into()),
            password: None,
        },
        Arc::new(MemoryTokenStore::default()),
    )
}

/// What the fake answers to `connect`: the response frame, and a close to send after it.
type Answer = fn(&Value) -> (Value, Option<(u16, &'static str)>);

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

/// Serves one connection: records the upgrade headers, sends the challenge, then answers the
/// `connect` request with `answer(params)` (after pushing `early` events).
fn fake(
    headers: Arc<Mutex<Vec<String>>>,
    early: Vec<Value>,
    answer: Answer,
) -> Arc<dyn Fn(tokio::io::DuplexStream) + Send + Sync> {
    Arc::new(move |io| {
        let headers = headers.clone();
        let early = early.clone();
        tokio::spawn(async move {
            #[allow(clippy::result_large_err)]
            // tungstenite's callback returns an HTTP response as its error
            let record = |req: &Request, resp: Response| {
                let mut h = headers.lock().unwrap();
                for (name, _) in req.headers() {
                    h.push(name.as_str().to_ascii_lowercase());
                }
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(io, record)
                .await
                .unwrap();
            ws.send(text(json!({"type":"event","event":"connect.challenge","payload":{"nonce":"n-1","ts":1}})))
                .await
                .unwrap();
            let Some(Ok(Message::Text(connect))) = ws.next().await else {
                return;
            };
            let connect: Value = serde_json::from_str(&connect).unwrap();
            for event in early {
                ws.send(text(event)).await.unwrap();
            }
            let (response, close) = answer(&connect);
            ws.send(text(response)).await.unwrap();
            if let Some((code, reason)) = close {
                let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                };
                let _ = ws.send(Message::Close(Some(frame))).await;
                return;
            }
            // Echo `health` requests until the client goes away.
            while let Some(Ok(Message::Text(req))) = ws.next().await {
                let req: Value = serde_json::from_str(&req).unwrap();
                let _ = ws
                    .send(text(
                        json!({"type":"res","id":req["id"],"ok":true,"payload":{"ok":true}}),
                    ))
                    .await;
            }
        });
    })
}

fn hello(connect: &Value) -> (Value, Option<(u16, &'static str)>) {
    assert_eq!(connect["method"], "connect");
    assert_eq!(connect["params"]["auth"], json!({"token": "t0k3n"}));
    assert!(
        connect["params"]["device"]["signature"]
            .as_str()
            .unwrap()
            .len()
            > 80
    );
    (
        json!({"type":"res","id":connect["id"],"ok":true,"payload":{
            "type":"hello-ok","protocol":4,"server":{"version":"fake","connId":"c1"},
            "features":{"methods":["health"],"events":["tick"]},"snapshot":{},
            "auth":{"role":"operator","scopes":["operator.read"],"method":"token"},
            "policy":{"maxPayload":1,"maxBufferedBytes":1,"tickIntervalMs":30000}}}),
        None,
    )
}

#[tokio::test]
async fn no_origin_or_proxy_headers_and_early_events_are_delivered_after_hello() {
    let headers = Arc::new(Mutex::new(Vec::new()));
    let early = vec![
        json!({"type":"event","event":"voicewake.changed","payload":{"triggers":["computer"]}}),
    ];
    let transport = Arc::new(Pipe {
        serve: fake(headers.clone(), early, hello),
    });
    let client = GatewayClient::start(transport, options());
    let mut events = client.subscribe();
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.event, "voicewake.changed");
    assert_eq!(event.payload["triggers"][0], "computer");
    assert_eq!(
        client.request("health", Value::Null).await.unwrap()["ok"],
        true
    );

    let sent = headers.lock().unwrap().clone();
    assert!(sent.contains(&"host".to_string()), "{sent:?}");
    for forbidden in [
        "origin",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
    ] {
        assert!(
            !sent.iter().any(|h| h == forbidden),
            "{forbidden} sent: {sent:?}"
        );
    }
    client.shutdown().await;
}

#[tokio::test]
async fn a_protocol_mismatch_is_final_and_names_both_versions() {
    fn mismatch(connect: &Value) -> (Value, Option<(u16, &'static str)>) {
        (
            json!({"type":"res","id":connect["id"],"ok":false,"error":{"code":"INVALID_REQUEST","message":"protocol mismatch",
                "details":{"code":"PROTOCOL_MISMATCH","expectedProtocol":5}}}),
            Some((1002, "protocol mismatch")),
        )
    }
    let transport = Arc::new(Pipe {
        serve: fake(Arc::default(), vec![], mismatch),
    });
    let err = GatewayClient::connect(transport, options())
        .await
        .unwrap_err();
    assert_eq!(err.layer(), Layer::Protocol);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("protocol 5"), "{err}");
    assert!(matches!(err, GatewayError::Protocol { .. }));
}

#[tokio::test]
async fn a_gateway_that_closes_before_hello_is_a_retryable_handshake_failure() {
    fn close(_: &Value) -> (Value, Option<(u16, &'static str)>) {
        (
            json!({"type":"event","event":"tick","payload":{}}),
            Some((1013, "gateway starting")),
        )
    }
    let transport = Arc::new(Pipe {
        serve: fake(Arc::default(), vec![], close),
    });
    let mut opts = options();
    opts.connect_timeout = Duration::from_secs(2);
    let client = GatewayClient::start(transport, opts);
    let mut state = client.state();
    // It keeps trying (the gateway says it is starting) instead of failing for good.
    let saw_retry = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let clawlink_core::gateway::Phase::Reconnecting { .. } =
                state.borrow_and_update().phase
            {
                return true;
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert!(saw_retry);
    let last = client.state().borrow().last_error.clone().unwrap();
    assert_eq!(last.layer(), Layer::Handshake);
    assert!(last.is_retryable());
    client.shutdown().await;
}

/// Completes the handshake, then never reads again (nor answers the close): the peer of a
/// hung gateway or a dead path whose buffers are full.
fn deaf() -> Arc<dyn Fn(tokio::io::DuplexStream) + Send + Sync> {
    Arc::new(|io| {
        tokio::spawn(async move {
            let mut ws = tokio_tungstenite::accept_async(io).await.unwrap();
            ws.send(text(json!({"type":"event","event":"connect.challenge","payload":{"nonce":"n-1","ts":1}})))
                .await
                .unwrap();
            let Some(Ok(Message::Text(connect))) = ws.next().await else {
                return;
            };
            let connect: Value = serde_json::from_str(&connect).unwrap();
            ws.send(text(hello(&connect).0)).await.unwrap();
            std::future::pending::<()>().await;
            drop(ws);
        });
    })
}

#[tokio::test]
async fn shutdown_returns_while_a_request_is_stuck_on_a_gateway_that_stopped_reading() {
    let transport = Arc::new(Pipe { serve: deaf() });
    let client = GatewayClient::start(transport, options());
    client.wait_connected(Duration::from_secs(5)).await.unwrap();
    // Larger than the pipe's buffer: the send blocks inside the supervisor's loop.
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move {
            let big = "x".repeat(1 << 20);
            client.request("health", json!({ "padding": big })).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stuck.is_finished(), "the deaf gateway answered");
    // The hang guard is far above the client's own deadlines; reaching it is the bug.
    let outcome = tokio::time::timeout(Duration::from_secs(30), client.shutdown())
        .await
        .expect("shutdown hung on a gateway that stopped reading");
    assert_eq!(outcome, ShutdownOutcome::Closed);
    let request = stuck.await.unwrap();
    assert!(request.is_err(), "{request:?}");
}
