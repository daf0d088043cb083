//! The gateway client: one supervised WebSocket connection that survives gateway restarts and network blips.
//!
//! A supervisor task owns the socket. It connects through the [`Transport`], waits for
//! `connect.challenge`, signs and sends `connect`, and then routes frames: responses to the
//! pending request with the same id (in any order; `agent` answers twice on one id), events to
//! every subscriber. Callers talk to it through a cheap, cloneable [`GatewayClient`] handle.
//!
//! Liveness (see `liveness.rs`): after a second of silence a ping probes the path; a probe
//! unanswered for a few measured round trips (at least 3 s) declares the path dead, which
//! retires the transport's session too. Half-way there the connection shows Degraded. Then
//! we reconnect with jittered backoff — but only for errors that retrying can fix.
//!
//! Shutdown is bounded: every send races the shutdown token and a stall limit (a gateway that
//! stopped reading cannot block the loop, nor starve the liveness checks), the goodbye close
//! frame gets [`CLOSE_FRAME_DEADLINE`], and [`GatewayClient::shutdown`] abandons a supervisor
//! still running after [`SHUTDOWN_DEADLINE`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::auth::{build_auth, device_token_key, AuthPlan, Credentials, DeviceTokenStore};
use super::backoff::Backoff;
use super::device::{v3_payload, DeviceIdentity, SignedFields};
use super::error::{classify_connect_error, GatewayError};
use super::liveness::{Due, Liveness, LivenessPolicy};
use super::protocol::{
    decode_frame, ClientInfo, ConnectParams, DeviceProof, FrameError, HelloOk, Incoming,
    RequestFrame, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use super::state::{ConnectionState, Phase, Recovery};
use crate::transport::{DuplexStream, Transport, TransportError, TransportErrorKind};

/// A session that lasted this long reconnects at once when it ends by accident; a shorter
/// one (a gateway that closes as soon as we connect) backs off first.
const IMMEDIATE_RETRY_AFTER: Duration = Duration::from_secs(2);
/// The pace below which a send counts as stalled (a frame of N bytes may take N / this):
/// a 25 MiB attachment gets ~13 minutes, a ping the liveness probe's time.
const SLOWEST_LINK_BYTES_PER_S: f64 = 32.0 * 1024.0;
/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 1024;
/// How many events that arrive before `hello-ok` are kept for delivery after it (nodes get a
/// few voicewake snapshots there); more are dropped, so a gateway that floods the handshake
/// cannot grow our memory until the connect timeout.
pub const EARLY_EVENTS_MAX: usize = 64;
/// How many bytes of early events are kept, for the same reason.
const EARLY_EVENT_BYTES_MAX: usize = 1 << 20;
/// How many times a first connect retries a gateway that says it is still starting.
const FIRST_CONNECT_UNAVAILABLE_RETRIES: u32 = 20;
/// How long the goodbye close frame may take to go out to a gateway that stopped reading.
pub const CLOSE_FRAME_DEADLINE: Duration = Duration::from_secs(1);
/// How long [`GatewayClient::shutdown`] waits for the supervisor before abandoning it.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

/// The operator scopes clawlink asks for: the macOS app's set. Always the same set, so that a
/// device token issued once keeps covering every later connection (asking for more later
/// would need a fresh approval).
pub const OPERATOR_SCOPES: [&str; 6] = [
    "operator.admin",
    "operator.read",
    "operator.write",
    "operator.approvals",
    "operator.questions",
    "operator.pairing",
];

/// How this client introduces itself, authenticates and paces itself.
#[derive(Clone)]
pub struct ClientOptions {
    /// From the gateway's closed list: `openclaw-linux` / `openclaw-macos` for operators.
    pub client_id: String,
    /// From the gateway's closed list: `ui` for operators, `node` for nodes.
    pub client_mode: String,
    pub display_name: Option<String>,
    pub version: String,
    /// Pinned at pairing together with `device_family`: keep both stable per device key.
    pub platform: String,
    pub device_family: String,
    pub instance_id: Option<String>,
    /// `operator` or `node`.
    pub role: String,
    pub scopes: Vec<String>,
    pub caps: Vec<String>,
    /// Node commands claimed at connect (role node only).
    pub commands: Vec<String>,
    /// Node permission map (role node only).
    pub permissions: Option<BTreeMap<String, bool>>,
    pub credentials: Credentials,
    pub identity: Arc<DeviceIdentity>,
    pub device_tokens: Arc<dyn DeviceTokenStore>,
    /// Transport connect + WebSocket upgrade + challenge + hello.
    pub connect_timeout: Duration,
    /// Default for [`GatewayClient::request`].
    pub request_timeout: Duration,
    pub backoff: Backoff,
    /// How quickly a silent path is probed and declared dead.
    pub liveness: LivenessPolicy,
    pub user_agent: String,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("client_id", &self.client_id)
            .field("client_mode", &self.client_mode)
            .field("role", &self.role)
            .field("device", &self.identity.id())
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl ClientOptions {
    /// An operator connection as a native desktop app of this OS (`openclaw-linux`/`ui` on
    /// Linux, `openclaw-macos`/`ui` on macOS): presence is tracked and, on loopback, the
    /// gateway approves the device silently.
    pub fn operator(
        identity: Arc<DeviceIdentity>,
        credentials: Credentials,
        device_tokens: Arc<dyn DeviceTokenStore>,
    ) -> Self {
        let (client_id, platform, device_family) = native_platform();
        Self {
            client_id: client_id.into(),
            client_mode: "ui".into(),
            display_name: None,
            version: env!("CARGO_PKG_VERSION").into(),
            platform: platform.into(),
            device_family: device_family.into(),
            instance_id: None,
            role: "operator".into(),
            scopes: OPERATOR_SCOPES.iter().map(|s| s.to_string()).collect(),
            caps: Vec::new(),
            commands: Vec::new(),
            permissions: None,
            credentials,
            identity,
            device_tokens,
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            liveness: LivenessPolicy::default(),
            user_agent: format!("clawlink/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// `(client id, platform, device family)` for this OS, consistent pairs from the gateway's
/// platform table (a mismatched pair degrades node command policy to "unknown").
pub fn native_platform() -> (&'static str, &'static str, &'static str) {
    if cfg!(target_os = "macos") {
        ("openclaw-macos", "macos", "Mac")
    } else {
        ("openclaw-linux", "linux", "Linux")
    }
}

/// An event pushed by the gateway.
#[derive(Debug, Clone)]
pub struct GatewayEvent {
    pub event: String,
    pub payload: Value,
    /// Per-connection broadcast counter; absent on node-targeted events.
    pub seq: Option<u64>,
    /// The connection generation that received it.
    pub generation: u64,
}

/// Per-request options.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOptions {
    /// `None`: the client's default; `Some(Duration::MAX)`: wait as long as the connection lives.
    pub timeout: Option<Duration>,
    /// Wait past an `{"status":"accepted"}` response for the final one on the same id
    /// (the `agent` method).
    pub expect_final: bool,
}

type Reply = oneshot::Sender<Result<Value, GatewayError>>;

enum Command {
    Request {
        id: String,
        method: String,
        frame: String,
        expect_final: bool,
        reply: Reply,
        deadline: Option<Instant>,
    },
}

struct Pending {
    method: String,
    expect_final: bool,
    reply: Reply,
}

/// State shared by every handle; dropping the last handle stops the supervisor.
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
    events: broadcast::Sender<Arc<GatewayEvent>>,
    shutdown: CancellationToken,
    reconnect: Arc<Notify>,
    fresh_transport: Arc<AtomicBool>,
    nudge: Arc<Notify>,
    next_id: AtomicU64,
    request_timeout: Duration,
    transport: Arc<dyn Transport>,
    supervisor: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A handle to the supervised gateway connection. Clone it freely.
#[derive(Clone)]
pub struct GatewayClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("transport", &self.shared.transport.describe())
            .field("state", &self.shared.state.borrow().label())
            .finish()
    }
}

impl GatewayClient {
    /// Connects once and returns when `hello-ok` arrived, or with the error of the first
    /// attempt (a gateway that is still starting is waited for). After that, the connection
    /// is supervised like [`GatewayClient::start`]'s.
    pub async fn connect(
        transport: Arc<dyn Transport>,
        options: ClientOptions,
    ) -> Result<Self, GatewayError> {
        let (first_tx, first_rx) = oneshot::channel();
        let client = Self::spawn(transport, options, Some(first_tx));
        match first_rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(err)) => {
                client.shutdown().await;
                Err(err)
            }
            Err(_) => Err(GatewayError::Closed),
        }
    }

    /// Starts the supervised connection in the background and returns at once; watch
    /// [`GatewayClient::state`] to follow it.
    pub fn start(transport: Arc<dyn Transport>, options: ClientOptions) -> Self {
        Self::spawn(transport, options, None)
    }

    fn spawn(
        transport: Arc<dyn Transport>,
        options: ClientOptions,
        first: Option<oneshot::Sender<Result<(), GatewayError>>>,
    ) -> Self {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(ConnectionState::initial());
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shutdown = CancellationToken::new();
        let reconnect = Arc::new(Notify::new());
        let fresh_transport = Arc::new(AtomicBool::new(false));
        let nudge = Arc::new(Notify::new());
        let supervisor = Supervisor {
            options: Arc::new(options.clone()),
            transport: transport.clone(),
            state: state_tx,
            events: events.clone(),
            shutdown: shutdown.clone(),
            reconnect: reconnect.clone(),
            fresh_transport: fresh_transport.clone(),
            commands: command_rx,
            lost: None,
            nudge: nudge.clone(),
        };
        let handle = tokio::spawn(supervisor.run(first));
        Self {
            shared: Arc::new(Shared {
                commands,
                state: state_rx,
                events,
                shutdown,
                reconnect,
                fresh_transport,
                nudge,
                next_id: AtomicU64::new(1),
                request_timeout: options.request_timeout,
                transport,
                supervisor: std::sync::Mutex::new(Some(handle)),
            }),
        }
    }

    /// The connection state; `changed()` wakes on every transition.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.clone()
    }

    /// The `hello-ok` of the current (or last) connection.
    pub fn hello(&self) -> Option<Arc<HelloOk>> {
        self.shared.state.borrow().hello.clone()
    }

    /// The transport this client connects through.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// Every event from now on. A subscriber that falls more than 1024 events behind gets
    /// `RecvError::Lagged` and should re-read state.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<GatewayEvent>> {
        self.shared.events.subscribe()
    }

    /// Waits until the connection is up (or fails for good, or `timeout` passes).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Arc<HelloOk>, GatewayError> {
        let mut state = self.state();
        let wait = async {
            loop {
                {
                    let now = state.borrow_and_update();
                    match now.phase {
                        Phase::Connected => {
                            if let Some(hello) = &now.hello {
                                return Ok(hello.clone());
                            }
                        }
                        Phase::Failed => {
                            return Err(now.last_error.clone().unwrap_or(GatewayError::Closed))
                        }
                        Phase::Closed => return Err(GatewayError::Closed),
                        _ => {}
                    }
                }
                if state.changed().await.is_err() {
                    return Err(GatewayError::Closed);
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(self.shared.state.borrow().last_error.clone().unwrap_or(
                GatewayError::Handshake {
                    message: format!(
                        "not connected to {} within {} s",
                        self.shared.transport.describe(),
                        timeout.as_secs()
                    ),
                    retryable: true,
                },
            )),
        }
    }

    /// Calls `method` with `params` (`Value::Null` sends no params) and returns the payload.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, GatewayError> {
        self.request_with(method, params, RequestOptions::default())
            .await
    }

    /// Like [`GatewayClient::request`], with a timeout and `agent`-style final waiting.
    ///
    /// A request made while the connection is being restored waits for it (within the
    /// timeout). A request in flight when the connection drops fails with
    /// [`GatewayError::Disconnected`]; it is never replayed behind the caller's back.
    pub async fn request_with(
        &self,
        method: &str,
        params: Value,
        options: RequestOptions,
    ) -> Result<Value, GatewayError> {
        {
            let state = self.shared.state.borrow();
            match state.phase {
                Phase::Failed => {
                    return Err(state.last_error.clone().unwrap_or(GatewayError::Closed))
                }
                Phase::Closed => return Err(GatewayError::Closed),
                _ => {}
            }
        }
        let timeout = options.timeout.unwrap_or(self.shared.request_timeout);
        let deadline = Instant::now().checked_add(timeout);
        let id = format!("c{}", self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let params = (!params.is_null()).then_some(&params);
        let frame = serde_json::to_string(&RequestFrame::new(&id, method, params))
            .expect("a JSON value always serializes");
        let (reply, response) = oneshot::channel();
        let command = Command::Request {
            id,
            method: method.to_owned(),
            frame,
            expect_final: options.expect_final,
            reply,
            deadline,
        };
        if self.shared.commands.send(command).is_err() {
            return Err(GatewayError::Closed);
        }
        let outcome = match deadline {
            Some(_) => tokio::time::timeout(timeout, response).await,
            None => Ok(response.await),
        };
        let timed_out = || GatewayError::Timeout {
            method: method.to_owned(),
            after: timeout,
        };
        match outcome {
            Ok(Ok(result)) => result,
            // The supervisor drops requests whose deadline passed before they could be sent.
            Ok(Err(_)) if deadline.is_some_and(|d| d <= Instant::now()) => Err(timed_out()),
            Ok(Err(_)) => Err(GatewayError::Closed),
            Err(_) => Err(timed_out()),
        }
    }

    /// The network changed (a link came up, an address or default route appeared) or the
    /// machine resumed from sleep: a live connection probes its path now instead of after
    /// its next silence, and a connection being restored tries again now instead of
    /// sleeping out its backoff. Cheap; call it on every such event.
    pub fn network_changed(&self) {
        self.shared.nudge.notify_one();
    }

    /// Drops the current connection and connects again now (the app's "Reset tunnel"). Also
    /// retries after a terminal failure, e.g. once a pairing was approved.
    pub fn reconnect(&self) {
        self.shared.reconnect.notify_one();
    }

    /// Like [`reconnect`](Self::reconnect), and the transport is closed too (the SSH session
    /// retired) after the WebSocket has said goodbye, so the next connection starts on a fresh
    /// one. The gateway sees a normal close, and no "connection lost" is reported.
    pub fn reconnect_on_fresh_transport(&self) {
        self.shared.fresh_transport.store(true, Ordering::SeqCst);
        self.shared.reconnect.notify_one();
    }

    /// Closes the WebSocket and waits for the supervisor to stop, at most
    /// [`SHUTDOWN_DEADLINE`]: a supervisor still running then is aborted and logged. The
    /// transport stays open: it may be shared (one SSH session serves the gateway, remote
    /// commands and local forwards), so whoever built it closes it.
    pub async fn shutdown(&self) -> ShutdownOutcome {
        self.shared.shutdown.cancel();
        let handle = self
            .shared
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut handle) = handle else {
            return ShutdownOutcome::Closed;
        };
        match tokio::time::timeout(SHUTDOWN_DEADLINE, &mut handle).await {
            Ok(_) => ShutdownOutcome::Closed,
            Err(_) => {
                handle.abort();
                tracing::warn!(
                    transport = %self.shared.transport.describe(),
                    deadline_ms = SHUTDOWN_DEADLINE.as_millis() as u64,
                    "the gateway connection did not close in time; abandoned"
                );
                ShutdownOutcome::Abandoned
            }
        }
    }
}

/// How [`GatewayClient::shutdown`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// The supervisor stopped (or had already stopped) in time.
    Closed,
    /// The supervisor was still running at [`SHUTDOWN_DEADLINE`] and was aborted.
    Abandoned,
}

/// The task that owns the socket.
struct Supervisor {
    options: Arc<ClientOptions>,
    transport: Arc<dyn Transport>,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<Arc<GatewayEvent>>,
    shutdown: CancellationToken,
    reconnect: Arc<Notify>,
    /// Set by `reconnect_on_fresh_transport`: reset the transport's session (or close the
    /// transport when it has no [`Supervision`](crate::transport::Supervision)) before
    /// connecting again.
    fresh_transport: Arc<AtomicBool>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Why an established connection was lost, while we are restoring it. The published
    /// phase then stays Degraded (with progress in the reason) instead of cycling through
    /// Connecting/Reconnecting, so status shows one steady "degraded" until it recovers.
    lost: Option<Outage>,
    /// Woken when the network changed or the machine resumed: a session probes its path at
    /// once, a wait between attempts ends.
    nudge: Arc<Notify>,
}

/// A lost connection being restored: what the recovery record will say.
struct Outage {
    reason: String,
    /// When the loss was noticed.
    noticed: Instant,
    /// How long the path had been silent when it was declared dead (none for a close).
    detected_after: Option<Duration>,
    attempts: u32,
}

/// Why a live session ended.
enum SessionEnd {
    Shutdown,
    ReconnectRequested,
    Lost(GatewayError),
    /// The path went silent and was declared dead after `silent`.
    DeadPath(GatewayError, Duration),
}

struct Session {
    ws: WebSocketStream<Box<dyn DuplexStream>>,
    hello: Arc<HelloOk>,
    early_events: Vec<super::protocol::EventFrame>,
}

impl Supervisor {
    /// Closes the transport when a reconnect asked for a fresh one.
    async fn retire_transport_if_asked(&self) {
        if self.fresh_transport.swap(false, Ordering::SeqCst) {
            match self.transport.supervision() {
                Some(supervision) => supervision.reset().await,
                None => self.transport.close().await,
            }
        }
    }

    /// Publishes a transition; an unchanged phase with no new error wakes nobody.
    fn set_phase(&self, phase: Phase, error: Option<GatewayError>) {
        self.state.send_if_modified(|s| {
            if s.phase == phase && error.is_none() {
                return false;
            }
            s.phase = phase;
            if error.is_some() {
                s.last_error = error;
            }
            s.since = SystemTime::now();
            true
        });
    }

    async fn run(mut self, mut first: Option<oneshot::Sender<Result<(), GatewayError>>>) {
        let mut attempt: u32 = 0;
        let mut unavailable_retries = 0;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let connecting = match &mut self.lost {
                Some(outage) => {
                    outage.attempts += 1;
                    Phase::Degraded {
                        reason: format!(
                            "{}; reconnecting (attempt {})",
                            outage.reason,
                            attempt + 1
                        ),
                    }
                }
                None => Phase::Connecting { attempt },
            };
            self.set_phase(connecting, None);
            let mut attempt_started = Instant::now();
            let outcome = tokio::select! {
                outcome = self.establish() => outcome,
                _ = self.shutdown.cancelled() => break,
            };
            let mut retry_at_once = false;
            let error = match outcome {
                Ok(session) => {
                    attempt = 0;
                    unavailable_retries = 0;
                    // Publish Connected (and the hello) before `connect` returns, so a
                    // caller never sees a connected client without its hello.
                    let recovery = self.lost.take().map(|outage| Recovery {
                        cause: outage.reason,
                        detected_after_ms: outage.detected_after.map(|d| d.as_millis() as u64),
                        healthy_after_ms: outage.noticed.elapsed().as_millis() as u64,
                        attempts: outage.attempts,
                        at: SystemTime::now(),
                    });
                    if let Some(recovery) = &recovery {
                        tracing::info!(
                            cause = %recovery.cause,
                            healthy_after_ms = recovery.healthy_after_ms,
                            attempts = recovery.attempts,
                            "gateway connection restored"
                        );
                    }
                    let generation = self.enter_session(&session, recovery);
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(()));
                    }
                    let began = Instant::now();
                    let ended = self.run_session(session, generation).await;
                    // A session that lived a while ended by accident, not by a crash loop:
                    // the first attempt goes at once (the gateway restarted, the path
                    // changed); a session that ends as soon as it starts backs off.
                    retry_at_once = began.elapsed() >= IMMEDIATE_RETRY_AFTER;
                    // A lost session is no attempt that already waited: back off in full.
                    attempt_started = Instant::now();
                    let (ended, detected_after) = match ended {
                        SessionEnd::DeadPath(error, silent) => {
                            // A dead path may have taken the transport's session with it (an
                            // SSH connection whose keepalives have not noticed yet): the next
                            // attempt starts on a fresh one.
                            self.fresh_transport.store(true, Ordering::SeqCst);
                            (SessionEnd::Lost(error), Some(silent))
                        }
                        other => (other, None),
                    };
                    match ended {
                        SessionEnd::Shutdown => break,
                        SessionEnd::ReconnectRequested => {
                            self.retire_transport_if_asked().await;
                            self.set_phase(
                                Phase::Degraded {
                                    reason: "reconnect requested".into(),
                                },
                                None,
                            );
                            continue;
                        }
                        SessionEnd::DeadPath(..) => unreachable!("mapped to Lost above"),
                        SessionEnd::Lost(error) => {
                            tracing::warn!(error = %error, "gateway connection lost");
                            self.lost = Some(Outage {
                                reason: error.to_string(),
                                noticed: Instant::now(),
                                detected_after,
                                attempts: 0,
                            });
                            self.set_phase(
                                Phase::Degraded {
                                    reason: error.to_string(),
                                },
                                Some(error.clone()),
                            );
                            error
                        }
                    }
                }
                Err(error) => error,
            };

            let give_up = match (&first, &error) {
                (_, e) if !e.is_retryable() => true,
                (Some(_), GatewayError::Unavailable { .. }) => {
                    unavailable_retries += 1;
                    unavailable_retries > FIRST_CONNECT_UNAVAILABLE_RETRIES
                }
                (Some(_), _) => true,
                (None, _) => false,
            };
            if give_up {
                tracing::debug!(error = %error, "gateway connection failed for good");
                self.set_phase(Phase::Failed, Some(error.clone()));
                if let Some(first) = first.take() {
                    let _ = first.send(Err(error));
                    break;
                }
                // Wait for the user (reconnect) or the end.
                self.lost = None;
                tokio::select! {
                    _ = self.reconnect.notified() => {
                        attempt = 0;
                        self.retire_transport_if_asked().await;
                        continue
                    }
                    _ = self.shutdown.cancelled() => break,
                }
            }

            if retry_at_once && error.is_retryable() {
                self.retire_transport_if_asked().await;
                continue;
            }
            let delay = match &error {
                GatewayError::Unavailable {
                    retry_after: Some(after),
                    ..
                } => (*after).max(Duration::from_millis(100)),
                // Backoff spaces the starts of attempts: an attempt that already waited (a
                // dead path, timed out) is followed at once, one refused at once waits.
                _ => self
                    .options
                    .backoff
                    .delay(attempt)
                    .saturating_sub(attempt_started.elapsed()),
            };
            tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "will reconnect");
            let waiting = match &self.lost {
                Some(outage) => Phase::Degraded {
                    reason: format!(
                        "{}; next attempt in {:.1}s",
                        outage.reason,
                        delay.as_secs_f64()
                    ),
                },
                None => Phase::Reconnecting {
                    attempt,
                    retry_in: delay,
                },
            };
            self.set_phase(waiting, Some(error));
            attempt = attempt.saturating_add(1);
            self.retire_transport_if_asked().await;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.reconnect.notified() => {
                    attempt = 0;
                    self.retire_transport_if_asked().await;
                }
                _ = self.nudge.notified() => {
                    tracing::debug!("network changed: trying again now");
                    attempt = 0;
                }
                _ = self.shutdown.cancelled() => break,
            }
        }
        self.fail_queued_commands();
        self.set_phase(Phase::Closed, None);
    }

    fn fail_queued_commands(&mut self) {
        self.commands.close();
        while let Ok(Command::Request { reply, .. }) = self.commands.try_recv() {
            let _ = reply.send(Err(GatewayError::Closed));
        }
    }

    /// One connect, plus the single retries the protocol reference recommends: a refused
    /// shared token retried with the stored device token (only where the gateway sees us on
    /// loopback), and a refused device token forgotten and retried without it.
    async fn establish(&self) -> Result<Session, GatewayError> {
        let key = self.token_key();
        match self.open_session(AuthPlan::Configured).await {
            Err(GatewayError::Auth { code, message, fix }) => {
                let stored = self.options.device_tokens.load(&key);
                if code == "AUTH_TOKEN_MISMATCH"
                    && stored.is_some()
                    && self.transport.is_loopback_to_gateway()
                {
                    tracing::warn!(
                        "the gateway refused the configured token; retrying once with this device's token"
                    );
                    return self
                        .open_session(AuthPlan::DeviceTokenOnly)
                        .await
                        .map_err(|_| GatewayError::Auth { code, message, fix });
                }
                if code == "AUTH_DEVICE_TOKEN_MISMATCH" {
                    if let Err(e) = self.options.device_tokens.forget(&key) {
                        tracing::warn!(error = %e, "could not forget the refused device token");
                    }
                    if self.options.credentials.has_shared_secret() {
                        return self.open_session(AuthPlan::WithoutDeviceToken).await;
                    }
                }
                Err(GatewayError::Auth { code, message, fix })
            }
            other => other,
        }
    }

    fn token_key(&self) -> String {
        device_token_key(
            &self.transport.gateway_key(),
            self.options.identity.id(),
            &self.options.role,
        )
    }

    async fn open_session(&self, plan: AuthPlan) -> Result<Session, GatewayError> {
        let limit = self.options.connect_timeout;
        // What the attempt waits for, so a timeout can say where it stalled.
        let stage = std::sync::Mutex::new(Stage::Transport);
        match tokio::time::timeout(limit, self.open_session_unbounded(plan, &stage)).await {
            Ok(result) => result,
            Err(_) => {
                let stage = *stage.lock().unwrap_or_else(|e| e.into_inner());
                Err(GatewayError::Handshake {
                    message: format!(
                        "no {} within {} (connect timeout)",
                        stage.awaited(&self.transport.describe()),
                        seconds(limit)
                    ),
                    retryable: true,
                })
            }
        }
    }

    async fn open_session_unbounded(
        &self,
        plan: AuthPlan,
        stage: &std::sync::Mutex<Stage>,
    ) -> Result<Session, GatewayError> {
        let enter = |next: Stage| *stage.lock().unwrap_or_else(|e| e.into_inner()) = next;
        let connected = self
            .transport
            .connect()
            .await
            .map_err(GatewayError::Transport)?;
        let request = connected
            .request_url
            .as_str()
            .into_client_request()
            .map_err(|e| {
                GatewayError::Transport(TransportError::config(format!(
                    "invalid gateway URL {}: {e}",
                    connected.request_url
                )))
            })?;
        enter(Stage::Upgrade);
        let (ws, _response) = tokio_tungstenite::client_async_with_config(
            request,
            connected.stream,
            Some(ws_config()),
        )
        .await
        .map_err(|e| upgrade_error(e, &self.transport.describe()))?;
        enter(Stage::Challenge);
        self.handshake(ws, plan, || enter(Stage::Hello)).await
    }

    async fn handshake(
        &self,
        mut ws: WebSocketStream<Box<dyn DuplexStream>>,
        plan: AuthPlan,
        connect_sent: impl FnOnce(),
    ) -> Result<Session, GatewayError> {
        let mut early_events = EarlyEvents::default();
        let challenge = loop {
            match read_frame(&mut ws, "the connect challenge").await? {
                (Incoming::Event(ev), _) if ev.event == "connect.challenge" => {
                    break serde_json::from_value::<super::protocol::Challenge>(ev.payload)
                        .map_err(|e| GatewayError::Handshake {
                            message: format!("malformed connect.challenge from the gateway: {e}"),
                            retryable: false,
                        })?;
                }
                (Incoming::Event(ev), size) => early_events.keep(ev, size),
                (Incoming::Response(_), _) => {}
            }
        };
        if self.lost.is_none() {
            self.set_phase(Phase::Authenticating, None);
        }

        let options = &self.options;
        let key = self.token_key();
        let stored = options.device_tokens.load(&key);
        let (auth, signed_token) = build_auth(plan, &options.credentials, stored.as_ref());
        let nonce = challenge.nonce.trim().to_owned();
        let payload = v3_payload(&SignedFields {
            device_id: options.identity.id(),
            client_id: &options.client_id,
            client_mode: &options.client_mode,
            role: &options.role,
            scopes: &options.scopes,
            signed_at: challenge.ts,
            token: &signed_token,
            nonce: &nonce,
            platform: &options.platform,
            device_family: &options.device_family,
        });
        let params = ConnectParams {
            min_protocol: PROTOCOL_VERSION,
            max_protocol: PROTOCOL_VERSION,
            client: ClientInfo {
                id: options.client_id.clone(),
                display_name: options.display_name.clone(),
                version: options.version.clone(),
                platform: options.platform.clone(),
                device_family: Some(options.device_family.clone()),
                mode: options.client_mode.clone(),
                instance_id: options.instance_id.clone(),
            },
            role: options.role.clone(),
            scopes: options.scopes.clone(),
            caps: options.caps.clone(),
            commands: options.commands.clone(),
            permissions: options.permissions.clone(),
            auth,
            locale: None,
            user_agent: Some(options.user_agent.clone()),
            device: DeviceProof {
                id: options.identity.id().to_owned(),
                public_key: options.identity.public_key().to_owned(),
                signature: options.identity.sign(&payload),
                signed_at: challenge.ts,
                nonce,
            },
        };
        let params = serde_json::to_value(&params).expect("connect params serialize");
        let frame = serde_json::to_string(&RequestFrame::new("connect", "connect", Some(&params)))
            .expect("connect frame serializes");
        drop(params);
        tracing::debug!(device = options.identity.id(), role = %options.role, "sending connect");
        ws.send(Message::Text(frame.into()))
            .await
            .map_err(|e| lost("sending connect", e))?;
        connect_sent();

        let response = loop {
            match read_frame(&mut ws, "hello-ok").await? {
                (Incoming::Response(res), _) if res.id == "connect" => break res,
                (Incoming::Response(_), _) => {}
                (Incoming::Event(ev), size) => early_events.keep(ev, size),
            }
        };
        if early_events.dropped > 0 {
            tracing::warn!(
                kept = early_events.kept.len(),
                dropped = early_events.dropped,
                "the gateway sent more events before hello-ok than clawlink keeps; dropped the rest"
            );
        }
        if !response.ok {
            let error = response
                .error
                .unwrap_or_else(|| super::protocol::ErrorShape {
                    code: "INVALID_REQUEST".into(),
                    message: "connect refused without an error".into(),
                    details: Value::Null,
                    retryable: false,
                    retry_after_ms: None,
                });
            return Err(super::error::explain_secret_kind(
                classify_connect_error(error),
                options.credentials.token.is_some(),
                options.credentials.password.is_some(),
            ));
        }
        let mut hello: HelloOk =
            serde_json::from_value(response.payload).map_err(|e| GatewayError::Protocol {
                message: format!("unreadable hello-ok from the gateway: {e}"),
                fix: "check that the gateway runs a supported openclaw release (2026.9.x)".into(),
            })?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(GatewayError::Protocol {
                message: format!(
                    "the gateway answered with protocol {} in hello-ok (clawlink speaks {PROTOCOL_VERSION})",
                    hello.protocol
                ),
                fix: "update clawlink or the gateway so both speak the same protocol version"
                    .into(),
            });
        }
        let (policy, clamped) = hello.policy.clamped(MAX_FRAME_BYTES as u64);
        for note in clamped {
            tracing::warn!("hello-ok: {note}");
        }
        hello.policy = policy;
        if let Some(token) = &hello.auth.device_token {
            let changed = stored
                .as_ref()
                .is_none_or(|old| old.expose_secret() != token.expose_secret());
            if changed {
                if let Err(e) = options.device_tokens.save(&key, token) {
                    tracing::warn!(error = %e, "could not store the device token the gateway issued");
                }
            }
        }
        tracing::info!(
            server = %hello.server.version,
            auth = hello.auth.method.as_deref().unwrap_or("?"),
            "connected to gateway"
        );
        Ok(Session {
            ws,
            hello: Arc::new(hello),
            early_events: early_events.kept,
        })
    }

    /// Publishes a new connection: Connected, the next generation, its hello.
    fn enter_session(&mut self, session: &Session, recovery: Option<Recovery>) -> u64 {
        let generation = self.state.borrow().generation + 1;
        self.state.send_modify(|s| {
            if recovery.is_some() {
                s.last_recovery = recovery;
            }
            s.phase = Phase::Connected;
            s.generation = generation;
            s.hello = Some(session.hello.clone());
            s.last_error = None;
            s.since = SystemTime::now();
        });
        generation
    }

    async fn run_session(&mut self, session: Session, generation: u64) -> SessionEnd {
        let mut last_seq = None;
        for ev in session.early_events {
            self.publish(ev, generation, &mut last_seq);
        }

        let (mut sink, mut stream) = session.ws.split();
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut liveness = Liveness::new(self.options.liveness, Instant::now());
        // A probe unanswered for half its time marks the connection Degraded at once, so
        // the status line says so before the verdict.
        let mut degraded = false;

        // The liveness checks run between sends, so a send may not wait longer than a probe
        // may (a full socket buffer on a dead path would starve them): beyond that, or the
        // time the frame needs at a slow link's pace, the path counts as dead.
        let stall_limit = |liveness: &Liveness, bytes: usize| {
            liveness.probe_timeout().max(Duration::from_secs_f64(
                bytes as f64 / SLOWEST_LINK_BYTES_PER_S,
            ))
        };
        let end = loop {
            let check = tokio::time::Instant::from_std(liveness.next_check(Instant::now()));
            tokio::select! {
                _ = self.shutdown.cancelled() => break SessionEnd::Shutdown,
                _ = self.reconnect.notified() => break SessionEnd::ReconnectRequested,
                _ = self.nudge.notified() => {
                    // The path may have changed under us: find out now, not after a silence.
                    liveness.probe_now(Instant::now());
                }
                frame = stream.next() => {
                    let now = Instant::now();
                    match &frame {
                        Some(Ok(Message::Pong(payload))) => liveness.pong(payload, now),
                        _ => liveness.heard(now),
                    }
                    if degraded {
                        degraded = false;
                        self.set_phase(Phase::Connected, None);
                    }
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Err(e) = self.dispatch(&text, &mut pending, generation, &mut last_seq) {
                                break SessionEnd::Lost(e.into());
                            }
                        }
                        Some(Ok(Message::Close(frame))) => break SessionEnd::Lost(closed_error(frame)),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break SessionEnd::Lost(read_error("reading from the gateway", e)),
                        None => break SessionEnd::Lost(closed_error(None)),
                    }
                }
                command = self.commands.recv() => {
                    let Some(Command::Request { id, method, frame, expect_final, reply, deadline }) = command else {
                        break SessionEnd::Shutdown;
                    };
                    if deadline.is_some_and(|d| d <= Instant::now()) || reply.is_closed() {
                        continue;
                    }
                    tracing::trace!(%method, %id, "request");
                    let limit = stall_limit(&liveness, frame.len());
                    let sent = send_bounded(&mut sink, Message::Text(frame.into()), limit, &self.shutdown).await;
                    if let Some(end) = sent.session_end("sending a request") {
                        let _ = reply.send(Err(GatewayError::Disconnected { method }));
                        break end;
                    }
                    pending.insert(id, Pending { method, expect_final, reply });
                }
                _ = tokio::time::sleep_until(check) => {
                    match liveness.poll(Instant::now()) {
                        Due::Nothing => {
                            if !degraded && liveness.probe_outstanding_for(Instant::now()) >= liveness.probe_timeout() / 2 {
                                degraded = true;
                                self.set_phase(Phase::Degraded {
                                    reason: "the gateway has not answered a ping".into(),
                                }, None);
                            }
                        }
                        Due::Probe(payload) => {
                            let limit = stall_limit(&liveness, payload.len());
                            let sent = send_bounded(&mut sink, Message::Ping(payload.to_vec().into()), limit, &self.shutdown).await;
                            if let Some(end) = sent.session_end("pinging the gateway") {
                                break end;
                            }
                        }
                        Due::Dead { silent, probe_waited } => {
                            break SessionEnd::DeadPath(GatewayError::Transport(TransportError::new(
                                TransportErrorKind::Io,
                                format!(
                                    "dead path: nothing from the gateway for {:.1} s, a ping unanswered for {:.1} s{}",
                                    silent.as_secs_f64(),
                                    probe_waited.as_secs_f64(),
                                    liveness.rtt().map(|rtt| format!(" (round trip was {:.1} ms)", rtt.as_secs_f64() * 1000.0)).unwrap_or_default(),
                                ),
                            )), silent);
                        }
                    }
                }
            }
        };
        for (_, p) in pending.drain() {
            let _ = p
                .reply
                .send(Err(GatewayError::Disconnected { method: p.method }));
        }
        let goodbye = match &end {
            SessionEnd::Shutdown => Some("client shutdown"),
            SessionEnd::ReconnectRequested => Some("reconnect requested"),
            SessionEnd::Lost(_) | SessionEnd::DeadPath(..) => None,
        };
        if let Some(reason) = goodbye {
            // A gateway that stopped reading never takes the frame: say goodbye, don't wait.
            let farewell =
                tokio::time::timeout(CLOSE_FRAME_DEADLINE, sink.send(close_message(reason)));
            if farewell.await.is_err() {
                tracing::debug!(reason, "the close frame did not go out in time");
            }
        }
        end
    }

    /// Routes one frame; a frame that is not JSON at all ends the session.
    fn dispatch(
        &self,
        text: &str,
        pending: &mut HashMap<String, Pending>,
        generation: u64,
        last_seq: &mut Option<u64>,
    ) -> Result<(), NotJson> {
        let Some(frame) = read_frame_text(text, "reading from the gateway")? else {
            return Ok(());
        };
        match frame {
            Incoming::Event(ev) => self.publish(ev, generation, last_seq),
            Incoming::Response(res) => {
                let Some(entry) = pending.remove(&res.id) else {
                    tracing::debug!(id = %res.id, "response to a request nobody waits for");
                    return Ok(());
                };
                let accepted = res.ok
                    && entry.expect_final
                    && res.payload.get("status").and_then(Value::as_str) == Some("accepted");
                if accepted {
                    tracing::debug!(method = %entry.method, "accepted; waiting for the final response");
                    pending.insert(res.id, entry);
                    return Ok(());
                }
                let result = if res.ok {
                    Ok(res.payload)
                } else {
                    Err(GatewayError::Rpc {
                        method: entry.method,
                        error: res.error.unwrap_or_else(|| super::protocol::ErrorShape {
                            code: "UNKNOWN".into(),
                            message: "request failed without an error object".into(),
                            details: res.payload,
                            retryable: false,
                            retry_after_ms: None,
                        }),
                    })
                };
                let _ = entry.reply.send(result);
            }
        }
        Ok(())
    }

    fn publish(
        &self,
        ev: super::protocol::EventFrame,
        generation: u64,
        last_seq: &mut Option<u64>,
    ) {
        if let Some(seq) = ev.seq {
            if let Some(previous) = *last_seq {
                if seq > previous + 1 {
                    // Gaps are normal (dropped slow events still use a number); subscribers
                    // that care re-read state on their own schedule.
                    tracing::debug!(missed = seq - previous - 1, "event sequence gap");
                }
            }
            *last_seq = Some(seq);
        }
        let _ = self.events.send(Arc::new(GatewayEvent {
            event: ev.event,
            payload: ev.payload,
            seq: ev.seq,
            generation,
        }));
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Where a connection attempt is, for the message of its timeout.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Transport,
    Upgrade,
    Challenge,
    Hello,
}

impl Stage {
    /// What did not come, from `gateway` (the transport's description).
    fn awaited(self, gateway: &str) -> String {
        match self {
            Stage::Transport => format!("stream to {gateway} from the transport"),
            Stage::Upgrade => format!("answer to the WebSocket upgrade from {gateway}"),
            Stage::Challenge => format!("connect challenge from the gateway at {gateway}"),
            Stage::Hello => format!("hello-ok from the gateway at {gateway}"),
        }
    }
}

/// Events received before `hello-ok`, kept within [`EARLY_EVENTS_MAX`] and
/// [`EARLY_EVENT_BYTES_MAX`].
#[derive(Default)]
struct EarlyEvents {
    kept: Vec<super::protocol::EventFrame>,
    bytes: usize,
    dropped: u64,
}

impl EarlyEvents {
    fn keep(&mut self, event: super::protocol::EventFrame, size: usize) {
        if self.kept.len() >= EARLY_EVENTS_MAX || self.bytes + size > EARLY_EVENT_BYTES_MAX {
            self.dropped += 1;
            return;
        }
        self.bytes += size;
        self.kept.push(event);
    }
}

/// `12 s`, or `0.5 s` for a limit that is not whole seconds.
fn seconds(limit: Duration) -> String {
    if limit.subsec_millis() == 0 {
        format!("{} s", limit.as_secs())
    } else {
        format!("{:.1} s", limit.as_secs_f64())
    }
}

/// `70 MiB`, `512 KiB` or `100 bytes`.
fn human_bytes(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.0} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

/// A text frame as a protocol frame, through [`decode_frame`]. `Ok(None)`: JSON of a shape
/// we do not know (a newer gateway's frame), skipped. A frame that is not JSON at all, or
/// larger than [`MAX_FRAME_BYTES`], is no gateway's: a protocol error, not retried (the same
/// peer would send it again).
fn read_frame_text(text: &str, doing: &str) -> Result<Option<Incoming>, NotJson> {
    match decode_frame(text) {
        Ok(frame) => Ok(Some(frame)),
        Err(FrameError::Json(e)) if e.is_data() => {
            tracing::debug!(error = %e, "ignoring a frame we cannot read");
            Ok(None)
        }
        Err(FrameError::Json(e)) => Err(NotJson(format!(
            "the gateway sent a text frame of {} that is not JSON ({e}) while clawlink was {doing}",
            human_bytes(text.len())
        ))),
        Err(too_large @ FrameError::TooLarge { .. }) => {
            Err(NotJson(format!("{too_large} (while clawlink was {doing})")))
        }
    }
}

/// A text frame that is not JSON, as the message of the protocol error it becomes.
struct NotJson(String);

impl From<NotJson> for GatewayError {
    fn from(NotJson(message): NotJson) -> Self {
        GatewayError::Protocol {
            message,
            fix: NOT_A_GATEWAY_FIX.into(),
        }
    }
}

/// What to do about a peer that breaks the gateway protocol.
const NOT_A_GATEWAY_FIX: &str = "check that the port is an OpenClaw gateway's (not a proxy or another \
     service), that any proxy in between passes WebSocket frames unchanged, and that the gateway runs \
     a supported openclaw release (2026.9.x)";

/// A failed read: an oversized message, text that is not UTF-8 or a broken WebSocket frame is
/// the peer's fault and ends in a protocol error (retrying would get the same); anything else
/// is a lost connection, retried.
fn read_error(doing: &str, error: tungstenite::Error) -> GatewayError {
    use tungstenite::error::{CapacityError, ProtocolError};
    match error {
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            GatewayError::Protocol {
                message: format!(
                    "the gateway sent a {} message while clawlink was {doing}; clawlink accepts at most {} (MAX_FRAME_BYTES)",
                    human_bytes(size),
                    human_bytes(max_size)
                ),
                fix: "no OpenClaw gateway sends messages this large: check what listens on the \
                      gateway port; if a request asked for it (a long chat.history), ask for less \
                      (limit, maxBytes)"
                    .into(),
            }
        }
        tungstenite::Error::Utf8(e) => GatewayError::Protocol {
            message: format!(
                "the gateway sent a text frame that is not UTF-8 ({e}) while clawlink was {doing}"
            ),
            fix: NOT_A_GATEWAY_FIX.into(),
        },
        tungstenite::Error::Protocol(e) if e != ProtocolError::ResetWithoutClosingHandshake => {
            GatewayError::Protocol {
                message: format!(
                    "the gateway broke the WebSocket protocol while clawlink was {doing}: {e}"
                ),
                fix: NOT_A_GATEWAY_FIX.into(),
            }
        }
        other => lost(doing, other),
    }
}

/// How one bounded send ended.
enum SendOutcome {
    Sent,
    Failed(tungstenite::Error),
    /// The gateway took nothing for the whole stall limit.
    Stalled(Duration),
    /// Shutdown came first; the frame may be half written.
    ShutDown,
}

impl SendOutcome {
    /// The session's end this outcome forces, if any.
    fn session_end(self, doing: &str) -> Option<SessionEnd> {
        match self {
            SendOutcome::Sent => None,
            SendOutcome::Failed(e) => Some(SessionEnd::Lost(lost(doing, e))),
            // Nothing taken for a probe's time: the path is as dead as an unanswered ping says.
            SendOutcome::Stalled(limit) => Some(SessionEnd::DeadPath(
                GatewayError::Transport(TransportError::new(
                    TransportErrorKind::Io,
                    format!(
                        "dead path: the connection took nothing for {:.1} s while clawlink was {doing}",
                        limit.as_secs_f64()
                    ),
                )),
                limit,
            )),
            SendOutcome::ShutDown => Some(SessionEnd::Shutdown),
        }
    }
}

/// Sends one frame unless shutdown comes first or the gateway takes nothing for `limit`.
async fn send_bounded<S>(
    sink: &mut S,
    message: Message,
    limit: Duration,
    shutdown: &CancellationToken,
) -> SendOutcome
where
    S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    tokio::select! {
        _ = shutdown.cancelled() => SendOutcome::ShutDown,
        sent = tokio::time::timeout(limit, sink.send(message)) => match sent {
            Ok(Ok(())) => SendOutcome::Sent,
            Ok(Err(e)) => SendOutcome::Failed(e),
            Err(_) => SendOutcome::Stalled(limit),
        },
    }
}

fn close_message(reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: reason.to_owned().into(),
    }))
}

/// The next frame we can read, with the size of its text.
async fn read_frame(
    ws: &mut WebSocketStream<Box<dyn DuplexStream>>,
    waiting_for: &str,
) -> Result<(Incoming, usize), GatewayError> {
    let doing = format!("waiting for {waiting_for}");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if let Some(frame) = read_frame_text(&text, &doing)? {
                    return Ok((frame, text.len()));
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(handshake_close_error(frame, waiting_for))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(read_error(&doing, e)),
            None => return Err(handshake_close_error(None, waiting_for)),
        }
    }
}

/// A close before `hello-ok`. The gateway closes 1008 after a refused connect (the response
/// carries the detail), 1013 while starting, 1002 on protocol mismatch, and 1000 with no
/// reason when the handshake took too long.
fn handshake_close_error(frame: Option<CloseFrame>, waiting_for: &str) -> GatewayError {
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), f.reason.to_string()))
        .unwrap_or((1006, String::new()));
    let message =
        format!(
        "the gateway closed the connection (code {code}{}) while clawlink waited for {waiting_for}",
        if reason.is_empty() { String::new() } else { format!(": {reason}") }
    );
    match code {
        1013 | 1012 => GatewayError::Unavailable {
            message,
            retry_after: None,
        },
        1002 => GatewayError::Protocol {
            message,
            fix: "update clawlink or the gateway so both speak the same protocol version".into(),
        },
        1008 => GatewayError::Handshake {
            message,
            retryable: false,
        },
        _ => GatewayError::Handshake {
            message,
            retryable: true,
        },
    }
}

/// A close after `hello-ok`: restarts (1012), auth changes (4001), slow consumer (1008).
/// The session was established, so this is a lost connection (retryable), not a handshake
/// failure.
fn closed_error(frame: Option<CloseFrame>) -> GatewayError {
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), f.reason.to_string()))
        .unwrap_or((1006, String::new()));
    let what = match code {
        1012 => "the gateway restarted",
        4001 => "the gateway revoked this connection's auth",
        1008 => "the gateway closed the connection on a policy violation",
        1006 => "the connection dropped",
        _ => "the gateway closed the connection",
    };
    GatewayError::Transport(TransportError::new(
        TransportErrorKind::Io,
        format!(
            "{what} (code {code}{})",
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        ),
    ))
}

fn lost(doing: &str, error: tungstenite::Error) -> GatewayError {
    if let Some(error) = stream_error(&error) {
        return error;
    }
    GatewayError::Transport(TransportError::new(
        TransportErrorKind::Io,
        format!("connection lost while {doing}: {error}"),
    ))
}

/// The transport's own error, when its stream failed with one (`TransportError::into_io`):
/// it knows better than "connection lost" why (a child process that exited, with its status).
fn stream_error(error: &tungstenite::Error) -> Option<GatewayError> {
    match error {
        tungstenite::Error::Io(e) => TransportError::from_io(e)
            .cloned()
            .map(GatewayError::Transport),
        _ => None,
    }
}

fn upgrade_error(error: tungstenite::Error, endpoint: &str) -> GatewayError {
    if let Some(error) = stream_error(&error) {
        return error;
    }
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).chars().take(200).collect::<String>())
                .unwrap_or_default();
            let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
            GatewayError::Handshake {
                message: format!(
                    "{endpoint} refused the WebSocket upgrade with HTTP {status}{}",
                    if body.is_empty() { String::new() } else { format!(": {body}") }
                ),
                retryable,
            }
        }
        tungstenite::Error::Io(e) => GatewayError::Handshake {
            message: format!(
                "{endpoint} closed the connection during the WebSocket upgrade ({e}); is this the gateway's port?"
            ),
            retryable: true,
        },
        // tungstenite's limit on the upgrade answer (more than 64 KiB, or more than 64 reads
        // averaging under 128 bytes): no gateway answers like that, and whatever did would again.
        tungstenite::Error::AttackAttempt => GatewayError::Handshake {
            message: format!(
                "{endpoint} answered the WebSocket upgrade with HTTP headers over tungstenite's limit \
                 (more than 64 KiB, or a trickle of tiny pieces); no gateway does: is this the gateway's port?"
            ),
            retryable: false,
        },
        other => GatewayError::Handshake {
            message: format!("WebSocket upgrade with {endpoint} failed: {other}"),
            retryable: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportErrorKind;

    #[test]
    fn a_stream_that_fails_with_a_transport_error_is_reported_as_that_error() {
        let reason =
            TransportError::new(TransportErrorKind::Tunnel, "`sh` exited (exit status: 3)")
                .with_fix("run it by hand");
        let io = reason.clone().into_io();
        assert_eq!(TransportError::from_io(&io), Some(&reason));
        for error in [
            upgrade_error(tungstenite::Error::Io(reason.clone().into_io()), "gw"),
            lost("waiting", tungstenite::Error::Io(reason.clone().into_io())),
        ] {
            assert_eq!(error, GatewayError::Transport(reason.clone()));
            assert!(error.is_retryable());
        }
        // Any other I/O error keeps the client's own wording.
        let plain = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        assert!(TransportError::from_io(&plain).is_none());
        assert!(matches!(
            upgrade_error(tungstenite::Error::Io(plain), "gw"),
            GatewayError::Handshake { .. }
        ));
    }
}
