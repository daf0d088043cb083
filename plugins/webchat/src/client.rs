//! The chat protocol over a supervised gateway connection: history, sessions, exactly-once `chat.send` from the outbox, following a reply across reconnects, abort.
//!
//! Exactly once: a message is in the outbox (fsync'd) before its first `chat.send`, and
//! every attempt carries the same idempotency key. When the connection drops before the
//! acknowledgement, the client waits for the next connection and sends it again; the
//! gateway answers `started` (it never got it), `in_flight` or the cached result (it did).
//! Only an acknowledgement, or a refusal that retrying cannot change, removes the entry.
//!
//! Nothing lost: the reply is assembled from `chat` events; after a reconnect (or a gap in
//! the events) the client reads `chat.history` — incrementally with the cursor taken before
//! sending, when it has one — and takes the run's reply from the transcript, or its live
//! text while it still runs, then keeps listening.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clawlink_core::gateway::{GatewayClient, GatewayError, GatewayEvent, Phase, RequestOptions};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::attach::AttachmentLimits;
use crate::error::ChatError;
use crate::history::{self, RunInHistory};
use crate::outbox::{Acknowledged, Outbox, OutboxEntry};
use crate::session::SessionDefaults;
use crate::stream::{activity_line, ChatEvent, ChatState, ReplyAssembler, TextChange};
use clawlink_core::time::now_unix_millis;

/// How long a silent run may go without an event before the history is read.
const SILENCE_BEFORE_RESYNC: Duration = Duration::from_secs(15);
/// The pace of history reads while a reconnect left us unsure where the run is.
const RESYNC_POLL: Duration = Duration::from_secs(2);
/// How many history reads must agree that a run ended without a reply before we say so
/// (a queued message shows neither a reply nor an active run for a moment).
const ENDED_WITHOUT_REPLY_CONFIRMATIONS: u32 = 3;
/// How long to wait for the `aborted` event after `chat.abort` before asking the history.
const ABORT_GRACE: Duration = Duration::from_secs(10);
/// How long a send waits for the connection before it says it is waiting.
const CONNECT_GRACE: Duration = Duration::from_secs(3);

/// Something that happened while sending or following, for the user interface (`--json`
/// prints each as one line).
#[derive(Debug, Clone, PartialEq)]
pub enum ChatUpdate {
    /// The gateway is not connected; the message waits (in the outbox).
    WaitingForGateway { key: String, reason: String },
    /// `chat.send` is being written (`attempt` counts from 1).
    Sending {
        key: String,
        attempt: u32,
        session_key: String,
    },
    /// An attempt got no acknowledgement; the same key goes out again.
    Retrying {
        key: String,
        attempt: u32,
        reason: String,
    },
    /// The gateway acknowledged (`started`, `in_flight`, `ok`, …).
    Acknowledged { key: String, status: String },
    /// A `chat` event of the followed run (the raw payload and what it means).
    Chat { payload: Value, event: ChatEvent },
    /// An `agent` event of the followed run.
    Agent { payload: Value },
    /// The shown reply text changed.
    Text(TextChange),
    /// One line of activity (a tool, a run phase).
    Activity(String),
    /// The connection came back (a new generation) while following.
    Reconnected { generation: u64 },
    /// The history was read to catch up with the run.
    Resynced { running: bool, replies: usize },
    /// `chat.abort` was sent for the run.
    AbortRequested { run_id: String },
}

/// How a followed run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub run_id: String,
    pub session_key: String,
    /// `final`, `aborted` or `error`.
    pub state: ChatState,
    /// The reply (or what there was of it).
    pub text: String,
    /// The abort or error reason.
    pub error: Option<String>,
    /// The end was read from the history (its events were missed).
    pub from_history: bool,
}

/// What happens to an outbox entry once the gateway acknowledged it.
#[derive(Debug, Clone, Copy)]
enum AfterAck {
    /// The caller follows the reply (so sees the message recorded): removed at once.
    Remove,
    /// Nobody follows it: kept, marked acknowledged, until the transcript shows it.
    KeepUntilRecorded,
}

/// Where [`ChatClient::settle`] left an outbox entry.
#[derive(Debug)]
pub enum Settled {
    /// Sent and acknowledged now; kept until the transcript shows it.
    Acknowledged(Ack),
    /// The transcript shows it: removed from the outbox.
    Recorded,
    /// Acknowledged earlier, queued at the gateway, not recorded yet.
    Waiting,
    /// The gateway dropped it at its queue cap and recorded a summary instead: removed.
    DroppedByGateway,
}

/// How many newest history entries [`ChatClient::settle`] searches for a message.
pub const RECORD_SEARCH_LIMIT: u32 = 200;
/// How long an acknowledged message may stay unseen in the transcript before the outbox
/// stops watching it (a queue that long is no queue; the page may have moved past it).
pub const RECORD_WAIT_LIMIT: Duration = Duration::from_secs(600);

/// The gateway's acknowledgement of `chat.send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub run_id: String,
    pub session_key: String,
    /// `started`, `in_flight`, `ok`, or another status the gateway cached.
    pub status: String,
    pub attempts: u32,
    /// The connection generation the acknowledgement came on: events of the run sent
    /// before a later connection are lost, and [`ChatClient::follow`] catches up.
    pub generation: u64,
}

impl Ack {
    /// Whether the run had already ended when the acknowledgement came (a cached result).
    pub fn already_finished(&self) -> bool {
        !matches!(self.status.as_str(), "started" | "in_flight" | "accepted")
    }
}

/// The chat operations of one gateway connection.
#[derive(Clone)]
pub struct ChatClient {
    gateway: GatewayClient,
    outbox: Option<Outbox>,
}

impl ChatClient {
    /// `outbox`: where messages wait until acknowledged (`None`: in memory only, as for a
    /// host without a state directory).
    pub fn new(gateway: GatewayClient, outbox: Option<Outbox>) -> Self {
        Self { gateway, outbox }
    }

    pub fn gateway(&self) -> &GatewayClient {
        &self.gateway
    }

    pub fn outbox(&self) -> Option<&Outbox> {
        self.outbox.as_ref()
    }

    /// The gateway this client reaches, as outbox entries name it.
    pub fn gateway_key(&self) -> String {
        self.gateway.transport().gateway_key()
    }

    /// The session defaults of the current (or last) connection.
    pub fn session_defaults(&self) -> SessionDefaults {
        self.gateway
            .hello()
            .map(|h| SessionDefaults::from_snapshot(&h.snapshot))
            .unwrap_or_default()
    }

    /// The attachment limits the gateway announced (the defaults before any hello).
    pub fn attachment_limits(&self) -> AttachmentLimits {
        let policy = self
            .gateway
            .hello()
            .map(|h| h.policy.clone())
            .unwrap_or_default();
        AttachmentLimits::from_policy(&policy)
    }

    /// A new message for `session_key` (`None`: the main session), written to the outbox
    /// before anything is sent.
    pub fn compose(
        &self,
        session_key: Option<String>,
        message: String,
        attachments: Vec<crate::attach::Attachment>,
    ) -> Result<OutboxEntry, ChatError> {
        let entry = OutboxEntry::new(self.gateway_key(), session_key, message, attachments);
        if let Some(outbox) = &self.outbox {
            outbox.put(&entry)?;
        }
        Ok(entry)
    }

    /// Waits until the connection is up; `Timeout` at `deadline`, the gateway's error when
    /// the client failed for good.
    pub async fn wait_connected(&self, deadline: Instant) -> Result<u64, ChatError> {
        let started = Instant::now();
        let mut state = self.gateway.state();
        loop {
            {
                let now = state.borrow_and_update();
                match &now.phase {
                    Phase::Connected if now.hello.is_some() => return Ok(now.generation),
                    Phase::Failed => {
                        return Err(ChatError::Gateway(Box::new(
                            now.last_error.clone().unwrap_or(GatewayError::Closed),
                        )))
                    }
                    Phase::Closed => {
                        return Err(ChatError::Gateway(Box::new(GatewayError::Closed)))
                    }
                    _ => {}
                }
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return Err(ChatError::Gateway(Box::new(GatewayError::Closed)));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let reason = self.gateway.state().borrow().label();
                    return Err(ChatError::Timeout {
                        what: format!("not connected to the gateway ({reason})"),
                        after: deadline.saturating_duration_since(started),
                    });
                }
            }
        }
    }

    fn why_not_connected(&self) -> String {
        let state = self.gateway.state();
        let now = state.borrow();
        match &now.last_error {
            Some(e) => format!("{}: {e}", now.label()),
            None => now.label(),
        }
    }

    /// Sends `entry` until the gateway acknowledges it, re-sending with the same key after
    /// each lost connection, and removes it from the outbox on the acknowledgement (or on a
    /// refusal that retrying cannot change). `ack_timeout` bounds each attempt; `deadline`
    /// the whole delivery (the entry stays in the outbox when it passes).
    pub async fn deliver(
        &self,
        entry: &mut OutboxEntry,
        ack_timeout: Duration,
        deadline: Instant,
        observer: &mut (dyn FnMut(ChatUpdate) + Send),
    ) -> Result<Ack, ChatError> {
        self.send_entry(entry, ack_timeout, deadline, observer, AfterAck::Remove)
            .await
    }

    /// Brings an outbox entry one step closer to the transcript, without waiting for its
    /// reply (the agent's drain and `clawlink chat`'s leftovers):
    /// - not yet acknowledged: sent (as [`deliver`](Self::deliver)), then kept, marked
    ///   acknowledged: [`Settled::Acknowledged`];
    /// - acknowledged, and the session's transcript shows it: removed, [`Settled::Recorded`];
    /// - acknowledged by a gateway process that has since restarted, and not in the
    ///   transcript: it was lost with that process's queue, so it is sent again with the
    ///   same key (the new process has no record of it);
    /// - acknowledged by this process and not yet recorded (queued behind a running reply):
    ///   [`Settled::Waiting`], looked at again later; after [`RECORD_WAIT_LIMIT`] it is
    ///   taken as recorded (beyond the history page, or the gateway dropped it for good).
    ///
    /// `transcripts` caches the history pages read, by session, for one pass over the
    /// outbox: many queued messages of one session cost one read.
    pub async fn settle(
        &self,
        entry: &mut OutboxEntry,
        ack_timeout: Duration,
        deadline: Instant,
        transcripts: &mut HashMap<String, Value>,
    ) -> Result<Settled, ChatError> {
        if let Some(acknowledged) = entry.acknowledged.clone() {
            let history = match transcripts.get(&acknowledged.session_key) {
                Some(page) => page,
                None => {
                    let page = self
                        .history(&acknowledged.session_key, RECORD_SEARCH_LIMIT)
                        .await?;
                    transcripts
                        .entry(acknowledged.session_key.clone())
                        .or_insert(page)
                }
            };
            if RunInHistory::find(history, &entry.idempotency_key).user_messages > 0 {
                self.forget(entry)?;
                return Ok(Settled::Recorded);
            }
            if history::dropped_at_queue_cap(history, &entry.idempotency_key) {
                tracing::warn!(key = %entry.idempotency_key, "the gateway dropped this message at its queue cap (its transcript has a summary instead)");
                self.forget(entry)?;
                return Ok(Settled::DroppedByGateway);
            }
            let boot_now = self.boot_id();
            let restarted = acknowledged.boot_id.is_some() && boot_now != acknowledged.boot_id;
            if !restarted {
                let age = now_unix_millis().saturating_sub(acknowledged.at_ms);
                if age >= RECORD_WAIT_LIMIT.as_millis() as u64 {
                    tracing::warn!(key = %entry.idempotency_key, "acknowledged long ago and never seen in the transcript; no longer watched");
                    self.forget(entry)?;
                    return Ok(Settled::Recorded);
                }
                return Ok(Settled::Waiting);
            }
            tracing::warn!(key = %entry.idempotency_key, "the gateway restarted before recording an acknowledged message; sending it again");
            entry.acknowledged = None;
            self.persist(entry)?;
        }
        let mut quiet = |_| {};
        self.send_entry(
            entry,
            ack_timeout,
            deadline,
            &mut quiet,
            AfterAck::KeepUntilRecorded,
        )
        .await
        .map(Settled::Acknowledged)
    }

    fn boot_id(&self) -> Option<String> {
        self.gateway.hello().and_then(|h| h.server.boot_id.clone())
    }

    fn forget(&self, entry: &OutboxEntry) -> Result<(), ChatError> {
        match &self.outbox {
            Some(outbox) => outbox.remove(entry),
            None => Ok(()),
        }
    }

    async fn send_entry(
        &self,
        entry: &mut OutboxEntry,
        ack_timeout: Duration,
        deadline: Instant,
        observer: &mut (dyn FnMut(ChatUpdate) + Send),
        after_ack: AfterAck,
    ) -> Result<Ack, ChatError> {
        let key = entry.idempotency_key.clone();
        let delivering_since = Instant::now();
        loop {
            if !self.gateway.state().borrow().is_connected() {
                // The first connection of a fresh client takes a moment: only a wait that
                // lasts is worth telling the user about.
                let grace = deadline.min(Instant::now() + CONNECT_GRACE);
                if let Err(ChatError::Timeout { .. }) = self.wait_connected(grace).await {
                    observer(ChatUpdate::WaitingForGateway {
                        key: key.clone(),
                        reason: self.why_not_connected(),
                    });
                }
            }
            let generation = self.wait_connected(deadline).await.map_err(|e| match e {
                // The whole wait, not only its last stretch.
                ChatError::Timeout { what, .. } => ChatError::Timeout {
                    what,
                    after: delivering_since.elapsed(),
                },
                other => other,
            })?;
            let session_key = self
                .session_defaults()
                .canonical(entry.session_key.as_deref());
            entry.attempts += 1;
            self.persist(entry)?;
            observer(ChatUpdate::Sending {
                key: key.clone(),
                attempt: entry.attempts,
                session_key: session_key.clone(),
            });
            let remaining = deadline.saturating_duration_since(Instant::now());
            let options = RequestOptions {
                timeout: Some(ack_timeout.min(remaining).max(Duration::from_millis(1))),
                expect_final: false,
            };
            let result = self
                .gateway
                .request_with("chat.send", send_params(entry, &session_key), options)
                .await;
            match result {
                Ok(payload) => {
                    match after_ack {
                        AfterAck::Remove => self.forget(entry)?,
                        AfterAck::KeepUntilRecorded => {
                            entry.acknowledged = Some(Acknowledged {
                                at_ms: now_unix_millis(),
                                session_key: session_key.clone(),
                                boot_id: self.boot_id(),
                            });
                            entry.last_error = None;
                            self.persist(entry)?;
                        }
                    }
                    let status = payload
                        .get("status")
                        .and_then(Value::as_str)
                        .unwrap_or("ok")
                        .to_owned();
                    observer(ChatUpdate::Acknowledged {
                        key: key.clone(),
                        status: status.clone(),
                    });
                    let run_id = payload
                        .get("runId")
                        .and_then(Value::as_str)
                        .unwrap_or(&key)
                        .to_owned();
                    return Ok(Ack {
                        run_id,
                        session_key,
                        status,
                        attempts: entry.attempts,
                        generation,
                    });
                }
                Err(error) if error.is_retryable() => {
                    entry.last_error = Some(error.to_string());
                    self.persist(entry)?;
                    observer(ChatUpdate::Retrying {
                        key: key.clone(),
                        attempt: entry.attempts,
                        reason: error.to_string(),
                    });
                    if Instant::now() >= deadline {
                        return Err(ChatError::Timeout {
                            what: format!("no acknowledgement of message {key} ({error})"),
                            after: ack_timeout,
                        });
                    }
                    let pause = match &error {
                        GatewayError::Rpc { error: shape, .. } => {
                            Duration::from_millis(shape.retry_after_ms.unwrap_or(500))
                        }
                        GatewayError::Unavailable { retry_after, .. } => {
                            retry_after.unwrap_or(Duration::from_millis(500))
                        }
                        // A lost connection: the wait for the next one is the pause.
                        _ => Duration::ZERO,
                    };
                    tokio::time::sleep(pause.min(Duration::from_secs(5))).await;
                }
                Err(error @ GatewayError::Rpc { .. }) => {
                    // Refused for good: keeping it would re-send it forever.
                    if let Some(outbox) = &self.outbox {
                        outbox.remove(entry)?;
                    }
                    return Err(ChatError::Rejected(Box::new(error)));
                }
                Err(error) => {
                    entry.last_error = Some(error.to_string());
                    self.persist(entry)?;
                    return Err(ChatError::Gateway(Box::new(error)));
                }
            }
        }
    }

    fn persist(&self, entry: &OutboxEntry) -> Result<(), ChatError> {
        match &self.outbox {
            Some(outbox) => outbox.put(entry),
            None => Ok(()),
        }
    }

    /// One history page (`limit` newest messages) of `session_key`.
    pub async fn history(&self, session_key: &str, limit: u32) -> Result<Value, ChatError> {
        Ok(self
            .gateway
            .request(
                "chat.history",
                json!({"sessionKey": session_key, "limit": limit.clamp(1, 1000)}),
            )
            .await?)
    }

    /// What changed since `cursor` (`kind: "delta"`), or `kind: "reset"` when the gateway
    /// cannot say.
    pub async fn history_since(&self, session_key: &str, cursor: &str) -> Result<Value, ChatError> {
        Ok(self
            .gateway
            .request(
                "chat.history",
                json!({"sessionKey": session_key, "cursor": cursor}),
            )
            .await?)
    }

    /// The newest sessions (`sessions.list`).
    pub async fn sessions(&self, limit: u32) -> Result<Vec<Value>, ChatError> {
        let result = self
            .gateway
            .request(
                "sessions.list",
                json!({"limit": limit.clamp(1, 500), "includeDerivedTitles": true, "includeLastMessage": true}),
            )
            .await?;
        Ok(result
            .get("sessions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// `chat.abort` for one run.
    pub async fn abort(&self, session_key: &str, run_id: &str) -> Result<Value, ChatError> {
        Ok(self
            .gateway
            .request(
                "chat.abort",
                json!({"sessionKey": session_key, "runId": run_id}),
            )
            .await?)
    }

    /// Reads what the history says about the run: the delta since `cursor` when there is
    /// one (and the gateway can give it), else the newest page.
    async fn run_in_history(
        &self,
        session_key: &str,
        run_id: &str,
        cursor: Option<&str>,
    ) -> Result<RunInHistory, ChatError> {
        if let Some(cursor) = cursor {
            let delta = self.history_since(session_key, cursor).await?;
            if !history::is_reset(&delta) {
                return Ok(RunInHistory::find(&delta, run_id));
            }
        }
        let page = self.history(session_key, 100).await?;
        Ok(RunInHistory::find(&page, run_id))
    }

    /// Follows the run `ack` started until it ends: events as they come, the history after
    /// a reconnect or a silence. `events` must have been subscribed before the message was
    /// sent. `cursor`: the history cursor taken before sending, for incremental catch-up.
    /// Cancelling `abort` sends `chat.abort` (again after a reconnect if it could not go
    /// out) and waits for the run to end.
    pub async fn follow(
        &self,
        ack: &Ack,
        events: &mut broadcast::Receiver<Arc<GatewayEvent>>,
        cursor: Option<&str>,
        deadline: Instant,
        abort: &CancellationToken,
        observer: &mut (dyn FnMut(ChatUpdate) + Send),
    ) -> Result<Outcome, ChatError> {
        let run_id = ack.run_id.as_str();
        let session_key = ack.session_key.as_str();
        let followed_since = Instant::now();
        let mut reply = ReplyAssembler::new();
        let mut state = self.gateway.state();
        let mut generation = ack.generation;
        // A cached acknowledgement means the run is over: its events are gone.
        let mut resync_due = ack.already_finished();
        let mut polling = false;
        {
            // The connection that acknowledged may be gone already (lost between the
            // acknowledgement and now): what it carried is read from the history.
            let now = state.borrow_and_update();
            if now.is_connected() && now.generation != generation {
                generation = now.generation;
                resync_due = true;
                polling = true;
                drop(now);
                observer(ChatUpdate::Reconnected { generation });
            }
        }
        let mut last_event = Instant::now();
        let mut last_resync = Instant::now();
        let mut events_open = true;
        let mut abort_sent = false;
        let mut abort_sent_at: Option<Instant> = None;
        let mut ended_without_reply = 0u32;
        let mut last_activity: Option<String> = None;
        let done = |reply: &ReplyAssembler, from_history: bool| Outcome {
            run_id: run_id.to_owned(),
            session_key: session_key.to_owned(),
            state: reply.outcome().cloned().unwrap_or(ChatState::Final),
            text: reply.text().to_owned(),
            error: reply.error().map(str::to_owned),
            from_history,
        };
        loop {
            let connected = state.borrow().is_connected();
            if connected && abort.is_cancelled() && !abort_sent {
                match self.abort(session_key, run_id).await {
                    Ok(_) => {
                        abort_sent = true;
                        abort_sent_at = Some(Instant::now());
                        observer(ChatUpdate::AbortRequested {
                            run_id: run_id.to_owned(),
                        });
                    }
                    // Sent again once the connection is back.
                    Err(e) => tracing::debug!(error = %e, "chat.abort did not go out"),
                }
            }
            if connected && resync_due {
                resync_due = false;
                last_resync = Instant::now();
                match self.run_in_history(session_key, run_id, cursor).await {
                    Ok(found) => {
                        observer(ChatUpdate::Resynced {
                            running: found.running,
                            replies: found.replies,
                        });
                        if found.finished_with_reply() {
                            if let Some(change) =
                                reply.set_text(found.reply_text.clone().unwrap_or_default())
                            {
                                observer(ChatUpdate::Text(change));
                            }
                            let state = match found.stop_reason.as_deref() {
                                Some("aborted") => ChatState::Aborted,
                                Some("error") => ChatState::Error,
                                _ => ChatState::Final,
                            };
                            reply.finish(state, None);
                            return Ok(done(&reply, true));
                        }
                        if found.running {
                            ended_without_reply = 0;
                            if let Some(live) = found.live_text {
                                if let Some(change) = reply.set_text(live) {
                                    observer(ChatUpdate::Text(change));
                                }
                            }
                        } else if found.user_messages > 0 || abort_sent {
                            ended_without_reply += 1;
                            if ended_without_reply >= ENDED_WITHOUT_REPLY_CONFIRMATIONS
                                || abort_sent
                            {
                                let state = if abort_sent {
                                    ChatState::Aborted
                                } else {
                                    ChatState::Error
                                };
                                reply.finish(state, None);
                                if abort_sent {
                                    return Ok(done(&reply, true));
                                }
                                return Err(ChatError::NoReply(format!(
                                    "run {run_id} ended without a reply in {session_key}"
                                )));
                            }
                        }
                        // Still unsure (or still running after a gap): look again soon,
                        // unless the events come back first.
                        polling = !found.running || polling;
                    }
                    Err(ChatError::Gateway(e)) if e.is_retryable() => {
                        tracing::debug!(error = %e, "history read failed; retrying after reconnect");
                        polling = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            let next_look = if polling {
                last_resync + RESYNC_POLL
            } else if let Some(sent) = abort_sent_at {
                sent + ABORT_GRACE
            } else {
                last_event + SILENCE_BEFORE_RESYNC
            };
            tokio::select! {
                event = events.recv(), if events_open => match event {
                    Ok(event) => {
                        let payload = &event.payload;
                        let ours = payload.get("runId").and_then(Value::as_str) == Some(run_id);
                        if !ours {
                            continue;
                        }
                        last_event = Instant::now();
                        match event.event.as_str() {
                            "chat" => {
                                let Some(parsed) = ChatEvent::parse(payload) else { continue };
                                polling = false;
                                observer(ChatUpdate::Chat { payload: payload.clone(), event: parsed.clone() });
                                if let Some(phase) = &parsed.phase {
                                    let line = format!("… {}", phase.replace('_', " "));
                                    if last_activity.as_deref() != Some(line.as_str()) {
                                        last_activity = Some(line.clone());
                                        observer(ChatUpdate::Activity(line));
                                    }
                                }
                                if let Some(change) = reply.apply(&parsed) {
                                    observer(ChatUpdate::Text(change));
                                }
                                if reply.outcome().is_some() {
                                    return Ok(done(&reply, false));
                                }
                            }
                            "agent" => {
                                observer(ChatUpdate::Agent { payload: payload.clone() });
                                if let Some(line) = activity_line(payload) {
                                    // A run phase comes twice: as a `chat` status and as an
                                    // `agent` run_status event. One line is enough.
                                    if last_activity.as_deref() != Some(line.as_str()) {
                                        last_activity = Some(line.clone());
                                        observer(ChatUpdate::Activity(line));
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "fell behind the gateway's events; reading the history");
                        resync_due = true;
                    }
                    Err(RecvError::Closed) => events_open = false,
                },
                changed = state.changed() => {
                    if changed.is_err() {
                        return Err(ChatError::Gateway(Box::new(GatewayError::Closed)));
                    }
                    let now = state.borrow().clone();
                    match now.phase {
                        Phase::Failed => {
                            return Err(ChatError::Gateway(Box::new(now.last_error.unwrap_or(GatewayError::Closed))));
                        }
                        Phase::Closed => return Err(ChatError::Gateway(Box::new(GatewayError::Closed))),
                        _ => {}
                    }
                    if now.is_connected() && now.generation != generation {
                        generation = now.generation;
                        observer(ChatUpdate::Reconnected { generation });
                        // Events of the gap are lost: the history says where the run is.
                        resync_due = true;
                        polling = true;
                    }
                }
                // Wakes the loop once; the top of the loop sends the abort when connected.
                _ = abort.cancelled(), if !abort.is_cancelled() => {}
                _ = tokio::time::sleep_until(next_look) => {
                    resync_due = true;
                    if abort_sent_at.is_some() {
                        polling = true;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ChatError::Timeout {
                        what: format!("run {run_id} did not end"),
                        after: deadline.saturating_duration_since(followed_since),
                    });
                }
            }
        }
    }

    /// The history cursor of `session_key` right now (taken before sending, so a catch-up
    /// read returns everything of the new run).
    pub async fn cursor(&self, session_key: &str) -> Option<String> {
        match self.history(session_key, 1).await {
            Ok(page) => history::delta_cursor(&page),
            Err(e) => {
                tracing::debug!(error = %e, "no history cursor; catch-up reads whole pages");
                None
            }
        }
    }
}

/// `chat.send` parameters (closed schema: only the keys we have).
fn send_params(entry: &OutboxEntry, session_key: &str) -> Value {
    let mut params = Map::new();
    params.insert("sessionKey".into(), json!(session_key));
    params.insert("message".into(), json!(entry.message));
    params.insert("idempotencyKey".into(), json!(entry.idempotency_key));
    if !entry.attachments.is_empty() {
        params.insert("attachments".into(), json!(entry.attachments));
    }
    Value::Object(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_params_are_closed_and_keep_the_key() {
        let entry = OutboxEntry::new("gw", None, "hi", Vec::new());
        let params = send_params(&entry, "agent:main:main");
        let keys: Vec<&String> = params.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["idempotencyKey", "message", "sessionKey"]);
        assert_eq!(params["idempotencyKey"], entry.idempotency_key.as_str());
        assert_eq!(params["sessionKey"], "agent:main:main");
    }

    #[test]
    fn cached_acknowledgements_mean_the_run_is_over() {
        let ack = |status: &str| Ack {
            run_id: "r".into(),
            session_key: "s".into(),
            status: status.into(),
            attempts: 1,
            generation: 1,
        };
        assert!(!ack("started").already_finished());
        assert!(!ack("in_flight").already_finished());
        assert!(ack("ok").already_finished());
        assert!(ack("aborted").already_finished());
    }
}
