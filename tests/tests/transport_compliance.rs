//! The transport contract, run for every registered transport against the real peers (gateway, sshd): one test body per capability, for each transport that offers it.
//!
//! A new transport gets these checks by registering (the tests crate links every built-in
//! transport) and by saying here how it reaches the peers (`peer_settings`).

use std::sync::Arc;
use std::time::Duration;

use clawlink_core::prompt::NonInteractive;
use clawlink_core::registry;
use clawlink_core::transport::commands::NOT_FOUND;
use clawlink_core::transport::{Capability, Transport, TransportEnv};
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
