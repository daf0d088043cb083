//! `clawlink logs`: the remote gateway's log through the `logs.tail` RPC, once or followed.
//!
//! `logs.tail` reads the gateway's own log file by byte cursor: a request without a cursor
//! returns the last lines and the cursor at the end of the last complete line; a request with
//! it returns what was appended since (never a partial line, so nothing is printed twice or
//! cut). When the cursor no longer fits the file (truncated or replaced) the gateway answers
//! `reset`, and reads from the start; when more than `maxBytes` was appended it answers
//! `reset` with `skippedBytes`. A daily rolling log shows up as a new `file`; we then read the
//! new file from its start. Following survives reconnects: the client restores the connection
//! underneath and a poll that fails meanwhile is retried, not fatal.

use std::io::Write;
use std::time::Duration;

use anstyle::Style;
use anyhow::Result;
use clawlink_core::gateway::{GatewayClient, GatewayError, RequestOptions};
use clawlink_core::text::terminal_safe;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cli::{GlobalArgs, LogsArgs};
use crate::connect;
use crate::failure::Failure;
use crate::settings::Settings;
use crate::style;
use crate::terminal::eprintln_safe;

/// How often a follow polls (the Control UI and `openclaw logs --follow` use 1 s too).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The gateway's caps for one `logs.tail` answer.
const MAX_LINES: u32 = 5000;
const MAX_BYTES: u64 = 1_000_000;
/// How long one poll may take before it counts as a transient failure.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// One `logs.tail` answer (unknown fields ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TailPage {
    #[serde(default)]
    file: String,
    cursor: u64,
    #[serde(default)]
    lines: Vec<String>,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    skipped_bytes: Option<u64>,
}

/// `clawlink logs`.
pub async fn run(global: &GlobalArgs, settings: &Settings, args: &LogsArgs) -> Result<()> {
    let stop = crate::signals::shutdown_signal();
    tokio::pin!(stop);
    // Poll the signal future once so its handlers are installed before we connect: a
    // SIGTERM during the connection must end us cleanly too, not by the default action.
    tokio::select! {
        biased;
        _ = &mut stop => return Ok(()),
        _ = std::future::ready(()) => {}
    }
    let client = tokio::select! {
        _ = &mut stop => return Ok(()),
        client = connect::connect(settings) => client?,
    };
    let mut printer = Printer::new(global.json);
    let outcome = tokio::select! {
        _ = &mut stop => Ok(()),
        outcome = tail(&client, args, &mut printer) => outcome,
    };
    connect::finish(&client).await;
    outcome
}

async fn tail(client: &GatewayClient, args: &LogsArgs, printer: &mut Printer) -> Result<()> {
    // Without a cursor the gateway reads the last maxBytes and keeps the last `limit` lines;
    // leave room for long JSON records.
    let max_bytes = (u64::from(args.lines) * 2_000).clamp(250_000, MAX_BYTES);
    let first = fetch(
        client,
        json!({"limit": args.lines.max(1), "maxBytes": max_bytes}),
        args.follow,
    )
    .await?;
    if args.lines > 0 {
        printer.lines(&first.lines)?;
    }
    if !args.follow {
        return Ok(());
    }
    let (mut cursor, mut file) = (first.cursor, first.file);
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let mut page = fetch(client, follow_params(cursor), true).await?;
        if page.file != file && !file.is_empty() && !page.reset {
            // A new (rolling) log file: our cursor belongs to the old one; read the new one
            // from its first line instead of from the old offset.
            printer.notice(&format!(
                "log file is now {}; reading it from the start",
                page.file
            ));
            page = fetch(client, follow_params(0), true).await?;
        } else if page.reset {
            match page.skipped_bytes {
                Some(skipped) if skipped > 0 => printer.notice(&format!(
                    "the log grew faster than it could be read: skipped {skipped} bytes"
                )),
                _ => printer.notice("the log file was reset or rotated; reading it from the start"),
            }
        } else if page.truncated {
            printer.notice(&format!(
                "more than {MAX_LINES} new lines in one poll: older ones skipped"
            ));
        }
        printer.lines(&page.lines)?;
        cursor = page.cursor;
        file = page.file;
    }
}

fn follow_params(cursor: u64) -> Value {
    json!({"cursor": cursor, "limit": MAX_LINES, "maxBytes": MAX_BYTES})
}

/// One `logs.tail` call. When following, failures a reconnect can fix (connection lost,
/// gateway restarting, a stalled request) are waited out: the client reconnects underneath
/// and the same cursor is asked for again, so nothing is lost or repeated.
async fn fetch(client: &GatewayClient, params: Value, follow: bool) -> Result<TailPage, Failure> {
    let mut waiting_since: Option<std::time::Instant> = None;
    loop {
        let options = RequestOptions {
            timeout: Some(POLL_TIMEOUT),
            expect_final: false,
        };
        match client
            .request_with("logs.tail", params.clone(), options)
            .await
        {
            Ok(payload) => {
                if let Some(since) = waiting_since {
                    eprintln!(
                        "clawlink: gateway back after {} s; following again",
                        since.elapsed().as_secs()
                    );
                }
                return serde_json::from_value(payload).map_err(|e| Failure {
                    layer: "protocol".into(),
                    message: format!("logs.tail answered something unexpected: {e}"),
                    fix: Some(
                        "update clawlink or the gateway so that both speak the same protocol"
                            .into(),
                    ),
                    exit_code: 1,
                    json: json!({"layer": "protocol", "message": e.to_string()}),
                });
            }
            Err(e) if follow && transient(&e) => {
                if waiting_since.is_none() {
                    eprintln_safe!(
                        "clawlink: {e}; waiting for the gateway to come back (Ctrl-C to stop)"
                    );
                    waiting_since = Some(std::time::Instant::now());
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a failed poll is worth repeating: the connection is being restored or the
/// gateway is busy. Refusals (auth, scope, bad params) and a client shut down are not.
fn transient(error: &GatewayError) -> bool {
    match error {
        GatewayError::Rpc { error, .. } => error.retryable,
        GatewayError::Closed => false,
        other => other.is_retryable(),
    }
}

/// Writes log lines: raw JSON per line with `--json`, readable columns otherwise.
struct Printer {
    json: bool,
    color: bool,
}

impl Printer {
    fn new(json: bool) -> Self {
        let color = style::stdout_colours();
        Self { json, color }
    }

    fn lines(&mut self, lines: &[String]) -> Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for line in lines {
            let text = if self.json {
                json_line(line)
            } else {
                readable_line(line, self.color)
            };
            if let Err(e) = writeln!(out, "{text}") {
                return Err(output_closed(e));
            }
        }
        out.flush().map_err(output_closed)
    }

    /// Notices go to stderr, so that stdout stays pure log lines (and pure JSON).
    fn notice(&self, text: &str) {
        eprintln!("clawlink: {}", terminal_safe(text));
    }
}

/// A closed pipe (`clawlink logs -f | head`) ends the command quietly, like `tail -f`.
fn output_closed(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    anyhow::Error::new(error).context("cannot write to standard output")
}

/// The line as one JSON object: the gateway's record as it is, or a non-JSON line wrapped.
fn json_line(line: &str) -> String {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(_)) => line.to_owned(),
        _ => json!({"message": line}).to_string(),
    }
}

/// What a gateway log record says, read the way the gateway's own `openclaw logs` reads it:
/// time, level, subsystem (from the logger name, which is itself JSON) and message (the
/// `message` field, else the positional arguments "1", "2", … joined).
#[derive(Debug, Default, PartialEq)]
struct Record {
    time: Option<String>,
    level: Option<String>,
    subsystem: Option<String>,
    message: String,
}

fn parse_record(line: &str) -> Option<Record> {
    let value: Value = serde_json::from_str(line).ok()?;
    let object = value.as_object()?;
    let meta = object.get("_meta").and_then(Value::as_object);
    let meta_str = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let context = |raw: Option<&str>| -> Option<String> {
        let parsed: Value = serde_json::from_str(raw?.trim_start()).ok()?;
        ["subsystem", "module", "plugin"]
            .iter()
            .find_map(|k| parsed.get(k).and_then(Value::as_str).map(str::to_owned))
    };
    let subsystem = context(meta_str("name"))
        .or_else(|| context(object.get("0").and_then(Value::as_str)))
        .or_else(|| {
            object
                .get("subsystem")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    let message = match object.get("message").and_then(Value::as_str) {
        Some(message) => message.to_owned(),
        None => {
            let mut positional: Vec<(u64, &Value)> = object
                .iter()
                .filter_map(|(k, v)| k.parse::<u64>().ok().map(|i| (i, v)))
                .collect();
            positional.sort_by_key(|(i, _)| *i);
            positional
                .into_iter()
                // "0" is the logger name when it is JSON context, not text.
                .filter(|(i, v)| !(*i == 0 && context(v.as_str()).is_some()))
                .map(|(_, v)| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    Some(Record {
        time: object
            .get("time")
            .and_then(Value::as_str)
            .or_else(|| meta_str("date"))
            .map(str::to_owned),
        level: meta_str("logLevelName")
            .or_else(|| object.get("level").and_then(Value::as_str))
            .map(str::to_lowercase),
        subsystem,
        message,
    })
}

/// `2026-11-24 19:42:23.497+00:00 warn  gateway/ws  unauthorized conn=…`; non-JSON lines as
/// they are. Every field is the remote side's text: it goes through `terminal_safe` before
/// our own colours are added, so that it can neither drive the terminal nor start a line.
fn readable_line(line: &str, color: bool) -> String {
    let Some(record) = parse_record(line) else {
        return terminal_safe(line).into_owned();
    };
    let paint = |style: Style, text: &str| style::paint(style, text, color);
    let level = terminal_safe(&record.level.unwrap_or_default()).into_owned();
    let level_color = match level.as_str() {
        "error" | "fatal" => style::ERROR,
        "warn" => style::WARN,
        "debug" | "trace" | "silly" => style::DIM,
        _ => style::OK,
    };
    let message_color = match level.as_str() {
        "error" | "fatal" => style::ERROR,
        "warn" => style::WARN,
        _ => Style::new(),
    };
    let mut parts = Vec::new();
    if let Some(time) = record.time {
        parts.push(paint(
            style::DIM,
            &terminal_safe(&time.replacen('T', " ", 1)),
        ));
    }
    if !level.is_empty() {
        parts.push(paint(level_color, &format!("{level:<5}")));
    }
    if let Some(subsystem) = record.subsystem {
        parts.push(paint(style::PROMPT, &terminal_safe(&subsystem)));
    }
    parts.push(paint(message_color, &terminal_safe(&record.message)));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"0":"{\"subsystem\":\"gateway/ws\"}","1":"unauthorized conn=4d30 reason=token_mismatch","_meta":{"runtime":"node","date":"2026-11-24T19:42:41.960Z","logLevelId":4,"logLevelName":"WARN","name":"{\"subsystem\":\"gateway/ws\"}","parentNames":["openclaw"]},"time":"2026-11-24T19:42:41.960+00:00","hostname":"vm","message":"unauthorized conn=4d30 reason=token_mismatch"}"#;

    #[test]
    fn gateway_records_read_as_time_level_subsystem_message() {
        assert_eq!(
            parse_record(RECORD).unwrap(),
            Record {
                time: Some("2026-11-24T19:42:41.960+00:00".into()),
                level: Some("warn".into()),
                subsystem: Some("gateway/ws".into()),
                message: "unauthorized conn=4d30 reason=token_mismatch".into(),
            }
        );
        assert_eq!(
            readable_line(RECORD, false),
            "2026-11-24 19:42:41.960+00:00 warn  gateway/ws unauthorized conn=4d30 reason=token_mismatch"
        );
        let colored = readable_line(RECORD, true);
        assert!(colored.contains("\x1b[33mwarn \x1b[0m"), "{colored:?}");
    }

    #[test]
    fn records_without_a_message_field_join_their_positional_arguments() {
        let line = r#"{"0":"{\"subsystem\":\"state/db\"}","1":{"kind":"state"},"2":"verification passed","_meta":{"logLevelName":"INFO","date":"2026-11-24T19:42:29.579Z"}}"#;
        let record = parse_record(line).unwrap();
        assert_eq!(record.subsystem.as_deref(), Some("state/db"));
        assert_eq!(record.message, r#"{"kind":"state"} verification passed"#);
        assert_eq!(record.time.as_deref(), Some("2026-11-24T19:42:29.579Z"));
    }

    #[test]
    fn plain_lines_stay_as_they_are_and_json_output_is_one_object_per_line() {
        assert_eq!(readable_line("plain text line", true), "plain text line");
        assert_eq!(json_line(RECORD), RECORD);
        assert_eq!(json_line("plain"), r#"{"message":"plain"}"#);
        assert_eq!(json_line("[1,2]"), r#"{"message":"[1,2]"}"#);
    }

    #[test]
    fn no_field_of_a_hostile_record_reaches_the_terminal_raw() {
        // JSON escapes: the record carries real ESC and BEL characters once parsed.
        let osc = "\\u001b]0;pwned\\u0007";
        let line = format!(
            r#"{{"time":"2026\u001b[41m","_meta":{{"logLevelName":"WARN{osc}","name":"{{\"subsystem\":\"gw\\u001b[2J\"}}"}},"message":"hi{osc}\nforged"}}"#
        );
        let record = parse_record(&line).expect("a JSON record");
        for field in [
            &record.message,
            record.time.as_ref().unwrap(),
            record.subsystem.as_ref().unwrap(),
        ] {
            assert!(field.contains('\x1b'), "{record:?}");
        }
        for color in [false, true] {
            let shown = readable_line(&line, color);
            let own_colours = shown.replace("\x1b[0m", "").replace("\x1b[2m", "");
            let own_colours = ["31", "32", "33", "36"]
                .iter()
                .fold(own_colours, |s, c| s.replace(&format!("\x1b[{c}m"), ""));
            assert!(!own_colours.contains('\x1b'), "{shown:?}");
            assert!(
                !shown.contains('\x07') && !shown.contains('\n'),
                "{shown:?}"
            );
            assert!(shown.contains("pwned"), "{shown:?}");
        }
        let plain = readable_line("plain \x1b]0;pwned\x07 \u{9b}31m line", true);
        assert_eq!(plain, "plain \u{fffd}]0;pwned\u{fffd} \u{fffd}31m line");
    }
}
