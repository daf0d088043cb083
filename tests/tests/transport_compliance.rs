//! The transport compliance test: one body per capability, run for every registered transport that offers it, against the real gateway (and the real sshd for ssh-tunnel).
//!
//! Every transport the registry lists must have a profile in [`profiles`], built from the
//! peers' environment; a transport added without one fails
//! [`every_registered_transport_has_a_compliance_profile`]. Each capability gets its own
//! `<capability>_…` test function that walks [`profiles`] and skips transports that do not
//! offer it (saying so), so the next capability's test is one more function of that shape.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawlink_core::prompt::NonInteractive;
use clawlink_core::registry;
use clawlink_core::transport::{Transport, TransportEnv};
use clawlink_tests::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One way to reach the peer gateway through a registered transport.
struct Profile {
    /// The registered transport name.
    transport: &'static str,
    /// What distinguishes this profile among those of the same transport.
    variant: &'static str,
    /// The transport's settings table.
    settings: Value,
}

/// The profiles the compliance tests run, for every registered transport (the link keeps
/// both transport crates' descriptors in this binary).
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
    ]
}

fn build(profile: &Profile) -> Arc<dyn Transport> {
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
    let home = ssh_home("compliance-ports-open");
    let mut offered = Vec::new();
    for profile in profiles(&home) {
        let transport = build(&profile);
        let Some(ports) = transport.ports() else {
            eprintln!(
                "{} ({}): no GatewayPorts; skipped",
                profile.transport, profile.variant
            );
            continue;
        };
        offered.push(profile.transport);
        let label = format!("{} ({})", profile.transport, profile.variant);
        let gateway = ports.gateway_port();
        let (code, body) = http_over(ports.open(gateway).await.unwrap(), gateway, "/health").await;
        assert_eq!(code, 200, "{label}: {body}");
        assert!(body.contains(r#""status":"live""#), "{label}: {body}");

        // The gateway starts its sandbox on demand; ask it directly, then reach it through
        // the transport.
        let path = start_sandbox(&home, Peers::get().gateway_url())
            .expect("a canvas preview names the sandbox path");
        let sandbox = gateway + 1;
        let (code, body) = http_over(ports.open(sandbox).await.unwrap(), sandbox, &path).await;
        assert_eq!(code, 200, "{label}: sandbox: {body}");

        let children = ssh_children(std::process::id());
        transport.close().await;
        assert_gone(&children, &label);
    }
    assert!(
        offered.contains(&clawlink_transport_ssh::NAME),
        "ssh-tunnel offers GatewayPorts: {offered:?}"
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
        if build(&profile).ports().is_none() {
            let out = clawlink(
                &home,
                &["--config", &config_file(&home, &profile), "tunnel"],
            );
            let (_, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(2), "{label}: {stderr}");
            assert!(
                stderr.contains("GatewayPorts") && stderr.contains(clawlink_transport_ssh::NAME),
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
        served.contains(&clawlink_transport_ssh::NAME),
        "ssh-tunnel serves forwards: {served:?}"
    );
}

/// Kills the child when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn first_json_line(child: &mut Child, label: &str) -> Value {
    let mut stdout = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") && line.len() < 64 * 1024 {
        if stdout.read(&mut byte).unwrap() == 0 {
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("{label}: tunnel ended before reporting: {stderr}");
        }
        line.push(byte[0]);
    }
    serde_json::from_slice(&line).unwrap_or_else(|e| panic!("{label}: {e}: {line:?}"))
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Asks the gateway at `url` for a canvas preview, which starts its widget sandbox; the
/// sandbox path it names.
fn start_sandbox(home: &Path, url: &str) -> Option<String> {
    let token = token_file(home);
    let out = clawlink(
        home,
        &[
            "--url",
            url,
            "--token-file",
            &token,
            "call",
            "canvas.document.preview",
            r#"{"html": "<p>compliance</p>"}"#,
        ],
    );
    let preview: Value = serde_json::from_slice(&out.stdout).ok()?;
    preview["sandboxUrl"].as_str().map(str::to_owned)
}

/// `GET path` on 127.0.0.1:`port`: the status code and the whole response.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    parse_response(&response)
}

/// `GET path` over a stream a transport opened to `port` on the gateway host.
async fn http_over(
    mut stream: Box<dyn clawlink_core::transport::DuplexStream>,
    port: u16,
    path: &str,
) -> (u16, String) {
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> (u16, String) {
    let response = String::from_utf8_lossy(response).into_owned();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {response:?}"));
    (code, response)
}

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
