//! A transport backed by a loaded plugin: each `connect` calls the plugin's `connect` on a thread of its own, under a time limit, and adopts the fd it returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::text::terminal_safe;
use clawlink_core::transport::{
    Connected, DuplexStream, GatewayPorts, Transport, TransportError, TransportErrorKind,
};
use serde_json::Value;

use crate::abi;

/// How long `connect` may take when the settings do not say (`connect_timeout_ms`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the offline calls (`check_settings`, `describe`) may take.
const OFFLINE_CALL_LIMIT: Duration = Duration::from_secs(5);
/// The error buffer handed to the plugin.
const MESSAGE_CAPACITY: usize = 2048;
/// The upgrade request's URL: the gateway decides locality from the TCP peer, not the Host
/// header, and a loopback Host is what every local client sends.
const REQUEST_URL: &str = "ws://127.0.0.1/";

/// A loaded plugin: its entry points and where it came from. Leaked (libraries are never
/// unloaded, so neither is this).
pub struct Plugin {
    pub name: &'static str,
    pub version: &'static str,
    pub summary: &'static str,
    pub example_config: &'static str,
    pub path: PathBuf,
    pub connect: abi::ConnectFn,
    pub check_settings: Option<abi::CheckSettingsFn>,
    pub describe: Option<abi::DescribeFn>,
    /// The port functions, when the plugin offers both.
    pub ports: Option<PortFns>,
}

/// A plugin's `gateway_port` and `connect_port`, which come as a pair.
#[derive(Clone, Copy)]
pub struct PortFns {
    pub gateway_port: abi::GatewayPortFn,
    pub connect_port: abi::ConnectPortFn,
}

/// Which plugin function opens a stream: `connect`, or `connect_port` to a port.
#[derive(Clone, Copy)]
enum Opener {
    Gateway,
    Port(abi::ConnectPortFn, u16),
}

/// What a plugin call returned: its code and the text it wrote.
struct CallResult {
    code: i32,
    text: String,
}

impl Plugin {
    /// Runs `call` with clawlink's message buffer and returns the code and the text the
    /// plugin wrote (lossy UTF-8, made terminal-safe by core's one rule, at most the buffer):
    /// it reaches logs and the screen as part of clawlink's own messages.
    fn with_buffer(call: impl FnOnce(*mut u8, usize, *mut usize) -> i32) -> CallResult {
        let mut buffer = vec![0u8; MESSAGE_CAPACITY];
        let mut len = 0usize;
        let code = call(buffer.as_mut_ptr(), buffer.len(), &mut len);
        let written = &buffer[..len.min(buffer.len())];
        let text = String::from_utf8_lossy(written);
        CallResult {
            code,
            text: terminal_safe(text.trim()).into_owned(),
        }
    }

    /// The plugin's `connect` or `connect_port`: the code, the fd (on success) and the text.
    fn call_open(&self, opener: Opener, settings: &[u8]) -> (CallResult, i32) {
        let mut fd = -1i32;
        let connect = self.connect;
        let result = Self::with_buffer(|buf, cap, len| match opener {
            // SAFETY: the pointers are valid for the call: the settings slice, our fd slot
            // and our buffer with its capacity; the ABI forbids keeping any of them.
            Opener::Gateway => unsafe {
                connect(settings.as_ptr(), settings.len(), &mut fd, buf, cap, len)
            },
            // SAFETY: as above.
            Opener::Port(connect_port, port) => unsafe {
                connect_port(
                    settings.as_ptr(),
                    settings.len(),
                    port,
                    &mut fd,
                    buf,
                    cap,
                    len,
                )
            },
        });
        (result, fd)
    }

    fn call_offline(&self, function: abi::CheckSettingsFn, settings: &[u8]) -> CallResult {
        Self::with_buffer(|buf, cap, len| {
            // SAFETY: as in `call_connect`.
            unsafe { function(settings.as_ptr(), settings.len(), buf, cap, len) }
        })
    }

    fn label(&self) -> String {
        format!("transport plugin {} ({})", self.name, self.path.display())
    }
}

/// Runs `work` on a thread of its own and waits for it at most `limit` (blocking the caller,
/// as the factory that calls this is synchronous): a plugin that hangs costs one parked
/// thread and `limit`, never clawlink's exit (a detached std thread does not hold the
/// process; tokio's blocking pool would be waited for at shutdown).
fn on_own_thread<T: Send + 'static>(
    name: &str,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("plugin-{name}"))
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| format!("cannot start a thread for the plugin: {e}"))?;
    rx.recv_timeout(limit)
        .map_err(|_| format!("did not return within {} ms", limit.as_millis()))
}

/// A transport whose streams come from a plugin, for one profile's settings.
pub struct PluginTransport {
    plugin: &'static Plugin,
    settings: Arc<[u8]>,
    description: String,
    connect_timeout: Duration,
    /// The gateway's port and the preferred local one, when the plugin offers ports.
    ports: Option<Ports>,
}

/// What a plugin with port functions says about these settings.
struct Ports {
    connect_port: abi::ConnectPortFn,
    gateway_port: u16,
    local_port: u16,
}

/// The settings key clawlink itself reads for local forwards (and does not pass on).
const LOCAL_PORT_KEY: &str = "local_port";

impl PluginTransport {
    /// Builds the transport for `settings` (the profile's table): the plugin's own
    /// `check_settings` runs first, without network.
    pub fn from_settings(
        plugin: &'static Plugin,
        settings: &Value,
    ) -> Result<Self, TransportError> {
        let settings = match settings {
            Value::Null => Value::Object(Default::default()),
            Value::Object(_) => settings.clone(),
            other => {
                return Err(TransportError::config(format!(
                    "{}: its settings must be a table, not {other}",
                    plugin.label()
                )))
            }
        };
        let mut settings = settings;
        let local_port = match settings
            .as_object_mut()
            .and_then(|table| table.remove(LOCAL_PORT_KEY))
        {
            None => None,
            Some(port) => Some(
                port.as_u64()
                    .and_then(|port| u16::try_from(port).ok())
                    .filter(|port| *port > 0)
                    .ok_or_else(|| {
                        TransportError::config(format!(
                            "{}: {LOCAL_PORT_KEY} must be a port number from 1 to 65535, not {port}",
                            plugin.label()
                        ))
                    })?,
            ),
        };
        if local_port.is_some() && plugin.ports.is_none() {
            return Err(TransportError::config(format!(
                "{}: {LOCAL_PORT_KEY} is set, but this plugin offers no local forwards",
                plugin.label()
            ))
            .with_fix(format!(
                "remove {LOCAL_PORT_KEY} from the transport's settings"
            )));
        }
        let connect_timeout = match settings.get("connect_timeout_ms") {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(ms) => {
                Duration::from_millis(ms.as_u64().filter(|ms| *ms > 0).ok_or_else(|| {
                    TransportError::config(format!(
                    "{}: connect_timeout_ms must be a positive number of milliseconds, not {ms}",
                    plugin.label()
                ))
                })?)
            }
        };
        let bytes: Arc<[u8]> = serde_json::to_vec(&settings)
            .expect("a JSON value serializes")
            .into();
        if let Some(check) = plugin.check_settings {
            let settings = bytes.clone();
            let result = on_own_thread(plugin.name, OFFLINE_CALL_LIMIT, move || {
                plugin.call_offline(check, &settings)
            })
            .map_err(|why| {
                TransportError::config(format!("{}: check_settings {why}", plugin.label()))
            })?;
            if result.code != abi::OK {
                return Err(error_for(plugin, result, "refused its settings"));
            }
        }
        let description = plugin
            .describe
            .and_then(|describe| {
                let settings = bytes.clone();
                on_own_thread(plugin.name, OFFLINE_CALL_LIMIT, move || {
                    plugin.call_offline(describe, &settings)
                })
                .ok()
            })
            .filter(|r| r.code == abi::OK && !r.text.is_empty())
            .map_or_else(|| format!("{} (plugin)", plugin.name), |r| r.text);
        let ports = match plugin.ports {
            None => None,
            Some(functions) => {
                let settings = bytes.clone();
                let gateway_port = on_own_thread(plugin.name, OFFLINE_CALL_LIMIT, move || {
                    // SAFETY: the settings slice is valid for the call; nothing is kept.
                    unsafe { (functions.gateway_port)(settings.as_ptr(), settings.len()) }
                })
                .map_err(|why| {
                    TransportError::config(format!("{}: gateway_port {why}", plugin.label()))
                })?;
                if gateway_port == 0 {
                    return Err(TransportError::config(format!(
                        "{}: the plugin could not tell the gateway's port from these settings \
                         (gateway_port returned 0)",
                        plugin.label()
                    ))
                    .with_fix("see the plugin's example settings in `clawlink transports`"));
                }
                Some(Ports {
                    connect_port: functions.connect_port,
                    gateway_port,
                    local_port: local_port.unwrap_or(gateway_port),
                })
            }
        };
        Ok(Self {
            plugin,
            settings: bytes,
            description,
            connect_timeout,
            ports,
        })
    }
}

/// The transport error for a failed call: the code chooses the kind (retryable or not),
/// the plugin's text says why.
fn error_for(plugin: &Plugin, result: CallResult, what: &str) -> TransportError {
    let kind = match result.code {
        abi::ERR_CONFIG => TransportErrorKind::Config,
        abi::ERR_AUTH => TransportErrorKind::Authentication,
        // CLAWLINK_ERR_CONNECT and any code the ABI does not define: retry later.
        _ => TransportErrorKind::Connect,
    };
    let why = if result.text.is_empty() {
        format!("{what} (code {}, no message)", result.code)
    } else {
        result.text
    };
    TransportError::new(kind, format!("{}: {why}", plugin.label()))
}

impl PluginTransport {
    /// Calls `connect` or `connect_port` on a thread of its own under the time limit and
    /// adopts the fd it returns.
    async fn open_stream(&self, opener: Opener) -> Result<Box<dyn DuplexStream>, TransportError> {
        let plugin = self.plugin;
        let settings = self.settings.clone();
        let limit = self.connect_timeout;
        let call = match opener {
            Opener::Gateway => "connect".to_owned(),
            Opener::Port(_, port) => format!("connect_port({port})"),
        };
        // The wait is async: the plugin's thread reports through a oneshot, so the runtime
        // keeps serving everything else meanwhile.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("plugin-{}", plugin.name))
            .spawn(move || {
                let outcome = plugin.call_open(opener, &settings);
                if let Err((result, fd)) = tx.send(outcome) {
                    // Too late: the caller gave up. A connected fd is ours to close.
                    if result.code == abi::OK && fd > 2 {
                        // SAFETY: the plugin handed this fd's ownership to us on OK.
                        unsafe { libc::close(fd) };
                    }
                }
            })
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Io,
                    format!("{}: cannot start a thread for {call}: {e}", plugin.label()),
                )
            })?;
        let (result, fd) = match tokio::time::timeout(limit, rx).await {
            Err(_) => {
                return Err(TransportError::new(
                    TransportErrorKind::Connect,
                    format!(
                        "{}: {call} did not return within {} ms; the call is abandoned (a \
                         connection it makes later is closed)",
                        plugin.label(),
                        limit.as_millis()
                    ),
                )
                .with_fix(format!(
                    "check that what the plugin reaches is up, or raise transports.{}.connect_timeout_ms",
                    clawlink_core::config::table_key(plugin.name)
                )))
            }
            Ok(Err(_)) => {
                return Err(TransportError::new(
                    TransportErrorKind::Connect,
                    format!("{}: {call} ended without an answer", plugin.label()),
                ))
            }
            Ok(Ok(outcome)) => outcome,
        };
        if result.code != abi::OK {
            return Err(error_for(plugin, result, &format!("{call} failed")));
        }
        crate::stream::adopt(fd).map_err(|why| {
            TransportError::new(
                TransportErrorKind::Connect,
                format!("{}: {call} {why}", plugin.label()),
            )
            .with_fix("this is a bug in the plugin: report it to its author")
        })
    }
}

#[async_trait]
impl GatewayPorts for PluginTransport {
    fn gateway_port(&self) -> u16 {
        self.ports.as_ref().map_or(0, |ports| ports.gateway_port)
    }

    fn preferred_local_port(&self) -> u16 {
        self.ports.as_ref().map_or(0, |ports| ports.local_port)
    }

    fn host_label(&self) -> String {
        self.description.clone()
    }

    async fn open(&self, port: u16) -> Result<Box<dyn DuplexStream>, TransportError> {
        let Some(ports) = &self.ports else {
            return Err(TransportError::new(
                TransportErrorKind::Unsupported,
                format!(
                    "{}: offers no ports on the gateway host",
                    self.plugin.label()
                ),
            ));
        };
        self.open_stream(Opener::Port(ports.connect_port, port))
            .await
    }
}

#[async_trait]
impl Transport for PluginTransport {
    fn name(&self) -> &str {
        self.plugin.name
    }

    fn gateway_key(&self) -> String {
        format!("{}:{}", self.plugin.name, self.description)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn ports(&self) -> Option<&dyn GatewayPorts> {
        self.ports.is_some().then_some(self as &dyn GatewayPorts)
    }

    async fn connect(&self) -> Result<Connected, TransportError> {
        let stream = self.open_stream(Opener::Gateway).await?;
        Ok(Connected {
            stream,
            request_url: REQUEST_URL.to_owned(),
        })
    }
}
