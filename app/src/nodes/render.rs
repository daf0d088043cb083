//! What `nodes list`, `nodes describe` and `nodes pending` show: tables and descriptions, every field from the gateway made terminal-safe.

use clawlink_core::text::terminal_safe;

use super::NodeRow;

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

/// The first 12 characters of a node id (enough for `resolve_node`'s prefix match).
pub(super) fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Left-aligned columns, two spaces apart.
pub(super) fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
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
