//! `clawlink service install|uninstall|status`: the agent as a systemd user unit or a launchd agent.

use anyhow::Result;

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink service install`.
pub async fn install(_global: &GlobalArgs, _settings: &Settings, _no_start: bool) -> Result<()> {
    Err(Failure::config("service: being written", None).into())
}

/// `clawlink service uninstall`.
pub async fn uninstall(_global: &GlobalArgs, _settings: &Settings) -> Result<()> {
    Err(Failure::config("service: being written", None).into())
}

/// `clawlink service status`.
pub async fn status(_global: &GlobalArgs, _settings: &Settings) -> Result<()> {
    Err(Failure::config("service: being written", None).into())
}
