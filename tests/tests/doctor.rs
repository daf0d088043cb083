//! `clawlink doctor` against the real peers and in-process fake gateways: a healthy walk over SSH and direct, and the right layer named for each injected fault.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use clawlink_core::gateway::auth::device_token_key;
use clawlink_core::gateway::{
    ClientOptions, DeviceIdentity, DeviceTokenStore, GatewayClient, MemoryTokenStore,
};
use clawlink_tests::*;
use futures_util::{SinkExt, StreamExt};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const LAYERS: [&str; 13] = [
    "config",
    "dns",
    "tcp",
    "ssh-host-key",
    "ssh-auth",
    "remote-cli",
    "local-port",
    "gateway-port",
    "tls",
    "websocket",
    "protocol",
    "auth",
    "health",
];

/// Runs `clawlink ARGS --json doctor` with HOME = `home`; returns the report and the exit code.
fn doctor(home: &Path, args: &[&str]) -> (Value, Option<i32>, Output) {
    let mut argv: Vec<&str> = args.to_vec();
    argv.extend(["--json", "doctor"]);
    let out = clawlink_in_home(home, &argv);
    let (stdout, stderr) = text(&out);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert_shape(&report);
    (report, out.status.code(), out)
}

/// The documented JSON shape: every layer once, in order, then the info notes.
fn assert_shape(report: &Value) {
    assert!(report["ok"].is_boolean(), "{report}");
    assert!(
        report["failedLayer"].is_null() || report["failedLayer"].is_string(),
        "{report}"
    );
    let layers = report["layers"].as_array().expect("layers");
    let checked: Vec<&str> = layers
        .iter()
        .filter(|l| l["status"] != "info")
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    assert_eq!(checked, LAYERS, "{report}");
    for layer in layers {
        for key in ["layer", "status", "ms", "detail", "fix", "data"] {
            assert!(
                layer.get(key).is_some(),
                "layer without {key}: {layer} in {report}"
            );
        }
        assert!(
            ["ok", "failed", "skipped", "info"].contains(&layer["status"].as_str().unwrap()),
            "{layer}"
        );
    }
    let failed: Vec<&Value> = layers.iter().filter(|l| l["status"] == "failed").collect();
    assert_eq!(report["ok"], failed.is_empty(), "{report}");
    if let Some(first) = failed.first() {
        assert_eq!(
            failed.len(),
            1,
            "the walk stops at the first failure: {report}"
        );
        assert_eq!(report["failedLayer"], first["layer"], "{report}");
        assert!(first["fix"].is_string(), "a failure without a fix: {first}");
        let at = layers.iter().position(|l| l["status"] == "failed").unwrap();
        for later in &layers[at + 1..] {
            assert!(
                later["status"] == "skipped"
                    && later["detail"].as_str().unwrap().starts_with("not checked"),
                "a layer after the failure was not skipped: {later}"
            );
        }
    }
}

fn layer<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == name)
        .unwrap_or_else(|| panic!("no layer {name} in {report}"))
}

fn detail_of<'a>(report: &'a Value, name: &str) -> &'a str {
    layer(report, name)["detail"].as_str().unwrap()
}

fn fix_of<'a>(report: &'a Value, name: &str) -> &'a str {
    layer(report, name)["fix"]
        .as_str()
        .unwrap_or_else(|| panic!("layer {name} has no fix: {report}"))
}

fn new_key(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port.to_string()
}

#[test]
fn a_healthy_ssh_profile_passes_every_layer_and_explains_127_0_0_1() {
    let home = ssh_home("doctor-ssh-ok");
    let token = token_file(&home);
    let (report, code, out) = doctor(
        &home,
        &args_with(&ssh_args("claw"), &["--token-file", &token]),
    );
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true);
    assert!(report["failedLayer"].is_null());
    for name in LAYERS {
        let expected = if name == "tls" { "skipped" } else { "ok" };
        assert_eq!(layer(&report, name)["status"], expected, "{name}: {report}");
    }
    assert!(detail_of(&report, "tls").starts_with("n/a"));
    assert!(
        detail_of(&report, "ssh-host-key").contains("SHA256:"),
        "{report}"
    );
    assert!(
        detail_of(&report, "ssh-auth").contains("client_ed25519"),
        "{report}"
    );
    assert!(
        detail_of(&report, "remote-cli").contains("2026.9.6"),
        "{report}"
    );
    assert!(
        detail_of(&report, "protocol").contains("protocol 4"),
        "{report}"
    );
    assert_eq!(layer(&report, "auth")["data"]["method"], "token");
    assert!(detail_of(&report, "health").starts_with("ok"), "{report}");
    let client = detail_of(&report, "client-address");
    assert!(
        client.contains("127.0.0.1") && client.contains("direct transport"),
        "{client}"
    );
    let credentials = detail_of(&report, "credentials");
    assert!(credentials.contains("token from file"), "{credentials}");
    assert!(layer(&report, "latency")["data"]["pingMs"].is_u64());
    let peers = Peers::get();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(peers.var("OCPEER_GATEWAY_TOKEN")),
        "the token leaked into the report"
    );

    // Text: one line per layer with its mark.
    let out = clawlink_in_home(
        &home,
        &args_with(&ssh_args("claw"), &["--token-file", &token, "doctor"]),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for name in LAYERS {
        let mark = if name == "tls" { "-" } else { "✓" };
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{mark} {name} "))),
            "{name}: {stdout}"
        );
    }
}

#[test]
fn a_healthy_direct_profile_marks_the_ssh_layers_not_applicable() {
    let home = scratch_dir("doctor-direct-ok");
    let token = token_file(&home);
    let peers = Peers::get();
    let (report, code, _) = doctor(
        &home,
        &["--url", peers.gateway_url(), "--token-file", &token],
    );
    assert_eq!(code, Some(0), "{report}");
    for name in [
        "ssh-host-key",
        "ssh-auth",
        "remote-cli",
        "local-port",
        "tls",
    ] {
        assert_eq!(
            layer(&report, name)["status"],
            "skipped",
            "{name}: {report}"
        );
        assert!(
            detail_of(&report, name).starts_with("n/a"),
            "{name}: {report}"
        );
    }
    for name in [
        "config",
        "dns",
        "tcp",
        "gateway-port",
        "websocket",
        "protocol",
        "auth",
        "health",
    ] {
        assert_eq!(layer(&report, name)["status"], "ok", "{name}: {report}");
    }
    assert!(
        detail_of(&report, "websocket").contains("connect.challenge"),
        "{report}"
    );
    assert!(
        detail_of(&report, "client-address").contains("local mode"),
        "{report}"
    );
}

#[test]
fn a_changed_or_unknown_host_key_stops_at_ssh_host_key() {
    let home = scratch_dir("doctor-hostkey");
    let ssh = home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let token = token_file(&home);
    let base = ssh_args("claw");

    // Unknown: no known_hosts at all.
    let (report, code, _) = doctor(&home, &args_with(&base, &["--token-file", &token]));
    assert_eq!(code, Some(1));
    assert_eq!(report["failedLayer"], "ssh-host-key", "{report}");
    assert!(
        detail_of(&report, "ssh-host-key").contains("not a known host"),
        "{report}"
    );
    assert!(fix_of(&report, "ssh-host-key").contains("clawlink ssh trust claw@127.0.0.1:"));
    assert!(!fix_of(&report, "ssh-host-key").contains("ssh-keygen -R"));
    assert_eq!(layer(&report, "tcp")["status"], "ok");

    // Changed: another key recorded for the same [host]:port.
    let other = new_key(&home, "other_key");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let port = Peers::get().var("OCPEER_SSH_PORT");
    std::fs::write(
        ssh.join("known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
    )
    .unwrap();
    let (report, code, _) = doctor(&home, &args_with(&base, &["--token-file", &token]));
    assert_eq!(code, Some(1));
    assert_eq!(report["failedLayer"], "ssh-host-key", "{report}");
    assert!(
        detail_of(&report, "ssh-host-key").contains("HOST KEY CHANGED"),
        "{report}"
    );
    let fix = fix_of(&report, "ssh-host-key");
    assert!(
        fix.contains("ssh-keygen -R") && fix.contains("clawlink ssh trust"),
        "{fix}"
    );
}

#[test]
fn a_refused_key_stops_at_ssh_auth_and_lists_what_was_offered() {
    let home = ssh_home("doctor-refused");
    let stranger = new_key(&home, "stranger");
    let token = token_file(&home);
    let peers = Peers::get();
    let (report, code, _) = doctor(
        &home,
        &[
            "--ssh",
            &ssh_target("claw"),
            "--identity",
            stranger.to_str().unwrap(),
            "--remote-port",
            peers.var("OCPEER_GATEWAY_PORT"),
            "--token-file",
            &token,
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(report["failedLayer"], "ssh-auth", "{report}");
    assert_eq!(layer(&report, "ssh-host-key")["status"], "ok");
    let detail = detail_of(&report, "ssh-auth");
    assert!(
        detail.contains(stranger.to_str().unwrap()) && detail.contains("(refused)"),
        "{detail}"
    );
    assert!(
        fix_of(&report, "ssh-auth").contains("authorized_keys"),
        "{report}"
    );
}

#[test]
fn a_missing_cli_stops_at_remote_cli_with_the_path_fixes() {
    let home = ssh_home("doctor-noclaw");
    let token = token_file(&home);
    let (report, code, _) = doctor(
        &home,
        &args_with(&ssh_args("noclaw"), &["--token-file", &token]),
    );
    assert_eq!(code, Some(1));
    assert_eq!(report["failedLayer"], "remote-cli", "{report}");
    let detail = detail_of(&report, "remote-cli");
    assert!(
        detail.contains("exit 127") && detail.contains("not on PATH for non-interactive shells"),
        "{detail}"
    );
    let fix = fix_of(&report, "remote-cli");
    assert!(
        fix.contains("/usr/local/bin") && fix.contains("cli_path"),
        "{fix}"
    );
}

#[test]
fn a_gateway_that_is_not_running_stops_at_gateway_port() {
    let home = ssh_home("doctor-stopped");
    let token = token_file(&home);
    let peers = Peers::get();
    let port = closed_port();
    let (report, code, _) = doctor(
        &home,
        &[
            "--ssh",
            &ssh_target("claw"),
            "--identity",
            peers.var("OCPEER_SSH_KEY"),
            "--remote-port",
            &port,
            "--token-file",
            &token,
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(report["failedLayer"], "gateway-port", "{report}");
    assert!(
        detail_of(&report, "gateway-port").contains("not running"),
        "{report}"
    );
    let fix = fix_of(&report, "gateway-port");
    assert!(
        fix.contains("openclaw gateway status") && fix.contains(&format!("now {port}")),
        "{fix}"
    );
    assert_eq!(layer(&report, "remote-cli")["status"], "ok");

    // Direct: the host answers with a refusal; tcp passes, gateway-port fails.
    let port = closed_port();
    let url = format!("ws://127.0.0.1:{port}");
    let (report, code, _) = doctor(&home, &["--url", &url, "--token-file", &token]);
    assert_eq!(code, Some(1));
    assert_eq!(report["failedLayer"], "gateway-port", "{report}");
    assert_eq!(layer(&report, "tcp")["status"], "ok");
    assert!(
        fix_of(&report, "gateway-port").contains("openclaw gateway run"),
        "{report}"
    );
}

#[test]
fn a_taken_local_port_names_the_process_holding_it() {
    let home = ssh_home("doctor-port");
    let token = token_file(&home);
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let (report, code, _) = doctor(
        &home,
        &args_with(
            &ssh_args("claw"),
            &["--local-port", &port, "--token-file", &token],
        ),
    );
    assert_eq!(code, Some(1));
    assert_eq!(report["failedLayer"], "local-port", "{report}");
    let pid = std::process::id();
    let holders = &layer(&report, "local-port")["data"]["holders"];
    let comm = std::fs::read_to_string("/proc/self/comm")
        .map(|c| c.trim().to_owned())
        .unwrap_or_default();
    assert!(
        holders
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["pid"] == pid && (comm.is_empty() || h["comm"] == comm.as_str())),
        "pid {pid} ({comm}) not named: {report}"
    );
    assert!(
        detail_of(&report, "local-port").contains(&format!("(pid {pid})")),
        "{report}"
    );
    let fix = fix_of(&report, "local-port");
    assert!(
        fix.contains(&format!("kill {pid}"))
            && fix.contains("--local-port")
            && fix.contains("fall back"),
        "{fix}"
    );
    drop(holder);
}

#[test]
fn a_wrong_token_stops_at_auth_naming_the_code_and_the_source() {
    let home = scratch_dir("doctor-wrong-token");
    let wrong = secret_file(&home, "wrong-token", "not-the-gateway-token-4711");
    let peers = Peers::get();
    let (report, code, out) = doctor(
        &home,
        &[
            "--url",
            peers.gateway_url(),
            "--token-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(report["failedLayer"], "auth", "{report}");
    assert_eq!(layer(&report, "protocol")["status"], "ok");
    let detail = detail_of(&report, "auth");
    assert!(detail.contains("AUTH_TOKEN_MISMATCH"), "{detail}");
    assert!(
        detail.contains(wrong.to_str().unwrap()),
        "the source is named: {detail}"
    );
    assert!(fix_of(&report, "auth").contains("token_file"), "{report}");
    let (stdout, stderr) = text(&out);
    assert!(
        !stdout.contains("4711") && !stderr.contains("4711"),
        "the secret leaked"
    );
}

/// A fake "gateway" on a free loopback port, serving each connection with `serve`.
async fn fake_server<F, Fut>(serve: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    url
}

/// A WebSocket server that sends the challenge and answers `connect` with `answer`.
async fn fake_gateway(answer: Value) -> String {
    fake_server(move |stream| {
        let answer = answer.clone();
        async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let challenge = json!({"type": "event", "event": "connect.challenge",
                "payload": {"nonce": "5f0c4a8e-0000-4000-8000-000000000001", "ts": 1795530938660u64, "capabilities": []}});
            if ws.send(Message::Text(challenge.to_string().into())).await.is_err() {
                return;
            }
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                let request: Value = serde_json::from_str(&text).unwrap_or_default();
                if request["method"] == "connect" {
                    let mut response = answer.clone();
                    response["id"] = request["id"].clone();
                    let _ = ws.send(Message::Text(response.to_string().into())).await;
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
    })
    .await
}

fn doctor_at(url: &str, name: &str) -> (Value, Option<i32>) {
    let home = scratch_dir(name);
    let token = token_file(&home);
    let (report, code, _) = doctor(&home, &["--url", url, "--token-file", &token]);
    (report, code)
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_that_are_not_the_gateway_are_told_apart() {
    // Plain HTTP: answers, but never upgrades.
    let http = fake_server(|mut stream| async move {
        let mut request = [0u8; 2048];
        let _ = stream.read(&mut request).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 13\r\n\r\n<html></html>")
            .await;
    })
    .await;
    let (report, code) = tokio::task::spawn_blocking(move || doctor_at(&http, "doctor-http"))
        .await
        .unwrap();
    assert_eq!(code, Some(1));
    assert_eq!(report["failedLayer"], "websocket", "{report}");
    assert!(
        detail_of(&report, "websocket").contains("HTTP/1.1 200 OK"),
        "{report}"
    );
    assert!(
        fix_of(&report, "websocket").contains("openclaw gateway status"),
        "{report}"
    );

    // Upgrades, then says nothing: the "Web Chat stuck" case.
    let silent = fake_server(|stream| async move {
        if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            drop(ws);
        }
    })
    .await;
    let (report, _) = tokio::task::spawn_blocking(move || doctor_at(&silent, "doctor-silent"))
        .await
        .unwrap();
    assert_eq!(report["failedLayer"], "websocket", "{report}");
    assert!(
        detail_of(&report, "websocket").contains("Web Chat stuck"),
        "{report}"
    );
    assert!(
        fix_of(&report, "websocket").contains("openclaw gateway restart"),
        "{report}"
    );

    // A newer gateway refuses protocol 4 the way openclaw does (§1.6).
    let newer = fake_gateway(json!({"type": "res", "ok": false, "error": {
        "code": "INVALID_REQUEST", "message": "protocol mismatch",
        "details": {"code": "PROTOCOL_MISMATCH", "clientMinProtocol": 4, "clientMaxProtocol": 4, "expectedProtocol": 5, "minimumProbeProtocol": 3}}}))
    .await;
    let (report, _) = tokio::task::spawn_blocking(move || doctor_at(&newer, "doctor-newer"))
        .await
        .unwrap();
    assert_eq!(report["failedLayer"], "protocol", "{report}");
    assert_eq!(layer(&report, "websocket")["status"], "ok");
    let data = &layer(&report, "protocol")["data"];
    assert_eq!(
        (
            data["gatewayProtocol"].clone(),
            data["clawlinkProtocol"].clone()
        ),
        (json!(5), json!(4))
    );
    assert!(
        fix_of(&report, "protocol").contains("update clawlink"),
        "{report}"
    );

    // An older gateway says hello with protocol 3.
    let older = fake_gateway(json!({"type": "res", "ok": true, "payload": {
        "type": "hello-ok", "protocol": 3, "server": {"version": "2025.1.0", "connId": "c1"},
        "features": {"methods": [], "events": []}, "snapshot": {},
        "auth": {"role": "operator", "scopes": []},
        "policy": {"maxPayload": 1048576, "maxBufferedBytes": 1048576, "tickIntervalMs": 30000}}}))
    .await;
    let (report, _) = tokio::task::spawn_blocking(move || doctor_at(&older, "doctor-older"))
        .await
        .unwrap();
    assert_eq!(report["failedLayer"], "protocol", "{report}");
    assert_eq!(layer(&report, "protocol")["data"]["gatewayProtocol"], 3);
    assert!(
        fix_of(&report, "protocol").contains("update openclaw on the gateway host"),
        "{report}"
    );
}

/// A loopback relay to `gateway` that adds a browser `Origin` header (its own address) to
/// each WebSocket upgrade and then copies bytes both ways.
async fn browser_origin_relay(gateway: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&gateway).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&head[..head.len() - 2]).into_owned();
                let head = format!("{head}Origin: http://{address}\r\n\r\n");
                if upstream.write_all(head.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    format!("ws://{address}")
}

/// An admin connection to the real gateway, for cleaning up what a test left there.
async fn admin() -> GatewayClient {
    let (options, _) = operator(token_credentials());
    GatewayClient::connect(direct(Peers::get().gateway_url()), options)
        .await
        .unwrap()
}

/// PAIRING_REQUIRED from the real gateway without touching its config: a loopback connection
/// that carries a browser `Origin` is never paired silently (§2.6, `shouldAllowSilentLocalPairing`),
/// so a new device coming through a browser-side relay gets the real error shape with a
/// pending request. Only this test's throwaway device is involved; its request is rejected
/// afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_device_that_needs_approval_stops_at_auth_with_the_approve_command() {
    let home = scratch_dir("doctor-pairing");
    let token = token_file(&home);
    let peers = Peers::get();
    let gateway = format!("127.0.0.1:{}", peers.var("OCPEER_GATEWAY_PORT"));
    let relay = browser_origin_relay(gateway).await;
    let home_for_doctor = home.clone();
    let (report, code, _) = tokio::task::spawn_blocking(move || {
        doctor(&home_for_doctor, &["--url", &relay, "--token-file", &token])
    })
    .await
    .unwrap();

    // Leave the shared gateway as we found it, whatever the assertions below say.
    if let Some(request_id) = layer(&report, "auth")["data"]["requestId"].as_str() {
        let admin = admin().await;
        let _ = admin
            .request("device.pair.reject", json!({"requestId": request_id}))
            .await;
        admin.shutdown().await;
    }

    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["failedLayer"], "auth", "{report}");
    assert_eq!(layer(&report, "websocket")["status"], "ok");
    assert_eq!(layer(&report, "protocol")["status"], "ok");
    let auth = layer(&report, "auth");
    assert_eq!(auth["data"]["code"], "PAIRING_REQUIRED", "{report}");
    let request_id = auth["data"]["requestId"].as_str().expect("a requestId");
    let fix = fix_of(&report, "auth");
    assert!(
        fix.contains(&format!("openclaw devices approve {request_id}")),
        "{fix}"
    );
    assert!(
        detail_of(&report, "auth").contains("token from file"),
        "the credential source is named: {report}"
    );
}

/// A device whose approved scopes were narrowed (here: paired with `operator.read` only)
/// and that has only its device token: the gateway refuses the wider scope set clawlink
/// asks for, and the doctor names the stored token as the credential used.
#[tokio::test(flavor = "multi_thread")]
async fn a_narrowed_device_token_stops_at_auth_naming_the_stored_token() {
    let home = scratch_dir("doctor-narrow");
    let peers = Peers::get();
    let url = peers.gateway_url().to_owned();

    let identity = Arc::new(DeviceIdentity::generate().unwrap());
    let store = Arc::new(MemoryTokenStore::default());
    let mut options = ClientOptions::operator(
        identity.clone(),
        token_credentials(),
        store.clone() as Arc<dyn DeviceTokenStore>,
    );
    options.scopes = vec!["operator.read".into()];
    let narrow = GatewayClient::connect(direct(&url), options)
        .await
        .expect("a loopback device is paired silently");
    let hello = narrow
        .wait_connected(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let device_token = hello
        .auth
        .device_token
        .clone()
        .expect("the gateway issued a device token");
    narrow.shutdown().await;

    // clawlink's data dir, in its own formats (app/src/state.rs): the key, the device token.
    let data = home.join("data");
    write_private(
        &data.join("device-operator.key"),
        &format!(
            "clawlink device key v1 (ed25519 seed, hex)\n{}\n",
            hex_encode(&identity.seed())
        ),
    );
    let gateway_key = format!("ws://127.0.0.1:{}", peers.var("OCPEER_GATEWAY_PORT"));
    let tokens = json!({
        device_token_key(&gateway_key, identity.id(), "operator"): device_token.expose_secret(),
    });
    write_private(&data.join("device-tokens.json"), &tokens.to_string());

    let home_for_doctor = home.clone();
    let (report, code, _) =
        tokio::task::spawn_blocking(move || doctor(&home_for_doctor, &["--url", &url]))
            .await
            .unwrap();

    let admin = admin().await;
    let _ = admin
        .request("device.pair.remove", json!({"deviceId": identity.id()}))
        .await;
    admin.shutdown().await;

    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["failedLayer"], "auth", "{report}");
    let auth = layer(&report, "auth");
    assert_eq!(auth["data"]["code"], "AUTH_SCOPE_MISMATCH", "{report}");
    assert!(
        detail_of(&report, "auth").contains("device token stored in"),
        "{report}"
    );
    assert!(fix_of(&report, "auth").contains("shared token"), "{report}");
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path.parent().unwrap())
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_profiles_own_agent_holding_its_port_is_the_healthy_case() {
    use clawlink_tests::agent::RunningAgent;
    let home = ssh_home("doctor-agent");
    let token = token_file(&home);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let args: Vec<String> = ssh_args("claw")
        .into_iter()
        .chain([
            "--local-port".into(),
            port.clone(),
            "--token-file".into(),
            token,
        ])
        .collect();
    let mut agent = RunningAgent::start(&home, &args, &[]);
    agent.wait_for("connected", std::time::Duration::from_secs(30), |s| {
        s["connection"]["phase"] == "connected"
    });
    let out = agent.run(&["--json", "doctor"]);
    let (stdout, stderr) = text(&out);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert_shape(&report);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    let local = layer(&report, "local-port");
    assert_eq!(local["status"], "ok", "{report:#}");
    assert!(
        detail_of(&report, "local-port").contains(&format!(
            "127.0.0.1:{port} is this profile's agent's gateway forward (pid {}",
            agent.pid()
        )),
        "{report:#}"
    );
    // The forward was checked end to end (without credentials).
    assert!(
        local["data"]["throughForward"]
            .as_str()
            .unwrap()
            .contains("/health answers ok"),
        "{report:#}"
    );
    for later in ["gateway-port", "websocket", "protocol", "auth", "health"] {
        assert_eq!(layer(&report, later)["status"], "ok", "{later}: {report:#}");
    }
    assert!(agent.terminate().success());
}

#[test]
fn a_healthy_walk_leaves_no_warning_in_the_gateways_log() {
    let home = scratch_dir("doctor-quiet-log");
    let token = token_file(&home);
    let peers = Peers::get();
    let log = std::path::PathBuf::from(peers.var("OCPEER_GATEWAY_LOG"));
    let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let (report, code, _) = doctor(
        &home,
        &["--url", peers.gateway_url(), "--token-file", &token],
    );
    assert_eq!(code, Some(0), "{report}");
    // The websocket layer still reports what the upgrade showed.
    let websocket = layer(&report, "websocket");
    assert!(websocket["data"]["upgradeMs"].is_u64(), "{report}");
    assert!(websocket["data"]["clockOffsetMs"].is_i64(), "{report}");
    // The gateway writes its log as it goes; give the last lines a moment to land.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let text = std::fs::read(&log).unwrap();
    let written = String::from_utf8_lossy(&text[(before as usize).min(text.len())..]).into_owned();
    let warnings: Vec<&str> = written
        .lines()
        .filter(|l| l.contains("closed before connect") && l.contains("clawlink-doctor"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}
