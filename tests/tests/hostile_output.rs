//! A hostile gateway (in process) whose every string carries terminal escape sequences (an OSC
//! title-set, colours, the one-byte CSI, a bidi override): clawlink's human output of
//! `status`, `health`, `logs`, `channels status`, `voicewake triggers`, its error messages and
//! the agent's status line reaches the terminal without any of them, while `--json` keeps the
//! gateway's text exact.

use std::sync::Arc;

use std::time::{Duration, Instant};

use clawlink_tests::agent::RunningAgent;
use clawlink_tests::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// What a hostile gateway puts in every string it controls.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b[31m\u{9b}2J\u{202e}";

/// The characters that must never reach the terminal from the network.
const FORBIDDEN: [char; 4] = ['\x1b', '\x07', '\u{9b}', '\u{202e}'];

fn evil(text: &str) -> String {
    format!("{text}{HOSTILE}")
}

/// The payload the hostile gateway answers `method` with (an error when `None`).
fn answer(method: &str) -> Option<Value> {
    Some(match method {
        "status" => return None,
        "health" => json!({
            "ok": false,
            "agents": [{"agentId": evil("main"), "isDefault": true,
                        "sessions": {"count": 1}, "heartbeat": {"every": evil("30m")}}],
            "channels": {evil("whatsapp"): {"configured": true, "lastError": evil("bad")}},
            "plugins": {"loaded": [evil("plugin")]},
            "eventLoop": {"degraded": true, "reasons": [evil("gc pause")]}
        }),
        "logs.tail" => json!({
            "file": evil("/tmp/openclaw.log"),
            "cursor": 100,
            "lines": [
                evil("a plain line"),
                json!({"time": evil("2026-12-03T19:00:00Z"), "message": evil("json line"),
                       "_meta": {"logLevelName": evil("WARN"),
                                 "name": json!({"subsystem": evil("gateway/ws")}).to_string()}})
                    .to_string(),
            ]
        }),
        "voicewake.get" => json!({"triggers": [evil("computer"), "jarvis"]}),
        "channels.status" => json!({
            "channelOrder": ["whatsapp"],
            "channelLabels": {"whatsapp": evil("WhatsApp")},
            "channels": {"whatsapp": {"configured": true, "linked": true, "lastError": evil("logged out")}},
            "statusIssues": [{"channel": "whatsapp", "accountId": evil("default"), "kind": "auth",
                              "message": evil("not linked"), "fix": evil("run login")}],
            "warnings": [evil("warning")]
        }),
        _ => return None,
    })
}

/// The hostile gateway on a free loopback port: the challenge, a `hello-ok` whose server
/// version, auth method and scopes carry [`HOSTILE`], then [`answer`] for each request and
/// an error message carrying it for the rest.
async fn hostile_gateway() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let methods: Arc<Vec<&str>> = Arc::new(vec![
        "status",
        "health",
        "logs.tail",
        "voicewake.get",
        "channels.status",
    ]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let methods = methods.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let challenge = json!({"type": "event", "event": "connect.challenge",
                    "payload": {"nonce": "5f0c4a8e-0000-4000-8000-000000000002", "ts": 1795530938660u64}});
                if ws
                    .send(Message::Text(challenge.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let request: Value = serde_json::from_str(&text).unwrap_or_default();
                    let method = request["method"].as_str().unwrap_or("");
                    let reply = if method == "connect" {
                        json!({"type": "res", "ok": true, "payload": {
                            "type": "hello-ok", "protocol": 4,
                            "server": {"version": evil("2026.9.6"), "connId": "c1"},
                            "features": {"methods": *methods, "events": []},
                            "snapshot": {"uptimeMs": 1000},
                            "auth": {"role": "operator", "method": evil("token"),
                                     "scopes": ["operator.admin", evil("operator.read")]},
                            "policy": {"maxPayload": 1048576, "maxBufferedBytes": 1048576, "tickIntervalMs": 30000}}})
                    } else if let Some(payload) = answer(method) {
                        json!({"type": "res", "ok": true, "payload": payload})
                    } else {
                        json!({"type": "res", "ok": false, "error": {
                            "code": "INVALID_REQUEST", "message": evil(&format!("{method} refused"))}})
                    };
                    let mut reply = reply;
                    reply["id"] = request["id"].clone();
                    if ws
                        .send(Message::Text(reply.to_string().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Runs clawlink against the hostile gateway at `url` (with a token it never checks).
fn run_against(url: &str, name: &str, command: &[&str]) -> (String, String, Option<i32>) {
    let dir = scratch_dir(name);
    let token = secret_file(&dir, "token", "hostile-test-token");
    let token = token.display().to_string();
    let mut args = vec!["--url", url, "--token-file", &token];
    args.extend_from_slice(command);
    let out = clawlink(&dir, &args);
    let (stdout, stderr) = text(&out);
    (stdout, stderr, out.status.code())
}

/// Neither stream carries a forbidden character, and the hostile text did arrive (neutered).
fn assert_neutered(what: &str, stdout: &str, stderr: &str, shown_in: &str) {
    for (stream, output) in [("stdout", stdout), ("stderr", stderr)] {
        assert!(
            !output.contains(FORBIDDEN),
            "`{what}` wrote a control sequence to {stream}: {output:?}"
        );
    }
    assert!(
        shown_in.contains("pwned"),
        "`{what}` did not show the gateway's text at all: stdout {stdout:?} stderr {stderr:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_gateway_cannot_drive_the_terminal_through_human_output() {
    let url = hostile_gateway().await;
    let cases: [(&str, &[&str], bool); 6] = [
        ("status", &["status"], true),
        ("health", &["health"], true),
        ("logs", &["logs"], true),
        ("channels status", &["channels", "status"], true),
        ("voicewake triggers", &["voicewake", "triggers"], true),
        // An RPC error: the message is the gateway's, printed by the failure report.
        ("call", &["call", "nodes.list"], false),
    ];
    for (i, (what, command, on_stdout)) in cases.into_iter().enumerate() {
        let url = url.clone();
        let command: Vec<&'static str> = command.to_vec();
        let (stdout, stderr, code) = tokio::task::spawn_blocking(move || {
            run_against(&url, &format!("hostile-{i}"), &command)
        })
        .await
        .unwrap();
        assert_ne!(code, None, "`{what}` was killed: {stderr}");
        let shown_in = if on_stdout { &stdout } else { &stderr };
        assert_neutered(what, &stdout, &stderr, shown_in);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_output_keeps_the_gateways_text_exact() {
    let url = hostile_gateway().await;
    let (stdout, stderr, code) = tokio::task::spawn_blocking(move || {
        run_against(&url, "hostile-json", &["--json", "status"])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    // JSON escaping makes ESC and BEL inert (`\u001b`): the raw bytes never appear…
    assert!(!stdout.contains(['\x1b', '\x07']), "{stdout:?}");
    // …and the value is the gateway's, unfiltered.
    let status: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(status["server"]["version"], evil("2026.9.6"), "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_status_line_and_live_status_stay_clean() {
    let url = hostile_gateway().await;
    tokio::task::spawn_blocking(move || {
        let dir = scratch_dir("hostile-agent");
        let token = secret_file(&dir, "token", "hostile-test-token");
        let args: Vec<String> = vec![
            "--url".into(),
            url,
            "--token-file".into(),
            token.display().to_string(),
        ];
        let mut agent = RunningAgent::start(&dir, &args, &[]);
        // The status line quotes the health summary, which quotes the gateway's event-loop
        // reasons: wait (bounded) until the agent has printed it.
        let started = Instant::now();
        while !agent.output("up.out").contains("gc pause") {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no health in the status line: {}\n{}",
                agent.output("up.out"),
                agent.output("up.err")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (up_out, up_err) = (agent.output("up.out"), agent.output("up.err"));
        assert_neutered("up", &up_out, &up_err, &up_out);
        // `status` answered by the running agent (its live status, not a connection).
        let out = agent.run(&["status"]);
        let (stdout, stderr) = text(&out);
        assert!(
            stdout.starts_with("Agent     running"),
            "{stdout}\n{stderr}"
        );
        assert_neutered("status (agent)", &stdout, &stderr, &stdout);
        assert!(agent.terminate().success());
        let (up_out, up_err) = (agent.output("up.out"), agent.output("up.err"));
        assert_neutered("up", &up_out, &up_err, &up_out);
    })
    .await
    .unwrap();
}
