//! `clawlink notify`: `node.invoke` `system.notify` with a fresh idempotency key, retried while the gateway could not hand it to the node, and every way it can fail turned into what to do.

use std::time::Duration;

use anyhow::Result;
use clawlink_core::gateway::{GatewayClient, GatewayError, RequestOptions};
use clawlink_core::notify::codes;
use serde_json::{json, Map, Value};

use crate::cli::GlobalArgs;
use crate::connect;
use crate::failure::Failure;
use crate::settings::Settings;

use super::{node_list, resolve_node, short_id, NodeRow, NotifyArgs, ResolveError};

/// The command `notify` invokes.
pub(super) const NOTIFY_COMMAND: &str = clawlink_core::notify::COMMAND;

/// `clawlink notify`.
pub async fn notify(global: &GlobalArgs, settings: &Settings, args: &NotifyArgs) -> Result<()> {
    let title = args.title.as_deref().unwrap_or("").trim().to_owned();
    let body = args.body.as_deref().unwrap_or("").trim().to_owned();
    if title.is_empty() && body.is_empty() {
        return Err(Failure::config(
            "nothing to show: the notification needs a title or a body",
            Some("pass --title TEXT, --body TEXT, or both".into()),
        )
        .into());
    }
    if args.invoke_timeout == 0 {
        return Err(Failure::config(
            "--invoke-timeout must be at least 1 (milliseconds)",
            Some("the default is 15000".into()),
        )
        .into());
    }
    let client = connect::connect(settings).await?;
    let result = send_notification(&client, settings, args, title, body).await;
    connect::finish(&client).await;
    let result = result?;
    if global.json {
        println!("{result}");
    } else {
        println!("notify ok");
    }
    Ok(())
}

pub(super) async fn send_notification(
    client: &GatewayClient,
    settings: &Settings,
    args: &NotifyArgs,
    title: String,
    body: String,
) -> Result<Value, Failure> {
    let (_, rows) = node_list(client).await?;
    let node = resolve_node(&rows, &args.node)
        .map_err(ResolveError::into_failure)?
        .clone();
    let mut params = Map::new();
    params.insert("title".into(), json!(title));
    params.insert("body".into(), json!(body));
    if let Some(sound) = args
        .sound
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        params.insert("sound".into(), json!(sound));
    }
    if let Some(priority) = args.priority {
        params.insert("priority".into(), json!(priority.as_str()));
    }
    params.insert("delivery".into(), json!(args.delivery.as_str()));
    // The gateway waits up to the invoke timeout for the node, then answers: wait longer.
    let wait = Duration::from_millis(args.invoke_timeout.saturating_add(10_000)).max(
        Duration::from_millis(settings.profile.client.request_timeout_ms),
    );
    let options = RequestOptions {
        timeout: Some(wait),
        expect_final: false,
    };
    let mut attempt = 1;
    loop {
        let invoke = json!({
            "nodeId": node.node_id,
            "command": NOTIFY_COMMAND,
            "params": params,
            "idempotencyKey": uuid::Uuid::new_v4().to_string(),
            "timeoutMs": args.invoke_timeout,
        });
        match client.request_with("node.invoke", invoke, options).await {
            Ok(result) => return Ok(result),
            Err(error) if attempt < DISPATCH_ATTEMPTS && never_dispatched(&error) => {
                tracing::debug!(%error, attempt, "the gateway did not dispatch the notification; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(error) => return Err(invoke_failure(error, &node)),
        }
    }
}

/// How often `notify` tries a notification the gateway could not hand to the node.
pub(super) const DISPATCH_ATTEMPTS: u32 = 3;

/// A transient gateway-side failure before the command reached the node (its pairing store
/// was busy, the node's route changed): safe to send again, with a fresh idempotency key
/// since the gateway remembers the failure under the old one.
pub(super) fn never_dispatched(error: &GatewayError) -> bool {
    let GatewayError::Rpc { error: shape, .. } = error else {
        return false;
    };
    let dispatched = shape
        .details
        .get("nodeCommandDispatched")
        .and_then(Value::as_bool);
    let code = shape
        .details
        .pointer("/nodeError/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    shape.code == "UNAVAILABLE"
        && dispatched == Some(false)
        && matches!(code, "UNAVAILABLE" | "ROUTE_CHANGED")
}

/// What a failed `node.invoke` means for the user, and what to do.
pub fn invoke_failure(error: GatewayError, node: &NodeRow) -> Failure {
    let GatewayError::Rpc { error: shape, .. } = &error else {
        return Failure::from(error);
    };
    let label = format!("{} ({})", node.label(), short_id(&node.node_id));
    let approve_fix = || {
        match &node.pending_request {
        Some(request) => format!(
            "approve its command surface with `clawlink nodes approve {request}`; the node uses it once it reconnects"
        ),
        None => "run `clawlink nodes pending`, then `clawlink nodes approve REQUEST`; the node uses it once it reconnects".into(),
    }
    };
    let detail = |key: &str| shape.details.get(key).and_then(Value::as_str);
    let (message, fix, code) = match (shape.code.as_str(), detail("code"), detail("reason")) {
        ("UNAVAILABLE", Some("NOT_CONNECTED"), _) => (
            format!("node {label} is not connected"),
            "start it (the macOS app, `openclaw node run`, or `clawlink up` with [features.notify] enabled on that machine), then check `clawlink nodes list`".to_owned(),
            "NOT_CONNECTED".to_owned(),
        ),
        ("UNAVAILABLE", Some("PAIRING_CHANGED"), _) => (
            format!("node {label}: its pairing changed while the call was active (its command surface may await approval)"),
            approve_fix(),
            "PAIRING_CHANGED".to_owned(),
        ),
        ("INVALID_REQUEST", _, Some("command not declared by node")) => (
            format!(
                "node {label} does not support {NOTIFY_COMMAND} (its commands: {})",
                if node.commands.is_empty() { "none".into() } else { node.commands.join(", ") }
            ),
            "pick a node whose commands include system.notify (`clawlink nodes list`)".into(),
            "COMMAND_NOT_SUPPORTED".into(),
        ),
        ("INVALID_REQUEST", _, Some("node did not declare commands")) if node.is_pending() || shape.message.contains("pending approval") => (
            format!("node {label}: its command surface ({NOTIFY_COMMAND}) awaits approval"),
            approve_fix(),
            "PAIRING_PENDING".into(),
        ),
        ("INVALID_REQUEST", _, Some("command not allowlisted")) => (
            format!("node {label}: {}", shape.message),
            "allow the command on the gateway (gateway.nodes.commands.allow) or use a node whose platform allows it".into(),
            "COMMAND_NOT_ALLOWED".into(),
        ),
        ("UNAVAILABLE", _, _) => match shape.details.get("nodeError").filter(|e| e.is_object()) {
            Some(node_error) => {
                let code = node_error.get("code").and_then(Value::as_str).unwrap_or("ERROR").to_owned();
                let text = node_error.get("message").and_then(Value::as_str).unwrap_or(&shape.message);
                (
                    format!("node {label} answered {code}: {text}"),
                    node_error_fix(&code).to_owned(),
                    code,
                )
            }
            None => return Failure::from(error),
        },
        _ => return Failure::from(error),
    };
    Failure {
        json: json!({"layer": "node", "message": message, "code": code, "fix": fix, "nodeId": node.node_id}),
        layer: "node".into(),
        message,
        fix: Some(fix),
        exit_code: 1,
    }
}

/// What to do about a node's own error code.
pub(super) fn node_error_fix(code: &str) -> &'static str {
    match code {
        codes::NOTIFICATIONS_UNAVAILABLE => {
            "the node has no notification service (on Linux a notification daemon on the session bus: GNOME, KDE, dunst, mako…); retry with --delivery auto or overlay"
        }
        "NOTIFICATIONS_DISABLED" => "enable notifications in the node's settings",
        codes::NOT_AUTHORIZED => "allow notifications for the node app in the node machine's system settings",
        codes::UNKNOWN_SOUND => "use one of the sound names the node listed, or leave --sound out",
        codes::INVALID_REQUEST => "check --title/--body/--priority/--delivery",
        "TIMEOUT" => "the node did not answer in time; raise --invoke-timeout or check the node",
        "UNAVAILABLE" | "ROUTE_CHANGED" => {
            "the gateway could not hand the command to the node just now; retry in a moment"
        }
        _ => "see the node's log for details",
    }
}
