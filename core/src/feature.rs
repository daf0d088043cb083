//! The feature-plugin contract (health, webchat, voicewake, notify…) and the host that runs the enabled ones.
//!
//! A feature gets a [`FeatureContext`] — the gateway client, its own settings, a shutdown
//! token and a status reporter — and runs until the token is cancelled. The host starts
//! features in name order and stops them in reverse order, giving each a deadline: a feature
//! that does not stop in time is abandoned and reported, so it cannot hang the agent's exit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::gateway::{ClientOptions, GatewayClient};
use crate::registry::FeatureDescriptor;

/// A feature plugin instance.
///
/// Contract: `run` returns when `ctx.shutdown` is cancelled (promptly: within a second) or
/// when the feature fails for good. It must not assume the gateway is connected: the client
/// reconnects underneath and features watch [`GatewayClient::state`].
#[async_trait]
pub trait Feature: Send + Sync {
    async fn run(&self, ctx: FeatureContext) -> Result<(), FeatureError>;

    /// Answers an on-demand request from another clawlink invocation (through the agent's
    /// control socket) while `run` is running, e.g. health's `refresh`. Called concurrently
    /// with `run`; features keep what it needs behind their own locks.
    ///
    /// Default: the feature has no actions.
    async fn control(
        &self,
        action: &str,
        _args: serde_json::Value,
    ) -> Result<serde_json::Value, FeatureError> {
        Err(FeatureError::new(format!(
            "this feature has no action {action:?}"
        )))
    }
}

/// What the app lends features beyond the shared connection: options for connections of
/// their own (e.g. notify's `node` connection) and a private directory for state that must
/// survive restarts (e.g. an outbox). Features never read config files or the environment.
pub trait HostServices: Send + Sync {
    /// Options for another gateway connection with the profile's transport credentials and
    /// device-token store, and a stable device identity of its own named `device` (one key
    /// per name, kept by the app).
    fn client_options(&self, device: &str) -> Result<ClientOptions, FeatureError>;

    /// A private (0700) directory for `feature`'s state, created on first use.
    fn state_dir(&self, feature: &str) -> Result<PathBuf, FeatureError>;
}

/// Services of a host that lends nothing (tests, embedders): every request says so.
pub struct NoHostServices;

impl HostServices for NoHostServices {
    fn client_options(&self, device: &str) -> Result<ClientOptions, FeatureError> {
        Err(FeatureError::new(format!(
            "this host cannot open extra gateway connections (asked for device {device:?})"
        )))
    }

    fn state_dir(&self, feature: &str) -> Result<PathBuf, FeatureError> {
        Err(FeatureError::new(format!(
            "this host keeps no state for feature {feature:?}"
        )))
    }
}

/// Everything a running feature may use.
pub struct FeatureContext {
    pub gateway: GatewayClient,
    /// What the app lends beyond the shared connection.
    pub services: Arc<dyn HostServices>,
    /// The feature's settings table (without `enabled`), as JSON.
    pub settings: serde_json::Value,
    pub shutdown: CancellationToken,
    pub status: StatusReporter,
}

/// A feature failure, with the fix when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FeatureError {
    pub message: String,
    pub fix: Option<String>,
}

impl FeatureError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            fix: None,
        }
    }

    /// A settings table the feature cannot use; `key` names the offending key.
    pub fn settings(feature: &str, err: impl std::fmt::Display) -> Self {
        Self::new(format!("features.{feature}: {err}"))
    }

    /// A settings value the feature refuses, pointing at `clawlink features`, which shows
    /// every setting and its default.
    pub fn invalid_settings(feature: &str, err: impl std::fmt::Display) -> Self {
        Self {
            fix: Some(format!(
                "see `clawlink features` for the {feature} settings and their defaults"
            )),
            ..Self::settings(feature, err)
        }
    }
}

/// Reads a feature's settings table: JSON `null` (no table) gives the defaults; whatever
/// serde refuses (a wrong type, an unknown key under `deny_unknown_fields`) is an
/// [`FeatureError::invalid_settings`] naming it. Checks of the values stay the feature's.
pub fn parse_settings<T>(feature: &str, settings: &serde_json::Value) -> Result<T, FeatureError>
where
    T: serde::de::DeserializeOwned + Default,
{
    if settings.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(settings.clone()).map_err(|e| FeatureError::invalid_settings(feature, e))
}

/// The lifecycle of one feature, as shown by `clawlink status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureState {
    Starting,
    Running,
    Degraded,
    Stopped,
    Failed,
}

/// What a feature last said about itself.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureStatus {
    pub state: FeatureState,
    /// One human line ("linked · auth 12m").
    pub summary: String,
    /// Structured detail for `--json` output.
    pub details: serde_json::Value,
    #[serde(with = "unix_ms")]
    pub updated: SystemTime,
}

impl FeatureStatus {
    fn new(state: FeatureState, summary: impl Into<String>) -> Self {
        Self {
            state,
            summary: summary.into(),
            details: serde_json::Value::Null,
            updated: SystemTime::now(),
        }
    }
}

mod unix_ms {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(crate::time::unix_millis(*t))
    }
}

/// The feature's handle for publishing its status.
#[derive(Clone)]
pub struct StatusReporter {
    tx: watch::Sender<FeatureStatus>,
}

impl StatusReporter {
    fn new() -> (Self, watch::Receiver<FeatureStatus>) {
        let (tx, rx) = watch::channel(FeatureStatus::new(FeatureState::Starting, "starting"));
        (Self { tx }, rx)
    }

    pub fn set(&self, state: FeatureState, summary: impl Into<String>, details: serde_json::Value) {
        self.tx.send_replace(FeatureStatus {
            state,
            summary: summary.into(),
            details,
            updated: SystemTime::now(),
        });
    }
}

/// One running feature, as the host keeps it.
struct Running {
    name: &'static str,
    feature: Arc<dyn Feature>,
    status: watch::Receiver<FeatureStatus>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// How long [`FeatureHost::stop_all`] waits for each feature: the contract asks for a
/// second; the rest is slack for a loaded machine.
pub const FEATURE_STOP_DEADLINE: Duration = Duration::from_secs(3);

/// What [`FeatureHost::stop_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Every feature, in the order it was asked to stop (newest first).
    pub order: Vec<&'static str>,
    /// The features that had not returned by their deadline; their tasks were aborted.
    pub late: Vec<&'static str>,
}

/// Runs the enabled features and stops them in reverse start order.
pub struct FeatureHost {
    running: Vec<Running>,
    services: Arc<dyn HostServices>,
}

impl Default for FeatureHost {
    /// A host that lends no services ([`NoHostServices`]).
    fn default() -> Self {
        Self::new(Arc::new(NoHostServices))
    }
}

impl FeatureHost {
    /// A host whose features get `services`.
    pub fn new(services: Arc<dyn HostServices>) -> Self {
        Self {
            running: Vec::new(),
            services,
        }
    }

    /// Starts one feature built from `descriptor` with `settings`.
    pub fn start(
        &mut self,
        descriptor: &'static FeatureDescriptor,
        settings: serde_json::Value,
        gateway: GatewayClient,
    ) -> Result<(), FeatureError> {
        let feature: Arc<dyn Feature> = Arc::from((descriptor.factory)(&settings)?);
        let (status, status_rx) = StatusReporter::new();
        let shutdown = CancellationToken::new();
        let ctx = FeatureContext {
            gateway,
            services: self.services.clone(),
            settings,
            shutdown: shutdown.clone(),
            status: status.clone(),
        };
        let name = descriptor.name;
        let runner = feature.clone();
        let task = tokio::spawn(async move {
            let feature = runner;
            match feature.run(ctx).await {
                Ok(()) => status.set(FeatureState::Stopped, "stopped", serde_json::Value::Null),
                Err(err) => {
                    tracing::error!(feature = name, error = %err, "feature failed");
                    status.set(
                        FeatureState::Failed,
                        err.to_string(),
                        serde_json::Value::Null,
                    );
                }
            }
        });
        self.running.push(Running {
            name,
            feature,
            status: status_rx,
            shutdown,
            task,
        });
        Ok(())
    }

    /// Current status of every started feature, in start order.
    pub fn statuses(&self) -> Vec<(&'static str, FeatureStatus)> {
        self.running
            .iter()
            .map(|r| (r.name, r.status.borrow().clone()))
            .collect()
    }

    /// Names of the started features, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.running.iter().map(|r| r.name).collect()
    }

    /// The running feature called `name`, for [`Feature::control`] requests; the handle can
    /// be used without holding the host.
    pub fn handle(&self, name: &str) -> Option<Arc<dyn Feature>> {
        self.running
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.feature.clone())
    }

    /// Stops every feature, newest first, waiting up to [`FEATURE_STOP_DEADLINE`] for each.
    pub async fn stop_all(&mut self) -> StopReport {
        self.stop_all_within(FEATURE_STOP_DEADLINE).await
    }

    /// Stops every feature, newest first, waiting up to `deadline` for each to return; a
    /// feature still running after it is aborted, logged and listed in [`StopReport::late`].
    pub async fn stop_all_within(&mut self, deadline: Duration) -> StopReport {
        let mut report = StopReport::default();
        while let Some(mut running) = self.running.pop() {
            running.shutdown.cancel();
            match tokio::time::timeout(deadline, &mut running.task).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tracing::error!(feature = running.name, "feature task panicked"),
                Err(_) => {
                    running.task.abort();
                    tracing::warn!(
                        feature = running.name,
                        deadline_ms = deadline.as_millis() as u64,
                        "feature did not stop in time; abandoned"
                    );
                    report.late.push(running.name);
                }
            }
            report.order.push(running.name);
        }
        report
    }
}
