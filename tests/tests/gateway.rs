//! The gateway client and the CLI against the real openclaw 2026.9.6 gateway: handshakes, auth failures, device tokens, RPC errors, events.

use std::time::{Duration, Instant};

use clawlink_core::gateway::{
    Credentials, DeviceTokenStore, GatewayClient, GatewayError, Layer, Phase, RequestOptions,
};
use clawlink_tests::*;
use serde_json::{json, Value};

#[tokio::test]
async fn handshake_with_token_grants_the_operator_scopes() {
    let peers = Peers::get();
    let (options, store) = operator(token_credentials());
    let device = options.identity.id().to_owned();
    let client = GatewayClient::connect(direct(peers.gateway_url()), options)
        .await
        .expect("connect with the gateway's token");
    let hello = client.hello().unwrap();
    assert_eq!(hello.protocol, 4);
    assert_eq!(hello.server.version, "2026.9.6");
    assert_eq!(hello.auth.method.as_deref(), Some("token"));
    for scope in [
        "operator.admin",
        "operator.read",
        "operator.write",
        "operator.pairing",
    ] {
        assert!(
            hello.auth.scopes.iter().any(|s| s == scope),
            "{scope} missing: {:?}",
            hello.auth.scopes
        );
    }
    assert_eq!(hello.main_session_key(), Some("agent:main:main"));
    // Loopback: the gateway paired the new device silently and issued a device token.
    let key = clawlink_core::gateway::auth::device_token_key(
        &client.transport().gateway_key(),
        &device,
        "operator",
    );
    assert!(store.load(&key).is_some(), "no device token stored");
    let health = client.request("health", Value::Null).await.unwrap();
    assert_eq!(health["ok"], true);
    client.shutdown().await;
    assert_eq!(client.state().borrow().phase, Phase::Closed);
}

#[tokio::test]
async fn handshake_with_password() {
    let peers = Peers::get();
    let (options, _) = operator(Credentials {
        token: None,
        password: Some(peers.password()),
    });
    let client = GatewayClient::connect(direct(peers.password_gateway_url()), options)
        .await
        .expect("connect with the gateway's password");
    assert_eq!(
        client.hello().unwrap().auth.method.as_deref(),
        Some("password")
    );
    let status = client.request("status", Value::Null).await.unwrap();
    assert_eq!(status["runtimeVersion"], "2026.9.6");
    client.shutdown().await;
}

#[tokio::test]
async fn wrong_token_is_a_typed_auth_error_and_is_never_retried() {
    let peers = Peers::get();
    let (options, _) = operator(Credentials {
        token: Some("not-the-token".to_owned().into()),
        password: None,
    });
    let err = GatewayClient::connect(direct(peers.gateway_url()), options.clone())
        .await
        .expect_err("a wrong token must fail");
    assert_eq!(err.layer(), Layer::Auth);
    assert_eq!(err.code(), Some("AUTH_TOKEN_MISMATCH"));
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("token mismatch"), "{err}");
    assert!(
        !err.to_string().contains("not-the-token"),
        "secret echoed: {err}"
    );

    // The long-running mode must stop too: one attempt, then Failed, and no retry storm.
    let client = GatewayClient::start(direct(peers.gateway_url()), options);
    let mut state = client.state();
    let mut attempts = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Phase::Connecting { .. } = state.borrow_and_update().phase {
            attempts += 1;
        }
        if tokio::time::timeout_at(deadline.into(), state.changed())
            .await
            .is_err()
        {
            break;
        }
    }
    let final_state = client.state().borrow().clone();
    assert_eq!(final_state.phase, Phase::Failed, "{}", final_state.label());
    assert!(
        attempts <= 1,
        "{attempts} connect attempts for a wrong token"
    );
    let err = client.request("health", Value::Null).await.unwrap_err();
    assert_eq!(err.code(), Some("AUTH_TOKEN_MISMATCH"));
    client.shutdown().await;
}

#[tokio::test]
async fn missing_credentials_say_which_secret_to_provide() {
    let peers = Peers::get();
    let (options, _) = operator(Credentials::default());
    let err = GatewayClient::connect(direct(peers.gateway_url()), options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AUTH_TOKEN_MISSING"));
    assert!(err.fix().unwrap().contains("token_file"));

    let (options, _) = operator(Credentials::default());
    let err = GatewayClient::connect(direct(peers.password_gateway_url()), options)
        .await
        .unwrap_err();
    assert_eq!(err.layer(), Layer::Auth, "{err:?}");
    assert!(err.fix().unwrap().contains("password"), "{err:?}");
}

#[tokio::test]
async fn device_token_is_reused_without_the_shared_secret() {
    let peers = Peers::get();
    let (options, store) = operator(token_credentials());
    let first = GatewayClient::connect(direct(peers.gateway_url()), options.clone())
        .await
        .unwrap();
    first.shutdown().await;

    let mut again = options.clone();
    again.credentials = Credentials::default();
    let second = GatewayClient::connect(direct(peers.gateway_url()), again)
        .await
        .unwrap();
    let hello = second.hello().unwrap();
    assert_eq!(hello.auth.method.as_deref(), Some("device-token"));
    // Same scopes as the first grant: the device token covers them.
    assert!(hello.auth.scopes.iter().any(|s| s == "operator.admin"));
    let nodes = second.request("node.list", json!({})).await.unwrap();
    assert!(nodes["nodes"].is_array());
    second.shutdown().await;

    // The shared token refused but the device token valid: connect, on loopback only.
    let mut wrong = options;
    wrong.credentials = Credentials {
        token: Some("stale-token".to_owned().into()),
        password: None,
    };
    let third = GatewayClient::connect(direct(peers.gateway_url()), wrong)
        .await
        .unwrap();
    assert_eq!(
        third.hello().unwrap().auth.method.as_deref(),
        Some("device-token")
    );
    third.shutdown().await;
    drop(store);
}

#[tokio::test]
async fn rpc_errors_carry_the_gateways_code_and_message() {
    let peers = Peers::get();
    let (options, _) = operator(token_credentials());
    let client = GatewayClient::connect(direct(peers.gateway_url()), options)
        .await
        .unwrap();

    let err = client
        .request("nonexistent.method", Value::Null)
        .await
        .unwrap_err();
    assert_eq!(err.layer(), Layer::Rpc);
    assert!(
        err.to_string()
            .contains("unknown method: nonexistent.method"),
        "{err}"
    );

    let err = client
        .request("node.list", json!({"bogus": 1}))
        .await
        .unwrap_err();
    let GatewayError::Rpc { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(error.code, "INVALID_REQUEST");
    assert!(
        error.message.contains("unexpected property 'bogus'"),
        "{}",
        error.message
    );

    // Requests are matched by id, in any order: fire several at once.
    let calls = [
        "health",
        "status",
        "node.list",
        "voicewake.get",
        "last-heartbeat",
        "system-presence",
    ];
    let results = futures_join(&client, &calls).await;
    assert_eq!(results.len(), calls.len());
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[1]["runtimeVersion"], "2026.9.6");
    assert!(results[3]["triggers"].is_array());
    assert!(results[5].is_array());

    let err = client
        .request_with(
            "health",
            Value::Null,
            RequestOptions {
                timeout: Some(Duration::from_millis(0)),
                expect_final: false,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Timeout { .. }), "{err:?}");
    client.shutdown().await;
}

async fn futures_join(client: &GatewayClient, methods: &[&str]) -> Vec<Value> {
    let mut handles = Vec::new();
    for method in methods {
        let client = client.clone();
        let method = method.to_string();
        let params = if method == "node.list" {
            json!({})
        } else {
            Value::Null
        };
        handles.push(tokio::spawn(async move {
            client.request(&method, params).await
        }));
    }
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap().unwrap());
    }
    out
}

#[tokio::test]
async fn agent_answers_twice_on_one_id_and_the_client_waits_for_the_final() {
    let peers = Peers::get();
    let (options, _) = operator(token_credentials());
    let client = GatewayClient::connect(direct(peers.gateway_url()), options)
        .await
        .unwrap();
    let mut events = client.subscribe();
    let key = format!("clawlink-test-agent-{}", std::process::id());
    let result = client
        .request_with(
            "agent",
            json!({"message": "ping from clawlink", "sessionKey": "agent:main:main", "idempotencyKey": key}),
            RequestOptions { timeout: Some(Duration::from_secs(120)), expect_final: true },
        )
        .await
        .expect("agent run through the stub model");
    assert_eq!(result["runId"], key.as_str());
    assert_eq!(result["status"], "ok", "{result}");
    // The run streamed chat/agent events for that run id to this operator.
    let mut saw_run_event = false;
    while let Ok(ev) = events.try_recv() {
        if ev.payload.get("runId").and_then(Value::as_str) == Some(key.as_str()) {
            saw_run_event = true;
        }
    }
    assert!(saw_run_event, "no agent/chat event for run {key}");
    client.shutdown().await;
}

#[tokio::test]
async fn tick_and_health_events_reach_subscribers() {
    let peers = Peers::get();
    let (options, _) = operator(token_credentials());
    let client = GatewayClient::connect(direct(peers.gateway_url()), options)
        .await
        .unwrap();
    let mut events = client.subscribe();
    let (mut tick, mut health) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(75);
    // The gateway ticks every 30 s and pushes health on its ~60 s refresh.
    while !(tick && health) {
        let ev = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .unwrap_or_else(|_| panic!("no tick ({tick}) or health ({health}) event within 75 s"))
            .unwrap();
        match ev.event.as_str() {
            "tick" => {
                tick = true;
                assert!(ev.payload["ts"].is_u64());
                assert!(ev.seq.is_some());
            }
            "health" => {
                health = true;
                assert_eq!(ev.payload["ok"], true);
            }
            _ => {}
        }
        assert_eq!(ev.generation, 1);
    }
    client.shutdown().await;
}

#[test]
fn cli_status_and_call_against_the_real_gateway() {
    let peers = Peers::get();
    let dir = scratch_dir("cli-status");
    let token = secret_file(&dir, "token", peers.var("OCPEER_GATEWAY_TOKEN"));
    let token = token.to_str().unwrap();
    let url = peers.gateway_url();

    let out = clawlink(&dir, &["--url", url, "--token-file", token, "status"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "status failed: {stderr}");
    assert!(stdout.contains("openclaw 2026.9.6, protocol 4"), "{stdout}");
    assert!(stdout.contains("Health    ok"), "{stdout}");

    let out = clawlink(
        &dir,
        &["--url", url, "--token-file", token, "--json", "status"],
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(status["ok"], true);
    assert_eq!(status["server"]["version"], "2026.9.6");
    assert_eq!(status["health"]["ok"], true);
    assert_eq!(status["status"]["runtimeVersion"], "2026.9.6");

    // The device token from the first run works without the shared token.
    let out = clawlink(&dir, &["--url", url, "call", "health"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let health: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["ok"], true);

    let out = clawlink(&dir, &["--url", url, "call", "nonexistent.method"]);
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("rpc: nonexistent.method: unknown method"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    let out = clawlink(&dir, &["--url", url, "call", "node.list", r#"{"bogus":1}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("unexpected property 'bogus'"));

    let out = clawlink(&dir, &["--url", url, "call", "node.list", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not valid JSON"));
}

#[test]
fn cli_names_the_failing_layer() {
    let peers = Peers::get();
    let dir = scratch_dir("cli-layers");
    let bad = secret_file(&dir, "bad-token", "definitely-wrong");
    let out = clawlink(
        &dir,
        &[
            "--url",
            peers.gateway_url(),
            "--token-file",
            bad.to_str().unwrap(),
            "status",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert!(
        stderr.starts_with("clawlink: auth: unauthorized: gateway token mismatch"),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
    assert!(
        !stderr.contains("definitely-wrong"),
        "secret echoed: {stderr}"
    );

    // A token sent to a password gateway: the fix says so, instead of pointing at an
    // auth.password_file the user never set.
    let out = clawlink(
        &dir,
        &[
            "--url",
            peers.password_gateway_url(),
            "--token-file",
            bad.to_str().unwrap(),
            "status",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("clawlink sent a token"), "{stderr}");
    assert!(stderr.contains("--password-file"), "{stderr}");
    assert!(!stderr.contains("fix the file named by"), "{stderr}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let out = clawlink(
        &dir,
        &["--url", &format!("ws://127.0.0.1:{port}"), "status"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.starts_with("clawlink: connect: "),
        "{}",
        text(&out).1
    );

    // The gateway's HTTP port answers, but a non-gateway path is still the gateway socket;
    // a non-WebSocket server is a handshake failure.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = http.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let out = clawlink(
        &dir,
        &["--url", &format!("ws://127.0.0.1:{http_port}"), "status"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("handshake: ") && text(&out).1.contains("HTTP 404"),
        "{}",
        text(&out).1
    );

    let out = clawlink(&dir, &["--url", "wss://user:pw@example.com", "status"]);
    assert_eq!(out.status.code(), Some(2));

    // The JSON error names the same layer as the text line (a name that does not resolve
    // is `dns`, not the `connect` it is retried as).
    let token = secret_file(&dir, "token", "unused");
    for json in [false, true] {
        let mut args = vec![
            "--url",
            "wss://nonexistent.invalid",
            "--token-file",
            token.to_str().unwrap(),
            "status",
        ];
        if json {
            args.insert(0, "--json");
        }
        let out = clawlink(&dir, &args);
        assert_eq!(out.status.code(), Some(1));
        let (stdout, stderr) = text(&out);
        assert!(stderr.starts_with("clawlink: dns: "), "{stderr}");
        if json {
            let report: Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(report["error"]["layer"], "dns", "{report}");
        }
    }

    std::fs::write(
        dir.join("clawlink.toml"),
        "[default]\nmode = \"remote\"\ntransport = \"carrier-pigeon\"\n",
    )
    .unwrap();
    let out = clawlink(&dir, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("carrier-pigeon"));
    let out = clawlink(&dir, &["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cli_lists_transports_and_features_and_shows_config_with_masked_secrets() {
    let peers = Peers::get();
    let dir = scratch_dir("cli-config");
    let out = clawlink(&dir, &["--json", "transports"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["direct-ws", "exec", "ssh-tunnel"]);
    let ssh = &list[names.iter().position(|n| *n == "ssh-tunnel").unwrap()];
    // Every setting is shown, including the ones the README once forgot.
    for key in [
        "connect_timeout_ms",
        "ssh_config",
        "known_hosts_file",
        "backend",
    ] {
        assert!(
            ssh["example"]
                .as_str()
                .unwrap()
                .contains(&format!("{key} =")),
            "{key}: {}",
            ssh["example"]
        );
    }

    let out = clawlink(&dir, &["--json", "features"]);
    assert!(out.status.success());

    let token = peers.var("OCPEER_GATEWAY_TOKEN").to_owned();
    let out = clawlink_with_env(
        &dir,
        &["--url", peers.gateway_url(), "config", "show"],
        &[("CLAWLINK_TOKEN", &token)],
    );
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("token"), "{stdout}");
    assert!(stdout.contains("***"), "{stdout}");
    assert!(
        stdout.contains("environment variable CLAWLINK_TOKEN"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&token),
        "the token leaked into config show"
    );
    assert!(stdout.contains("transports.direct_ws.url"), "{stdout}");

    let out = clawlink(&dir, &["--url", peers.gateway_url(), "config", "check"]);
    assert!(out.status.success(), "{}", text(&out).1);
}
