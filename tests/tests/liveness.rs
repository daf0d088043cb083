//! A path that goes silent under a live connection (a stale NAT mapping, a Wi-Fi that lost its address) is declared dead within 5 s with default settings, the client is back on the real gateway at once over a fresh connection, and the state says what happened and how long it took.
//!
//! The silent path is a relay between the client and the real gateway that stops moving the
//! bytes of the connections it carries (they stay open, nothing flows, no FIN or RST), while
//! new connections pass: what a NAT rebinding does. A black hole for new connections too,
//! and netem's slow paths, are the fault harness's (`netfault.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawlink_core::gateway::{GatewayClient, Phase};
use clawlink_tests::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A relay to the gateway whose existing connections can be frozen.
struct FreezingRelay {
    port: u16,
    /// Set: every connection carried so far stops moving bytes, for good.
    frozen: Arc<AtomicBool>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl FreezingRelay {
    async fn start(gateway_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (frozen_for_relay, accepted_for_relay) = (frozen.clone(), accepted.clone());
        tokio::spawn(async move {
            // Bounded: a test connects a handful of times.
            for _ in 0..64 {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                accepted_for_relay.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", gateway_port)).await else {
                    continue;
                };
                // Connections accepted after a freeze are new paths: they flow.
                let freeze = if frozen_for_relay.load(Ordering::SeqCst) {
                    Arc::new(AtomicBool::new(false))
                } else {
                    frozen_for_relay.clone()
                };
                let (client_read, client_write) = client.into_split();
                let (upstream_read, upstream_write) = upstream.into_split();
                tokio::spawn(pump(client_read, upstream_write, freeze.clone()));
                tokio::spawn(pump(upstream_read, client_write, freeze));
            }
        });
        Self {
            port,
            frozen,
            accepted,
        }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// Copies until EOF, or until `frozen`: then holds both ends open and moves nothing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if frozen.load(Ordering::SeqCst) {
            // Silent, not closed: keep the halves alive until the test's runtime ends.
            tokio::time::sleep(Duration::from_secs(120)).await;
            return;
        }
        let read = tokio::time::timeout(Duration::from_millis(50), from.read(&mut buffer)).await;
        match read {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                if frozen.load(Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_silent_path_is_declared_dead_within_five_seconds_and_left_at_once() {
    let peers = Peers::get();
    let gateway_port: u16 = peers.var("OCPEER_GATEWAY_PORT").parse().unwrap();
    let relay = FreezingRelay::start(gateway_port).await;
    // Default liveness and backoff: the figures are the defaults'.
    let (options, _) = operator(token_credentials());
    let client = GatewayClient::start(direct(&format!("ws://127.0.0.1:{}", relay.port)), options);
    client
        .wait_connected(Duration::from_secs(30))
        .await
        .expect("connected through the relay");
    // A few seconds of idle first: probes go out and time the path.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 1);

    let mut state = client.state();
    state.borrow_and_update();
    relay.freeze();
    let cut = Instant::now();
    let detected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let degraded_for_loss = {
                let s = state.borrow_and_update();
                s.generation == 1 && s.last_error.is_some() && !s.is_connected()
            };
            if degraded_for_loss {
                return Instant::now();
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("the silent path is noticed");
    let detection = detected - cut;
    assert!(
        detection <= Duration::from_secs(5),
        "declared dead after {detection:?}"
    );
    let error = state.borrow().last_error.clone().unwrap().to_string();
    assert!(error.contains("dead path"), "{error}");

    let healthy = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let back = {
                let s = state.borrow_and_update();
                s.phase == Phase::Connected && s.generation >= 2
            };
            if back {
                return Instant::now();
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("back on a fresh connection");
    let recovery_time = healthy - detected;
    assert!(
        recovery_time <= Duration::from_secs(1),
        "healthy {recovery_time:?} after the verdict"
    );
    let recovery = state
        .borrow()
        .last_recovery
        .clone()
        .expect("a recovery record");
    assert!(recovery.cause.contains("dead path"), "{recovery:?}");
    let detected_after = recovery.detected_after_ms.expect("silent for a while");
    assert!((3_000..=5_000).contains(&detected_after), "{recovery:?}");
    assert!(recovery.healthy_after_ms <= 1_000, "{recovery:?}");
    assert_eq!(
        relay.accepted.load(Ordering::SeqCst),
        2,
        "one fresh connection"
    );
    eprintln!(
        "silent path: declared dead after {:.2} s (silent {:.2} s), healthy {:.3} s later",
        detection.as_secs_f64(),
        detected_after as f64 / 1000.0,
        recovery_time.as_secs_f64()
    );

    // The fresh connection carries requests; the JSON state carries the record.
    let health = client.request("health", json!({})).await.unwrap();
    assert_eq!(health["ok"], true);
    let published = serde_json::to_value(&*state.borrow()).unwrap();
    assert_eq!(
        published["last_recovery"]["healthyAfterMs"], recovery.healthy_after_ms,
        "{published}"
    );
    client.shutdown().await;
}
