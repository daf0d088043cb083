//! `clawlink nodes` and `clawlink notify`: the gateway's nodes, their permissions and pairing, and notifications sent to them.
//!
//! `nodes list` and `nodes describe NODE` read `node.list` / `node.describe` (the effective
//! catalog: connected and paired nodes, and nodes whose command surface awaits approval);
//! `nodes pending`, `approve` and `reject` are `node.pair.list|approve|reject`. `notify`
//! sends `node.invoke` `system.notify` with a fresh idempotency key, as `openclaw nodes
//! notify` does, and turns each way it can fail into what to do.
//!
//! NODE is resolved as the openclaw CLI resolves it: an exact node id, else an exact IP,
//! else the display name compared loosely (case and punctuation ignored) or a node-id prefix
//! of six characters or more; among several matches the connected ones win, and when more
//! than one is left the error lists the candidates.
//!
//! The module splits into the node model and NODE resolution ([`model`]), the tables and
//! descriptions shown ([`render`]) and `notify` with its failures ([`notification`]).

mod model;
mod notification;
mod render;

use anyhow::Result;
use clawlink_core::gateway::{GatewayClient, GatewayError};
use clawlink_core::text::terminal_safe;
use clawlink_core::time::now_unix_millis;
use serde_json::{json, Value};

use crate::cli::GlobalArgs;
pub use crate::cli::{ListArgs, NodesCommand, NotifyArgs};
use crate::connect;
use crate::failure::Failure;
use crate::human::age;
use crate::settings::Settings;

pub use model::*;
pub use notification::*;
pub use render::*;

/// `clawlink nodes …`.
pub async fn nodes(global: &GlobalArgs, settings: &Settings, command: &NodesCommand) -> Result<()> {
    let client = connect::connect(settings).await?;
    let result = match command {
        NodesCommand::List(args) => list(global, &client, args).await,
        NodesCommand::Describe { node } => describe(global, &client, node).await,
        NodesCommand::Pending => pending(global, &client).await,
        NodesCommand::Approve { request } => decide(global, &client, request, true).await,
        NodesCommand::Reject { request } => decide(global, &client, request, false).await,
    };
    connect::finish(&client).await;
    result.map_err(Into::into)
}

async fn call(client: &GatewayClient, method: &str, params: Value) -> Result<Value, Failure> {
    client.request(method, params).await.map_err(Failure::from)
}

async fn node_list(client: &GatewayClient) -> Result<(Value, Vec<NodeRow>), Failure> {
    let result = call(client, "node.list", json!({})).await?;
    let rows = result
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(NodeRow::from_json)
        .collect();
    Ok((result, rows))
}

async fn list(global: &GlobalArgs, client: &GatewayClient, args: &ListArgs) -> Result<(), Failure> {
    let (mut raw, rows) = node_list(client).await?;
    let rows: Vec<NodeRow> = rows
        .into_iter()
        .filter(|n| n.connected || !args.connected)
        .collect();
    if global.json {
        if args.connected {
            if let Some(nodes) = raw.get_mut("nodes").and_then(Value::as_array_mut) {
                nodes.retain(|n| n.get("connected").and_then(Value::as_bool) == Some(true));
            }
        }
        println!("{raw}");
        return Ok(());
    }
    print!("{}", render_list(&rows));
    Ok(())
}

async fn describe(global: &GlobalArgs, client: &GatewayClient, query: &str) -> Result<(), Failure> {
    let (_, rows) = node_list(client).await?;
    let node_id = resolve_node(&rows, query)
        .map_err(ResolveError::into_failure)?
        .node_id
        .clone();
    let raw = call(client, "node.describe", json!({"nodeId": node_id})).await?;
    if global.json {
        println!("{raw}");
        return Ok(());
    }
    let node = NodeRow::from_json(&raw).unwrap_or(NodeRow {
        node_id,
        ..NodeRow::default()
    });
    print!("{}", render_describe(&node));
    Ok(())
}

async fn pending(global: &GlobalArgs, client: &GatewayClient) -> Result<(), Failure> {
    let result = call(client, "node.pair.list", json!({})).await?;
    let pending: Vec<Value> = result
        .get("pending")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if global.json {
        println!("{}", Value::Array(pending));
        return Ok(());
    }
    if pending.is_empty() {
        println!("No pending node pairing requests.");
        return Ok(());
    }
    let now = now_unix_millis();
    let table: Vec<Vec<String>> = pending
        .iter()
        .map(|p| {
            let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let node = Some(text("displayName"))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| text("nodeId"));
            let commands: Vec<&str> = p
                .get("commands")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let requested = p
                .get("ts")
                .and_then(Value::as_u64)
                .map(|ts| format!("{} ago", age(now.saturating_sub(ts))))
                .unwrap_or_else(|| "?".into());
            vec![
                text("requestId"),
                node,
                short_id(&text("nodeId")),
                if commands.is_empty() {
                    "-".into()
                } else {
                    commands.join(", ")
                },
                requested,
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(&["REQUEST", "NODE", "ID", "COMMANDS", "REQUESTED"], &table)
    );
    println!("Approve one with `clawlink nodes approve REQUEST` (or reject it with `clawlink nodes reject REQUEST`).");
    Ok(())
}

/// `approve` / `reject`: checks the request exists first, so a typo lists the real ones.
async fn decide(
    global: &GlobalArgs,
    client: &GatewayClient,
    request: &str,
    approve: bool,
) -> Result<(), Failure> {
    let request = request.trim();
    let listed = call(client, "node.pair.list", json!({})).await?;
    let pending: Vec<&Value> = listed
        .get("pending")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let found = pending
        .iter()
        .find(|p| p.get("requestId").and_then(Value::as_str) == Some(request));
    let Some(found) = found else {
        let ids: Vec<&str> = pending
            .iter()
            .filter_map(|p| p.get("requestId").and_then(Value::as_str))
            .collect();
        let message = if ids.is_empty() {
            format!("unknown node pairing request {request:?}: no request is pending")
        } else {
            format!(
                "unknown node pairing request {request:?} (pending: {})",
                ids.join(", ")
            )
        };
        return Err(usage(
            message,
            Some("run `clawlink nodes pending` to see the current requests".into()),
        ));
    };
    let label = found
        .get("displayName")
        .and_then(Value::as_str)
        .or_else(|| found.get("nodeId").and_then(Value::as_str))
        .unwrap_or("?")
        .to_owned();
    let method = if approve {
        "node.pair.approve"
    } else {
        "node.pair.reject"
    };
    let result = client
        .request(method, json!({"requestId": request}))
        .await
        .map_err(|error| match &error {
            GatewayError::Rpc { error: shape, .. } if shape.message == "unknown requestId" => usage(
                format!("node pairing request {request} is no longer pending (resolved or expired meanwhile)"),
                Some("run `clawlink nodes pending` to see the current requests".into()),
            ),
            _ => Failure::from(error),
        })?;
    if global.json {
        println!("{result}");
        return Ok(());
    }
    if approve {
        let commands: Vec<&str> = result
            .pointer("/node/commands")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "approved {request} for {}: {}; the node uses them once it reconnects",
            terminal_safe(&label),
            if commands.is_empty() {
                "no commands".into()
            } else {
                terminal_safe(&commands.join(", ")).into_owned()
            }
        );
    } else {
        println!("rejected {request} for {}", terminal_safe(&label));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawlink_core::gateway::protocol::ErrorShape;

    fn node(
        id: &str,
        name: Option<&str>,
        ip: Option<&str>,
        connected: bool,
        client: Option<&str>,
    ) -> NodeRow {
        NodeRow {
            node_id: id.into(),
            display_name: name.map(str::to_owned),
            remote_ip: ip.map(str::to_owned),
            connected,
            client_id: client.map(str::to_owned),
            ..NodeRow::default()
        }
    }

    #[test]
    fn names_are_compared_loosely() {
        assert_eq!(normalize_node_key("  Fake Mac!! "), "fake-mac");
        assert_eq!(
            normalize_node_key("clawlink on Host_1"),
            "clawlink-on-host-1"
        );
        assert_eq!(normalize_node_key("Ünïcode Box"), "ünïcode-box");
        assert_eq!(normalize_node_key("---"), "");
    }

    #[test]
    fn resolution_follows_the_openclaw_cli() {
        let nodes = vec![
            node(
                "aaaaaa111111",
                Some("Fake Mac"),
                Some("10.0.0.5"),
                true,
                Some("openclaw-macos"),
            ),
            node("bbbbbb222222", Some("desk"), None, false, None),
            node("cccccc333333", Some("desk"), None, true, None),
            node("dddddd444444", Some("twin"), None, true, None),
            node(
                "eeeeee555555",
                Some("twin"),
                None,
                true,
                Some("openclaw-linux"),
            ),
        ];
        assert_eq!(
            resolve_node(&nodes, "aaaaaa111111").unwrap().node_id,
            "aaaaaa111111"
        );
        assert_eq!(
            resolve_node(&nodes, "10.0.0.5").unwrap().node_id,
            "aaaaaa111111"
        );
        assert_eq!(
            resolve_node(&nodes, "fake-mac").unwrap().node_id,
            "aaaaaa111111"
        );
        assert_eq!(
            resolve_node(&nodes, "FAKE MAC").unwrap().node_id,
            "aaaaaa111111"
        );
        assert_eq!(
            resolve_node(&nodes, "bbbbbb").unwrap().node_id,
            "bbbbbb222222"
        );
        // A prefix shorter than 6 characters is not an id.
        assert!(matches!(
            resolve_node(&nodes, "bbbbb"),
            Err(ResolveError::Unknown { .. })
        ));
        // Connected matches win over disconnected ones.
        assert_eq!(
            resolve_node(&nodes, "desk").unwrap().node_id,
            "cccccc333333"
        );
        match resolve_node(&nodes, "twin") {
            Err(ResolveError::Ambiguous { candidates, .. }) => {
                assert_eq!(
                    candidates,
                    vec![
                        "twin [node=dddddd444444]".to_string(),
                        "twin [node=eeeeee555555, client=openclaw-linux]".to_string(),
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        match resolve_node(&nodes, "nope") {
            Err(ResolveError::Unknown { known, .. }) => {
                assert!(known.contains(&"Fake Mac".to_string()))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(resolve_node(&nodes, "  "), Err(ResolveError::Empty));
        let failure = resolve_node(&nodes, "twin").unwrap_err().into_failure();
        assert_eq!(failure.exit_code, 2);
        assert!(
            failure
                .message
                .starts_with("ambiguous node: twin (matches: "),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_migrated_machine_prefers_its_current_client() {
        let nodes = vec![
            node(
                "aaaaaa111111",
                Some("mac"),
                None,
                true,
                Some("clawdbot-macos"),
            ),
            node(
                "bbbbbb222222",
                Some("mac"),
                None,
                true,
                Some("openclaw-macos"),
            ),
        ];
        assert_eq!(resolve_node(&nodes, "mac").unwrap().node_id, "bbbbbb222222");
    }

    #[test]
    fn rows_read_leniently_and_render_permissions() {
        let row = NodeRow::from_json(&json!({
            "nodeId": "9e081dac2df0fd98", "displayName": "fake-mac", "platform": "macos",
            "commands": ["system.notify", "device.info"], "connected": true, "paired": true,
            "approvalState": "approved", "permissions": {"screenRecording": false, "notifications": true},
            "futureField": {"x": 1}
        }))
        .unwrap();
        assert_eq!(row.commands, vec!["device.info", "system.notify"]);
        assert_eq!(
            row.permissions_summary(),
            "notifications granted, screenRecording denied"
        );
        let text = render_list(std::slice::from_ref(&row));
        assert!(
            text.starts_with("Nodes: 1 · connected: 1 · paired: 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fake-mac  9e081dac2df0  macos     connected · paired · approved"),
            "{text}"
        );
        let described = render_describe(&row);
        assert!(
            described.contains("  notifications      granted\n"),
            "{described}"
        );
        assert!(
            described.contains("  screenRecording    denied\n"),
            "{described}"
        );
        assert!(
            described.contains("  camera             unknown\n"),
            "{described}"
        );
        assert!(NodeRow::from_json(&json!({"displayName": "no id"})).is_none());
        let bare = NodeRow::from_json(&json!({"nodeId": "x", "permissions": {}})).unwrap();
        assert_eq!(bare.permissions_summary(), "unknown (not reported)");
    }

    #[test]
    fn pending_nodes_say_how_to_approve_them() {
        let row = NodeRow::from_json(&json!({
            "nodeId": "abc", "displayName": "laptop", "approvalState": "pending-approval",
            "pendingRequestId": "req-1", "pendingDeclaredCommands": ["system.notify"], "connected": true
        }))
        .unwrap();
        let text = render_list(std::slice::from_ref(&row));
        assert!(text.contains("approval pending"), "{text}");
        assert!(text.contains("Approval pending for laptop: run `clawlink nodes approve req-1` (commands: system.notify)"), "{text}");
        assert!(render_describe(&row).contains("Approve   clawlink nodes approve req-1"));
    }

    fn rpc(code: &str, message: &str, details: Value) -> GatewayError {
        GatewayError::Rpc {
            method: "node.invoke".into(),
            error: ErrorShape {
                code: code.into(),
                message: message.into(),
                details,
                retryable: false,
                retry_after_ms: None,
            },
        }
    }

    #[test]
    fn invoke_errors_say_what_to_do() {
        let target = node("aaaaaa111111bbbb", Some("fake-mac"), None, false, None);
        let f = invoke_failure(
            rpc(
                "UNAVAILABLE",
                "node not connected",
                json!({"code": "NOT_CONNECTED"}),
            ),
            &target,
        );
        assert_eq!((f.layer.as_str(), f.exit_code), ("node", 1));
        assert_eq!(f.message, "node fake-mac (aaaaaa111111) is not connected");
        assert!(f.fix.unwrap().contains("clawlink nodes list"));

        let f = invoke_failure(
            rpc(
                "UNAVAILABLE",
                "NOTIFICATIONS_UNAVAILABLE: no notification server",
                json!({"nodeError": {"code": "NOTIFICATIONS_UNAVAILABLE", "message": "no notification server"}}),
            ),
            &target,
        );
        assert_eq!(f.message, "node fake-mac (aaaaaa111111) answered NOTIFICATIONS_UNAVAILABLE: no notification server");
        assert!(f.fix.unwrap().contains("--delivery auto"));
        assert_eq!(f.json["code"], "NOTIFICATIONS_UNAVAILABLE");

        let mut pending = target.clone();
        pending.approval = Some("pending-approval".into());
        pending.pending_request = Some("req-9".into());
        let f = invoke_failure(
            rpc(
                "INVALID_REQUEST",
                "node command not allowed: …pending approval…",
                json!({"reason": "node did not declare commands"}),
            ),
            &pending,
        );
        assert!(f.message.contains("awaits approval"), "{}", f.message);
        assert!(f.fix.unwrap().contains("clawlink nodes approve req-9"));

        let f = invoke_failure(
            rpc(
                "INVALID_REQUEST",
                "node command not allowed",
                json!({"reason": "command not declared by node"}),
            ),
            &target,
        );
        assert!(
            f.message.contains("does not support system.notify"),
            "{}",
            f.message
        );

        let f = invoke_failure(
            rpc(
                "UNAVAILABLE",
                "node pairing changed while invocation was active",
                json!({"code": "PAIRING_CHANGED"}),
            ),
            &target,
        );
        assert!(f.fix.unwrap().contains("clawlink nodes pending"));

        // Not handed to the node: retried; anything the node saw is not.
        let busy = rpc(
            "UNAVAILABLE",
            "UNAVAILABLE: node pairing state unavailable before dispatch",
            json!({"nodeError": {"code": "UNAVAILABLE"}, "nodeCommandDispatched": false}),
        );
        assert!(never_dispatched(&busy));
        assert!(invoke_failure(busy, &target).fix.unwrap().contains("retry"));
        assert!(!never_dispatched(&rpc(
            "UNAVAILABLE",
            "node not connected",
            json!({"code": "NOT_CONNECTED", "nodeError": {"code": "NOT_CONNECTED"}, "nodeCommandDispatched": false}),
        )));
        assert!(!never_dispatched(&rpc(
            "UNAVAILABLE",
            "UNKNOWN_SOUND: x",
            json!({"nodeError": {"code": "UNKNOWN_SOUND"}, "nodeCommandDispatched": true}),
        )));

        // Anything else keeps the generic rpc form.
        let f = invoke_failure(rpc("FORBIDDEN", "nope", Value::Null), &target);
        assert_eq!(f.layer, "rpc");
    }

    #[test]
    fn tables_align_and_strip_control_characters() {
        let text = render_table(
            &["A", "BB"],
            &[
                vec!["x\x1b".into(), "y".into()],
                vec!["long".into(), "z".into()],
            ],
        );
        assert_eq!(text, "A     BB\nx\u{fffd}    y\nlong  z\n");
        assert_eq!(age(61_000), "1m");
    }
}
