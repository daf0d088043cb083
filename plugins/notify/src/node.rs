//! The node connection: a second gateway socket with role `node` declaring `system.notify`, its command-surface approval (self-approved when allowed), and the answers to `node.invoke.request`.
//!
//! Pairing a node takes two approvals (`gateway-protocol.md` §2.6): the device (silent on
//! loopback, which an SSH tunnel is) and the node's command surface, which stays pending
//! until an operator calls `node.pair.approve`; the node must then reconnect for the
//! surface to take effect. When allowed, the agent approves its own surface through its
//! operator connection — only a pending request whose node id is this node's device id —
//! and reconnects the node; otherwise it says which command approves it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use clawlink_core::feature::FeatureContext;
use clawlink_core::gateway::{
    native_platform, ClientOptions, GatewayClient, GatewayError, GatewayEvent, Phase,
    RequestOptions,
};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use crate::deliver::Deliverer;
use crate::request::{codes, InvokeError, NotifyRequest};
use crate::Shared;

/// The device-key name of the node connection (its own identity, apart from the operator's).
pub const NODE_DEVICE: &str = "node";
/// The one command this node serves.
pub use clawlink_core::notify::COMMAND;
/// What the node declares as capability category.
const CAPS: [&str; 1] = ["system"];
/// Timeout of the pairing calls made on the operator connection.
const PAIRING_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Self-approvals in a row that did not leave the node approved before we stop trying
/// (a gateway that keeps asking would otherwise loop).
const MAX_SELF_APPROVALS: usize = 5;
/// How long stopping may wait for the node socket to close.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(600);

/// The node connection's options, derived from the host's for device `node`: role node,
/// this OS's native client id with mode `node`, no scopes, `system.notify`, and only the
/// permissions that could be determined.
pub fn node_options(
    mut options: ClientOptions,
    display_name: Option<&str>,
    notifications: Option<bool>,
) -> ClientOptions {
    let (client_id, platform, device_family) = native_platform();
    options.client_id = client_id.into();
    options.client_mode = "node".into();
    options.platform = platform.into();
    options.device_family = device_family.into();
    options.role = "node".into();
    options.scopes = Vec::new();
    options.caps = CAPS.iter().map(|c| c.to_string()).collect();
    options.commands = vec![COMMAND.into()];
    options.permissions =
        notifications.map(|granted| BTreeMap::from([("notifications".to_owned(), granted)]));
    if let Some(name) = display_name {
        options.display_name = Some(name.to_owned());
    }
    if options.display_name.is_none() {
        options.display_name = Some("clawlink".into());
    }
    options
}

/// Whether the operator's granted scopes allow approving a `system.notify` surface
/// (`operator.pairing` + `operator.write`; `operator.admin` covers both).
pub fn can_approve(scopes: &[String]) -> bool {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    has("operator.admin") || (has("operator.pairing") && has("operator.write"))
}

/// The node's side of the feature while `run` runs.
pub struct NodeSession<'a> {
    pub ctx: &'a FeatureContext,
    pub shared: &'a Arc<Shared>,
    pub deliverer: Arc<Deliverer>,
    /// The setting (`None`: decide from the operator's scopes).
    pub auto_approve: Option<bool>,
    pub node: GatewayClient,
    pub node_id: String,
}

impl NodeSession<'_> {
    /// Serves until shutdown, then closes the node socket.
    pub async fn run(self) {
        let ctx = self.ctx;
        let mut node_states = self.node.state();
        let mut node_events = self.node.subscribe();
        let mut operator_states = ctx.gateway.state();
        let mut operator_events = ctx.gateway.subscribe();
        let mut invokes = JoinSet::new();
        let mut approved_here: BTreeSet<String> = BTreeSet::new();
        let mut self_approvals = 0usize;
        let mut node_generation = 0;
        let mut operator_generation = 0;
        let mut check_pairing = false;
        let mut node_events_open = true;
        let mut operator_events_open = true;
        loop {
            {
                let state = node_states.borrow_and_update().clone();
                self.shared.observe_node(&state);
                if state.is_connected() && state.generation != node_generation {
                    node_generation = state.generation;
                    check_pairing = true;
                }
                if let (Phase::Failed, Some(GatewayError::Pairing { request_id, .. })) =
                    (&state.phase, &state.last_error)
                {
                    self.shared.device_pairing_pending(request_id.as_deref());
                }
            }
            {
                let state = operator_states.borrow_and_update();
                if state.is_connected() && state.generation != operator_generation {
                    operator_generation = state.generation;
                    check_pairing = true;
                }
            }
            if check_pairing
                && self.node.state().borrow().is_connected()
                && ctx.gateway.state().borrow().is_connected()
            {
                check_pairing = false;
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    () = self.reconcile_pairing(&mut approved_here, &mut self_approvals) => {}
                }
            }
            self.shared.publish();
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                changed = node_states.changed() => {
                    if changed.is_err() {
                        ctx.shutdown.cancelled().await;
                        break;
                    }
                }
                changed = operator_states.changed() => {
                    if changed.is_err() {
                        ctx.shutdown.cancelled().await;
                        break;
                    }
                }
                event = node_events.recv(), if node_events_open => match event {
                    Ok(event) if event.event == "node.invoke.request" => {
                        invokes.spawn(answer_invoke(
                            self.node.clone(),
                            self.node_id.clone(),
                            self.deliverer.clone(),
                            self.shared.clone(),
                            event.payload.clone(),
                        ));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the notify node fell behind its events; some invokes were missed");
                    }
                    Err(RecvError::Closed) => node_events_open = false,
                },
                event = operator_events.recv(), if operator_events_open => match event {
                    Ok(event) => {
                        if self.on_operator_event(&event, &approved_here) {
                            check_pairing = true;
                        }
                    }
                    Err(RecvError::Lagged(_)) => check_pairing = true,
                    Err(RecvError::Closed) => operator_events_open = false,
                },
                Some(_) = invokes.join_next(), if !invokes.is_empty() => {}
            }
        }
        invokes.abort_all();
        if tokio::time::timeout(CLOSE_TIMEOUT, self.node.shutdown())
            .await
            .is_err()
        {
            tracing::debug!("the notify node socket did not close in time");
        }
    }

    /// Pairing news about this node on the operator connection; answers whether the
    /// pairing state should be read again.
    fn on_operator_event(&self, event: &GatewayEvent, approved_here: &BTreeSet<String>) -> bool {
        let about_us =
            |key: &str| event.payload.get(key).and_then(Value::as_str) == Some(&self.node_id);
        match event.event.as_str() {
            "node.pair.requested" => about_us("nodeId"),
            "node.pair.resolved" if about_us("nodeId") => {
                let request = event
                    .payload
                    .get("requestId")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let approved =
                    event.payload.get("decision").and_then(Value::as_str) == Some("approved");
                // Approved elsewhere (another operator): the surface takes effect on reconnect.
                if approved && !approved_here.contains(request) {
                    tracing::info!(
                        request,
                        "this machine's node surface was approved; reconnecting the node"
                    );
                    self.node.reconnect();
                }
                true
            }
            "device.pair.resolved" if about_us("deviceId") => {
                tracing::info!(
                    "this machine's node device pairing was resolved; reconnecting the node"
                );
                self.node.reconnect();
                true
            }
            _ => false,
        }
    }

    /// Reads this node's approval state and approves its own pending surface when allowed.
    async fn reconcile_pairing(
        &self,
        approved_here: &mut BTreeSet<String>,
        self_approvals: &mut usize,
    ) {
        let operator = &self.ctx.gateway;
        let options = RequestOptions {
            timeout: Some(PAIRING_CALL_TIMEOUT),
            expect_final: false,
        };
        let described = match operator
            .request_with("node.describe", json!({"nodeId": self.node_id}), options)
            .await
        {
            Ok(described) => described,
            Err(error) => {
                self.shared.pairing_unknown(format!(
                    "cannot read this node's approval state through the operator connection: {error}"
                ));
                return;
            }
        };
        let approval = described
            .get("approvalState")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        self.shared.observe_describe(&described);
        if approval == "approved" {
            *self_approvals = 0;
            return;
        }
        if !approval.starts_with("pending") {
            return;
        }
        let request_id = match self.own_pending_request(&described).await {
            Ok(Some(id)) => id,
            Ok(None) => return,
            Err(error) => {
                self.shared.pairing_unknown(format!(
                    "cannot list pending node pairing requests: {error}"
                ));
                return;
            }
        };
        let scopes = operator
            .hello()
            .map(|h| h.auth.scopes.clone())
            .unwrap_or_default();
        let allowed = self.auto_approve.unwrap_or_else(|| can_approve(&scopes));
        if !allowed {
            let why = if self.auto_approve == Some(false) {
                "auto_approve_own_node = false"
            } else {
                "the agent's operator connection lacks operator.pairing + operator.write"
            };
            self.shared.awaiting_approval(&request_id, why);
            return;
        }
        if *self_approvals >= MAX_SELF_APPROVALS {
            self.shared.awaiting_approval(
                &request_id,
                "the gateway kept asking after several self-approvals",
            );
            return;
        }
        *self_approvals += 1;
        match operator
            .request_with(
                "node.pair.approve",
                json!({"requestId": request_id}),
                options,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(request = %request_id, node = %self.node_id, "approved this machine's own node surface (system.notify); reconnecting the node");
                approved_here.insert(request_id.clone());
                self.shared.self_approved(&request_id);
                self.node.reconnect();
            }
            Err(error) => {
                tracing::warn!(%error, request = %request_id, "could not approve this machine's node surface");
                self.shared
                    .awaiting_approval(&request_id, &format!("self-approval failed: {error}"));
            }
        }
    }

    /// This node's pending request id: from `node.pair.list`, only an entry whose node id
    /// is ours (never anyone else's), the newest when there are several.
    async fn own_pending_request(&self, described: &Value) -> Result<Option<String>, GatewayError> {
        let options = RequestOptions {
            timeout: Some(PAIRING_CALL_TIMEOUT),
            expect_final: false,
        };
        let list = self
            .ctx
            .gateway
            .request_with("node.pair.list", json!({}), options)
            .await?;
        let ours = list
            .get("pending")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("nodeId").and_then(Value::as_str) == Some(self.node_id.as_str()))
            .max_by_key(|p| p.get("ts").and_then(Value::as_u64).unwrap_or(0))
            .and_then(|p| p.get("requestId").and_then(Value::as_str))
            .map(str::to_owned);
        let described_id = described.get("pendingRequestId").and_then(Value::as_str);
        if ours.is_none() && described_id.is_some() {
            tracing::debug!(
                "node.describe names a pending request node.pair.list does not show as ours"
            );
        }
        Ok(ours)
    }
}

/// Answers one `node.invoke.request` with `node.invoke.result`.
async fn answer_invoke(
    node: GatewayClient,
    node_id: String,
    deliverer: Arc<Deliverer>,
    shared: Arc<Shared>,
    payload: Value,
) {
    let Some(invoke_id) = payload.get("id").and_then(Value::as_str).map(str::to_owned) else {
        tracing::debug!("node.invoke.request without an id");
        return;
    };
    let command = payload.get("command").and_then(Value::as_str).unwrap_or("");
    let outcome = if command == COMMAND {
        let request = match payload.get("paramsJSON") {
            Some(Value::String(text)) => NotifyRequest::from_params_json(Some(text)),
            // A gateway that forwards the object itself.
            _ => match payload.get("params") {
                Some(params) => NotifyRequest::from_params(params),
                None => NotifyRequest::from_params_json(None),
            },
        };
        match request {
            Ok(request) => deliverer.notify(&request).await,
            Err(error) => Err(error),
        }
    } else {
        Err(InvokeError::new(
            codes::INVALID_REQUEST,
            format!("this node handles only {COMMAND}, not {command:?}"),
        ))
    };
    let result = match &outcome {
        Ok(result) => json!({"id": invoke_id, "nodeId": node_id, "ok": true, "payload": result}),
        Err(error) => {
            tracing::info!(%error, command, "system.notify refused");
            json!({"id": invoke_id, "nodeId": node_id, "ok": false,
                   "error": {"code": error.code, "message": error.message}})
        }
    };
    shared.record_invoke(command, &outcome);
    if let Err(error) = node.request("node.invoke.result", result).await {
        tracing::warn!(%error, "could not answer the gateway's node.invoke.request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_options_declare_the_node_surface() {
        use clawlink_core::gateway::{Credentials, DeviceIdentity, MemoryTokenStore};
        let operator = ClientOptions::operator(
            Arc::new(DeviceIdentity::generate().unwrap()),
            Credentials::default(),
            Arc::new(MemoryTokenStore::default()),
        );
        let options = node_options(operator.clone(), Some("desk"), Some(false));
        assert_eq!(
            (options.role.as_str(), options.client_mode.as_str()),
            ("node", "node")
        );
        assert_eq!(options.client_id, native_platform().0);
        assert!(options.scopes.is_empty());
        assert_eq!(options.commands, vec![COMMAND.to_string()]);
        assert_eq!(options.display_name.as_deref(), Some("desk"));
        assert_eq!(
            options.permissions,
            Some(BTreeMap::from([("notifications".to_string(), false)]))
        );
        // What cannot be known is left out.
        let unknown = node_options(operator, None, None);
        assert_eq!(unknown.permissions, None);
        assert_eq!(unknown.display_name.as_deref(), Some("clawlink"));
    }

    #[test]
    fn only_pairing_plus_write_or_admin_may_approve() {
        let scopes = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(can_approve(&scopes(&["operator.admin"])));
        assert!(can_approve(&scopes(&[
            "operator.pairing",
            "operator.write"
        ])));
        assert!(!can_approve(&scopes(&["operator.pairing"])));
        assert!(!can_approve(&scopes(&["operator.read", "operator.write"])));
        assert!(!can_approve(&[]));
    }
}
