//! `clawlink chat -m TEXT` (or text on stdin): one message, delivered exactly once, its final reply printed; Ctrl-C during the reply aborts the run.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use clawlink_feature_webchat::attach::{self, Attachment};
use clawlink_feature_webchat::client::{ChatUpdate, Outcome};
use clawlink_feature_webchat::stream::{ChatState, TextChange};
use clawlink_feature_webchat::CancellationToken;
use clawlink_feature_webchat::ChatError;
use serde_json::json;
use tokio::time::Instant;

use super::render::{Notes, Printer};
use super::{chat_failure, ChatArgs, ChatConnection};
use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::settings::Settings;

/// How long one `chat.send` waits for its acknowledgement before it goes out again.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long attachments may wait for the first connection (their limits come with it).
const LIMITS_WAIT: Duration = Duration::from_secs(15);
/// Failed connection attempts in a row after which a one-shot message gives up (about a
/// second with the chat's backoff) when no --timeout was given: like `ssh` or `gh`, a
/// command that cannot reach its server says why at once. The message stays in the outbox
/// for the agent or the next chat. An explicit --timeout waits for the gateway that long.
const CONNECT_ATTEMPTS: u32 = 3;
/// The whole exchange's limit without --timeout: an agent's run with tools takes minutes.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) async fn run(
    global: &GlobalArgs,
    settings: &Settings,
    args: &ChatArgs,
    text: String,
) -> Result<()> {
    let mut printer = if global.json {
        Printer::json()
    } else {
        let stderr_tty = std::io::stderr().is_terminal();
        Printer::text(
            std::io::stdout().is_terminal(),
            Notes::Stderr,
            stderr_tty,
            stderr_tty && crate::style::stderr_colours(),
        )
    };
    let connection = ChatConnection::open(settings).await?;
    let result = send_and_follow(&connection, args, text, &mut printer).await;
    connection.close().await;
    let outcome = result?;
    match outcome.state {
        ChatState::Final => Ok(()),
        ChatState::Aborted => Err(Failure {
            layer: "chat".into(),
            message: "the reply was aborted".into(),
            fix: None,
            exit_code: 1,
            json: serde_json::Value::Null,
        }
        .into()),
        _ => Err(Failure {
            layer: "chat".into(),
            message: format!(
                "the run ended with an error: {}",
                outcome.error.as_deref().unwrap_or("no detail")
            ),
            fix: Some("see the gateway log (`clawlink logs`)".into()),
            exit_code: 1,
            json: serde_json::Value::Null,
        }
        .into()),
    }
}

/// Ctrl-C: the first aborts the reply (or stops waiting for the gateway), the second ends
/// the program at once.
fn interrupts(abort: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        abort.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

async fn send_and_follow(
    connection: &ChatConnection,
    args: &ChatArgs,
    text: String,
    printer: &mut Printer,
) -> Result<Outcome> {
    let chat = &connection.chat;
    let deadline = Instant::now() + args.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let abort = CancellationToken::new();
    interrupts(abort.clone());

    let attachments = load_attachments(connection, args, deadline).await?;
    // Subscribed before anything is sent: the reply's first events must not be missed.
    let mut events = connection.client().subscribe();
    let mut entry = chat
        .compose(args.session.clone(), text, attachments)
        .map_err(chat_failure)?;
    // Held while this process works on it: a running agent leaves it alone meanwhile.
    let _claim = connection
        .outbox
        .try_claim(&entry.idempotency_key)
        .map_err(chat_failure)?;
    if printer.is_json() {
        printer.line(json!({
            "event": "queued",
            "idempotencyKey": entry.idempotency_key,
            "sessionKey": entry.session_key,
            "outbox": connection.outbox.dir(),
        }));
    }
    // Each failed attempt is shown with its reason. Without --timeout an unreachable
    // gateway is reported after a few; with it, the wait lasts until the deadline.
    let give_up_after = args.timeout.is_none().then_some(CONNECT_ATTEMPTS);
    let reached = tokio::select! {
        reached = super::wait_for_gateway(
            connection,
            printer,
            deadline,
            give_up_after,
            Some(&entry.idempotency_key),
        ) => reached,
        _ = abort.cancelled() => Err(ChatError::Timeout {
            what: "interrupted before the gateway was reached".into(),
            after: Duration::ZERO,
        }),
    };
    if let Err(error) = reached {
        let mut failure = chat_failure(error);
        failure.message = format!(
            "{} — message {} was not sent; it waits in the outbox (`clawlink chat --outbox` lists or discards it)",
            failure.message, entry.idempotency_key
        );
        if let Some(fields) = failure.json.as_object_mut() {
            fields.insert("message".into(), json!(failure.message));
            fields.insert("idempotencyKey".into(), json!(entry.idempotency_key));
        }
        return Err(failure.into());
    }
    // The history cursor from before the send: a catch-up read then returns the whole run.
    let cursor = if connection.client().state().borrow().is_connected() {
        let session = chat.session_defaults().canonical(args.session.as_deref());
        chat.cursor(&session).await
    } else {
        None
    };

    let key = entry.idempotency_key.clone();
    let mut observe = |update: ChatUpdate| printer.update(&update);
    let ack = tokio::select! {
        ack = chat.deliver(&mut entry, ACK_TIMEOUT, deadline, &mut observe) => ack,
        _ = abort.cancelled() => Err(ChatError::Timeout {
            what: format!("interrupted before the gateway acknowledged message {key}; it stays in the outbox"),
            after: Duration::ZERO,
        }),
    }
    .map_err(chat_failure)?;
    // Connected now: what earlier runs could not deliver goes out too (the reply's events
    // are buffered meanwhile).
    super::deliver_leftovers(connection, printer).await;

    let mut streamed = 0usize;
    let mut observe = |update: ChatUpdate| {
        if let ChatUpdate::Text(TextChange::Appended(s) | TextChange::Replaced(s)) = &update {
            streamed += s.len();
        }
        printer.update(&update);
    };
    let outcome = chat
        .follow(
            &ack,
            &mut events,
            cursor.as_deref(),
            deadline,
            &abort,
            &mut observe,
        )
        .await
        .map_err(chat_failure)?;
    printer.finish(&outcome, streamed);
    Ok(outcome)
}

async fn load_attachments(
    connection: &ChatConnection,
    args: &ChatArgs,
    deadline: Instant,
) -> Result<Vec<Attachment>> {
    if args.attach.is_empty() {
        return Ok(Vec::new());
    }
    // The limits are the gateway's (hello-ok policy): wait a little for the connection.
    let wait = deadline.min(Instant::now() + LIMITS_WAIT);
    if let Err(e) = connection.chat.wait_connected(wait).await {
        tracing::info!(error = %e, "attachments checked against the default limits");
    }
    let limits = connection.chat.attachment_limits();
    let mut loaded = Vec::new();
    for path in &args.attach {
        loaded.push(attach::load(path, &limits).map_err(chat_failure)?);
    }
    attach::check_total(args.message.as_deref().unwrap_or(""), &loaded, &limits)
        .map_err(chat_failure)?;
    Ok(loaded)
}
