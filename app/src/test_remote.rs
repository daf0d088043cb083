//! `clawlink test`: the seed's "Test remote", done right, for any transport — its own session step (an SSH login), the remote CLI where it runs commands on the gateway host, and the gateway's handshake and health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clawlink_core::gateway::GatewayClient;
use clawlink_core::transport::{HostCommands, LayerReport, LayerStatus, Transport};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::GlobalArgs;
use crate::connect;
use crate::failure::Failure;
use crate::settings::Settings;

/// One step of `clawlink test`.
#[derive(Debug, Serialize)]
pub(crate) struct Step {
    pub(crate) step: &'static str,
    pub(crate) ok: bool,
    pub(crate) ms: u64,
    pub(crate) detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub(crate) data: Value,
}

impl Step {
    fn ok(step: &'static str, started: Instant, detail: String, data: Value) -> Self {
        Self {
            step,
            ok: true,
            ms: ms(started),
            detail,
            fix: None,
            data,
        }
    }

    fn failed(step: &'static str, started: Instant, detail: String, fix: Option<String>) -> Self {
        Self {
            step,
            ok: false,
            ms: ms(started),
            detail,
            fix,
            data: Value::Null,
        }
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

impl From<LayerReport> for Step {
    fn from(report: LayerReport) -> Self {
        Self {
            step: report.layer,
            ok: report.status != LayerStatus::Failed,
            ms: report.ms.unwrap_or(0),
            detail: report.detail,
            fix: report.fix,
            data: report.data,
        }
    }
}

/// `clawlink test`.
pub async fn test(global: &GlobalArgs, settings: &Settings, remote_status: bool) -> Result<()> {
    let options = connect::operator_options(settings).await?;
    let transport = connect::build_transport(settings)?;
    let mut steps: Vec<Step> = Vec::new();
    // What the transport's settings check noticed (e.g. SSH config keywords it ignores); a
    // settings error shows up in the session step instead.
    let settings_notes = transport
        .diagnosis()
        .and_then(|d| d.check_settings().ok())
        .unwrap_or_default();
    let session_step = match transport.diagnosis() {
        Some(diagnosis) => diagnosis.session_step().await.map(Step::from),
        None => None,
    };
    let session_failed = session_step.as_ref().is_some_and(|s| !s.ok);
    let had_session_step = session_step.is_some();
    steps.extend(session_step);
    if !session_failed {
        steps.extend(cli_and_gateway_steps(transport.clone(), options, remote_status).await);
    }
    connect::close_transport(transport.as_ref()).await;
    let ok = steps.iter().all(|s| s.ok);
    if global.json {
        let mut report = json!({"ok": ok, "steps": steps});
        for (key, value) in settings_notes.data {
            report[key] = value;
        }
        println!("{report}");
    } else {
        for s in &steps {
            crate::terminal::println_safe!(
                "{:<11} {:<6} {:>6} ms  {}",
                s.step,
                if s.ok { "ok" } else { "FAILED" },
                s.ms,
                s.detail
            );
            if let Some(fix) = &s.fix {
                crate::terminal::println_safe!("{:<11} {:<6} {:>9}  fix: {fix}", "", "", "");
            }
        }
        if !had_session_step && ok {
            println!(
                "(no session step: the {} transport opens each stream to the gateway on its own)",
                transport.name()
            );
        }
        for note in &settings_notes.notes {
            crate::terminal::println_safe!("note: {note}");
        }
    }
    if ok {
        Ok(())
    } else {
        Err(Failure {
            layer: steps
                .iter()
                .find(|s| !s.ok)
                .map(|s| s.step.to_string())
                .unwrap_or_default(),
            message: "the connection test failed (see the steps above)".into(),
            fix: None,
            exit_code: 1,
            json: Value::Null,
        }
        .into())
    }
}

/// The remote-CLI step (when the transport runs commands on the gateway host) and the
/// gateway step. They share the transport's connection and run side by side: a missing CLI
/// must not hide a healthy gateway.
async fn cli_and_gateway_steps(
    transport: Arc<dyn Transport>,
    options: clawlink_core::gateway::ClientOptions,
    remote_status: bool,
) -> Vec<Step> {
    match transport.commands() {
        Some(commands) => {
            let (cli, gateway) = tokio::join!(
                remote_cli_step(commands, remote_status),
                gateway_step(transport.clone(), options)
            );
            vec![cli, gateway]
        }
        None => vec![gateway_step(transport.clone(), options).await],
    }
}

/// `openclaw --version` (or `status --json`) on the gateway host through the transport.
pub(crate) async fn remote_cli_step(commands: &dyn HostCommands, remote_status: bool) -> Step {
    let started = Instant::now();
    let (args, limit): (&[&str], _) = if remote_status {
        (&["status", "--json"], Duration::from_secs(90))
    } else {
        (&["--version"], Duration::from_secs(30))
    };
    let output = match commands.run_cli(args, limit).await {
        Ok(output) => output,
        Err(e) => return Step::failed("remote-cli", started, e.message, e.fix),
    };
    if output.exit_code == Some(0) {
        let stdout = String::from_utf8_lossy(&output.stdout);
        if remote_status {
            return summarize_status(started, &stdout);
        }
        let version = stdout.lines().next().unwrap_or("").trim().to_owned();
        return Step::ok(
            "remote-cli",
            started,
            version.clone(),
            json!({"version": version}),
        );
    }
    if let Some(explained) = commands.explain_failure(&output) {
        return Step::failed("remote-cli", started, explained.message, explained.fix);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    Step::failed(
        "remote-cli",
        started,
        format!(
            "openclaw {} exited with {}: {}",
            args.join(" "),
            output
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "a signal".into()),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ),
        Some("run the same command on the host to see the full error".into()),
    )
}

fn summarize_status(started: Instant, stdout: &str) -> Step {
    let Some(json) = stdout
        .find('{')
        .and_then(|i| serde_json::from_str::<Value>(&stdout[i..]).ok())
    else {
        return Step::failed(
            "remote-cli",
            started,
            "openclaw status --json printed no JSON".into(),
            Some("run `openclaw status --json` on the host to see what it prints".into()),
        );
    };
    let version = json["runtimeVersion"].as_str().unwrap_or("?");
    let reachable = json.pointer("/gateway/reachable").and_then(Value::as_bool);
    let sessions = json
        .pointer("/sessions/count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let gateway = match reachable {
        Some(true) => "gateway reachable",
        Some(false) => "gateway NOT reachable from the host",
        None => "gateway state unknown",
    };
    let detail = format!(
        "openclaw {version} · {gateway} · {}",
        crate::human::count(sessions, "session")
    );
    let data =
        json!({"runtimeVersion": version, "gatewayReachable": reachable, "sessions": sessions});
    if reachable == Some(false) {
        let mut step = Step::failed(
            "remote-cli",
            started,
            detail,
            Some("start the gateway on the host: `openclaw gateway run`".into()),
        );
        step.data = data;
        return step;
    }
    Step::ok("remote-cli", started, detail, data)
}

async fn gateway_step(
    transport: Arc<dyn Transport>,
    options: clawlink_core::gateway::ClientOptions,
) -> Step {
    let started = Instant::now();
    let client = match GatewayClient::connect(transport, options).await {
        Ok(client) => client,
        Err(e) => {
            let failure = Failure::from(e);
            return Step::failed(
                "gateway",
                started,
                format!("{}: {}", failure.layer, failure.message),
                failure.fix,
            );
        }
    };
    let handshake_ms = ms(started);
    let health_started = Instant::now();
    let health = client.request("health", Value::Null).await;
    let health_ms = ms(health_started);
    let hello = client.hello().expect("connected");
    // The tunnel's SSH session is shared with the other steps: close only the WebSocket.
    let step = match health {
        Ok(health) => {
            let auth = auth_summary(&hello.auth);
            let healthy = health["ok"] == true;
            let detail = format!(
                "openclaw {} · auth {auth} · health {} (ping {health_ms} ms)",
                hello.server.version,
                if healthy { "ok" } else { "NOT ok" }
            );
            let data = json!({"server": hello.server.version, "auth": hello.auth.method.as_deref().unwrap_or("?"), "role": hello.auth.role, "handshakeMs": handshake_ms, "healthMs": health_ms, "paired": hello.auth.device_token.is_some(), "healthOk": healthy});
            if healthy {
                Step::ok("gateway", started, detail, data)
            } else {
                let mut step = Step::failed(
                    "gateway",
                    started,
                    detail,
                    Some("the gateway answers but reports itself unhealthy: `clawlink call health` shows which part, `openclaw gateway status` on the host more".into()),
                );
                step.data = data;
                step
            }
        }
        Err(e) => {
            let failure = Failure::from(e);
            Step::failed(
                "gateway",
                started,
                format!("{}: {}", failure.layer, failure.message),
                failure.fix,
            )
        }
    };
    client.shutdown().await;
    step
}

/// What hello-ok said about our authentication: the method, the role, and whether the
/// gateway issued a device token (an approved pairing).
fn auth_summary(auth: &clawlink_core::gateway::protocol::HelloAuth) -> String {
    let method = auth.method.as_deref().unwrap_or("?");
    let paired = if auth.device_token.is_some() {
        "device paired"
    } else {
        "device not paired"
    };
    if auth.role.is_empty() {
        format!("{method} ({paired})")
    } else {
        format!("{method} ({}, {paired})", auth.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawlink_core::gateway::protocol::HelloAuth;

    #[test]
    fn the_auth_line_says_what_hello_ok_said() {
        let token_only: HelloAuth = serde_json::from_value(json!({
            "method": "token", "role": "operator"
        }))
        .unwrap();
        assert_eq!(
            auth_summary(&token_only),
            "token (operator, device not paired)"
        );
        let paired: HelloAuth = serde_json::from_value(json!({
            "method": "device-token", "role": "operator", "deviceToken": "secret"
        }))
        .unwrap();
        assert_eq!(
            auth_summary(&paired),
            "device-token (operator, device paired)"
        );
        assert_eq!(auth_summary(&HelloAuth::default()), "? (device not paired)");
    }
}
