//! `clawlink up`, the long-running agent, and the commands that talk to it (`reconnect`, `health`).
//!
//! The agent composes what the profile selects: one transport (plus, when it offers ports
//! on the gateway host, the loopback forwards other programs use, and when it has a session
//! to supervise, a watch that restores it), one supervised operator connection, and every enabled
//! feature plugin. It shows one status line that changes with the state, answers other
//! invocations on its control socket, and on SIGINT/SIGTERM stops the features in reverse
//! order, closes the connection and the transport, and removes its socket.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use clawlink_core::feature::{FeatureHost, FeatureState, FeatureStatus};
use clawlink_core::gateway::{ConnectionState, GatewayClient, Phase};
use clawlink_core::registry;
use clawlink_core::time::unix_millis;
use clawlink_core::transport::{LocalEndpoint, Transport};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::cli::{GlobalArgs, UpArgs};
use crate::connect;
use crate::control::{self, AskError, Request, Response};
use crate::failure::Failure;
use crate::forwards::{self, ServeOptions};
use crate::settings::Settings;
use crate::signals;

mod terminal;
pub use terminal::LogWriter;

/// The running agent, shared with the control socket's handlers.
struct Agent {
    profile: String,
    started: SystemTime,
    client: GatewayClient,
    host: Mutex<FeatureHost>,
    disabled: Vec<&'static str>,
    socket: PathBuf,
    /// The loopback forwards this agent serves for other programs.
    local_endpoints: Vec<LocalEndpoint>,
    /// Forwards that could not have their configured port, and the port they use instead.
    port_fallbacks: Vec<PortFallback>,
    /// The connection generation a `clawlink reconnect` retired, until a newer one connects:
    /// the drop that follows is the user's request, not a fault.
    requested_reconnect: Mutex<Option<u64>>,
}

/// A forward that moved to another local port because its configured one was taken.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PortFallback {
    purpose: String,
    preferred_port: u16,
    local_port: u16,
    reason: String,
}

impl PortFallback {
    /// The one-line note `up` prints, worded like `clawlink tunnel`'s.
    fn note(&self) -> String {
        format!(
            "note: {}; the {} forward uses port {} instead",
            self.reason, self.purpose, self.local_port
        )
    }
}

impl Agent {
    fn features(&self) -> Vec<(&'static str, FeatureStatus)> {
        self.host
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .statuses()
    }

    /// The health feature's details, when it runs.
    fn health(&self) -> Option<Value> {
        self.features()
            .into_iter()
            .find(|(name, _)| *name == "health")
            .map(|(_, status)| status.details)
            .filter(|d| !d.is_null())
    }

    /// Everything `clawlink status` shows, as data.
    fn snapshot(&self) -> Value {
        let state = self.client.state().borrow().clone();
        let transport = self.client.transport();
        let hello = state.hello.as_deref();
        let features: Vec<Value> = self
            .features()
            .into_iter()
            .map(|(name, status)| {
                json!({
                    "name": name,
                    "enabled": true,
                    "state": status.state,
                    "summary": status.summary,
                    "details": status.details,
                })
            })
            .chain(self.disabled.iter().map(|name| {
                json!({"name": name, "enabled": false, "state": "disabled",
                       "summary": format!("disabled (features.{name}.enabled = false)")})
            }))
            .collect();
        json!({
            "source": "agent",
            "pid": std::process::id(),
            "profile": self.profile,
            "socket": self.socket,
            "startedAt": unix_millis(self.started),
            "uptimeMs": self.started.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0),
            "connection": state,
            "connectionSince": unix_millis(state.since),
            "transport": {
                "name": transport.name(),
                "describe": transport.describe(),
                "gatewayKey": transport.gateway_key(),
                "loopbackToGateway": transport.is_loopback_to_gateway(),
                "localEndpoints": self.local_endpoints,
            },
            "server": hello.map(|h| json!(h.server)),
            "protocol": hello.map(|h| h.protocol),
            "auth": hello.map(|h| json!({
                "method": h.auth.method, "role": h.auth.role, "scopes": h.auth.scopes,
            })),
            "portFallbacks": self.port_fallbacks,
            "reconnectRequested": self.reconnect_requested_now(&state),
            "health": self.health(),
            "features": features,
        })
    }

    /// Whether the connection is down because `clawlink reconnect` asked for it (and has not
    /// come back yet); forgets the request once a newer connection is up.
    fn reconnect_requested_now(&self, state: &ConnectionState) -> bool {
        let mut requested = self
            .requested_reconnect
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *requested {
            Some(retired) if state.generation > retired && state.is_connected() => {
                *requested = None;
                false
            }
            Some(_) => !matches!(state.phase, Phase::Failed),
            None => false,
        }
    }

    async fn answer(self: Arc<Self>, request: Request) -> Response {
        match request {
            Request::Status => Response::ok(self.snapshot()),
            Request::Reconnect => self.reconnect().await,
            Request::Feature {
                feature,
                action,
                args,
            } => {
                let handle = self
                    .host
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .handle(&feature);
                match handle {
                    None => Response::error(
                        format!("feature {feature:?} is not running in this agent"),
                        Some(format!(
                            "enable it with `[features.{feature}] enabled = true` and restart the agent"
                        )),
                    ),
                    Some(handle) => match handle.control(&action, args).await {
                        Ok(result) => Response::ok(result),
                        Err(e) => Response::error(e.message, e.fix),
                    },
                }
            }
        }
    }

    /// The app's "Reset SSH tunnel": retire the transport's session (its `Supervision::reset`,
    /// else close it), reconnect, and report how long the fresh connection took.
    async fn reconnect(&self) -> Response {
        let started = Instant::now();
        let before = self.client.state().borrow().generation;
        tracing::info!("reconnect requested through the control socket");
        *self
            .requested_reconnect
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(before);
        // The client says goodbye on the WebSocket first, then retires the transport: the
        // gateway sees a normal close, not a reset.
        self.client.reconnect_on_fresh_transport();
        let mut state = self.client.state();
        let outcome = tokio::time::timeout(Duration::from_secs(45), async {
            loop {
                {
                    let now = state.borrow_and_update();
                    if now.generation > before && now.is_connected() {
                        return Ok(now.generation);
                    }
                    if now.phase == Phase::Failed {
                        return Err(now.label());
                    }
                }
                if state.changed().await.is_err() {
                    return Err("the agent is stopping".to_owned());
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(generation)) => Response::ok(json!({
                "reconnected": true,
                "ms": started.elapsed().as_millis() as u64,
                "generation": generation,
            })),
            Ok(Err(reason)) => Response::error(format!("reconnect failed: {reason}"), None),
            Err(_) => Response::error(
                format!(
                    "not reconnected after 45 s: {}",
                    self.client.state().borrow().label()
                ),
                Some("see `clawlink status` and `clawlink doctor`".into()),
            ),
        }
    }
}

/// Removes the control socket when the agent ends, however it ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `clawlink up`.
pub async fn up(global: &GlobalArgs, settings: &Settings, args: &UpArgs) -> Result<()> {
    let (listener, socket) = control::bind(&settings.profile_name).await?;
    let _socket_file = SocketFile(socket.clone());

    // The forwards start once the credentials and the device key have loaded, so a config
    // error comes before any port is bound.
    let transport = connect::build_transport(settings)?;
    let connector = Arc::new(connect::Connector::new(settings).await?);
    let options = connector.options("operator")?;
    let mut side_tasks = SideTasks::start(&transport, args.no_forward).await?;
    let port_fallbacks = std::mem::take(&mut side_tasks.port_fallbacks);
    let local_endpoints = std::mem::take(&mut side_tasks.local_endpoints);

    let client = GatewayClient::start(transport.clone(), options);
    let _network_events = crate::network_events::watch(&client);
    let mut host = FeatureHost::new(connector.clone());
    let mut disabled = Vec::new();
    for descriptor in registry::features() {
        if !settings
            .profile
            .feature_enabled(descriptor.name, descriptor.enabled_by_default)
        {
            disabled.push(descriptor.name);
            continue;
        }
        host.start(
            descriptor,
            settings.profile.feature_config(descriptor.name),
            client.clone(),
        )
        .map_err(|e| Failure::config(e.message, e.fix))?;
    }
    let agent = Arc::new(Agent {
        profile: settings.profile_name.clone(),
        started: SystemTime::now(),
        client: client.clone(),
        host: Mutex::new(host),
        disabled,
        socket: socket.clone(),
        local_endpoints,
        port_fallbacks,
        requested_reconnect: Mutex::new(None),
    });
    tracing::info!(
        profile = %agent.profile,
        transport = transport.name(),
        gateway = %transport.describe(),
        socket = %socket.display(),
        "agent started"
    );
    let server = {
        let agent = agent.clone();
        tokio::spawn(control::serve(listener, move |request| {
            agent.clone().answer(request)
        }))
    };

    // A closed stdout (`clawlink up | head -2`) is a reader that stopped reading: the
    // agent stops as cleanly as on SIGTERM (and removes its socket), as a Unix pipeline
    // stage would, instead of running on unseen.
    let stop = tokio::select! {
        stop = signals::shutdown_signal() => stop,
        () = show_status(global, &agent) => "status output closed",
    };
    terminal::finish();
    tracing::info!("{stop}: stopping the agent");
    server.abort();
    let mut host = std::mem::take(&mut *agent.host.lock().unwrap_or_else(|e| e.into_inner()));
    let order = host.stop_all().await;
    tracing::debug!(?order, "features stopped");
    client.shutdown().await;
    side_tasks.stop().await;
    // Bounded like every other wait on the way out: a transport stuck in close must not
    // keep `up` from exiting.
    crate::connect::close_transport(transport.as_ref()).await;
    if !global.json && !global.quiet {
        // stdout may be the pipe that closed: then the log line above is all there is.
        let _ = writeln!(std::io::stdout(), "clawlink: {stop}; agent stopped");
    }
    Ok(())
}

/// How long `up`'s exit waits for the forwards' task after aborting it.
const SIDE_TASK_STOP_DEADLINE: Duration = Duration::from_secs(2);

/// Tasks the agent runs beside the gateway connection, for a transport that offers them:
/// the loopback forwards (gateway and widget sandbox) that the openclaw CLI, the browser and
/// `clawlink dashboard` use, like the app's tunnel, and a watch that restores the transport's
/// session as soon as it drops (the forwards serve other programs, which the gateway
/// connection's own reconnects do not cover). Stopped after the client and before the
/// transport closes.
#[derive(Default)]
struct SideTasks {
    forwards: Option<JoinHandle<()>>,
    watch: Option<JoinHandle<()>>,
    local_endpoints: Vec<LocalEndpoint>,
    port_fallbacks: Vec<PortFallback>,
}

impl SideTasks {
    /// Binds the forwards (unless `no_forward`) when the transport offers ports, and starts
    /// the session watch when it offers supervision.
    async fn start(transport: &Arc<dyn Transport>, no_forward: bool) -> Result<Self, Failure> {
        let mut tasks = Self::default();
        if let Some(ports) = transport.ports().filter(|_| !no_forward) {
            let bound = forwards::bind_gateway_and_sandbox(ports).await?;
            tasks.port_fallbacks = bound
                .iter()
                .filter_map(|f| {
                    Some(PortFallback {
                        purpose: f.spec.purpose.clone(),
                        preferred_port: f.spec.preferred_local_port,
                        local_port: f.local_port,
                        reason: f.fallback_reason.clone()?,
                    })
                })
                .collect();
            tasks.local_endpoints = bound.iter().map(|f| f.endpoint()).collect();
            tasks.forwards = Some(tokio::spawn(forwards::serve(
                transport.clone(),
                bound.into(),
                ServeOptions::default(),
            )));
        }
        if transport.supervision().is_some() {
            let transport = transport.clone();
            tasks.watch = Some(tokio::spawn(async move {
                let error = forwards::keep_session_up(transport).await;
                tracing::error!(error = %error, "the transport's session cannot be restored");
            }));
        }
        Ok(tasks)
    }

    /// Aborts both tasks and waits for the forwards to let go of their listeners, within
    /// [`SIDE_TASK_STOP_DEADLINE`]: an abort lands at the task's next await, so only a task
    /// stuck outside the runtime could miss it, and then `up` reports it and exits anyway.
    async fn stop(self) {
        if let Some(task) = self.watch {
            task.abort();
        }
        if let Some(task) = self.forwards {
            task.abort();
            if tokio::time::timeout(SIDE_TASK_STOP_DEADLINE, task)
                .await
                .is_err()
            {
                tracing::warn!(
                    deadline_ms = SIDE_TASK_STOP_DEADLINE.as_millis() as u64,
                    "the local forwards did not stop in time; abandoned"
                );
            }
        }
    }
}

/// The overall colour of the agent: the connection first, then the health feature. A
/// reconnect the user asked for is not a fault: gray while it happens, like connecting.
fn colour(state: &ConnectionState, health: Option<&Value>, requested: bool) -> &'static str {
    match &state.phase {
        _ if requested => "gray",
        Phase::Failed => "red",
        Phase::Closed => "gray",
        Phase::Degraded { .. } => "orange",
        Phase::Connected => health
            .and_then(|h| h.get("color"))
            .and_then(Value::as_str)
            .map_or("green", |c| match c {
                "green" => "green",
                "orange" => "orange",
                "red" => "red",
                _ => "gray",
            }),
        _ => "gray",
    }
}

/// How long the status line mentions the last recovery (`status --json` keeps it).
const RECOVERY_SHOWN_FOR: Duration = Duration::from_secs(300);

/// What a `clawlink reconnect` in progress is shown as, instead of the drop it causes.
const REQUESTED_RECONNECT: &str = "reconnecting (requested by clawlink reconnect)";

/// One status line; `stable` leaves out what changes every poll (the ping) so that plain
/// output prints a line only when the state itself changes.
fn status_line(agent: &Agent, stable: bool) -> (String, &'static str) {
    let state = agent.client.state().borrow().clone();
    let health = agent.health();
    let requested = agent.reconnect_requested_now(&state);
    let colour = colour(&state, health.as_ref(), requested);
    let label = if requested {
        REQUESTED_RECONNECT.to_owned()
    } else {
        state.label()
    };
    let mut line = format!("{label} · {}", agent.client.transport().describe());
    if let Some(h) = health.as_ref().filter(|_| state.is_connected()) {
        if let Some(summary) = h.get("summary").and_then(Value::as_str) {
            line.push_str(&format!(" · health: {summary}"));
        }
        if !stable {
            if let Some(ping) = h.get("pingMs").and_then(Value::as_u64) {
                line.push_str(&format!(" (ping {ping} ms)"));
            }
        }
    }
    if let Some(recovery) = state
        .last_recovery
        .as_ref()
        .filter(|r| state.is_connected() && r.at.elapsed().is_ok_and(|e| e < RECOVERY_SHOWN_FOR))
    {
        // "dead path: nothing from the gateway for 3.9 s, …" → "dead path".
        let cause = recovery.cause.split(':').next().unwrap_or(&recovery.cause);
        line.push_str(&format!(
            " · restored in {:.1} s after: {cause}",
            recovery.healthy_after_ms as f64 / 1000.0
        ));
    }
    for (name, status) in agent.features() {
        if name != "health" && status.state == FeatureState::Failed {
            line.push_str(&format!(" · {name} failed: {}", status.summary));
        }
    }
    (line, colour)
}

/// The lines `up` prints before its status line: the local endpoints, the notes of
/// forwards that had to move to another port, and the control socket.
fn header(agent: &Agent) -> Vec<String> {
    let mut lines: Vec<String> = agent
        .local_endpoints
        .iter()
        .map(|e| format!("{:<15} {}", e.purpose, e.url))
        .collect();
    lines.extend(agent.port_fallbacks.iter().map(PortFallback::note));
    lines.push(format!("control socket  {}", agent.socket.display()));
    lines
}

/// Prints the status line as it changes: a spinner and an in-place line on a terminal,
/// a new line per change otherwise, JSON lines with `--json`. Returns only if stdout closes
/// (a write fails: the reader went away).
async fn show_status(global: &GlobalArgs, agent: &Agent) {
    let tty = std::io::stdout().is_terminal() && !global.json;
    if global.json {
        // The port notes are part of the data: one event before the status events.
        if !agent.port_fallbacks.is_empty() {
            let out = json!({
                "event": "port-fallback",
                "ts": unix_millis(SystemTime::now()),
                "portFallbacks": agent.port_fallbacks,
            });
            if writeln!(std::io::stdout(), "{out}").is_err() {
                return;
            }
        }
    } else if !global.quiet {
        let mut out = std::io::stdout().lock();
        let written = header(agent)
            .iter()
            .try_for_each(|line| writeln!(out, "{line}"))
            .and_then(|()| out.flush());
        if written.is_err() {
            return;
        }
    } else {
        // Quiet: the port notes still matter (the URL others use moved); they go to stderr.
        for fallback in &agent.port_fallbacks {
            let _ = writeln!(std::io::stderr(), "{}", fallback.note());
        }
    }
    const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
    let mut state = agent.client.state();
    let mut last_stable = String::new();
    let mut last_shown = String::new();
    let mut frame = 0usize;
    loop {
        let connected = state.borrow().is_connected();
        let (stable, _) = status_line(agent, true);
        let (line, colour) = status_line(agent, false);
        // The line quotes the gateway (errors, health): see clawlink_core::text.
        let line = clawlink_core::text::terminal_safe(&line).into_owned();
        if global.json {
            if stable != last_stable {
                let snapshot = state.borrow().clone();
                let out = json!({
                    "event": "status",
                    "ts": unix_millis(SystemTime::now()),
                    "color": colour,
                    "reconnectRequested": agent.reconnect_requested_now(&snapshot),
                    "connection": snapshot,
                    "health": agent.health(),
                });
                if writeln!(std::io::stdout(), "{out}").is_err() {
                    return;
                }
            }
        } else if global.quiet {
            // Logs only.
        } else if tty {
            let dot = if connected {
                paint(colour, "●")
            } else {
                frame += 1;
                paint(colour, SPINNER[frame % SPINNER.len()])
            };
            // The dot and its space take two columns; one more stays free so that the
            // cursor never sits past the last column (some terminals wrap there).
            let fitted = match terminal::width() {
                Some(columns) => terminal::fit(&line, columns.saturating_sub(3)),
                None => line.clone(),
            };
            let shown = format!("{dot} {fitted}");
            if shown != last_shown {
                if terminal::show(&shown).is_err() {
                    return;
                }
                last_shown = shown;
            }
        } else if stable != last_stable {
            let stamp = humantime_now();
            if writeln!(std::io::stdout(), "{stamp} [{colour}] {line}").is_err() {
                return;
            }
        }
        last_stable = stable;
        if !global.quiet && terminal::stdout_closed() {
            return;
        }
        // Fast ticks only while the spinner turns; otherwise wake on state changes and
        // once a second for feature updates (and a resized terminal).
        let tick = if tty && !connected {
            Duration::from_millis(120)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

fn paint(colour: &str, text: &str) -> String {
    let style = match colour {
        "green" => crate::style::OK,
        "orange" => crate::style::WARN,
        "red" => crate::style::ERROR,
        _ => crate::style::QUIET,
    };
    crate::style::paint(style, text, crate::style::stdout_colours())
}

/// `HH:MM:SS` in UTC, enough to read a plain log of state changes.
fn humantime_now() -> String {
    let secs = unix_millis(SystemTime::now()) / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}Z")
}

/// Asks the profile's agent; `Ok(None)` when no agent runs.
pub async fn ask(settings: &Settings, request: &Request) -> Result<Option<Value>, Failure> {
    match control::ask(&settings.profile_name, request).await {
        Ok(response) if response.ok => Ok(Some(response.result)),
        Ok(response) => {
            let error = response.error.unwrap_or(control::ResponseError {
                message: "the agent refused the request".into(),
                fix: None,
            });
            Err(Failure::agent(error.message, error.fix))
        }
        Err(AskError::NoAgent) => Ok(None),
        Err(AskError::Untrusted { message, fix }) => Err(Failure::agent(message, Some(fix))),
        Err(AskError::Broken(reason)) => Err(Failure::agent(
            format!(
                "the agent for profile {:?} did not answer: {reason}",
                settings.profile_name
            ),
            Some("restart it (`clawlink up`), or remove its stale socket".into()),
        )),
    }
}

/// The agent's status, when an agent for this profile runs. Every command finds the agent
/// this way: the profile's agent answers whatever flags it was started with (as
/// `clawlink reconnect` always did), unless this invocation's own flags (`--url`, `--ssh`)
/// name a different gateway; then the command connects by itself.
pub async fn live_status(settings: &Settings) -> Result<Option<Value>, Failure> {
    let Some(status) = ask(settings, &Request::Status).await? else {
        return Ok(None);
    };
    if flags_name_a_gateway(settings) {
        let ours = connect::build_transport(settings)?.gateway_key();
        let theirs = status
            .pointer("/transport/gatewayKey")
            .and_then(Value::as_str);
        if theirs != Some(ours.as_str()) {
            tracing::info!(
                agent = ?theirs,
                ours = %ours,
                "the running agent reaches another gateway than --url/--ssh name; connecting directly"
            );
            return Ok(None);
        }
    }
    Ok(Some(status))
}

/// Whether this invocation chose its gateway on the command line (`--url`, `--ssh`).
fn flags_name_a_gateway(settings: &Settings) -> bool {
    ["transport", "mode"].iter().any(|key| {
        settings
            .figment
            .find_metadata(key)
            .is_some_and(|m| m.name == crate::settings::FLAGS)
    })
}

/// Who answered, for the text output: "the agent (pid 42, profile work, socket …)".
pub fn describe_agent(status: &Value) -> String {
    format!(
        "the agent (pid {}, profile {}, socket {})",
        status.get("pid").and_then(Value::as_u64).unwrap_or(0),
        status.get("profile").and_then(Value::as_str).unwrap_or("?"),
        status.get("socket").and_then(Value::as_str).unwrap_or("?"),
    )
}

/// `clawlink reconnect`.
pub async fn reconnect(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let Some(result) = ask(settings, &Request::Reconnect).await? else {
        return Err(no_agent(settings).into());
    };
    if global.json {
        println!("{result}");
    } else {
        println!(
            "reconnected in {} ms",
            result.get("ms").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    Ok(())
}

fn no_agent(settings: &Settings) -> Failure {
    Failure::agent(
        format!(
            "no agent is running for profile {:?}",
            settings.profile_name
        ),
        Some(format!(
            "start one with `clawlink up{}`",
            if settings.profile_name == "default" {
                String::new()
            } else {
                format!(" --profile {}", settings.profile_name)
            }
        )),
    )
}

/// `clawlink health`: a health check now, through the agent (its health feature refreshes
/// and keeps the result) or, without an agent, on a connection of its own. Exit 1 unless
/// the gateway is healthy.
pub async fn health(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let request = Request::Feature {
        feature: "health".into(),
        action: "refresh".into(),
        args: Value::Null,
    };
    let agent = live_status(settings).await?;
    let mut details = match &agent {
        Some(_) => ask(settings, &request).await?.unwrap_or(Value::Null),
        None => one_shot_health(settings).await?,
    };
    let source = match &agent {
        Some(status) => describe_agent(status),
        None => format!(
            "a one-shot connection (no agent runs for profile {:?})",
            settings.profile_name
        ),
    };
    if let Some(map) = details.as_object_mut() {
        map.insert(
            "source".into(),
            json!(if agent.is_some() { "agent" } else { "one-shot" }),
        );
        if let Some(status) = &agent {
            map.insert(
                "agent".into(),
                json!({"pid": status["pid"], "profile": status["profile"], "socket": status["socket"]}),
            );
        }
    }
    let state = details
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    if global.json {
        println!("{details}");
    } else {
        let summary = details.get("summary").and_then(Value::as_str).unwrap_or("");
        let ping = details
            .get("pingMs")
            .and_then(Value::as_u64)
            .map(|p| format!(" (ping {p} ms)"))
            .unwrap_or_default();
        crate::terminal::println_safe!("{state}: {summary}{ping}");
        if let Some(detail) = details.get("detail").and_then(Value::as_str) {
            crate::terminal::println_safe!("  {detail}");
        }
        println!("  answered by {source}");
    }
    if state == "ok" {
        Ok(())
    } else {
        Err(Failure::reported(1).into())
    }
}

#[cfg(feature = "feature-health")]
async fn one_shot_health(settings: &Settings) -> Result<Value, Failure> {
    use clawlink_core::gateway::RequestOptions;
    use clawlink_feature_health::model;
    let client = connect::connect(settings).await?;
    let started = Instant::now();
    let result = client
        .request_with(
            "health",
            Value::Null,
            RequestOptions {
                timeout: Some(Duration::from_secs(15)),
                expect_final: false,
            },
        )
        .await;
    let ping = started.elapsed().as_millis() as u64;
    let endpoint = client.transport().describe();
    connect::finish(&client).await;
    let details = match result {
        Ok(snapshot) => {
            let assessment = model::assess(&snapshot);
            let mut details = json!(assessment);
            details["state"] = json!(assessment.state);
            details["color"] = json!(assessment.state.color());
            details["pingMs"] = json!(ping);
            details
        }
        Err(error) => json!({
            "state": "degraded",
            "color": "orange",
            "summary": format!("Health check failed: {error}"),
            "detail": model::error_detail(&error, &endpoint),
        }),
    };
    Ok(details)
}

#[cfg(not(feature = "feature-health"))]
async fn one_shot_health(_settings: &Settings) -> Result<Value, Failure> {
    Err(Failure::config(
        "this build has no health feature",
        Some("build clawlink with the `feature-health` cargo feature".into()),
    ))
}
