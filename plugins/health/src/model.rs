//! The health model: a gateway `health` snapshot (or a failure) turned into the macOS app's states, colors and words.
//!
//! Pure functions, no I/O: `clawlink status`, `clawlink health`, `clawlink doctor` and the
//! running feature all describe health the same way. The selection logic and the strings
//! follow the app's health store (reference §3): the channel that decides the state is the
//! first one with `linked == true`, else the first one that reports `linked` at all; with no
//! link information anywhere the configured channels' probes decide. Two deliberate
//! differences: a missing probe HTTP status is not read as a timeout (the app's newer
//! behaviour), and a successful snapshot without any configured channel is "Gateway healthy"
//! (the app shows "pending", which would leave a channel-less gateway gray forever).

use clawlink_core::gateway::{GatewayError, HelloOk};
use serde::Serialize;
use serde_json::Value;

/// What the user runs to link a channel that needs it.
pub const LINK_COMMAND: &str = "openclaw channels login";

/// The four health states of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// No snapshot yet (gray).
    Unknown,
    /// Healthy (green).
    Ok,
    /// A channel needs linking and no other configured channel is healthy (red).
    LinkingNeeded,
    /// A request error, a failed probe, or "Not linked" while another channel works (orange).
    Degraded,
}

impl HealthState {
    /// The status dot's color, as the app paints it.
    pub fn color(self) -> &'static str {
        match self {
            Self::Unknown => "gray",
            Self::Ok => "green",
            Self::LinkingNeeded => "red",
            Self::Degraded => "orange",
        }
    }

    /// A short human word for the state.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Ok => "ok",
            Self::LinkingNeeded => "linking needed",
            Self::Degraded => "degraded",
        }
    }

    /// The machine name, as serialized (`linking-needed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Ok => "ok",
            Self::LinkingNeeded => "linking-needed",
            Self::Degraded => "degraded",
        }
    }
}

/// How one channel looks on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelState {
    Ok,
    Degraded,
    NotLinked,
    NotConfigured,
    Unknown,
}

/// One channel of the snapshot, flattened for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRow {
    pub id: String,
    /// `channelLabels[id]`, else the id capitalized.
    pub label: String,
    pub state: ChannelState,
    /// Configured, and its probe (if any) succeeded: what makes it a fallback.
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configured: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_age_ms: Option<u64>,
    /// `auth_age_ms` as the app shows it ("12m").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_elapsed_ms: Option<u64>,
    /// One line: "WhatsApp: linked · auth 12m".
    pub line: String,
}

/// The verdict on one snapshot (or failure).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    pub state: HealthState,
    /// The app's summary line ("linked · auth 12m").
    pub summary: String,
    /// Why, when something is wrong, in words a user can act on.
    pub detail: Option<String>,
    pub channels: Vec<ChannelRow>,
}

impl Assessment {
    /// Before the first snapshot or error.
    pub fn pending() -> Self {
        Self {
            state: HealthState::Unknown,
            summary: "Health check pending".into(),
            detail: None,
            channels: Vec::new(),
        }
    }

    /// A failed health check (or a lost connection): degraded, with the app's summary and
    /// `detail` (see [`error_detail`] and [`message_detail`]).
    pub fn failed(message: &str, detail: String) -> Self {
        Self {
            state: HealthState::Degraded,
            summary: format!("Health check failed: {message}"),
            detail: Some(detail),
            channels: Vec::new(),
        }
    }

    /// A failed `health` call against `endpoint`.
    pub fn from_error(err: &GatewayError, endpoint: &str) -> Self {
        Self::failed(&err.to_string(), error_detail(err, endpoint))
    }
}

/// Judges a `health` snapshot (the RPC result, the `health` event payload, or
/// `hello-ok.snapshot.health`).
pub fn assess(snapshot: &Value) -> Assessment {
    let channels = channel_entries(snapshot);
    let rows: Vec<ChannelRow> = channels
        .iter()
        .map(|(id, ch)| channel_row(snapshot, id, ch))
        .collect();
    let (state, summary, detail) = assess_channels(snapshot, &channels);
    let mut assessment = Assessment {
        state,
        summary,
        detail,
        channels: rows,
    };
    apply_gateway_issues(snapshot, &mut assessment);
    assessment
}

/// The channel verdict, before gateway-wide issues are considered.
fn assess_channels(
    snapshot: &Value,
    channels: &[(String, &Value)],
) -> (HealthState, String, Option<String>) {
    let Some(link_index) = link_channel(channels) else {
        // No channel has link information: the configured channels' probes decide.
        let failed = channels
            .iter()
            .filter(|(_, ch)| bool_at(ch, "configured") == Some(true))
            .find_map(|(_, ch)| {
                let probe = ch.get("probe")?;
                (bool_at(probe, "ok") == Some(false)).then_some(probe)
            });
        return match failed {
            Some(probe) => {
                let why = describe_probe_failure(probe);
                (
                    HealthState::Degraded,
                    format!("Gateway degraded: {why}"),
                    Some(why),
                )
            }
            None => (HealthState::Ok, "Gateway healthy".into(), None),
        };
    };
    let (link_id, link) = &channels[link_index];
    if bool_at(link, "linked") != Some(true) {
        let not_linked = format!("Not linked — run {LINK_COMMAND}");
        let fallback = channels
            .iter()
            .find(|(id, ch)| id != link_id && channel_healthy(ch));
        return match fallback {
            // Linking is optional while another channel works: orange, not red.
            Some((id, ch)) => {
                let fallback_state = if probe_ok(ch).unwrap_or(true) {
                    "ok"
                } else {
                    "degraded"
                };
                (
                    HealthState::Degraded,
                    format!(
                        "{} {fallback_state} · {not_linked}",
                        channel_label(snapshot, id)
                    ),
                    Some(format!(
                        "{} is not linked; {} still works",
                        channel_label(snapshot, link_id),
                        channel_label(snapshot, id)
                    )),
                )
            }
            None => (
                HealthState::LinkingNeeded,
                not_linked,
                Some(format!(
                    "{} is not linked and no other configured channel is healthy",
                    channel_label(snapshot, link_id)
                )),
            ),
        };
    }
    let auth = number_at(link, "authAgeMs")
        .map(format_age)
        .unwrap_or_else(|| "unknown".into());
    match link.get("probe") {
        Some(probe) if bool_at(probe, "ok") == Some(false) => {
            let suffix = match probe.get("status").and_then(Value::as_i64) {
                Some(status) => format!("probe degraded · status {status}"),
                None => "probe degraded".into(),
            };
            (
                HealthState::Degraded,
                format!("linked · auth {auth} · {suffix}"),
                Some(describe_probe_failure(probe)),
            )
        }
        _ => (HealthState::Ok, format!("linked · auth {auth}"), None),
    }
}

/// `ok: false` and a degraded event loop make any channel verdict at least degraded.
fn apply_gateway_issues(snapshot: &Value, assessment: &mut Assessment) {
    let mut issues = Vec::new();
    if bool_at(snapshot, "ok") == Some(false) {
        issues.push("the gateway reports ok: false".to_owned());
    }
    if let Some(event_loop) = snapshot.get("eventLoop") {
        if bool_at(event_loop, "degraded") == Some(true) {
            let reasons: Vec<&str> = event_loop
                .get("reasons")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            issues.push(if reasons.is_empty() {
                "event loop degraded".to_owned()
            } else {
                format!("event loop degraded ({})", reasons.join(", "))
            });
        }
    }
    if issues.is_empty() {
        return;
    }
    let issues = issues.join("; ");
    match assessment.state {
        HealthState::Ok => {
            assessment.state = HealthState::Degraded;
            assessment.summary = if assessment.summary == "Gateway healthy" {
                format!("Gateway degraded: {issues}")
            } else {
                format!("{} · {issues}", assessment.summary)
            };
            assessment.detail = Some(issues);
        }
        // Already orange or red: keep the channel's words, add the gateway's trouble.
        _ => {
            assessment.detail = Some(match assessment.detail.take() {
                Some(detail) => format!("{detail}; {issues}"),
                None => issues,
            });
        }
    }
}

/// The channels in the gateway's order (`channelOrder`, then any others by id).
fn channel_entries(snapshot: &Value) -> Vec<(String, &Value)> {
    let Some(channels) = snapshot.get("channels").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = snapshot
        .get("channelOrder")
        .and_then(Value::as_array)
        .map(|order| {
            order
                .iter()
                .filter_map(Value::as_str)
                .filter(|id| channels.contains_key(*id))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for id in channels.keys() {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| {
            let ch = channels.get(&id)?;
            ch.is_object().then_some((id, ch))
        })
        .collect()
}

/// The index of the channel whose link state decides: the first linked one, else the first
/// that says anything about linking.
fn link_channel(channels: &[(String, &Value)]) -> Option<usize> {
    channels
        .iter()
        .position(|(_, ch)| bool_at(ch, "linked") == Some(true))
        .or_else(|| {
            channels
                .iter()
                .position(|(_, ch)| ch.get("linked").is_some_and(Value::is_boolean))
        })
}

/// Configured, and not known to fail its probe (a missing probe is "unknown", not a failure).
fn channel_healthy(channel: &Value) -> bool {
    bool_at(channel, "configured") == Some(true) && probe_ok(channel).unwrap_or(true)
}

fn probe_ok(channel: &Value) -> Option<bool> {
    channel.get("probe").and_then(|p| bool_at(p, "ok"))
}

fn channel_label(snapshot: &Value, id: &str) -> String {
    snapshot
        .get("channelLabels")
        .and_then(|labels| labels.get(id))
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| capitalize(id))
}

fn capitalize(id: &str) -> String {
    let mut chars = id.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn channel_row(snapshot: &Value, id: &str, channel: &Value) -> ChannelRow {
    let configured = bool_at(channel, "configured");
    let linked = bool_at(channel, "linked");
    let auth_age_ms = number_at(channel, "authAgeMs");
    let probe = channel.get("probe").filter(|p| p.is_object());
    let probe_ok = probe.and_then(|p| bool_at(p, "ok"));
    let label = channel_label(snapshot, id);
    let auth = auth_age_ms.map(format_age);
    let (state, text) = if configured == Some(false) {
        (ChannelState::NotConfigured, "not configured".to_owned())
    } else if linked == Some(false) {
        (
            ChannelState::NotLinked,
            format!("not linked — run {LINK_COMMAND}"),
        )
    } else if let (Some(probe), Some(false)) = (probe, probe_ok) {
        (
            ChannelState::Degraded,
            format!("probe failed: {}", describe_probe_failure(probe)),
        )
    } else if linked == Some(true) {
        (
            ChannelState::Ok,
            format!("linked · auth {}", auth.as_deref().unwrap_or("unknown")),
        )
    } else if probe_ok == Some(true) {
        let elapsed = probe
            .and_then(|p| number_at(p, "elapsedMs"))
            .map(|ms| format!(" ({}ms)", ms.round() as u64))
            .unwrap_or_default();
        (ChannelState::Ok, format!("ok{elapsed}"))
    } else if configured == Some(true) {
        (ChannelState::Ok, "configured".to_owned())
    } else {
        (ChannelState::Unknown, "unknown".to_owned())
    };
    ChannelRow {
        id: id.to_owned(),
        line: format!("{label}: {text}"),
        label,
        state,
        healthy: channel_healthy(channel),
        configured,
        linked,
        auth_age_ms: auth_age_ms.map(|ms| ms.max(0.0).round() as u64),
        auth_age: auth,
        probe_ok,
        probe_status: probe.and_then(|p| p.get("status")).and_then(Value::as_i64),
        probe_error: probe
            .and_then(|p| p.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        probe_elapsed_ms: probe
            .and_then(|p| number_at(p, "elapsedMs"))
            .map(|ms| ms.max(0.0).round() as u64),
    }
}

/// A failed channel probe in words: "Health check timed out (5000ms)" when the error says it
/// timed out, else "<error> (status 401, 120ms)".
pub fn describe_probe_failure(probe: &Value) -> String {
    let elapsed = number_at(probe, "elapsedMs").map(|ms| format!("{}ms", ms as i64));
    let error = probe
        .get("error")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty());
    if error.is_some_and(mentions_timeout) {
        return match elapsed {
            Some(elapsed) => format!("Health check timed out ({elapsed})"),
            None => "Health check timed out".into(),
        };
    }
    let code = match probe.get("status").and_then(Value::as_i64) {
        Some(status) => format!("status {status}"),
        None => "status unknown".into(),
    };
    let reason = error.unwrap_or("health probe failed");
    match elapsed {
        Some(elapsed) => format!("{reason} ({code}, {elapsed})"),
        None => format!("{reason} ({code})"),
    }
}

/// An age in milliseconds as the app rounds it: "just now", "12m", "5h" (under 48 hours),
/// "3d".
pub fn format_age(ms: f64) -> String {
    let minutes = (ms / 60_000.0).round();
    if minutes < 1.0 {
        return "just now".into();
    }
    if minutes < 60.0 {
        return format!("{}m", minutes as i64);
    }
    let hours = (minutes / 60.0).round();
    if hours < 48.0 {
        return format!("{}h", hours as i64);
    }
    format!("{}d", (hours / 24.0).round() as i64)
}

/// The detail line for a failed health check or connection against `endpoint` (the
/// transport's description of where the gateway is).
pub fn error_detail(err: &GatewayError, endpoint: &str) -> String {
    if matches!(err, GatewayError::Timeout { .. }) {
        return TIMEOUT_DETAIL.into();
    }
    message_detail(&err.to_string(), err.fix().as_deref(), endpoint)
}

const TIMEOUT_DETAIL: &str =
    "Timed out waiting for the control server; the gateway may be crashed or still starting.";

/// Like [`error_detail`], for a failure known only by its text (a lost connection's reason).
pub fn message_detail(message: &str, fix: Option<&str>, endpoint: &str) -> String {
    let lower = message.to_lowercase();
    // "nothing listens there" is the SSH tunnel's words for a refused forward.
    if lower.contains("connection refused") || lower.contains("nothing listens there") {
        return format!(
            "The gateway control port ({endpoint}) isn't listening — restart OpenClaw on the gateway host"
        );
    }
    if mentions_timeout(&lower) || lower.contains("no answer within") {
        return TIMEOUT_DETAIL.into();
    }
    match fix {
        Some(fix) if !fix.is_empty() => format!("{message} — fix: {fix}"),
        _ => message.to_owned(),
    }
}

fn mentions_timeout(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("timeout") || lower.contains("timed out")
}

/// How this connection authenticated, in the app's words, from `hello-ok.auth.method` (the
/// gateway's own account of what it accepted, not what we offered).
pub fn auth_source_label(hello: &HelloOk) -> String {
    auth_method_label(hello.auth.method.as_deref())
}

/// [`auth_source_label`] for a bare `hello-ok.auth.method` value.
pub fn auth_method_label(method: Option<&str>) -> String {
    match method {
        Some("device-token") => "device token (paired device)".into(),
        Some("bootstrap-token") => "bootstrap token (setup code)".into(),
        Some("token") => "shared token".into(),
        Some("password") => "password".into(),
        Some("none") => "none".into(),
        Some("tailscale") => "tailscale identity".into(),
        Some("trusted-proxy") => "trusted proxy".into(),
        Some(other) => other.to_owned(),
        None => "unknown (the gateway did not say)".into(),
    }
}

fn bool_at(value: &Value, key: &str) -> Option<bool> {
    value.get(key).and_then(Value::as_bool)
}

fn number_at(value: &Value, key: &str) -> Option<f64> {
    value.get(key).and_then(Value::as_f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawlink_core::transport::{TransportError, TransportErrorKind};
    use serde_json::json;

    const MINUTE: u64 = 60_000;
    const HOUR: u64 = 60 * MINUTE;

    /// The gateway-wide part of a 2026.9.6 snapshot (§4.1), with `channels` added.
    fn snapshot(channels: Value, order: &[&str], labels: Value) -> Value {
        json!({
            "ok": true,
            "ts": 1_795_549_304_337u64,
            "durationMs": 10,
            "plugins": {"loaded": ["anthropic", "browser"], "errors": [], "unavailable": []},
            "channels": channels,
            "channelOrder": order,
            "channelLabels": labels,
            "heartbeatSeconds": 1800,
            "defaultAgentId": "main",
            "sessions": {"path": "/home/claw/.openclaw/agents/main/agent/openclaw-agent.sqlite", "count": 2,
                         "recent": [{"key": "agent:main:main", "updatedAt": 1_795_549_000_000u64, "age": 304_337}]},
            "eventLoop": {"degraded": false, "degradedSinceMs": null, "reasons": [], "delayP99Ms": 20.7},
            "configReload": {"hotReloadStatus": "active"},
            "modelRuntime": {"degraded": false, "pendingAgents": []}
        })
    }

    fn whatsapp_linked(auth_age_ms: u64) -> Value {
        json!({"configured": true, "linked": true, "authAgeMs": auth_age_ms, "lastProbeAt": 1_795_549_300_000u64})
    }

    fn telegram_ok() -> Value {
        json!({"configured": true, "probe": {"ok": true, "status": 200, "elapsedMs": 143.6,
               "bot": {"username": "claw_bot"}, "webhook": {"url": "https://example.invalid/hook"}},
               "lastProbeAt": 1_795_549_300_000u64})
    }

    #[test]
    fn states_have_the_apps_colors_and_kebab_names() {
        let all = [
            (HealthState::Unknown, "gray", "unknown"),
            (HealthState::Ok, "green", "ok"),
            (HealthState::LinkingNeeded, "red", "linking-needed"),
            (HealthState::Degraded, "orange", "degraded"),
        ];
        for (state, color, name) in all {
            assert_eq!(state.color(), color);
            assert_eq!(state.as_str(), name);
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert!(!state.label().is_empty());
        }
        assert_eq!(HealthState::LinkingNeeded.label(), "linking needed");
    }

    #[test]
    fn a_gateway_without_channels_is_healthy() {
        // What the stub gateway answers: no channels at all.
        let a = assess(&snapshot(json!({}), &[], json!({})));
        assert_eq!(a.state, HealthState::Ok);
        assert_eq!(a.summary, "Gateway healthy");
        assert_eq!(a.detail, None);
        assert!(a.channels.is_empty());
        // A bare `{}` (nothing known) is healthy too: the call itself succeeded.
        assert_eq!(assess(&json!({})).state, HealthState::Ok);
    }

    #[test]
    fn linked_channel_shows_its_auth_age() {
        let a = assess(&snapshot(
            json!({"whatsapp": whatsapp_linked(12 * MINUTE), "telegram": telegram_ok()}),
            &["whatsapp", "telegram"],
            json!({"whatsapp": "WhatsApp", "telegram": "Telegram"}),
        ));
        assert_eq!(a.state, HealthState::Ok);
        assert_eq!(a.summary, "linked · auth 12m");
        assert_eq!(a.channels.len(), 2);
        assert_eq!(a.channels[0].line, "WhatsApp: linked · auth 12m");
        assert_eq!(a.channels[0].auth_age_ms, Some(12 * MINUTE));
        assert_eq!(a.channels[1].line, "Telegram: ok (144ms)");
        assert_eq!(a.channels[1].probe_status, Some(200));
        assert!(a.channels.iter().all(|r| r.healthy));
    }

    #[test]
    fn linked_channel_with_failed_probe_is_degraded_with_its_status() {
        let mut wa = whatsapp_linked(12 * MINUTE);
        wa["probe"] =
            json!({"ok": false, "status": 401, "error": "unauthorized", "elapsedMs": 88.2});
        let a = assess(&snapshot(json!({"whatsapp": wa}), &["whatsapp"], json!({})));
        assert_eq!(a.state, HealthState::Degraded);
        assert_eq!(a.summary, "linked · auth 12m · probe degraded · status 401");
        assert_eq!(a.detail.as_deref(), Some("unauthorized (status 401, 88ms)"));
        assert_eq!(a.channels[0].state, ChannelState::Degraded);
        assert_eq!(
            a.channels[0].line,
            "Whatsapp: probe failed: unauthorized (status 401, 88ms)"
        );

        // No HTTP status: "probe degraded" alone, and it is not called a timeout.
        wa["probe"] = json!({"ok": false, "error": "socket hang up"});
        let a = assess(&snapshot(json!({"whatsapp": wa}), &["whatsapp"], json!({})));
        assert_eq!(a.summary, "linked · auth 12m · probe degraded");
        assert_eq!(a.detail.as_deref(), Some("socket hang up (status unknown)"));
    }

    #[test]
    fn linked_channel_without_auth_age_says_unknown() {
        let a = assess(&snapshot(
            json!({"whatsapp": {"configured": true, "linked": true}}),
            &["whatsapp"],
            json!({}),
        ));
        assert_eq!(a.summary, "linked · auth unknown");
    }

    #[test]
    fn not_linked_with_a_healthy_fallback_is_orange() {
        let a = assess(&snapshot(
            json!({"whatsapp": {"configured": true, "linked": false}, "telegram": telegram_ok()}),
            &["whatsapp", "telegram"],
            json!({"whatsapp": "WhatsApp", "telegram": "Telegram"}),
        ));
        assert_eq!(a.state, HealthState::Degraded);
        assert_eq!(
            a.summary,
            "Telegram ok · Not linked — run openclaw channels login"
        );
        assert_eq!(a.channels[0].state, ChannelState::NotLinked);
        // Without a label the id is capitalized, as the app does.
        let a = assess(&snapshot(
            json!({"whatsapp": {"configured": true, "linked": false}, "signal": {"configured": true}}),
            &["whatsapp", "signal"],
            json!({}),
        ));
        assert_eq!(
            a.summary,
            "Signal ok · Not linked — run openclaw channels login"
        );
    }

    #[test]
    fn not_linked_without_a_healthy_fallback_is_red() {
        let failing_telegram = json!({"configured": true, "probe": {"ok": false, "status": 404, "error": "Not Found"}});
        let a = assess(&snapshot(
            json!({
                "whatsapp": {"configured": true, "linked": false},
                "telegram": failing_telegram,
                "discord": {"configured": false}
            }),
            &["whatsapp", "telegram", "discord"],
            json!({}),
        ));
        assert_eq!(a.state, HealthState::LinkingNeeded);
        assert_eq!(a.summary, "Not linked — run openclaw channels login");
        assert_eq!(a.channels[2].state, ChannelState::NotConfigured);
        assert!(!a.channels[1].healthy);
    }

    #[test]
    fn the_first_linked_channel_wins_over_an_earlier_unlinked_one() {
        let a = assess(&snapshot(
            json!({
                "signal": {"configured": true, "linked": false},
                "whatsapp": whatsapp_linked(3 * HOUR)
            }),
            &["signal", "whatsapp"],
            json!({}),
        ));
        assert_eq!(a.state, HealthState::Ok);
        assert_eq!(a.summary, "linked · auth 3h");
    }

    #[test]
    fn without_link_info_the_configured_probes_decide() {
        let ok = assess(&snapshot(
            json!({"telegram": telegram_ok(), "slack": {"configured": false, "probe": {"ok": false}}}),
            &["telegram", "slack"],
            json!({}),
        ));
        assert_eq!(ok.state, HealthState::Ok);
        assert_eq!(ok.summary, "Gateway healthy");

        let failed = assess(&snapshot(
            json!({
                "telegram": telegram_ok(),
                "discord": {"configured": true, "probe": {"ok": false, "status": 401, "error": "401: Unauthorized", "elapsedMs": 301}}
            }),
            &["telegram", "discord"],
            json!({}),
        ));
        assert_eq!(failed.state, HealthState::Degraded);
        assert_eq!(
            failed.summary,
            "Gateway degraded: 401: Unauthorized (status 401, 301ms)"
        );

        let timed_out = assess(&snapshot(
            json!({"discord": {"configured": true, "probe": {"ok": false, "error": "probe timeout after 5000ms", "elapsedMs": 5001}}}),
            &["discord"],
            json!({}),
        ));
        assert_eq!(
            timed_out.summary,
            "Gateway degraded: Health check timed out (5001ms)"
        );
    }

    #[test]
    fn channels_missing_from_channel_order_still_count() {
        // An empty `channelOrder` (as the gateway sends without channels) falls back to the keys.
        let a = assess(&snapshot(
            json!({"whatsapp": whatsapp_linked(20_000)}),
            &[],
            json!({}),
        ));
        assert_eq!(a.summary, "linked · auth just now");
        assert_eq!(a.channels.len(), 1);
    }

    #[test]
    fn ok_false_and_a_degraded_event_loop_are_degraded() {
        let mut snap = snapshot(json!({}), &[], json!({}));
        snap["ok"] = json!(false);
        let a = assess(&snap);
        assert_eq!(a.state, HealthState::Degraded);
        assert_eq!(a.summary, "Gateway degraded: the gateway reports ok: false");

        let mut snap = snapshot(
            json!({"whatsapp": whatsapp_linked(12 * MINUTE)}),
            &["whatsapp"],
            json!({}),
        );
        snap["eventLoop"] =
            json!({"degraded": true, "reasons": ["event_loop_delay", "cpu"], "delayP99Ms": 2300});
        let a = assess(&snap);
        assert_eq!(a.state, HealthState::Degraded);
        assert_eq!(
            a.summary,
            "linked · auth 12m · event loop degraded (event_loop_delay, cpu)"
        );

        // A red verdict stays red; the gateway's trouble goes to the detail.
        let mut snap = snapshot(
            json!({"whatsapp": {"configured": true, "linked": false}}),
            &["whatsapp"],
            json!({}),
        );
        snap["eventLoop"] = json!({"degraded": true, "reasons": []});
        let a = assess(&snap);
        assert_eq!(a.state, HealthState::LinkingNeeded);
        assert!(a.detail.unwrap().ends_with("; event loop degraded"));
    }

    #[test]
    fn auth_age_rounds_like_the_app() {
        assert_eq!(format_age(0.0), "just now");
        assert_eq!(format_age(29_999.0), "just now");
        assert_eq!(format_age(30_000.0), "1m");
        assert_eq!(format_age((12 * MINUTE) as f64), "12m");
        assert_eq!(format_age((59 * MINUTE + 29_000) as f64), "59m");
        assert_eq!(format_age((59 * MINUTE + 30_000) as f64), "1h");
        assert_eq!(format_age((90 * MINUTE) as f64), "2h");
        assert_eq!(format_age((47 * HOUR) as f64), "47h");
        assert_eq!(format_age((47 * HOUR + 30 * MINUTE) as f64), "2d");
        assert_eq!(format_age((60 * HOUR) as f64), "3d");
        assert_eq!(format_age((10 * 24 * HOUR) as f64), "10d");
    }

    #[test]
    fn probe_failures_in_words() {
        assert_eq!(
            describe_probe_failure(&json!({"ok": false, "error": "Request timed out"})),
            "Health check timed out"
        );
        assert_eq!(
            describe_probe_failure(&json!({"ok": false, "status": 500, "elapsedMs": 12.9})),
            "health probe failed (status 500, 12ms)"
        );
    }

    #[test]
    fn connection_refused_says_the_port_is_not_listening() {
        let err = GatewayError::Transport(
            TransportError::new(
                TransportErrorKind::Connect,
                "cannot reach the gateway at 127.0.0.1:18789: Connection refused (os error 111)",
            )
            .with_fix("start the gateway on this machine (`openclaw gateway run`)"),
        );
        assert_eq!(
            error_detail(&err, "ws://127.0.0.1:18789/"),
            "The gateway control port (ws://127.0.0.1:18789/) isn't listening — restart OpenClaw on the gateway host"
        );
        let ssh = GatewayError::Transport(TransportError::new(
            TransportErrorKind::Tunnel,
            "ssh://claw@h:22 cannot connect to 127.0.0.1:18789 on its side: nothing listens there",
        ));
        assert!(error_detail(&ssh, "ssh://claw@h:22 → 127.0.0.1:18789").contains("isn't listening"));
        let a = Assessment::from_error(&err, "127.0.0.1:18789");
        assert_eq!(a.state, HealthState::Degraded);
        assert!(a.summary.starts_with("Health check failed: cannot reach"));
    }

    #[test]
    fn timeouts_say_the_gateway_may_be_starting() {
        let err = GatewayError::Timeout {
            method: "health".into(),
            after: std::time::Duration::from_secs(15),
        };
        assert_eq!(
            error_detail(&err, "x"),
            "Timed out waiting for the control server; the gateway may be crashed or still starting."
        );
        let connect = GatewayError::Transport(TransportError::new(
            TransportErrorKind::Connect,
            "cannot reach the gateway at 10.0.0.2:18789: no answer within 5000 ms",
        ));
        assert!(error_detail(&connect, "x").starts_with("Timed out waiting"));
    }

    #[test]
    fn other_errors_carry_their_fix() {
        let err = GatewayError::Auth {
            code: "AUTH_TOKEN_MISMATCH".into(),
            message: "unauthorized: gateway token mismatch".into(),
            fix: "put the right token in auth.token_file".into(),
        };
        assert_eq!(
            error_detail(&err, "x"),
            "unauthorized: gateway token mismatch — fix: put the right token in auth.token_file"
        );
        assert_eq!(message_detail("boom", None, "x"), "boom");
    }

    #[test]
    fn auth_source_follows_hello_ok() {
        let hello = |method: &str| -> HelloOk {
            serde_json::from_value(json!({"protocol": 4, "auth": {"method": method, "role": "operator", "scopes": []}}))
                .unwrap()
        };
        assert_eq!(
            auth_source_label(&hello("device-token")),
            "device token (paired device)"
        );
        assert_eq!(auth_source_label(&hello("token")), "shared token");
        assert_eq!(auth_source_label(&hello("password")), "password");
        assert_eq!(auth_source_label(&hello("none")), "none");
        assert_eq!(
            auth_source_label(&hello("bootstrap-token")),
            "bootstrap token (setup code)"
        );
        let silent: HelloOk = serde_json::from_value(json!({"protocol": 4})).unwrap();
        assert!(auth_source_label(&silent).starts_with("unknown"));
    }

    #[test]
    fn assessments_serialize_in_camel_case() {
        let a = assess(&snapshot(
            json!({"whatsapp": whatsapp_linked(12 * MINUTE)}),
            &["whatsapp"],
            json!({}),
        ));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["state"], "ok");
        assert_eq!(json["channels"][0]["authAgeMs"], 12 * MINUTE);
        assert_eq!(json["channels"][0]["authAge"], "12m");
        assert!(json["channels"][0].get("probeOk").is_none());
        assert_eq!(Assessment::pending().summary, "Health check pending");
    }
}
