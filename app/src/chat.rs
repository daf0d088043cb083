//! `clawlink chat`: the gateway's web chat in the terminal, over the profile's transport.
//!
//! The chat protocol (outbox, exactly-once send, reply stream, history) is the webchat
//! plugin's library; this module is the terminal around it: `one_shot` (`-m TEXT` or
//! stdin, `--json` event lines), `interactive` (a line editor with history and slash
//! commands), `render` (how updates are printed).

mod interactive;
mod one_shot;
mod render;
mod terminal;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use clawlink_core::gateway::{Backoff, GatewayClient, GatewayError, Phase};
use clawlink_feature_webchat::client::ChatClient;
use clawlink_feature_webchat::client::Settled;
use clawlink_feature_webchat::outbox::{Outbox, OutboxEntry};
use clawlink_feature_webchat::{entry_json, ChatError, OUTBOX_DIR};
use serde_json::json;

use crate::cli::{ChatArgs, GlobalArgs};
use crate::connect::{self, Connector};
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink chat`.
pub async fn chat(global: &GlobalArgs, settings: &Settings, args: &ChatArgs) -> Result<()> {
    if args.timeout == Some(0) {
        return Err(Failure::config(
            "--timeout must be at least 1 second",
            Some("pass --timeout SECS, e.g. --timeout 120".into()),
        )
        .into());
    }
    if args.outbox {
        return match &args.discard {
            Some(which) => discard_outbox(global, settings, which, args.yes).await,
            None => list_outbox(global, settings).await,
        };
    }
    let stdin_text = if args.message.is_none() && !std::io::stdin().is_terminal() {
        Some(read_stdin()?)
    } else {
        None
    };
    match args.message.clone().or(stdin_text) {
        Some(text) => one_shot::run(global, settings, args, text).await,
        None if !args.attach.is_empty() => Err(Failure::config(
            "--attach goes with a message: `clawlink chat -m TEXT --attach FILE`",
            Some("in the interactive chat, use /attach FILE".into()),
        )
        .into()),
        None => interactive::run(global, settings, args).await,
    }
}

fn read_stdin() -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::config(format!("cannot read the message from stdin: {e}"), None))?;
    let text = text.trim_end_matches(['\n', '\r']).to_owned();
    if text.trim().is_empty() {
        return Err(Failure::config(
            "no message: stdin was empty",
            Some(
                "pass the text with -m TEXT, pipe it in, or run `clawlink chat` on a terminal"
                    .into(),
            ),
        )
        .into());
    }
    Ok(text)
}

/// The outbox of this data directory (shared with the agent's webchat feature).
fn open_outbox(connector: &Connector) -> Result<Outbox, Failure> {
    let dir = connector.state_dir(clawlink_feature_webchat::NAME)?;
    Outbox::open(dir.join(OUTBOX_DIR)).map_err(chat_failure)
}

/// A supervised connection for chatting: started at once (messages typed while it is down
/// wait in the outbox), reconnecting quickly, asking for tool events.
pub(crate) struct ChatConnection {
    pub chat: ChatClient,
    pub outbox: Outbox,
    /// Network changes and resume hurry the reconnect while this connection lives.
    _network_events: crate::network_events::Watchers,
}

impl ChatConnection {
    async fn open(settings: &Settings) -> Result<Self, Failure> {
        let connector = Connector::new(settings).await?;
        let outbox = open_outbox(&connector)?;
        let transport = connect::build_transport(settings)?;
        let mut options = connector.options("operator")?;
        // Tool activity (`agent` stream `tool`) goes only to connections that ask for it.
        options.caps.push("tool-events".into());
        // A person is waiting: come back fast after a blip.
        options.backoff = Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            jitter: 0.2,
        };
        let client = GatewayClient::start(transport, options);
        Ok(Self {
            _network_events: crate::network_events::watch(&client),
            chat: ChatClient::new(client, Some(outbox.clone())),
            outbox,
        })
    }

    fn client(&self) -> &GatewayClient {
        self.chat.gateway()
    }

    async fn close(&self) {
        connect::finish(self.client()).await;
    }
}

/// Delivers what earlier runs left in the outbox for this gateway (typed while the
/// connection was down), oldest first, without waiting for their replies. Only when
/// connected now, and only entries no other process is working on.
async fn deliver_leftovers(connection: &ChatConnection, printer: &mut render::Printer) {
    if !connection.client().state().borrow().is_connected() {
        return;
    }
    let gateway = connection.chat.gateway_key();
    let Ok(entries) = connection.outbox.list(Some(&gateway)) else {
        return;
    };
    let mut transcripts = std::collections::HashMap::new();
    for mut entry in entries {
        let Ok(Some(_claim)) = connection.outbox.try_claim(&entry.idempotency_key) else {
            continue;
        };
        let deadline = tokio::time::Instant::now() + LEFTOVER_TIMEOUT;
        // Settled, not delivered: an entry the agent already sent may only be waiting to
        // show in the transcript, and sending it again after a gateway restart would be a
        // second copy.
        match connection
            .chat
            .settle(&mut entry, LEFTOVER_TIMEOUT, deadline, &mut transcripts)
            .await
        {
            Ok(Settled::Recorded | Settled::Waiting | Settled::DroppedByGateway) => {}
            Ok(Settled::Acknowledged(ack)) => {
                if printer.is_json() {
                    printer.line(json!({"event": "outbox.delivered", "idempotencyKey": ack.run_id, "status": ack.status, "sessionKey": ack.session_key}));
                } else {
                    printer.note(&format!(
                        "delivered a message that waited in the outbox: {}",
                        entry.preview(50)
                    ));
                }
            }
            Err(e) => {
                tracing::info!(key = %entry.idempotency_key, error = %e, "an outbox message is still not delivered");
                break;
            }
        }
    }
}

/// Waits for the connection, saying why each failed attempt failed and when the next one
/// comes (a refused port refuses at once: the user sees that, not minutes of
/// "connecting"). `give_up_after`: that many failed attempts in a row end the wait with the
/// last attempt's error (its layer and fix); `None`: only `deadline` does.
pub(crate) async fn wait_for_gateway(
    connection: &ChatConnection,
    printer: &mut render::Printer,
    deadline: tokio::time::Instant,
    give_up_after: Option<u32>,
    waiting_key: Option<&str>,
) -> Result<(), ChatError> {
    let started = tokio::time::Instant::now();
    let mut state = connection.client().state();
    let mut reported: Option<u32> = None;
    loop {
        let now = state.borrow_and_update().clone();
        match &now.phase {
            Phase::Connected if now.hello.is_some() => return Ok(()),
            Phase::Failed | Phase::Closed => {
                return Err(ChatError::Gateway(Box::new(
                    now.last_error.unwrap_or(GatewayError::Closed),
                )))
            }
            Phase::Reconnecting { attempt, retry_in } if reported != Some(*attempt) => {
                reported = Some(*attempt);
                let failures = attempt + 1;
                if let (Some(limit), Some(error)) = (give_up_after, &now.last_error) {
                    if failures >= limit {
                        return Err(ChatError::Gateway(Box::new(error.clone())));
                    }
                }
                let reason = now
                    .last_error
                    .as_ref()
                    .map_or_else(|| "no answer".to_owned(), ToString::to_string);
                if printer.is_json() {
                    printer.line(json!({
                        "event": "waiting",
                        "idempotencyKey": waiting_key,
                        "attempt": failures,
                        "reason": reason,
                        "retryInMs": retry_in.as_millis() as u64,
                    }));
                } else {
                    printer.note(&format!(
                        "attempt {failures} failed: {reason}; retrying in {}",
                        seconds(*retry_in)
                    ));
                }
            }
            _ => {}
        }
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return Err(ChatError::Gateway(Box::new(GatewayError::Closed)));
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let why = state.borrow().last_error.as_ref().map_or_else(
                    || state.borrow().label(),
                    ToString::to_string,
                );
                return Err(ChatError::Timeout {
                    what: format!("not connected to the gateway (last: {why})"),
                    after: deadline.saturating_duration_since(started),
                });
            }
        }
    }
}

/// `0.5 s`, `2 s`: a wait as a person reads it.
fn seconds(wait: Duration) -> String {
    let tenths = (wait.as_secs_f64() * 10.0).round() / 10.0;
    if tenths < 10.0 && tenths.fract() != 0.0 {
        format!("{tenths:.1} s")
    } else {
        format!("{} s", tenths.round())
    }
}

/// How long a leftover message may take to be acknowledged before the new one goes first.
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// `clawlink chat --outbox`.
async fn list_outbox(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let connector = Connector::new(settings).await?;
    let outbox = open_outbox(&connector)?;
    let gateway = connect::build_transport(settings)?.gateway_key();
    let entries = outbox.list(Some(&gateway)).map_err(chat_failure)?;
    if global.json {
        println!(
            "{}",
            json!({
                "gateway": gateway,
                "outbox": outbox.dir(),
                "pending": entries.iter().map(entry_json).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    if entries.is_empty() {
        println!("the outbox is empty: every message to {gateway} was acknowledged");
        return Ok(());
    }
    println!("{} message(s) waiting for {gateway}:", entries.len());
    for entry in &entries {
        let session = entry.session_key.as_deref().unwrap_or("main");
        let error = entry
            .last_error
            .as_deref()
            .map(|e| format!(" — last attempt: {e}"))
            .unwrap_or_default();
        crate::terminal::println_safe!(
            "  {}  {session}  {} attempt(s)  {}{error}",
            entry.idempotency_key,
            entry.attempts,
            entry.preview(60)
        );
    }
    println!("they are sent by a running agent (`clawlink up`) or the next `clawlink chat`; `clawlink chat --outbox --discard KEY|all` drops them");
    Ok(())
}

/// `clawlink chat --outbox --discard KEY|all`: drops waiting messages of this gateway
/// unsent. One named key goes at once (it was named); `all` asks first unless `--yes`.
/// A message another process is delivering right now is left alone.
async fn discard_outbox(
    global: &GlobalArgs,
    settings: &Settings,
    which: &str,
    yes: bool,
) -> Result<()> {
    let connector = Connector::new(settings).await?;
    let outbox = open_outbox(&connector)?;
    let gateway = connect::build_transport(settings)?.gateway_key();
    let entries = outbox.list(Some(&gateway)).map_err(chat_failure)?;
    let chosen = choose_discarded(&entries, which, &gateway)?;
    if which == "all" && !chosen.is_empty() {
        if !yes && !std::io::stdin().is_terminal() {
            return Err(Failure::config(
                format!(
                    "not discarding {} waiting message(s) without confirmation (no terminal to ask on)",
                    chosen.len()
                ),
                Some("re-run with --yes to discard them all, or name one with --discard KEY".into()),
            )
            .into());
        }
        crate::prompt::consent(
            yes,
            "discarding the outbox",
            format!(
                "discard {} waiting message(s) to {gateway} without sending them?",
                chosen.len()
            ),
        )
        .await?;
    }
    let mut discarded = Vec::new();
    let mut busy = Vec::new();
    for entry in chosen {
        match outbox
            .try_claim(&entry.idempotency_key)
            .map_err(chat_failure)?
        {
            Some(_claim) => {
                outbox.remove(entry).map_err(chat_failure)?;
                discarded.push(entry);
            }
            None => busy.push(entry),
        }
    }
    if global.json {
        println!(
            "{}",
            json!({
                "gateway": gateway,
                "discarded": discarded.iter().map(|e| &e.idempotency_key).collect::<Vec<_>>(),
                "busy": busy.iter().map(|e| &e.idempotency_key).collect::<Vec<_>>(),
            })
        );
    } else {
        if discarded.is_empty() && busy.is_empty() {
            println!("the outbox is empty: nothing to discard for {gateway}");
        }
        for entry in &discarded {
            println!("discarded {}  {}", entry.idempotency_key, entry.preview(60));
        }
    }
    if busy.is_empty() {
        return Ok(());
    }
    Err(Failure::agent(
        format!(
            "{} message(s) are being delivered by another clawlink process right now and were kept: {}",
            busy.len(),
            busy.iter()
                .map(|e| e.idempotency_key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some("stop that `clawlink chat` or agent first, or let it deliver them".into()),
    )
    .into())
}

/// The entries `which` names: `all`, or the one whose key is `which` or starts with it.
fn choose_discarded<'a>(
    entries: &'a [OutboxEntry],
    which: &str,
    gateway: &str,
) -> Result<Vec<&'a OutboxEntry>, Failure> {
    if which == "all" {
        return Ok(entries.iter().collect());
    }
    if let Some(exact) = entries.iter().find(|e| e.idempotency_key == which) {
        return Ok(vec![exact]);
    }
    let matching: Vec<&OutboxEntry> = if which.is_empty() {
        Vec::new()
    } else {
        entries
            .iter()
            .filter(|e| e.idempotency_key.starts_with(which))
            .collect()
    };
    match matching.len() {
        1 => Ok(matching),
        0 => Err(Failure::config(
            format!("no message with key {which:?} waits in the outbox for {gateway}"),
            Some("`clawlink chat --outbox` lists the waiting messages and their keys".into()),
        )),
        n => Err(Failure::config(
            format!("{which:?} starts {n} waiting messages' keys"),
            Some("give more of the key (`clawlink chat --outbox` lists them)".into()),
        )),
    }
}

/// A chat error for the user: gateway errors keep their layer and fix.
pub(crate) fn chat_failure(error: ChatError) -> Failure {
    let fix = error.fix();
    let (layer, exit_code) = match &error {
        ChatError::Gateway(e) | ChatError::Rejected(e) => {
            let mut failure = Failure::from((**e).clone());
            if matches!(error, ChatError::Rejected(_)) {
                failure.message = error.to_string();
            }
            return failure;
        }
        ChatError::Outbox { .. } => ("outbox", 1),
        ChatError::Attachment { .. } => ("attachment", 2),
        ChatError::Timeout { .. } => ("chat", 1),
        ChatError::NoReply(_) => ("chat", 1),
    };
    let message = error.to_string();
    Failure {
        json: json!({"layer": layer, "message": message, "fix": fix}),
        layer: layer.into(),
        message,
        fix,
        exit_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> OutboxEntry {
        let mut entry = OutboxEntry::new("ws://gw", None, "hi", Vec::new());
        entry.idempotency_key = key.into();
        entry
    }

    #[test]
    fn discarding_names_one_message_by_its_key_or_a_unique_start_or_all() {
        let entries = [entry("abc123"), entry("abd456"), entry("xyz")];
        let keys = |chosen: Vec<&OutboxEntry>| {
            chosen
                .iter()
                .map(|e| e.idempotency_key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(choose_discarded(&entries, "abc123", "gw").unwrap()),
            ["abc123"]
        );
        assert_eq!(
            keys(choose_discarded(&entries, "abd", "gw").unwrap()),
            ["abd456"]
        );
        assert_eq!(choose_discarded(&entries, "all", "gw").unwrap().len(), 3);
        let ambiguous = choose_discarded(&entries, "ab", "gw").unwrap_err();
        assert!(
            ambiguous.message.contains("starts 2"),
            "{}",
            ambiguous.message
        );
        let unknown = choose_discarded(&entries, "nope", "gw").unwrap_err();
        assert_eq!(unknown.exit_code, 2);
        assert!(unknown.fix.unwrap().contains("--outbox"));
        assert!(choose_discarded(&entries, "", "gw").is_err());
    }

    #[test]
    fn waits_read_as_seconds() {
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
        assert_eq!(seconds(Duration::from_secs(2)), "2 s");
        assert_eq!(seconds(Duration::from_millis(4_960)), "5 s");
    }
}
