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

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use clawlink_core::gateway::{GatewayClient, GatewayError, RequestOptions};
use clawlink_core::notify::{codes, Priority};
use clawlink_core::text::terminal_safe;
use clawlink_core::time::now_unix_millis;
use serde_json::{json, Map, Value};

use crate::cli::GlobalArgs;
use crate::connect;
use crate::failure::Failure;
use crate::human::age;
use crate::settings::Settings;

/// The command `notify` invokes.
const NOTIFY_COMMAND: &str = clawlink_core::notify::COMMAND;

/// The permission keys of the app's node (its Capability enum), shown by `describe` as
/// granted, denied or unknown even when the node does not report them.
const KNOWN_PERMISSIONS: [&str; 8] = [
    "notifications",
    "appleScript",
    "accessibility",
    "screenRecording",
    "microphone",
    "speechRecognition",
    "camera",
    "location",
];

/// `clawlink nodes …`.
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the gateway's nodes: connection, pairing, commands and permissions
    List(ListArgs),
    /// Show one node (id, display name or IP): commands, permissions, pairing
    Describe {
        /// Node id (or a prefix of 6+ characters), display name or IP
        node: String,
    },
    /// List node pairing requests waiting for an operator
    Pending,
    /// Approve a pending node pairing request (its command surface)
    Approve {
        /// The request id (`clawlink nodes pending` lists them)
        request: String,
    },
    /// Reject a pending node pairing request
    Reject {
        /// The request id (`clawlink nodes pending` lists them)
        request: String,
    },
}

/// Options of `clawlink nodes list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only show connected nodes
    #[arg(long)]
    pub connected: bool,
}

/// `--priority` of `clawlink notify`: the wire names, as clap's possible values.
fn priority_parser() -> impl clap::builder::TypedValueParser<Value = Priority> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Priority::NAMES)
        .map(|name| Priority::parse(&name).expect("clap admits only Priority::NAMES"))
}

/// `--delivery` of `clawlink notify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Delivery {
    /// The node's notification service
    System,
    /// The node's own overlay (in-app toast, console)
    Overlay,
    /// The notification service, else the overlay
    Auto,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Overlay => "overlay",
            Self::Auto => "auto",
        }
    }
}

/// Options of `clawlink notify`.
#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// The node: id (or a prefix of 6+ characters), display name or IP
    #[arg(long, value_name = "NODE")]
    pub node: String,
    /// Notification title
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// Notification body
    #[arg(long, value_name = "TEXT")]
    pub body: Option<String>,
    /// Sound: a macOS system sound name (Glass, Ping, Pop, …) or a freedesktop sound name
    #[arg(long, value_name = "NAME")]
    pub sound: Option<String>,
    /// How insistent the notification is
    #[arg(long, value_parser = priority_parser())]
    pub priority: Option<Priority>,
    /// Where the node shows it
    #[arg(long, value_enum, default_value_t = Delivery::System)]
    pub delivery: Delivery,
    /// How long the node may take, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub invoke_timeout: u64,
}

/// One node of `node.list` / `node.describe`, read leniently (the results grow).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeRow {
    pub node_id: String,
    pub display_name: Option<String>,
    pub remote_ip: Option<String>,
    pub platform: Option<String>,
    pub device_family: Option<String>,
    pub client_id: Option<String>,
    pub client_mode: Option<String>,
    pub version: Option<String>,
    pub connected: bool,
    pub paired: bool,
    pub approval: Option<String>,
    pub pending_request: Option<String>,
    pub pending_commands: Vec<String>,
    pub commands: Vec<String>,
    pub caps: Vec<String>,
    /// `None`: the node reported no permission map.
    pub permissions: Option<BTreeMap<String, bool>>,
}

impl NodeRow {
    pub fn from_json(value: &Value) -> Option<Self> {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let list = |key: &str| -> Vec<String> {
            let mut items: Vec<String> = value
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            items.sort();
            items.dedup();
            items
        };
        let permissions = value
            .get("permissions")
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .map(|(k, v)| (k.clone(), v.as_bool() == Some(true)))
                    .collect::<BTreeMap<_, _>>()
            });
        Some(Self {
            node_id: text("nodeId")?,
            display_name: text("displayName"),
            remote_ip: text("remoteIp"),
            platform: text("platform"),
            device_family: text("deviceFamily"),
            client_id: text("clientId"),
            client_mode: text("clientMode"),
            version: text("version").or_else(|| text("coreVersion")),
            connected: value.get("connected").and_then(Value::as_bool) == Some(true),
            paired: value.get("paired").and_then(Value::as_bool) == Some(true),
            approval: text("approvalState"),
            pending_request: text("pendingRequestId"),
            pending_commands: list("pendingDeclaredCommands"),
            commands: list("commands"),
            caps: list("caps"),
            permissions: permissions.filter(|p| !p.is_empty()),
        })
    }

    /// The name people see: the display name, else the IP, else the id.
    pub fn label(&self) -> &str {
        self.display_name
            .as_deref()
            .or(self.remote_ip.as_deref())
            .unwrap_or(&self.node_id)
    }

    fn is_pending(&self) -> bool {
        self.approval
            .as_deref()
            .is_some_and(|a| a.starts_with("pending"))
    }

    /// `connected · paired · approved`.
    fn status(&self) -> String {
        let mut parts = vec![
            if self.connected {
                "connected"
            } else {
                "disconnected"
            },
            if self.paired { "paired" } else { "unpaired" },
        ];
        match self.approval.as_deref() {
            Some("pending-approval") => parts.push("approval pending"),
            Some("pending-reapproval") => parts.push("reapproval pending"),
            Some("approved") => parts.push("approved"),
            Some("unapproved") => parts.push("unapproved"),
            _ => {}
        }
        parts.join(" · ")
    }

    /// The reported permissions as `key granted|denied`, or `unknown` without a map.
    fn permissions_summary(&self) -> String {
        match &self.permissions {
            None => "unknown (not reported)".into(),
            Some(map) => map
                .iter()
                .map(|(k, v)| format!("{k} {}", if *v { "granted" } else { "denied" }))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Every permission `describe` shows: the app's keys, then any others the node reported.
    fn permission_states(&self) -> Vec<(String, &'static str)> {
        let state = |key: &str| match self.permissions.as_ref().and_then(|p| p.get(key)) {
            Some(true) => "granted",
            Some(false) => "denied",
            None => "unknown",
        };
        let mut rows: Vec<(String, &'static str)> = KNOWN_PERMISSIONS
            .iter()
            .map(|k| (k.to_string(), state(k)))
            .collect();
        for key in self.permissions.iter().flat_map(|p| p.keys()) {
            if !KNOWN_PERMISSIONS.contains(&key.as_str()) {
                rows.push((key.clone(), state(key)));
            }
        }
        rows
    }
}

/// Why NODE did not name exactly one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    Empty,
    Unknown {
        query: String,
        known: Vec<String>,
    },
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
}

impl ResolveError {
    fn into_failure(self) -> Failure {
        let fix = Some(
            "use a node id (or a prefix of 6+ characters), display name or IP from `clawlink nodes list`"
                .to_owned(),
        );
        let message = match self {
            Self::Empty => "no node given".to_owned(),
            Self::Unknown { query, known } if known.is_empty() => {
                format!("unknown node: {query} (the gateway has no nodes)")
            }
            Self::Unknown { query, known } => {
                format!("unknown node: {query} (known: {})", known.join(", "))
            }
            Self::Ambiguous { query, candidates } => {
                format!(
                    "ambiguous node: {query} (matches: {})",
                    candidates.join(", ")
                )
            }
        };
        usage(message, fix)
    }
}

/// A NODE or REQUEST the gateway does not know: the user's input to fix (exit 2).
fn usage(message: String, fix: Option<String>) -> Failure {
    Failure {
        json: json!({"layer": "node", "message": message, "fix": fix}),
        layer: "node".into(),
        message,
        fix,
        exit_code: 2,
    }
}

/// The openclaw CLI's loose name key: lower case, every run of other characters than
/// letters and digits becomes one `-`, none at the ends.
pub fn normalize_node_key(value: &str) -> String {
    let mut key = String::new();
    let mut gap = false;
    for c in value.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if gap && !key.is_empty() {
                key.push('-');
            }
            gap = false;
            key.push(c);
        } else {
            gap = true;
        }
    }
    key
}

/// Resolves NODE among `nodes` as the openclaw CLI does.
pub fn resolve_node<'a>(nodes: &'a [NodeRow], query: &str) -> Result<&'a NodeRow, ResolveError> {
    let q = query.trim();
    if q.is_empty() {
        return Err(ResolveError::Empty);
    }
    let mut strongest: Vec<&NodeRow> = nodes.iter().filter(|n| n.node_id == q).collect();
    if strongest.is_empty() {
        strongest = nodes
            .iter()
            .filter(|n| n.remote_ip.as_deref() == Some(q))
            .collect();
    }
    if strongest.is_empty() {
        let key = normalize_node_key(q);
        let score = |n: &NodeRow| {
            let name = n.display_name.as_deref().map(normalize_node_key);
            if name
                .as_deref()
                .is_some_and(|name| !name.is_empty() && name == key)
            {
                2000
            } else if q.chars().count() >= 6 && n.node_id.starts_with(q) {
                1000
            } else {
                0
            }
        };
        let top = nodes.iter().map(score).max().unwrap_or(0);
        if top > 0 {
            strongest = nodes.iter().filter(|n| score(n) == top).collect();
        }
    }
    if strongest.is_empty() {
        return Err(ResolveError::Unknown {
            query: q.to_owned(),
            known: nodes.iter().map(|n| n.label().to_owned()).collect(),
        });
    }
    let connected: Vec<&NodeRow> = strongest.iter().copied().filter(|n| n.connected).collect();
    let matches = if connected.is_empty() {
        strongest
    } else {
        connected
    };
    if let [only] = matches.as_slice() {
        return Ok(only);
    }
    // A current openclaw-* client beside only legacy clawdbot-/moldbot- ones of the same
    // name: the CLI picks the current one (a migrated machine).
    let current: Vec<&NodeRow> = matches
        .iter()
        .copied()
        .filter(|n| client_starts_with(n, &["openclaw-"]))
        .collect();
    let legacy = matches
        .iter()
        .filter(|n| client_starts_with(n, &["clawdbot-", "moldbot-"]))
        .count();
    if current.len() == 1 && legacy > 0 && current.len() + legacy == matches.len() {
        return Ok(current[0]);
    }
    Err(ResolveError::Ambiguous {
        query: q.to_owned(),
        candidates: matches
            .iter()
            .map(|n| {
                let mut details = format!("node={}", n.node_id);
                if let Some(client) = &n.client_id {
                    details.push_str(&format!(", client={client}"));
                }
                format!("{} [{details}]", n.label())
            })
            .collect(),
    })
}

fn client_starts_with(node: &NodeRow, prefixes: &[&str]) -> bool {
    let client = node.client_id.as_deref().unwrap_or("").to_ascii_lowercase();
    prefixes.iter().any(|p| client.starts_with(p))
}

/// `clawlink nodes …`.
pub async fn nodes(global: &GlobalArgs, settings: &Settings, command: &NodesCommand) -> Result<()> {
    let client = connect::connect(global, settings).await?;
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

/// The text of `nodes list`.
pub fn render_list(rows: &[NodeRow]) -> String {
    let connected = rows.iter().filter(|n| n.connected).count();
    let paired = rows.iter().filter(|n| n.paired).count();
    let mut out = format!(
        "Nodes: {} · connected: {connected} · paired: {paired}\n",
        rows.len()
    );
    if rows.is_empty() {
        return out;
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|n| {
            vec![
                n.label().to_owned(),
                short_id(&n.node_id),
                n.platform.clone().unwrap_or_else(|| "?".into()),
                n.status(),
                if n.commands.is_empty() {
                    "-".into()
                } else {
                    n.commands.join(", ")
                },
                n.permissions_summary(),
            ]
        })
        .collect();
    out.push_str(&render_table(
        &[
            "NODE",
            "ID",
            "PLATFORM",
            "STATUS",
            "COMMANDS",
            "PERMISSIONS",
        ],
        &table,
    ));
    for node in rows.iter().filter(|n| n.is_pending()) {
        if let Some(request) = &node.pending_request {
            out.push_str(&format!(
                "Approval pending for {}: run `clawlink nodes approve {}` (commands: {})\n",
                terminal_safe(node.label()),
                terminal_safe(request),
                if node.pending_commands.is_empty() {
                    "-".into()
                } else {
                    terminal_safe(&node.pending_commands.join(", ")).into_owned()
                }
            ));
        }
    }
    out
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

/// The text of `nodes describe`.
pub fn render_describe(node: &NodeRow) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Node", node.label().to_owned()),
        ("ID", node.node_id.clone()),
    ];
    if let Some(platform) = &node.platform {
        let family = node
            .device_family
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        rows.push(("Platform", format!("{platform}{family}")));
    }
    match (&node.client_id, &node.client_mode) {
        (Some(id), Some(mode)) => rows.push(("Client", format!("{id}/{mode}"))),
        (Some(id), None) => rows.push(("Client", id.clone())),
        _ => {}
    }
    if let Some(version) = &node.version {
        rows.push(("Version", version.clone()));
    }
    if let Some(ip) = &node.remote_ip {
        rows.push(("IP", ip.clone()));
    }
    rows.push(("Status", node.status()));
    rows.push((
        "Caps",
        if node.caps.is_empty() {
            "-".into()
        } else {
            node.caps.join(", ")
        },
    ));
    rows.push((
        "Commands",
        if node.commands.is_empty() {
            "- (none effective)".into()
        } else {
            node.commands.join(", ")
        },
    ));
    if let Some(request) = &node.pending_request {
        rows.push((
            "Pending",
            format!("request {request}: {}", node.pending_commands.join(", ")),
        ));
        rows.push(("Approve", format!("clawlink nodes approve {request}")));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        out.push_str(&format!("{key:<width$}  {}\n", terminal_safe(&value)));
    }
    out.push_str("\nPermissions\n");
    let states = node.permission_states();
    let width = states
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (key, state) in states {
        out.push_str(&format!("  {:<width$}  {state}\n", terminal_safe(&key)));
    }
    if node.permissions.is_none() {
        out.push_str("  (the node reports no permission map)\n");
    }
    out
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
    let client = connect::connect(global, settings).await?;
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

async fn send_notification(
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
const DISPATCH_ATTEMPTS: u32 = 3;

/// A transient gateway-side failure before the command reached the node (its pairing store
/// was busy, the node's route changed): safe to send again, with a fresh idempotency key
/// since the gateway remembers the failure under the old one.
fn never_dispatched(error: &GatewayError) -> bool {
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
fn node_error_fix(code: &str) -> &'static str {
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

/// The first 12 characters of a node id (enough for `resolve_node`'s prefix match).
fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Left-aligned columns, two spaces apart.
fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| terminal_safe(c).into_owned()).collect())
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
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
