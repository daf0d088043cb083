//! Recovery when the real gateway restarts under a connected client. Its own test binary, so that cargo runs it alone, not while other tests use the gateway.

use std::time::{Duration, Instant};

use clawlink_core::gateway::{Backoff, GatewayClient, Phase};
use clawlink_tests::*;
use serde_json::Value;

#[tokio::test]
async fn client_reconnects_by_itself_after_the_gateway_restarts() {
    let peers = Peers::get();
    let (mut options, _) = operator(token_credentials());
    options.backoff = Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(2),
        jitter: 0.2,
    };
    let client = GatewayClient::start(direct(peers.gateway_url()), options);
    let hello = client
        .wait_connected(Duration::from_secs(30))
        .await
        .expect("first connection");
    let first_boot = hello.server.boot_id.clone();

    let mut state = client.state();
    let recorder = tokio::spawn(async move {
        let mut phases = Vec::new();
        loop {
            let (phase, generation) = {
                let s = state.borrow_and_update();
                (s.phase.clone(), s.generation)
            };
            let done = phase == Phase::Connected && generation >= 2;
            phases.push(phase);
            if done {
                return phases;
            }
            if state.changed().await.is_err() {
                return phases;
            }
        }
    });

    let restarted_at = Instant::now();
    peers.xtask_peer(&["restart-gateway", "main"]);
    let phases = tokio::time::timeout(Duration::from_secs(120), recorder)
        .await
        .expect("the client did not reconnect within 120 s of the restart")
        .unwrap();
    let recovered_in = restarted_at.elapsed();

    assert!(
        phases.iter().any(|p| matches!(p, Phase::Degraded { .. })),
        "no Degraded phase in {phases:?}"
    );
    assert_eq!(phases.last(), Some(&Phase::Connected), "{phases:?}");
    let now = client.state().borrow().clone();
    assert_eq!(now.generation, 2);
    let hello = now.hello.unwrap();
    assert_ne!(
        hello.server.boot_id, first_boot,
        "still the old gateway process?"
    );
    let health = client.request("health", Value::Null).await.unwrap();
    assert_eq!(health["ok"], true);
    eprintln!(
        "reconnected {:.1} s after the restart began; phases: {phases:?}",
        recovered_in.as_secs_f64()
    );
    client.shutdown().await;
}
