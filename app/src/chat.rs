//! `clawlink chat`: the gateway's web chat in the terminal, over the profile's transport.
//!
//! The chat protocol (outbox, exactly-once send, reply stream, history) is the webchat
//! plugin's library; this module is the terminal around it: `one_shot` (`-m TEXT` or
//! stdin, `--json` event lines), `interactive` (a line editor with history and slash
//! commands), `render` (how updates are printed).

mod interactive;
mod one_shot;
mod render;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use clawlink_core::gateway::{Backoff, GatewayClient};
use clawlink_feature_webchat::client::ChatClient;
use clawlink_feature_webchat::outbox::Outbox;
use clawlink_feature_webchat::{entry_json, ChatError, OUTBOX_DIR};
use serde_json::json;

use crate::cli::{ChatArgs, GlobalArgs};
use crate::connect::{self, Connector};
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink chat`.
pub async fn chat(global: &GlobalArgs, settings: &Settings, args: &ChatArgs) -> Result<()> {
    if args.timeout == 0 {
        return Err(Failure::config(
            "--timeout must be at least 1 second",
            Some("pass --timeout SECS, e.g. --timeout 120".into()),
        )
        .into());
    }
    if args.outbox {
        return list_outbox(global, settings).await;
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
}

impl ChatConnection {
    async fn open(global: &GlobalArgs, settings: &Settings) -> Result<Self, Failure> {
        let connector = Connector::new(global, settings).await?;
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
    for mut entry in entries {
        let Ok(Some(_claim)) = connection.outbox.try_claim(&entry.idempotency_key) else {
            continue;
        };
        let deadline = tokio::time::Instant::now() + LEFTOVER_TIMEOUT;
        let mut quiet = |_| {};
        match connection
            .chat
            .deliver(&mut entry, LEFTOVER_TIMEOUT, deadline, &mut quiet)
            .await
        {
            Ok(ack) => {
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

/// How long a leftover message may take to be acknowledged before the new one goes first.
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// `clawlink chat --outbox`.
async fn list_outbox(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let connector = Connector::new(global, settings).await?;
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
    println!("they are sent by a running agent (`clawlink up`) or the next `clawlink chat`");
    Ok(())
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
