//! The gateway's nodes as `node.list` / `node.describe` give them, and NODE resolved as the openclaw CLI resolves it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::failure::Failure;

/// The permission keys of the app's node (its Capability enum), shown by `describe` as
/// granted, denied or unknown even when the node does not report them.
pub(super) const KNOWN_PERMISSIONS: [&str; 8] = [
    "notifications",
    "appleScript",
    "accessibility",
    "screenRecording",
    "microphone",
    "speechRecognition",
    "camera",
    "location",
];

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

    pub(super) fn is_pending(&self) -> bool {
        self.approval
            .as_deref()
            .is_some_and(|a| a.starts_with("pending"))
    }

    /// `connected · paired · approved`.
    pub(super) fn status(&self) -> String {
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
    pub(super) fn permissions_summary(&self) -> String {
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
    pub(super) fn permission_states(&self) -> Vec<(String, &'static str)> {
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
    pub(super) fn into_failure(self) -> Failure {
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
pub(super) fn usage(message: String, fix: Option<String>) -> Failure {
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

pub(super) fn client_starts_with(node: &NodeRow, prefixes: &[&str]) -> bool {
    let client = node.client_id.as_deref().unwrap_or("").to_ascii_lowercase();
    prefixes.iter().any(|p| client.starts_with(p))
}
