//! The contract every registered plugin must keep (Vector-style compliance): descriptors that document themselves, example configs that work, unknown settings refused, features that stop promptly and refuse unknown actions.
//!
//! A new transport or feature crate gets these checks for free by being linked here
//! (the tests crate depends on every built-in plugin crate).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawlink_core::feature::{FeatureHost, FeatureState};
use clawlink_core::gateway::{ClientOptions, Credentials, DeviceIdentity, GatewayClient};
use clawlink_core::prompt::NonInteractive;
use clawlink_core::registry;
use clawlink_core::transport::{Connected, Transport, TransportEnv, TransportError};
use serde_json::Value;

// inventory only sees crates something references.
use clawlink_feature_health as _;
use clawlink_feature_notify as _;
use clawlink_feature_voicewake as _;
use clawlink_feature_webchat as _;
use clawlink_transport_exec as _;
use clawlink_transport_ssh as _;
use clawlink_transport_ws as _;

/// The example config of a descriptor, as the JSON table its factory receives.
fn example_settings(name: &str, example: &str) -> Value {
    let table: toml::Table = toml::from_str(example)
        .unwrap_or_else(|e| panic!("{name}: example_config is not valid TOML: {e}\n{example}"));
    serde_json::to_value(table).unwrap()
}

fn is_kebab(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[test]
fn every_plugin_is_registered_once_and_documents_itself() {
    registry::validate().expect("no duplicate names");
    let transports = registry::transports();
    let features = registry::features();
    assert!(transports.iter().any(|d| d.name == "direct-ws"));
    assert!(transports.iter().any(|d| d.name == "ssh-tunnel"));
    for linked in ["health", "notify", "voicewake", "webchat"] {
        assert!(
            features.iter().any(|d| d.name == linked),
            "{linked} is not registered"
        );
    }
    for (name, summary, example) in transports
        .iter()
        .map(|d| (d.name, d.summary, d.example_config))
        .chain(
            features
                .iter()
                .map(|d| (d.name, d.summary, d.example_config)),
        )
    {
        assert!(is_kebab(name), "{name:?}: names are lowercase kebab-case");
        assert!(
            summary.len() >= 20 && !summary.ends_with('.'),
            "{name}: a one-line summary without a final period: {summary:?}"
        );
        assert!(!example.trim().is_empty(), "{name}: no example_config");
    }
}

#[test]
fn every_transport_accepts_its_example_and_refuses_unknown_keys() {
    let env = TransportEnv {
        prompter: Arc::new(NonInteractive),
    };
    for descriptor in registry::transports() {
        let example = example_settings(descriptor.name, descriptor.example_config);
        let transport = (descriptor.factory)(&example, &env).unwrap_or_else(|e| {
            panic!(
                "{}: its own example_config is refused: {e}",
                descriptor.name
            )
        });
        assert_eq!(transport.name(), descriptor.name);
        assert!(!transport.describe().is_empty());
        assert!(!transport.gateway_key().is_empty());

        let mut typo = example.clone();
        typo["definitely_not_a_key"] = Value::Bool(true);
        let refused = (descriptor.factory)(&typo, &env)
            .err()
            .unwrap_or_else(|| panic!("{}: an unknown key was accepted", descriptor.name));
        assert!(
            refused.to_string().contains("definitely_not_a_key"),
            "{}: the error must name the unknown key: {refused}",
            descriptor.name
        );
    }
}

/// A transport that never connects: features must run (and stop) without a gateway.
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
        Err(TransportError::new(
            clawlink_core::transport::TransportErrorKind::Connect,
            "nothing listens in this test",
        ))
    }
}

fn offline_client() -> GatewayClient {
    let options = ClientOptions::operator(
        Arc::new(DeviceIdentity::generate().expect("a random device key")),
        Credentials::default(),
        Arc::new(clawlink_core::gateway::MemoryTokenStore::default()),
    );
    GatewayClient::start(Arc::new(Nowhere), options)
}

#[tokio::test]
async fn every_feature_runs_offline_answers_control_and_stops_within_a_second() {
    for descriptor in registry::features() {
        let example = example_settings(descriptor.name, descriptor.example_config);
        let mut typo = example.clone();
        typo["definitely_not_a_key"] = Value::Bool(true);
        let refused = (descriptor.factory)(&typo)
            .err()
            .unwrap_or_else(|| panic!("{}: an unknown key was accepted", descriptor.name));
        assert!(
            refused.to_string().contains("definitely_not_a_key"),
            "{}: the error must name the unknown key: {refused}",
            descriptor.name
        );

        let client = offline_client();
        let mut host = FeatureHost::default();
        host.start(descriptor, example, client.clone())
            .unwrap_or_else(|e| panic!("{}: its example_config is refused: {e}", descriptor.name));
        // Give it time to notice there is no gateway; it must not fail for that.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, status) = host.statuses().pop().unwrap();
        assert_ne!(
            status.state,
            FeatureState::Failed,
            "{}: a feature must survive an absent gateway: {}",
            descriptor.name,
            status.summary
        );
        assert!(
            !status.summary.is_empty(),
            "{}: empty summary",
            descriptor.name
        );

        let handle = host.handle(descriptor.name).unwrap();
        let unknown = handle
            .control("no-such-action", Value::Null)
            .await
            .err()
            .unwrap_or_else(|| panic!("{}: an unknown action was accepted", descriptor.name));
        assert!(
            unknown.to_string().contains("no-such-action"),
            "{}: the error must name the action: {unknown}",
            descriptor.name
        );

        let started = Instant::now();
        let stopped = host.stop_all().await;
        assert_eq!(stopped.order, vec![descriptor.name]);
        assert!(stopped.late.is_empty(), "{stopped:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{}: took {:?} to stop",
            descriptor.name,
            started.elapsed()
        );
        client.shutdown().await;
    }
}
