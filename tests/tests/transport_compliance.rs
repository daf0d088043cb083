//! The transport contract, run for every registered transport against the real peers (gateway, sshd): one test body per capability, for each transport that offers it.
//!
//! A new transport gets these checks by registering (the tests crate links every built-in
//! transport) and by saying here how it reaches the peers (`peer_settings`).

use std::path::Path;
use std::process::{Command, Stdio};
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
use clawlink_tests::forwards::{
    self, first_json_line, http_get, start_sandbox, wait_for_exit, Reaped,
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
        "exec" => exec_settings(&home.join(".ssh/known_hosts")),
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

/// What a descriptor declares is what its transports offer, for every capability (refusals
/// and listings read the declaration without building a transport).
#[test]
fn every_capability_is_offered_exactly_by_the_transports_that_declare_it() {
    let home = ssh_home("compliance-capabilities-declared");
    assert!(registry::transports_offering(Capability::HostCommands).contains(&"ssh-tunnel"));
    for descriptor in registry::transports() {
        let transport = build(descriptor.name, HostUser::WithCli, &home);
        for capability in Capability::ALL {
            assert_eq!(
                capability.offered_by(transport.as_ref()),
                descriptor.capabilities.contains(&capability),
                "{}: the descriptor's capabilities and the transport disagree on {}",
                descriptor.name,
                capability.name()
            );
        }
        // The doctor's report shape is derived from the declared layers.
        let built_layers = transport
            .diagnosis()
            .map(|d| d.layers())
            .unwrap_or_default();
        assert_eq!(
            built_layers, descriptor.layers,
            "{}: the descriptor's layers and its Diagnosis::layers disagree",
            descriptor.name
        );
    }
}

#[tokio::test]
async fn host_commands_run_the_cli_and_explain_a_missing_one() {
    let _alone = SSH_CHILDREN_OF_THIS_PROCESS.lock().await;
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

/// Every transport that declares its own doctor layers has a walk test above; one that
/// does not (exec) declares no layers, and the doctor checks it as a whole through
/// `connect`, which `every_transport_connects_and_recovers_from_a_cut_stream` covers.
#[test]
fn diagnosis_covers_every_registered_transport() {
    let covered = [clawlink_transport_ssh::NAME, clawlink_transport_ws::NAME];
    let mut whole = Vec::new();
    for descriptor in registry::transports() {
        if !descriptor.capabilities.contains(&Capability::Diagnosis) {
            assert!(descriptor.layers.is_empty(), "{}", descriptor.name);
            whole.push(descriptor.name);
            continue;
        }
        assert!(
            covered.contains(&descriptor.name),
            "transport {} has no diagnosis compliance test: add `diagnosis_…` above",
            descriptor.name
        );
    }
    assert!(whole.contains(&clawlink_transport_exec::NAME), "{whole:?}");
}

// ---------------------------------------------------------------------------------------
// Ports on the gateway host (GatewayPorts): streams, and the app's one forward loop
// ---------------------------------------------------------------------------------------

/// One way to reach the peer gateway through a registered transport.
struct Profile {
    /// The registered transport name.
    transport: &'static str,
    /// What distinguishes this profile among those of the same transport.
    variant: &'static str,
    /// The transport's settings table.
    settings: Value,
}

/// The profiles the compliance tests run, for every registered transport (the links above
/// keep every transport crate's descriptor in this binary).
fn profiles(home: &Path) -> Vec<Profile> {
    let peers = Peers::get();
    let ssh = |backend: &str| {
        json!({
            "target": ssh_target(peers.var("OCPEER_SSH_USER")),
            "identity_file": peers.var("OCPEER_SSH_KEY"),
            "remote_port": peers.var("OCPEER_GATEWAY_PORT").parse::<u16>().unwrap(),
            "known_hosts_file": home.join(".ssh/known_hosts"),
            "backend": backend,
        })
    };
    vec![
        Profile {
            transport: clawlink_transport_ws::NAME,
            variant: "token gateway",
            settings: json!({"url": peers.gateway_url()}),
        },
        Profile {
            transport: clawlink_transport_ssh::NAME,
            variant: "russh",
            settings: ssh("russh"),
        },
        Profile {
            transport: clawlink_transport_ssh::NAME,
            variant: "openssh",
            settings: ssh("openssh"),
        },
        Profile {
            transport: clawlink_transport_exec::NAME,
            variant: "ssh -W",
            settings: exec_settings(&home.join(".ssh/known_hosts")),
        },
    ]
}

fn build_profile(profile: &Profile) -> Arc<dyn Transport> {
    let descriptor = registry::transport(profile.transport)
        .unwrap_or_else(|| panic!("{} is not registered", profile.transport));
    let env = TransportEnv {
        prompter: Arc::new(NonInteractive),
    };
    (descriptor.factory)(&profile.settings, &env)
        .unwrap_or_else(|e| panic!("{} ({}): {e:?}", profile.transport, profile.variant))
}

/// A config file selecting `profile` as the default profile, for the CLI.
fn config_file(home: &Path, profile: &Profile) -> String {
    let table = profile.transport.replace('-', "_");
    let config = json!({
        "default": {
            "mode": "remote",
            "transport": profile.transport,
            "transports": { table: profile.settings },
        }
    });
    let path = home.join(format!(
        "{}-{}.toml",
        profile.transport,
        profile.variant.replace(' ', "-")
    ));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path.display().to_string()
}

#[test]
fn every_registered_transport_has_a_compliance_profile() {
    let home = ssh_home("compliance-registry");
    let covered: Vec<&str> = profiles(&home).iter().map(|p| p.transport).collect();
    for descriptor in registry::transports() {
        assert!(
            covered.contains(&descriptor.name),
            "transport {} has no profile in transport_compliance.rs::profiles",
            descriptor.name
        );
    }
}

/// GatewayPorts through the transport itself: a fresh stream to the gateway port answers
/// HTTP, the sandbox port (started on demand by a canvas preview) answers its own path,
/// and `close` leaves no ssh child behind.
#[tokio::test]
async fn gateway_ports_open_streams_to_the_gateway_and_sandbox_ports() {
    let _alone = SSH_CHILDREN_OF_THIS_PROCESS.lock().await;
    let home = ssh_home("compliance-ports-open");
    let mut offered = Vec::new();
    for profile in profiles(&home) {
        let transport = build_profile(&profile);
        if transport.ports().is_none() {
            eprintln!(
                "{} ({}): no GatewayPorts; skipped",
                profile.transport, profile.variant
            );
            continue;
        }
        offered.push(profile.transport);
        let label = format!("{} ({})", profile.transport, profile.variant);
        forwards::ports_reach_the_gateway_and_sandbox(
            &label,
            &home,
            Peers::get().gateway_url(),
            transport.as_ref(),
        )
        .await;

        let children = ssh_children(std::process::id());
        transport.close().await;
        assert_gone(&children, &label);
    }
    assert!(
        offered.contains(&clawlink_transport_ssh::NAME)
            && offered.contains(&clawlink_transport_exec::NAME),
        "ssh-tunnel and exec offer GatewayPorts: {offered:?}"
    );
}

/// GatewayPorts through the app's one forward loop (`clawlink tunnel`): a WebSocket
/// handshake and `health` through the local gateway forward, the widget sandbox through
/// the forward of port + 1, and after SIGTERM no listener remains.
#[test]
fn gateway_ports_serve_local_forwards_through_clawlink_tunnel() {
    let home = ssh_home("compliance-ports-tunnel");
    let token = token_file(&home);
    let mut served = Vec::new();
    for profile in profiles(&home) {
        let label = format!("{} ({})", profile.transport, profile.variant);
        if build_profile(&profile).ports().is_none() {
            let out = clawlink(
                &home,
                &["--config", &config_file(&home, &profile), "tunnel"],
            );
            let (_, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(2), "{label}: {stderr}");
            assert!(
                stderr.contains("ports on the gateway host")
                    && stderr.contains(clawlink_transport_ssh::NAME),
                "{label}: the refusal names the capability and a transport that has it: {stderr}"
            );
            assert_eq!(
                stderr.trim().lines().count(),
                1,
                "{label}: one line: {stderr}"
            );
            continue;
        }
        served.push(profile.transport);
        let config = config_file(&home, &profile);
        let mut tunnel = Reaped(
            clawlink_command(&home)
                .args(["--config", &config, "--json", "tunnel"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let report = first_json_line(&mut tunnel.0, &label);
        let children = ssh_children(tunnel.0.id());
        let forwards = report["forwards"].as_array().unwrap();
        assert_eq!(forwards[0]["purpose"], "gateway", "{label}: {report}");
        assert_eq!(
            forwards[1]["purpose"], "widget sandbox",
            "{label}: {report}"
        );
        let port = forwards[0]["localPort"].as_u64().unwrap() as u16;
        let sandbox = forwards[1]["localPort"].as_u64().unwrap() as u16;
        for forward in forwards {
            for address in forward["listen"].as_array().unwrap() {
                let address = address.as_str().unwrap();
                assert!(
                    address.starts_with("127.0.0.1:") || address.starts_with("[::1]:"),
                    "{label}: only loopback: {address}"
                );
            }
        }

        // Another program's view: WebSocket, challenge handshake and `health`.
        let through = format!("ws://127.0.0.1:{port}");
        let out = clawlink(
            &home,
            &["--url", &through, "--token-file", &token, "call", "health"],
        );
        assert!(out.status.success(), "{label}: {}", text(&out).1);
        let health: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(health["ok"], true, "{label}");

        // The sandbox, started on demand, through the forward of port + 1.
        let path = start_sandbox(&home, &through).expect("a canvas preview names its path");
        let (code, body) = http_get(sandbox, &path);
        assert_eq!(code, 200, "{label}: sandbox through the forward: {body}");

        let pid = tunnel.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = wait_for_exit(&mut tunnel.0, Duration::from_secs(15));
        assert_eq!(status, Some(0), "{label}: tunnel did not exit cleanly");
        for p in [port, sandbox] {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
                "{label}: port {p} still listens after the tunnel ended"
            );
        }
        assert_gone(&children, &label);
    }
    assert!(
        served.contains(&clawlink_transport_ssh::NAME)
            && served.contains(&clawlink_transport_exec::NAME),
        "ssh-tunnel and exec serve forwards: {served:?}"
    );
}

/// Held by the tests that start `ssh` children in this process (the openssh backend, exec)
/// and count them: one test's children must not be counted as another's leftovers.
static SSH_CHILDREN_OF_THIS_PROCESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The live `ssh` children of process `pid` (the openssh backend's `ssh -N -L`).
fn ssh_children(pid: u32) -> Vec<u32> {
    let parent = pid.to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid …
            let (comm, rest) = stat.rsplit_once(") ")?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?;
            (comm.ends_with("(ssh") && ppid == parent && state != "Z").then_some(child)
        })
        .collect()
}

/// None of `pids` is still a live process.
fn assert_gone(pids: &[u32], label: &str) {
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z ") && stat.contains("(ssh)"));
        assert!(!alive, "{label}: ssh child {pid} outlived the transport");
    }
}

// ---------------------------------------------------------------------------------------
// The base contract: connect, handshake, health; recover from a cut stream; close cleanly
// ---------------------------------------------------------------------------------------

/// Every registered transport, through the real gateway: the base contract
/// (`clawlink_tests::compliance::connects_and_recovers_from_a_cut`), and `close` leaves no
/// ssh child behind.
#[tokio::test(flavor = "multi_thread")]
async fn every_transport_connects_and_recovers_from_a_cut_stream() {
    let _alone = SSH_CHILDREN_OF_THIS_PROCESS.lock().await;
    let home = ssh_home("compliance-connect");
    for profile in profiles(&home) {
        let label = format!("{} ({})", profile.transport, profile.variant);
        let children = ssh_children(std::process::id());
        compliance::connects_and_recovers_from_a_cut(&label, build_profile(&profile)).await;
        assert_gone(&children, &label);
    }
}
