//! `clawlink channels login|status|logout`: channel linking, done on the gateway host over the gateway socket.
//!
//! The WhatsApp session lives on the gateway host, whatever transport we use: `login` asks the
//! gateway for a QR code (`web.login.start`), prints it here, and waits on the gateway for the
//! phone to scan it (`web.login.wait`, which may also hand out a fresh QR code when the old one
//! expires). Parameters follow the gateway's closed schemas exactly.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use clawlink_core::gateway::{GatewayClient, GatewayError, RequestOptions};
use clawlink_core::text::terminal_safe;
use serde_json::{json, Map, Value};

use crate::cli::{ChannelLoginArgs, GlobalArgs};
use crate::connect;
use crate::failure::Failure;
use crate::human::age;
use crate::qr;
use crate::settings::Settings;
use crate::terminal::println_safe;

/// What the official app asks `web.login.start` for: the time the gateway may take to get a
/// QR code from WhatsApp.
const LOGIN_START_TIMEOUT_MS: u64 = 30_000;
/// Slack on top of a gateway-side timeout before we give up on the answer.
const ANSWER_SLACK: Duration = Duration::from_secs(15);
/// The gateway caps a probing `channels.status` at 30 s.
const STATUS_TIMEOUT: Duration = Duration::from_secs(45);

/// How to set WhatsApp up on the gateway host (the gateway's own wording, from its docs).
const ENABLE_WHATSAPP_FIX: &str = "WhatsApp is not set up on the gateway host. There, install the \
     channel plugin and add the channel: `openclaw plugins install @openclaw/whatsapp`, then \
     `openclaw channels add --channel whatsapp` (or `openclaw onboard`), and restart the gateway; \
     `clawlink remote -- openclaw channels login --channel whatsapp` does the same interactively over SSH";

/// `clawlink channels login`.
pub async fn login(
    global: &GlobalArgs,
    settings: &Settings,
    args: &ChannelLoginArgs,
) -> Result<()> {
    let client = connect::connect(settings).await?;
    let outcome = tokio::select! {
        outcome = run_login(global, &client, args) => outcome,
        stop = crate::signals::shutdown_signal() => Err(Failure {
            layer: "channels".into(),
            message: format!("login {stop}; the gateway drops the pending login when its QR code expires"),
            fix: None,
            exit_code: 130,
            json: json!({"layer": "channels", "message": "login cancelled"}),
        }
        .into()),
    };
    connect::finish(&client).await;
    outcome
}

async fn run_login(
    global: &GlobalArgs,
    client: &GatewayClient,
    args: &ChannelLoginArgs,
) -> Result<()> {
    let mut params = Map::new();
    if args.force {
        params.insert("force".into(), json!(true));
    }
    params.insert("timeoutMs".into(), json!(LOGIN_START_TIMEOUT_MS));
    let started = request(
        client,
        "web.login.start",
        Value::Object(params),
        Duration::from_millis(LOGIN_START_TIMEOUT_MS) + ANSWER_SLACK,
    )
    .await
    .map_err(login_failure)?;
    let message = started["message"].as_str().unwrap_or_default().to_owned();
    if started["connected"] == true {
        return linked(global, &message);
    }
    let Some(mut qr_url) = started["qrDataUrl"].as_str().map(str::to_owned) else {
        return Err(Failure {
            layer: "channels".into(),
            message: format!("the gateway started no login: {message}"),
            fix: Some("retry with --force to replace the linked session".into()),
            exit_code: 1,
            json: json!({"layer": "channels", "message": message, "gateway": started}),
        }
        .into());
    };
    let session_key = started["sessionKey"]
        .as_str()
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    show_qr(global, &qr_url, &message, args)?;

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(not_linked(
                &format!("the QR code was not scanned within {} s", args.timeout),
                args.timeout,
            ));
        }
        if !global.json {
            eprintln!(
                "Waiting up to {} s for the scan (WhatsApp → Settings → Linked devices → Link a device); Ctrl-C to cancel",
                remaining.as_secs().max(1)
            );
        }
        let mut params = Map::new();
        params.insert("timeoutMs".into(), json!(remaining.as_millis() as u64));
        if let Some(key) = &session_key {
            params.insert("sessionKey".into(), json!(key));
        }
        // The schema caps it at 16 KiB; without it the gateway simply cannot tell us apart
        // from a client that has not seen a code yet.
        if qr_url.len() <= 16_384 {
            params.insert("currentQrDataUrl".into(), json!(qr_url));
        }
        let waited = request(
            client,
            "web.login.wait",
            Value::Object(params),
            remaining + ANSWER_SLACK,
        )
        .await
        .map_err(login_failure)?;
        let message = waited["message"].as_str().unwrap_or_default().to_owned();
        if waited["connected"] == true {
            return linked(global, &message);
        }
        match waited["qrDataUrl"].as_str() {
            // WhatsApp rotates the code; the gateway hands out the next one.
            Some(next) if next != qr_url => {
                qr_url = next.to_owned();
                show_qr(global, &qr_url, &message, args)?;
            }
            _ => return Err(not_linked(&message, args.timeout)),
        }
    }
}

fn linked(global: &GlobalArgs, message: &str) -> Result<()> {
    if global.json {
        println!(
            "{}",
            json!({"ok": true, "connected": true, "message": message})
        );
    } else {
        println_safe!(
            "{}",
            if message.is_empty() {
                "Linked."
            } else {
                message
            }
        );
    }
    Ok(())
}

fn not_linked(message: &str, timeout: u64) -> anyhow::Error {
    Failure {
        layer: "channels".into(),
        message: format!("not linked: {message}"),
        fix: Some(format!(
            "run `clawlink channels login` again and scan the code within {timeout} s (raise it with --timeout)"
        )),
        exit_code: 1,
        json: json!({"layer": "channels", "message": message, "connected": false}),
    }
    .into()
}

/// Prints the QR code (and saves it with `--png`).
fn show_qr(global: &GlobalArgs, url: &str, message: &str, args: &ChannelLoginArgs) -> Result<()> {
    let png_bytes = qr::png_from_data_url(url)?;
    if let Some(path) = &args.png {
        std::fs::write(path, &png_bytes).map_err(|e| {
            Failure::config(
                format!("cannot write the QR code to {}: {e}", path.display()),
                Some("pick a writable path for --png".into()),
            )
        })?;
    }
    let matrix = qr::modules_from_png(&png_bytes)?;
    if global.json {
        println!(
            "{}",
            json!({"event": "qr", "message": message, "qrDataUrl": url, "modules": matrix.size(),
                   "png": args.png.as_ref().map(|p| p.display().to_string())})
        );
    } else {
        let ansi = crate::style::stdout_colours();
        let mut out = std::io::stdout().lock();
        writeln!(out)?;
        write!(
            out,
            "{}",
            qr::render_half_blocks(&matrix, qr::TERMINAL_QUIET_ZONE, ansi)
        )?;
        writeln!(out)?;
        if !message.is_empty() {
            writeln!(out, "{}", terminal_safe(message))?;
        }
        if let Some(path) = &args.png {
            writeln!(
                out,
                "(also saved as {}: {})",
                path.display(),
                qr::describe(&matrix)
            )?;
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

async fn request(
    client: &GatewayClient,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, GatewayError> {
    let options = RequestOptions {
        timeout: Some(timeout),
        expect_final: false,
    };
    client.request_with(method, params, options).await
}

/// A failed `web.login.*`: when the gateway has no web-login provider, WhatsApp is not set up
/// there, and the fix is on the host.
fn login_failure(error: GatewayError) -> Failure {
    let mut failure = Failure::from(error.clone());
    if let GatewayError::Rpc { error: shape, .. } = &error {
        if shape
            .message
            .contains("web login provider is not available")
            || shape.message.contains("web login is not supported")
        {
            failure.message = format!(
                "WhatsApp is not configured on the gateway: {}",
                failure.message
            );
            failure.fix = Some(ENABLE_WHATSAPP_FIX.into());
            failure.json["fix"] = json!(ENABLE_WHATSAPP_FIX);
            failure.json["message"] = json!(failure.message);
        }
    }
    failure
}

/// `clawlink channels status`.
pub async fn status(global: &GlobalArgs, settings: &Settings, probe: bool) -> Result<()> {
    let client = connect::connect(settings).await?;
    let params = if probe {
        json!({"probe": true})
    } else {
        json!({})
    };
    let result = request(&client, "channels.status", params, STATUS_TIMEOUT).await;
    connect::finish(&client).await;
    let payload = result.map_err(Failure::from)?;
    let rows = status_rows(&payload);
    if global.json {
        println!(
            "{}",
            json!({"ok": true, "probe": probe, "channels": rows, "status": payload})
        );
        return Ok(());
    }
    print!("{}", status_table(&rows, &payload));
    Ok(())
}

/// One line of the status table: a channel account, merged with the channel's summary for
/// its default account.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusRow {
    channel: String,
    label: String,
    account: Option<String>,
    configured: Option<bool>,
    linked: Option<bool>,
    running: Option<bool>,
    connected: Option<bool>,
    auth_age_ms: Option<u64>,
    last_error: Option<String>,
}

fn status_rows(payload: &Value) -> Vec<StatusRow> {
    let empty = Map::new();
    let channels = payload["channels"].as_object().unwrap_or(&empty);
    let mut order: Vec<String> = payload["channelOrder"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for id in channels.keys() {
        if !order.contains(id) {
            order.push(id.clone());
        }
    }
    let mut rows = Vec::new();
    for id in order {
        let summary = &channels.get(&id).cloned().unwrap_or(Value::Null);
        let label = payload["channelLabels"][&id]
            .as_str()
            .unwrap_or(&id)
            .to_owned();
        let default_account = payload["channelDefaultAccountId"][&id].as_str();
        let accounts = payload["channelAccounts"][&id]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let flag = |v: &Value, key: &str| v.get(key).and_then(Value::as_bool);
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if accounts.is_empty() {
            rows.push(StatusRow {
                channel: id.clone(),
                label,
                account: None,
                configured: flag(summary, "configured"),
                linked: flag(summary, "linked"),
                running: flag(summary, "running"),
                connected: flag(summary, "connected"),
                auth_age_ms: summary.get("authAgeMs").and_then(Value::as_u64),
                last_error: text(summary, "lastError"),
            });
            continue;
        }
        for account in &accounts {
            let account_id = account["accountId"].as_str().map(str::to_owned);
            // The channel summary describes the default account; other accounts stand alone.
            let is_default = accounts.len() == 1 || account_id.as_deref() == default_account;
            let pick_flag = |key: &str| {
                flag(account, key).or_else(|| is_default.then(|| flag(summary, key)).flatten())
            };
            rows.push(StatusRow {
                channel: id.clone(),
                label: label.clone(),
                account: account_id,
                configured: pick_flag("configured"),
                linked: pick_flag("linked"),
                running: pick_flag("running"),
                connected: pick_flag("connected"),
                auth_age_ms: account
                    .get("authAgeMs")
                    .and_then(Value::as_u64)
                    .or_else(|| {
                        is_default
                            .then(|| summary.get("authAgeMs").and_then(Value::as_u64))
                            .flatten()
                    }),
                last_error: text(account, "lastError")
                    .or_else(|| is_default.then(|| text(summary, "lastError")).flatten()),
            });
        }
    }
    rows
}

fn status_table(rows: &[StatusRow], payload: &Value) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str(
            "No channels on this gateway: none is configured, or its plugin is not installed.\n\
             Add one on the gateway host, e.g. `openclaw plugins install @openclaw/whatsapp` then \
             `openclaw channels add --channel whatsapp`.\n",
        );
    } else {
        let yes_no = |v: Option<bool>| match v {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let table: Vec<[String; 6]> = rows
            .iter()
            .map(|r| {
                [
                    match &r.account {
                        Some(account) if account != "default" => format!("{} ({account})", r.label),
                        _ => r.label.clone(),
                    },
                    yes_no(r.configured).into(),
                    yes_no(r.linked).into(),
                    match (r.running, r.connected) {
                        (Some(true), Some(true)) => "yes, connected".into(),
                        (Some(true), Some(false)) => "yes, not connected".into(),
                        (running, _) => yes_no(running).into(),
                    },
                    r.auth_age_ms.map(age).unwrap_or_else(|| "-".into()),
                    r.last_error.clone().unwrap_or_else(|| "-".into()),
                ]
                // The gateway's words: see clawlink_core::text.
                .map(|cell| terminal_safe(&cell).into_owned())
            })
            .collect();
        let header = [
            "CHANNEL",
            "CONFIGURED",
            "LINKED",
            "RUNNING",
            "AUTH AGE",
            "LAST ERROR",
        ];
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &table {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            text.trim_end().to_owned() + "\n"
        };
        out.push_str(&line(header.to_vec()));
        for row in &table {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
    }
    for issue in payload["statusIssues"].as_array().into_iter().flatten() {
        out.push_str(&terminal_safe(&format!(
            "issue: {} {} ({}): {}{}",
            issue["channel"].as_str().unwrap_or("?"),
            issue["accountId"].as_str().unwrap_or("?"),
            issue["kind"].as_str().unwrap_or("?"),
            issue["message"].as_str().unwrap_or(""),
            issue["fix"]
                .as_str()
                .map(|f| format!(" — fix: {f}"))
                .unwrap_or_default()
        )));
        out.push('\n');
    }
    for warning in payload["warnings"].as_array().into_iter().flatten() {
        let warning = terminal_safe(warning.as_str().unwrap_or("?"));
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}

/// `clawlink channels logout`.
pub async fn logout(global: &GlobalArgs, settings: &Settings, channel: &str) -> Result<()> {
    let client = connect::connect(settings).await?;
    let result = request(
        &client,
        "channels.logout",
        json!({"channel": channel}),
        Duration::from_secs(60),
    )
    .await;
    connect::finish(&client).await;
    let payload = result.map_err(|e| logout_failure(e, channel))?;
    if global.json {
        println!(
            "{}",
            json!({"ok": true, "channel": channel, "result": payload})
        );
        return Ok(());
    }
    let cleared = payload["cleared"] == true;
    let logged_out = payload["loggedOut"] == true;
    println!(
        "{channel}: {}",
        match (cleared, logged_out) {
            (_, true) => "logged out on the gateway host; its session credentials are removed",
            (true, false) => "session credentials removed on the gateway host",
            (false, false) => "nothing to log out: no linked session on the gateway host",
        }
    );
    Ok(())
}

fn logout_failure(error: GatewayError, channel: &str) -> Failure {
    let mut failure = Failure::from(error.clone());
    if let GatewayError::Rpc { error: shape, .. } = &error {
        let unknown = shape.message.contains("invalid channels.logout channel")
            || shape.message.contains("unknown channel");
        if unknown {
            let fix = if channel.eq_ignore_ascii_case("whatsapp") {
                ENABLE_WHATSAPP_FIX.to_owned()
            } else {
                format!("the gateway knows no channel {channel:?}; `clawlink channels status` lists the ones it has")
            };
            failure.message = format!(
                "the gateway has no channel {channel:?}: {}",
                failure.message
            );
            failure.json["message"] = json!(failure.message);
            failure.json["fix"] = json!(fix);
            failure.fix = Some(fix);
        }
    }
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rows_merge_the_channel_summary_into_its_default_account() {
        let payload = json!({
            "channelOrder": ["whatsapp", "telegram"],
            "channelLabels": {"whatsapp": "WhatsApp", "telegram": "Telegram"},
            "channels": {
                "whatsapp": {"configured": true, "linked": true, "authAgeMs": 3_600_000, "lastError": null},
                "telegram": {"configured": false}
            },
            "channelAccounts": {
                "whatsapp": [
                    {"accountId": "default", "running": true, "connected": false},
                    {"accountId": "work", "configured": true, "linked": false, "lastError": "logged out"}
                ],
                "telegram": []
            },
            "channelDefaultAccountId": {"whatsapp": "default", "telegram": "default"},
            "statusIssues": [{"channel": "whatsapp", "accountId": "work", "kind": "auth", "message": "not linked", "fix": "run login"}]
        });
        let rows = status_rows(&payload);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].account.as_deref(), Some("default"));
        assert_eq!(
            (rows[0].configured, rows[0].linked, rows[0].running),
            (Some(true), Some(true), Some(true))
        );
        assert_eq!(rows[0].auth_age_ms, Some(3_600_000));
        assert_eq!(rows[1].linked, Some(false));
        assert_eq!(
            rows[1].auth_age_ms, None,
            "the summary's auth age is the default account's"
        );
        assert_eq!(rows[1].last_error.as_deref(), Some("logged out"));
        assert_eq!(
            (rows[2].channel.as_str(), rows[2].configured),
            ("telegram", Some(false))
        );

        let table = status_table(&rows, &payload);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("CHANNEL") && lines[0].contains("AUTH AGE"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("WhatsApp ")
                && lines[1].contains("yes, not connected")
                && lines[1].contains("1h 0m"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("WhatsApp (work)") && lines[2].ends_with("logged out"),
            "{table}"
        );
        assert!(
            table.contains("issue: whatsapp work (auth): not linked — fix: run login"),
            "{table}"
        );
    }

    #[test]
    fn the_gateways_words_in_the_table_cannot_drive_the_terminal() {
        let payload = json!({
            "channelOrder": ["evil"],
            "channelLabels": {"evil": "Evil\u{1b}]0;pwned\u{7}"},
            "channels": {"evil": {"configured": true, "lastError": "bad\nCHANNEL forged\u{9b}2J"}},
            "statusIssues": [{"channel": "evil\u{1b}[31m", "message": "m\u{202e}x"}],
            "warnings": ["w\u{1b}[2J"]
        });
        let table = status_table(&status_rows(&payload), &payload);
        assert!(
            !table.contains(['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}']),
            "{table:?}"
        );
        // One header, one row, one issue, one warning: no forged line.
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.contains("Evil\u{fffd}]0;pwned"), "{table}");
    }

    #[test]
    fn an_empty_gateway_says_how_to_add_a_channel() {
        let table = status_table(&[], &json!({"channels": {}}));
        assert!(
            table.contains("No channels") && table.contains("openclaw channels add"),
            "{table}"
        );
    }
}
