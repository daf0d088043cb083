//! The feature registry and host: a descriptor submitted through inventory is found, started with its settings, reports status, and stops in reverse order; a feature that ignores its shutdown is abandoned at the deadline and named.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::feature::{Feature, FeatureContext, FeatureError, FeatureHost, FeatureState};
use clawlink_core::gateway::{
    ClientOptions, Credentials, DeviceIdentity, GatewayClient, MemoryTokenStore,
};
use clawlink_core::registry::{self, FeatureDescriptor};
use clawlink_core::transport::{Connected, Transport, TransportError};

static STOPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Reports its `greeting` setting as its status and records when it stops.
struct Echo {
    greeting: String,
}

#[async_trait]
impl Feature for Echo {
    async fn run(&self, ctx: FeatureContext) -> Result<(), FeatureError> {
        ctx.status.set(
            FeatureState::Running,
            self.greeting.clone(),
            serde_json::Value::Null,
        );
        ctx.shutdown.cancelled().await;
        STOPPED.lock().unwrap().push(self.greeting.clone());
        Ok(())
    }
}

fn build(settings: &serde_json::Value) -> Result<Box<dyn Feature>, FeatureError> {
    let greeting = settings["greeting"]
        .as_str()
        .ok_or_else(|| FeatureError::settings("echo-test", "greeting is required"))?;
    Ok(Box::new(Echo {
        greeting: greeting.to_owned(),
    }))
}

clawlink_core::inventory::submit! {
    FeatureDescriptor {
        name: "echo-test",
        summary: "test feature",
        example_config: "greeting = \"hi\"",
        enabled_by_default: false,
        factory: build,
    }
}

/// Ignores its shutdown token: the host must give up on it.
struct Stuck;

#[async_trait]
impl Feature for Stuck {
    async fn run(&self, ctx: FeatureContext) -> Result<(), FeatureError> {
        ctx.status.set(
            FeatureState::Running,
            "never stops",
            serde_json::Value::Null,
        );
        std::future::pending::<()>().await;
        Ok(())
    }
}

clawlink_core::inventory::submit! {
    FeatureDescriptor {
        name: "stuck-test",
        summary: "test feature that never stops",
        example_config: "",
        enabled_by_default: false,
        factory: |_| Ok(Box::new(Stuck)),
    }
}

fn offline_gateway() -> GatewayClient {
    GatewayClient::start(
        Arc::new(Nowhere),
        ClientOptions::operator(
            Arc::new(DeviceIdentity::from_seed([1; 32])),
            Credentials::default(),
            Arc::new(MemoryTokenStore::default()),
        ),
    )
}

/// A transport that never connects: features must not depend on a live connection.
struct Nowhere;

#[async_trait]
impl Transport for Nowhere {
    fn name(&self) -> &str {
        "nowhere"
    }
    fn gateway_key(&self) -> String {
        "nowhere".into()
    }
    fn describe(&self) -> String {
        "nowhere".into()
    }
    async fn connect(&self) -> Result<Connected, TransportError> {
        Err(TransportError::config("no gateway in this test"))
    }
}

#[tokio::test]
async fn features_start_report_and_stop_in_reverse_order() {
    let descriptor = registry::feature("echo-test").expect("registered through inventory");
    assert!(registry::features().iter().any(|d| d.name == "echo-test"));
    registry::validate().unwrap();

    let gateway = offline_gateway();
    let mut host = FeatureHost::default();
    let Err(bad) = host.start(descriptor, serde_json::json!({}), gateway.clone()) else {
        panic!("missing settings accepted")
    };
    assert!(bad
        .to_string()
        .contains("features.echo-test: greeting is required"));
    host.start(
        descriptor,
        serde_json::json!({"greeting": "first"}),
        gateway.clone(),
    )
    .unwrap();
    host.start(
        descriptor,
        serde_json::json!({"greeting": "second"}),
        gateway.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let statuses = host.statuses();
    assert_eq!(statuses.len(), 2);
    assert!(statuses
        .iter()
        .all(|(name, s)| *name == "echo-test" && s.state == FeatureState::Running));
    assert_eq!(statuses[0].1.summary, "first");
    let report = host.stop_all().await;
    assert_eq!(report.order, ["echo-test", "echo-test"]);
    assert!(report.late.is_empty(), "{report:?}");
    assert_eq!(*STOPPED.lock().unwrap(), ["second", "first"]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_feature_that_never_stops_is_abandoned_at_its_deadline_and_named() {
    let descriptor = registry::feature("stuck-test").expect("registered through inventory");
    let gateway = offline_gateway();
    let mut host = FeatureHost::default();
    host.start(descriptor, serde_json::Value::Null, gateway.clone())
        .unwrap();
    let report = host.stop_all_within(Duration::from_millis(100)).await;
    assert_eq!(report.order, ["stuck-test"]);
    assert_eq!(report.late, ["stuck-test"]);
    assert!(host.names().is_empty());
    gateway.shutdown().await;
}
