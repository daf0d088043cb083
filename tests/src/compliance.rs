//! The base transport contract every transport passes, built in or loaded from a plugin: connect, handshake and `health` through the real gateway, recovery after the stream is cut, and a clean close.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::gateway::{GatewayClient, Phase};
use clawlink_core::transport::{Connected, Transport, TransportError};
use serde_json::Value;

use crate::{operator, token_credentials};

/// A transport whose streams the test can cut: each `connect` hands the client one end of
/// an in-memory pipe and pumps it to the inner transport's stream, so cutting a pump is
/// what a dropped TCP connection looks like to the client (its reads end), whatever the
/// transport underneath.
pub struct Cuttable {
    inner: Arc<dyn Transport>,
    pumps: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Cuttable {
    pub fn new(inner: Arc<dyn Transport>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            pumps: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Cuts every stream opened so far; returns how many were still moving bytes.
    pub fn cut_all(&self) -> usize {
        let pumps = std::mem::take(&mut *self.pumps.lock().unwrap());
        let live = pumps.iter().filter(|p| !p.is_finished()).count();
        pumps.iter().for_each(tokio::task::JoinHandle::abort);
        live
    }
}

#[async_trait]
impl Transport for Cuttable {
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
    async fn connect(&self) -> Result<Connected, TransportError> {
        let mut connected = self.inner.connect().await?;
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut stream = std::mem::replace(&mut connected.stream, Box::new(near));
        let pump = tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut far).await;
        });
        self.pumps.lock().unwrap().push(pump);
        Ok(connected)
    }
    async fn close(&self) {
        self.cut_all();
        self.inner.close().await;
    }
}

/// Through `transport` (labelled `label` in failures): handshake and `health`; after its
/// stream is cut, the client reconnects through the same transport by itself and `health`
/// answers again; after `close`, no pump is left.
pub async fn connects_and_recovers_from_a_cut(label: &str, transport: Arc<dyn Transport>) {
    let transport = Cuttable::new(transport);
    let (options, _) = operator(token_credentials());
    let client = GatewayClient::connect(transport.clone(), options)
        .await
        .unwrap_or_else(|e| panic!("{label}: handshake: {e}"));
    let health = client.request("health", Value::Null).await.unwrap();
    assert_eq!(health["ok"], true, "{label}: {health}");
    let first = client.state().borrow().generation;

    assert_eq!(transport.cut_all(), 1, "{label}: one live stream to cut");
    let mut state = client.state();
    // `wait_for` returns a guard on the watched value: keep only whether it came, or the
    // supervisor's next state update would block on that guard for ever.
    let recovered = tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| s.generation > first && matches!(s.phase, Phase::Connected)),
    )
    .await
    .map(|seen| seen.is_ok());
    assert!(
        recovered == Ok(true),
        "{label}: no new session within 30 s of the cut: {:?}",
        client.state().borrow().phase
    );
    let health = client.request("health", Value::Null).await.unwrap();
    assert_eq!(health["ok"], true, "{label}: after the cut: {health}");

    client.shutdown().await;
    transport.close().await;
    assert_eq!(transport.cut_all(), 0, "{label}: a pump outlived close");
}
