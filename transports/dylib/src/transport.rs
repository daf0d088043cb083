//! A transport backed by a loaded plugin: each `connect` calls the plugin's `connect` on a thread of its own, under a time limit, and adopts the fd it returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::text::terminal_safe;
use clawlink_core::transport::{Connected, Transport, TransportError, TransportErrorKind};
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

    /// The plugin's `connect`: the code, the fd (on success) and the text.
    fn call_connect(&self, settings: &[u8]) -> (CallResult, i32) {
        let mut fd = -1i32;
        let connect = self.connect;
        let result = Self::with_buffer(|buf, cap, len| {
            // SAFETY: the pointers are valid for the call: the settings slice, our fd slot
            // and our buffer with its capacity; the ABI forbids keeping any of them.
            unsafe { connect(settings.as_ptr(), settings.len(), &mut fd, buf, cap, len) }
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
}

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
        Ok(Self {
            plugin,
            settings: bytes,
            description,
            connect_timeout,
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

    async fn connect(&self) -> Result<Connected, TransportError> {
        let plugin = self.plugin;
        let settings = self.settings.clone();
        let limit = self.connect_timeout;
        // The wait is async: the plugin's thread reports through a oneshot, so the runtime
        // keeps serving everything else meanwhile.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("plugin-{}", plugin.name))
            .spawn(move || {
                let outcome = plugin.call_connect(&settings);
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
                    format!("{}: cannot start a thread for connect: {e}", plugin.label()),
                )
            })?;
        let (result, fd) = match tokio::time::timeout(limit, rx).await {
            Err(_) => {
                return Err(TransportError::new(
                    TransportErrorKind::Connect,
                    format!(
                        "{}: connect did not return within {} ms; the call is abandoned (a \
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
                    format!("{}: connect ended without an answer", plugin.label()),
                ))
            }
            Ok(Ok(outcome)) => outcome,
        };
        if result.code != abi::OK {
            return Err(error_for(plugin, result, "connect failed"));
        }
        let stream = crate::stream::adopt(fd).map_err(|why| {
            TransportError::new(
                TransportErrorKind::Connect,
                format!("{}: connect {why}", plugin.label()),
            )
            .with_fix("this is a bug in the plugin: report it to its author")
        })?;
        Ok(Connected {
            stream,
            request_url: REQUEST_URL.to_owned(),
        })
    }
}
