//! The health feature run through the FeatureHost against the real gateway: readiness, polling and refresh, pushed health events, a lost and restored connection, the auth source, a closed port.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawlink_core::feature::{FeatureHost, FeatureState, FeatureStatus};
use clawlink_core::gateway::{
    Backoff, ClientOptions, Credentials, DeviceTokenStore, GatewayClient, RequestOptions,
};
use clawlink_core::registry::{self, FeatureDescriptor};
use clawlink_feature_health::{ACTION_REFRESH, ACTION_SNAPSHOT, NAME};
use clawlink_tests::*;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn descriptor() -> &'static FeatureDescriptor {
    registry::feature(NAME).expect("the health feature registers itself through inventory")
}

/// Starts the health feature alone on `gateway` with `settings`.
fn start_health(gateway: &GatewayClient, settings: Value) -> FeatureHost {
    let mut host = FeatureHost::default();
    host.start(descriptor(), settings, gateway.clone())
        .expect("valid settings");
    host
}

fn health_status(host: &FeatureHost) -> FeatureStatus {
    host.statuses()
        .into_iter()
        .find(|(name, _)| *name == NAME)
        .expect("health was started")
        .1
}

/// Polls the feature's status until `done` holds; panics with the last status after `within`.
async fn wait_for(
    host: &FeatureHost,
    within: Duration,
    what: &str,
    done: impl Fn(&FeatureStatus) -> bool,
) -> FeatureStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = health_status(host);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last status {:?} {:?}\n{:#}",
            status.state,
            status.summary,
            status.details
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn is_running_ok(status: &FeatureStatus) -> bool {
    status.state == FeatureState::Running && status.details["state"] == "ok"
}

/// Stops the host and checks the feature honoured the one-second shutdown contract.
async fn stop_promptly(mut host: FeatureHost) {
    let started = Instant::now();
    let report = host.stop_all().await;
    assert_eq!(report.order, [NAME]);
    assert!(report.late.is_empty(), "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "health took {:?} to stop",
        started.elapsed()
    );
}

#[tokio::test]
async fn reaches_running_and_refreshes_on_demand() {
    let peers = Peers::get();
    let (options, _) = operator(token_credentials());
    let gateway = GatewayClient::start(direct(peers.gateway_url()), options);
    let host = start_health(&gateway, json!({"interval_secs": 3600}));

    let status = wait_for(&host, Duration::from_secs(20), "healthy", is_running_ok).await;
    let details = &status.details;
    // The stub gateway has no channels: healthy, green.
    assert_eq!(status.summary, "Gateway healthy");
    assert_eq!(details["color"], "green");
    assert!(details["pingMs"].is_u64(), "{details:#}");
    assert_eq!(details["authSource"], "shared token");
    assert_eq!(details["snapshot"]["ok"], true);
    assert_eq!(details["channels"], json!([]));
    assert!(details["lastError"].is_null());
    assert!(details["gateway"]
        .as_str()
        .unwrap()
        .contains(peers.var("OCPEER_GATEWAY_PORT")));
    let first_check = details["lastCheckAt"].as_u64().expect("lastCheckAt");

    tokio::time::sleep(Duration::from_millis(20)).await;
    let health = host.handle(NAME).expect("running");
    let refreshed = health
        .control(ACTION_REFRESH, json!({"probe": true}))
        .await
        .expect("refresh");
    assert_eq!(refreshed["state"], "ok", "{refreshed:#}");
    assert!(refreshed["pingMs"].is_u64());
    let refreshed_at = refreshed["lastCheckAt"].as_u64().unwrap();
    assert!(
        refreshed_at > first_check,
        "refresh did not check again: {refreshed_at} <= {first_check}"
    );
    // `snapshot` answers the same state without calling.
    let snapshot = health.control(ACTION_SNAPSHOT, Value::Null).await.unwrap();
    assert_eq!(snapshot["lastCheckAt"], refreshed_at);
    // The refresh was published as the feature's status too.
    assert_eq!(health_status(&host).details["lastCheckAt"], refreshed_at);

    let err = health
        .control(ACTION_REFRESH, json!({"prob": true}))
        .await
        .unwrap_err();
    assert!(err.message.contains("\"prob\""), "{err}");

    stop_promptly(host).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn polls_the_gateway_every_interval() {
    let peers = Peers::get();
    let (options, _) = operator(token_credentials());
    let gateway = GatewayClient::start(direct(peers.gateway_url()), options);
    let host = start_health(&gateway, json!({"interval_secs": 1}));
    let first = wait_for(&host, Duration::from_secs(20), "healthy", is_running_ok).await;
    let first_check = first.details["lastCheckAt"].as_u64().unwrap();
    let polled = wait_for(&host, Duration::from_secs(4), "a background check", |s| {
        s.details["lastCheckAt"].as_u64() > Some(first_check)
    })
    .await;
    let gap = polled.details["lastCheckAt"].as_u64().unwrap() - first_check;
    assert!(gap >= 900, "polled after {gap} ms, before the 1 s interval");
    assert!(is_running_ok(&polled));
    assert!(polled.details["pingMs"].is_u64());
    stop_promptly(host).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn pushed_health_events_update_the_snapshot_without_a_call() {
    let peers = Peers::get();
    let (options, _) = operator(token_credentials());
    let gateway = GatewayClient::start(direct(peers.gateway_url()), options);
    let host = start_health(&gateway, json!({"interval_secs": 3600}));
    let ready = wait_for(&host, Duration::from_secs(20), "healthy", is_running_ok).await;
    let readiness_check = ready.details["lastCheckAt"].clone();
    let before = clawlink_core::time::now_unix_millis();

    // The gateway broadcasts a `health` event when a public (non-admin) snapshot is refreshed:
    // a probe from a read-only client triggers one now instead of within the ~60 s cadence.
    let (mut reader, _) = operator(token_credentials());
    reader.scopes = vec!["operator.read".into()];
    let reader = GatewayClient::connect(direct(peers.gateway_url()), reader)
        .await
        .expect("read-only client");
    let probed = reader
        .request_with(
            "health",
            json!({"probe": true}),
            RequestOptions {
                timeout: Some(Duration::from_secs(15)),
                expect_final: false,
            },
        )
        .await
        .expect("health probe");
    assert_eq!(probed["ok"], true);

    let status = wait_for(&host, Duration::from_secs(10), "health event", |s| {
        s.details["lastEventAt"]
            .as_u64()
            .is_some_and(|at| at >= before)
    })
    .await;
    assert!(is_running_ok(&status));
    assert_eq!(status.details["snapshot"]["ok"], true);
    assert!(status.details["snapshotAt"].as_u64().unwrap() >= before);
    // No health call was made for it: the last check is still the readiness check.
    assert_eq!(status.details["lastCheckAt"], readiness_check);

    reader.shutdown().await;
    stop_promptly(host).await;
    gateway.shutdown().await;
}

/// A TCP relay to the gateway whose connections the test can cut, to lose the connection
/// without touching the shared gateway.
struct Relay {
    port: u16,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Relay {
    async fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let tracked = connections.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(relay);
            }
        });
        Self {
            port,
            connections,
            acceptor,
        }
    }

    /// Drops every relayed connection (new ones are still accepted).
    fn cut(&self) {
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.acceptor.abort();
    }
}

#[tokio::test]
async fn a_lost_connection_degrades_at_once_and_is_checked_again_when_back() {
    let peers = Peers::get();
    let gateway_port: u16 = peers.var("OCPEER_GATEWAY_PORT").parse().unwrap();
    let relay = Relay::start(gateway_port).await;
    let (mut options, _) = operator(token_credentials());
    options.backoff = Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(2),
        jitter: 0.2,
    };
    let gateway = GatewayClient::start(direct(&format!("ws://127.0.0.1:{}", relay.port)), options);
    let host = start_health(&gateway, json!({"interval_secs": 3600}));
    let up = wait_for(&host, Duration::from_secs(20), "healthy", is_running_ok).await;
    assert_eq!(up.details["connection"]["generation"], 1);

    let cut_at = clawlink_core::time::now_unix_millis();
    relay.cut();
    // Degraded within moments, not at the next poll (an hour away).
    let lost = wait_for(&host, Duration::from_secs(3), "degraded", |s| {
        s.state == FeatureState::Degraded
    })
    .await;
    assert!(
        lost.summary.starts_with("Health check failed: "),
        "{}",
        lost.summary
    );
    assert_eq!(lost.details["color"], "orange");
    assert_eq!(lost.details["connection"]["connected"], false);
    // The last good snapshot is kept through the outage.
    assert_eq!(lost.details["snapshot"]["ok"], true);

    // Back through the relay: a new connection, checked at once (not an hour later).
    let back = wait_for(
        &host,
        Duration::from_secs(15),
        "checked on reconnect",
        |s| {
            s.details["connection"]["generation"].as_u64() >= Some(2)
                && s.details["lastCheckAt"].as_u64() >= Some(cut_at)
        },
    )
    .await;
    assert!(is_running_ok(&back), "{:#}", back.details);
    assert!(back.details["pingMs"].is_u64());

    stop_promptly(host).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_paired_device_reports_its_device_token() {
    let peers = Peers::get();
    // First connection with the shared token: the gateway issues a device token.
    let (options, store) = operator(token_credentials());
    let identity = options.identity.clone();
    let first = GatewayClient::connect(direct(peers.gateway_url()), options)
        .await
        .expect("first connection");
    first.shutdown().await;

    let options = ClientOptions::operator(
        identity,
        Credentials::default(),
        store as Arc<dyn DeviceTokenStore>,
    );
    let gateway = GatewayClient::start(direct(peers.gateway_url()), options);
    let host = start_health(&gateway, Value::Null);
    let status = wait_for(&host, Duration::from_secs(20), "healthy", is_running_ok).await;
    assert_eq!(status.details["authSource"], "device token (paired device)");
    stop_promptly(host).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_closed_port_is_reported_as_not_listening() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (options, _) = operator(token_credentials());
    let gateway = GatewayClient::start(direct(&format!("ws://127.0.0.1:{port}")), options);
    let host = start_health(&gateway, json!({"timeout_ms": 300}));

    let status = wait_for(&host, Duration::from_secs(10), "degraded", |s| {
        s.state == FeatureState::Degraded
    })
    .await;
    let detail = status.details["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(&format!("The gateway control port (ws://127.0.0.1:{port}"))
            && detail.contains("isn't listening — restart OpenClaw on the gateway host"),
        "{detail}"
    );
    assert!(
        status.summary.starts_with("Health check failed: "),
        "{}",
        status.summary
    );
    assert!(status.details["pingMs"].is_null());

    // A refresh cannot reach anything: it answers degraded, with the call's error.
    let refreshed = host
        .handle(NAME)
        .unwrap()
        .control(ACTION_REFRESH, Value::Null)
        .await
        .expect("refresh answers even when the gateway is down");
    assert_eq!(refreshed["state"], "degraded");
    assert!(refreshed["snapshot"].is_null());
    assert_eq!(refreshed["lastError"]["layer"], "rpc", "{refreshed:#}");
    assert!(refreshed["detail"]
        .as_str()
        .unwrap()
        .contains("isn't listening"));

    stop_promptly(host).await;
    gateway.shutdown().await;
}
