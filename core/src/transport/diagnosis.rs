//! The `Diagnosis` capability: a transport's own ordered layers (name, check, fix) that `clawlink doctor` walks between its "config" layer and the gateway's WebSocket.
//!
//! The doctor owns the generic layers (config, the local forward port, websocket, protocol,
//! auth, health); a transport that offers this capability reports the layers only it can
//! check (name resolution, TCP, an SSH login, a TLS handshake, …) into a [`LayerSink`], in
//! the order of [`Diagnosis::layers`], and stops at the first that fails. A transport without
//! it is checked as a whole through [`super::Transport::connect`].

pub mod net;

use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;

use super::{Connected, TransportError};

/// The layer the doctor checks itself when a transport asks for it through
/// [`LayerSink::local_port`]: whether the loopback port `clawlink tunnel` and `up` would
/// listen on is free (or held by this profile's own agent).
pub const LOCAL_PORT_LAYER: &str = "local-port";

/// How one layer came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerStatus {
    Ok,
    Failed,
    /// The layer does not apply here ("n/a: …"), or was not reached.
    Skipped,
}

/// One layer's outcome, as the doctor prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// The layer's name, one of [`Diagnosis::layers`].
    pub layer: &'static str,
    pub status: LayerStatus,
    /// How long the check took; `None` when nothing was measured.
    pub ms: Option<u64>,
    /// What was found, in one line.
    pub detail: String,
    /// One actionable sentence; every failed layer carries one.
    pub fix: Option<String>,
    /// Machine-readable facts for `--json`.
    pub data: Value,
}

impl LayerReport {
    /// The layer passed; timed from `started`.
    pub fn ok(layer: &'static str, started: Instant, detail: String, data: Value) -> Self {
        Self::timed(layer, LayerStatus::Ok, started.elapsed().as_millis() as u64)
            .detail(detail, None, data)
    }

    /// The layer failed; timed from `started`. The walk stops here.
    pub fn failed(
        layer: &'static str,
        started: Instant,
        detail: String,
        fix: Option<String>,
        data: Value,
    ) -> Self {
        Self::timed(
            layer,
            LayerStatus::Failed,
            started.elapsed().as_millis() as u64,
        )
        .detail(detail, fix, data)
    }

    /// The layer does not apply to this profile, and why.
    pub fn not_applicable(layer: &'static str, why: &str) -> Self {
        Self {
            layer,
            status: LayerStatus::Skipped,
            ms: None,
            detail: format!("n/a: {why}"),
            fix: None,
            data: Value::Null,
        }
    }

    /// A layer with a duration measured elsewhere (e.g. the SSH handshake's own timing).
    pub fn timed(layer: &'static str, status: LayerStatus, ms: u64) -> Self {
        Self {
            layer,
            status,
            ms: Some(ms),
            detail: String::new(),
            fix: None,
            data: Value::Null,
        }
    }

    /// Sets what was found.
    pub fn detail(mut self, detail: String, fix: Option<String>, data: Value) -> Self {
        self.detail = detail;
        self.fix = fix;
        self.data = data;
        self
    }
}

/// The walk stopped at a failed layer, which is already reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Where a transport's layers go: the doctor's report.
#[async_trait(?Send)]
pub trait LayerSink {
    /// Records one layer. Returns `Err(Stopped)` when it failed, so that `?` ends the walk.
    fn report(&mut self, report: LayerReport) -> Result<(), Stopped>;

    /// Runs the doctor's [`LOCAL_PORT_LAYER`] at this point of the walk, for the loopback
    /// `port` local forwards of this profile would listen on; `explicit` when the profile
    /// names the port (a taken default is not a failure: the forwards fall back to another).
    async fn local_port(&mut self, port: u16, explicit: bool) -> Result<(), Stopped>;
}

/// What the doctor's config layer learns from the transport besides its settings parsing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsNotes {
    /// Short remarks appended to the config layer's line (e.g. ignored config keywords).
    pub notes: Vec<String>,
    /// Facts merged into the config layer's JSON data.
    pub data: serde_json::Map<String, Value>,
}

/// A note the doctor prints after a healthy walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub detail: String,
    pub data: Value,
}

/// A transport's own diagnosis: see the module documentation.
///
/// Contract: `diagnose` reports exactly the layers of `layers()`, in that order (a layer
/// that does not apply is reported as [`LayerReport::not_applicable`]), bounds every step
/// with its own time limit, never prompts, and stops at the first failed layer, which
/// carries a fix. It may hand back the stream its last layer opened to the gateway (e.g. a
/// TLS stream) for the doctor's websocket layer to reuse.
#[async_trait(?Send)]
pub trait Diagnosis: Send + Sync {
    /// The names of the layers `diagnose` reports, in order (including
    /// [`LOCAL_PORT_LAYER`] when the walk calls [`LayerSink::local_port`]).
    fn layers(&self) -> Vec<&'static str>;

    /// The config layer's part: checks that need no network (e.g. `~/.ssh/config`
    /// resolution). An error fails the config layer.
    fn check_settings(&self) -> Result<SettingsNotes, TransportError> {
        Ok(SettingsNotes::default())
    }

    /// `clawlink test`'s step for this transport, before its remote-CLI and gateway steps:
    /// establishes the session those steps then share (an SSH login) and says how it went
    /// (endpoint, host key, authentication, timings in `data`). Prompts through the
    /// transport's prompter like any connect. `None`: nothing to establish ahead of a stream
    /// (the gateway step says it all).
    async fn session_step(&self) -> Option<LayerReport> {
        None
    }

    /// Walks the transport's layers into `sink`.
    async fn diagnose(&self, sink: &mut dyn LayerSink) -> Result<Option<Connected>, Stopped>;

    /// Which address the gateway sees this client as, for the doctor's notes.
    fn client_address(&self) -> Note;
}

/// A [`Diagnosis::layers`] list is well-formed: names non-empty and unique. Returns what is
/// wrong, for compliance tests and the doctor's own check.
pub fn check_layer_names(layers: &[&str]) -> Result<(), String> {
    for (i, name) in layers.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(format!("layer {i} has an empty name"));
        }
        if layers[..i].contains(name) {
            return Err(format!("layer {name:?} is listed twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_must_be_present_and_unique() {
        assert!(check_layer_names(&["dns", "tcp", LOCAL_PORT_LAYER]).is_ok());
        assert!(check_layer_names(&["dns", " "])
            .unwrap_err()
            .contains("empty"));
        assert!(check_layer_names(&["dns", "tcp", "dns"])
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn a_not_applicable_layer_says_so_and_is_not_timed() {
        let report = LayerReport::not_applicable("tls", "plaintext");
        assert_eq!(report.status, LayerStatus::Skipped);
        assert_eq!(report.detail, "n/a: plaintext");
        assert_eq!(report.ms, None);
    }
}
