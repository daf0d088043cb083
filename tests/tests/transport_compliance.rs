//! The transport contract, run for every registered transport against the real peers (gateway, sshd): one test body per capability, for each transport that offers it.
//!
//! A new transport gets these checks by registering (the tests crate links every built-in
//! transport) and by saying here how it reaches the peers (`peer_settings`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::prompt::NonInteractive;
use clawlink_core::registry;
use clawlink_core::transport::commands::NOT_FOUND;
use clawlink_core::transport::diagnosis::{check_layer_names, LOCAL_PORT_LAYER};
use clawlink_core::transport::{
    Capability, LayerReport, LayerSink, LayerStatus, Stopped, Transport, TransportEnv,
};
use clawlink_tests::*;
use serde_json::{json, Value};

// inventory only sees crates something references.
use clawlink_transport_ssh as _;
use clawlink_transport_ws as _;

// ---------------------------------------------------------------------------------------
// Commands on the gateway host (HostCommands)
// ---------------------------------------------------------------------------------------

/// Who runs commands on the gateway host in these tests: a user whose non-interactive PATH
/// has the openclaw CLI, and one whose PATH lacks it.
#[derive(Debug, Clone, Copy)]
enum HostUser {
    WithCli,
    WithoutCli,
}

/// The settings with which transport `name` reaches the peer gateway (and, where it runs
/// commands, the peer host as `user`). A transport missing here fails the test: say how it
/// reaches the peers.
fn peer_settings(name: &str, user: HostUser, home: &std::path::Path) -> Value {
    let peers = Peers::get();
    match name {
        "direct-ws" => json!({"url": peers.gateway_url()}),
        "ssh-tunnel" => json!({
            "target": ssh_target(match user {
                HostUser::WithCli => "claw",
                HostUser::WithoutCli => "noclaw",
            }),
            "identity_file": peers.var("OCPEER_SSH_KEY"),
            "remote_port": peers.var("OCPEER_GATEWAY_PORT").parse::<u16>().unwrap(),
            "known_hosts_file": home.join(".ssh/known_hosts"),
        }),
        other => panic!("transport {other:?} is registered but peer_settings does not say how it reaches the test peers"),
    }
}

fn build(name: &str, user: HostUser, home: &std::path::Path) -> Arc<dyn Transport> {
    let descriptor = registry::transport(name).unwrap();
    let env = TransportEnv {
        prompter: Arc::new(NonInteractive),
    };
    (descriptor.factory)(&peer_settings(name, user, home), &env)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

#[test]
fn host_commands_is_offered_exactly_by_the_transports_that_declare_it() {
    let home = ssh_home("compliance-commands-declared");
    let offering = registry::transports_offering(Capability::HostCommands);
    assert!(offering.contains(&"ssh-tunnel"), "{offering:?}");
    for descriptor in registry::transports() {
        let transport = build(descriptor.name, HostUser::WithCli, &home);
        assert_eq!(
            transport.commands().is_some(),
            offering.contains(&descriptor.name),
            "{}: the descriptor's capabilities and Transport::commands disagree",
            descriptor.name
        );
    }
}

#[tokio::test]
async fn host_commands_run_the_cli_and_explain_a_missing_one() {
    let home = ssh_home("compliance-commands");
    for name in registry::transports_offering(Capability::HostCommands) {
        let transport = build(name, HostUser::WithCli, &home);
        let commands = transport.commands().expect("declared");
        let output = commands
            .run_cli(&["--version"], Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.exit_code,
            Some(0),
            "{name}: {stdout} / {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("2026."), "{name}: {stdout}");
        assert_eq!(commands.explain_failure(&output), None, "{name}");
        transport.close().await;

        let transport = build(name, HostUser::WithoutCli, &home);
        let commands = transport.commands().expect("declared");
        let output = commands
            .run_cli(&["--version"], Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(output.exit_code, Some(NOT_FOUND), "{name}");
        let explained = commands
            .explain_failure(&output)
            .unwrap_or_else(|| panic!("{name}: no explanation for {output:?}"));
        assert!(
            explained.message.starts_with("exit 127: ")
                && explained
                    .message
                    .contains("not on PATH for non-interactive shells")
                && explained
                    .message
                    .ends_with(&format!(" on {}", commands.host())),
            "{name}: {explained:?}"
        );
        assert!(
            explained
                .fix
                .as_deref()
                .is_some_and(|f| f.contains("cli_path")),
            "{name}: {explained:?}"
        );
        transport.close().await;
    }
}

// ---------------------------------------------------------------------------------------
// Diagnosis: how the doctor's walks reach the peers
// ---------------------------------------------------------------------------------------

/// Settings that reach the real peers through `transport`, with the gateway's port on the
/// gateway host replaced by `gateway_port` (to point a walk at a closed port). Every
/// registered transport needs an entry here.
fn diagnosis_peer_settings(transport: &str, gateway_port: &str) -> Option<Value> {
    let peers = Peers::get();
    match transport {
        clawlink_transport_ws::NAME => {
            Some(json!({"url": format!("ws://127.0.0.1:{gateway_port}")}))
        }
        clawlink_transport_ssh::NAME => {
            let home = scratch_dir("compliance-ssh");
            let ssh_config = home.join("ssh_config");
            std::fs::write(&ssh_config, "").unwrap();
            Some(json!({
                "target": ssh_target("claw"),
                "identity_file": peers.var("OCPEER_SSH_KEY"),
                "remote_port": gateway_port.parse::<u16>().unwrap(),
                "local_port": free_port(),
                "known_hosts_file": peers.var("OCPEER_SSH_KNOWN_HOSTS"),
                "ssh_config": ssh_config,
            }))
        }
        _ => None,
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn build_for_diagnosis(name: &str, gateway_port: &str) -> Arc<dyn Transport> {
    let descriptor = registry::transport(name).expect("registered");
    let settings = diagnosis_peer_settings(name, gateway_port)
        .unwrap_or_else(|| panic!("transport {name} has no peer settings in this test"));
    let env = TransportEnv {
        prompter: Arc::new(NonInteractive),
    };
    (descriptor.factory)(&settings, &env).unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Diagnosis (doctor layers): well-formed, green against the peers, stopping with a fix.
// ---------------------------------------------------------------------------------------

/// What a transport's walk reported.
#[derive(Default)]
struct RecordingSink {
    reports: Vec<LayerReport>,
}

#[async_trait(?Send)]
impl LayerSink for RecordingSink {
    fn report(&mut self, report: LayerReport) -> Result<(), Stopped> {
        let failed = report.status == LayerStatus::Failed;
        self.reports.push(report);
        if failed {
            Err(Stopped)
        } else {
            Ok(())
        }
    }

    /// The doctor's own check, reduced to what the contract needs: bindable or not.
    async fn local_port(&mut self, port: u16, _explicit: bool) -> Result<(), Stopped> {
        let started = std::time::Instant::now();
        let report = match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => LayerReport::ok(
                LOCAL_PORT_LAYER,
                started,
                format!("127.0.0.1:{port} is free"),
                Value::Null,
            ),
            Err(e) => LayerReport::failed(
                LOCAL_PORT_LAYER,
                started,
                format!("127.0.0.1:{port}: {e}"),
                Some("pick another local port".into()),
                Value::Null,
            ),
        };
        self.report(report)
    }
}

/// Walks `transport`'s diagnosis; checks the contract every walk keeps (layers well-formed,
/// reported in order, each with a detail, a failure only last and with a fix).
async fn walk(name: &str, transport: &Arc<dyn Transport>) -> (Vec<&'static str>, RecordingSink) {
    let diagnosis = transport
        .diagnosis()
        .unwrap_or_else(|| panic!("{name} offers no Diagnosis"));
    let layers = diagnosis.layers();
    check_layer_names(&layers).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut sink = RecordingSink::default();
    let outcome = diagnosis.diagnose(&mut sink).await;
    let reported: Vec<&str> = sink.reports.iter().map(|r| r.layer).collect();
    assert_eq!(
        reported,
        layers[..reported.len()],
        "{name}: the walk reports its layers in order"
    );
    for (i, report) in sink.reports.iter().enumerate() {
        assert!(!report.detail.trim().is_empty(), "{name}: {report:?}");
        if report.status == LayerStatus::Failed {
            assert_eq!(
                i + 1,
                sink.reports.len(),
                "{name}: the walk stops at a failure"
            );
            assert!(
                report.fix.as_deref().is_some_and(|f| !f.trim().is_empty()),
                "{name}: a failed layer without a fix: {report:?}"
            );
            assert!(outcome.is_err(), "{name}: a failed walk ends with Stopped");
        }
        if report.status == LayerStatus::Skipped {
            assert!(report.detail.starts_with("n/a"), "{name}: {report:?}");
        }
    }
    if outcome.is_ok() {
        assert_eq!(
            reported, layers,
            "{name}: a finished walk reports every layer"
        );
    }
    let note = diagnosis.client_address();
    assert!(!note.detail.is_empty(), "{name}: no client-address note");
    (layers, sink)
}

/// Every layer green against the real peers; then a gateway port where nothing listens
/// stops the walk with a fix.
async fn diagnosis_compliance(name: &str) {
    let peers = Peers::get();
    let transport = build_for_diagnosis(name, peers.var("OCPEER_GATEWAY_PORT"));
    transport
        .diagnosis()
        .unwrap_or_else(|| panic!("{name} offers no Diagnosis"))
        .check_settings()
        .unwrap_or_else(|e| panic!("{name}: check_settings: {e}"));
    let (layers, sink) = walk(name, &transport).await;
    for report in &sink.reports {
        assert_ne!(
            report.status,
            LayerStatus::Failed,
            "{name}: not green against the peers: {report:?}"
        );
    }
    assert_eq!(sink.reports.len(), layers.len());
    transport.close().await;

    let closed = free_port().to_string();
    let transport = build_for_diagnosis(name, &closed);
    let (_, sink) = walk(name, &transport).await;
    let last = sink.reports.last().expect("some layer");
    assert_eq!(
        last.status,
        LayerStatus::Failed,
        "{name}: a closed gateway port went unnoticed: {:?}",
        sink.reports
    );
    transport.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn diagnosis_ssh_tunnel() {
    diagnosis_compliance(clawlink_transport_ssh::NAME).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn diagnosis_direct_ws() {
    diagnosis_compliance(clawlink_transport_ws::NAME).await;
}

#[test]
fn diagnosis_covers_every_registered_transport() {
    let covered = [clawlink_transport_ssh::NAME, clawlink_transport_ws::NAME];
    for descriptor in registry::transports() {
        assert!(
            covered.contains(&descriptor.name),
            "transport {} has no diagnosis compliance test: add `diagnosis_…` above",
            descriptor.name
        );
    }
}
