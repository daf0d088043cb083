//! Composes a gateway connection from the resolved profile: the registered transport, the credentials, the device state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clawlink_core::gateway::{ClientOptions, Credentials, GatewayClient};
use clawlink_core::registry;
use clawlink_core::transport::{Transport, TransportEnv};
use secrecy::SecretString;

use crate::failure::Failure;
use crate::keyring_store::{self, SecretKind};
use crate::prompt::AppPrompter;
use crate::secret_env;
use crate::settings::{expand_home, Settings};
use crate::state;

/// Where each secret came from, for `config show` (never the value).
#[derive(Debug, Clone, Default)]
pub struct SecretSources {
    pub token: Option<String>,
    pub password: Option<String>,
}

/// Builds the profile's transport through the registry.
pub fn build_transport(settings: &Settings) -> Result<Arc<dyn Transport>, Failure> {
    let env = TransportEnv {
        prompter: Arc::new(AppPrompter::from_environment()),
    };
    build_transport_with(settings, &env)
}

/// [`build_transport`] with another environment (the doctor's never prompts).
pub fn build_transport_with(
    settings: &Settings,
    env: &TransportEnv,
) -> Result<Arc<dyn Transport>, Failure> {
    let name = settings.profile.transport_name();
    let descriptor = registry::transport(name).ok_or_else(|| {
        let known: Vec<&str> = registry::transports().iter().map(|d| d.name).collect();
        Failure::config(
            format!(
                "profile {:?} selects transport {name:?}, which this build does not have (it has: {})",
                settings.profile_name,
                known.join(", ")
            ),
            Some("pick one of those with `transport = \"…\"`, or build clawlink with that transport (`cargo xtask build`)".into()),
        )
    })?;
    (descriptor.factory)(&settings.profile.transport_settings(name), env).map_err(Failure::from)
}

/// Resolves the gateway secrets: `--token-file`/`--password-file`, else `CLAWLINK_TOKEN` /
/// `CLAWLINK_PASSWORD`, else the profile's `auth.token_file` / `auth.password_file`, else
/// (when none of those named any secret) the OS keyring (`clawlink auth set`).
pub async fn credentials(settings: &Settings) -> Result<(Credentials, SecretSources), Failure> {
    let conn = &settings.flag_secrets;
    let auth = &settings.profile.auth;
    let mut sources = SecretSources::default();
    let token = pick(
        conn.token_file.as_ref(),
        secret_env::TOKEN,
        auth.token_file.as_ref(),
        "the token file",
        &mut sources.token,
    )?;
    let password = pick(
        conn.password_file.as_ref(),
        secret_env::PASSWORD,
        auth.password_file.as_ref(),
        "the password file",
        &mut sources.password,
    )?;
    let (mut token, mut password) = (token, password);
    if token.is_none() && password.is_none() {
        let profile = &settings.profile_name;
        if let Some(secret) = keyring_store::get(profile, SecretKind::Token).await {
            sources.token = Some(keyring_store::label(profile, SecretKind::Token));
            token = Some(secret);
        } else if let Some(secret) = keyring_store::get(profile, SecretKind::Password).await {
            sources.password = Some(keyring_store::label(profile, SecretKind::Password));
            password = Some(secret);
        }
    }
    Ok((Credentials { token, password }, sources))
}

fn pick(
    flag: Option<&PathBuf>,
    env_var: &str,
    profile: Option<&PathBuf>,
    what: &str,
    source: &mut Option<String>,
) -> Result<Option<SecretString>, Failure> {
    if let Some(path) = flag {
        let path = expand_home(path);
        *source = Some(format!("file {} (command line)", path.display()));
        return state::read_secret_file(&path, what).map(Some);
    }
    // Read at start-up and removed from the environment (secret_env).
    if let Some(value) = secret_env::get(env_var) {
        *source = Some(format!("environment variable {env_var}"));
        return Ok(Some(value.clone()));
    }
    if let Some(path) = profile {
        let path = expand_home(path);
        *source = Some(format!("file {} (profile)", path.display()));
        return state::read_secret_file(&path, what).map(Some);
    }
    Ok(None)
}

/// The client options for an operator connection of this profile.
pub async fn operator_options(settings: &Settings) -> Result<ClientOptions, Failure> {
    Connector::new(settings).await?.options("operator")
}

/// Everything needed to open gateway connections for this profile: the credentials
/// (resolved once), the data directory with one device key per named device, and one
/// device-token store shared by every connection of the process.
pub struct Connector {
    credentials: Credentials,
    dir: PathBuf,
    tokens: Arc<state::FileTokenStore>,
    display_name: Option<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl Connector {
    pub async fn new(settings: &Settings) -> Result<Self, Failure> {
        let (credentials, _) = credentials(settings).await?;
        let dir = state::data_dir()?;
        let tokens = Arc::new(state::FileTokenStore::open(&dir)?);
        let client = &settings.profile.client;
        Ok(Self {
            credentials,
            dir,
            tokens,
            display_name: client.display_name.clone().or_else(host_name),
            request_timeout: Duration::from_millis(client.request_timeout_ms),
            connect_timeout: Duration::from_millis(client.connect_timeout_ms),
        })
    }

    /// Options for a connection with the device identity named `device` (`operator` for
    /// the main connection). Operator defaults; a feature adjusts role, scopes and commands.
    pub fn options(&self, device: &str) -> Result<ClientOptions, Failure> {
        let identity = Arc::new(state::load_or_create_identity(&self.dir, device)?);
        let mut options =
            ClientOptions::operator(identity, self.credentials.clone(), self.tokens.clone());
        options.display_name = self.display_name.clone();
        options.request_timeout = self.request_timeout;
        options.connect_timeout = self.connect_timeout;
        Ok(options)
    }

    /// A private directory under the data directory, created 0700 on first use.
    pub fn state_dir(&self, name: &str) -> Result<PathBuf, Failure> {
        let dir = self.dir.join(name);
        state::create_private_dir(&dir).map_err(|e| {
            Failure::config(
                format!("cannot create {}: {e}", dir.display()),
                Some(
                    "check the permissions of clawlink's data directory (CLAWLINK_DATA_DIR)".into(),
                ),
            )
        })?;
        Ok(dir)
    }
}

impl clawlink_core::feature::HostServices for Connector {
    fn client_options(
        &self,
        device: &str,
    ) -> Result<ClientOptions, clawlink_core::feature::FeatureError> {
        self.options(device).map_err(feature_error)
    }

    fn state_dir(&self, feature: &str) -> Result<PathBuf, clawlink_core::feature::FeatureError> {
        Connector::state_dir(self, feature).map_err(feature_error)
    }
}

fn feature_error(failure: Failure) -> clawlink_core::feature::FeatureError {
    clawlink_core::feature::FeatureError {
        message: failure.message,
        fix: failure.fix,
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| format!("clawlink on {}", h.trim()))
}

/// Connects once (the one-shot commands): fails with the first error that retrying cannot fix.
pub async fn connect(settings: &Settings) -> Result<GatewayClient, Failure> {
    let transport = build_transport(settings)?;
    let options = operator_options(settings).await?;
    GatewayClient::connect(transport, options)
        .await
        .map_err(Failure::from)
}

/// How long closing a transport (an SSH session's goodbye) may take before the command
/// exits without it.
pub const TRANSPORT_CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// Ends a one-shot command's connection: the WebSocket, then the transport (an SSH session).
/// Both waits are bounded; what did not close in time is logged and left behind, so the
/// command still exits.
pub async fn finish(client: &GatewayClient) {
    client.shutdown().await;
    close_transport(client.transport().as_ref()).await;
}

/// Closes `transport`, at most [`TRANSPORT_CLOSE_DEADLINE`]; false (and a warning naming it)
/// when it did not close in time.
pub async fn close_transport(transport: &dyn clawlink_core::transport::Transport) -> bool {
    let closed = tokio::time::timeout(TRANSPORT_CLOSE_DEADLINE, transport.close())
        .await
        .is_ok();
    if !closed {
        tracing::warn!(
            transport = %transport.describe(),
            deadline_ms = TRANSPORT_CLOSE_DEADLINE.as_millis() as u64,
            "the transport did not close in time; exiting without it"
        );
    }
    closed
}
