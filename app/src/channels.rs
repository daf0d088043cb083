//! `clawlink channels login|status|logout`: channel linking, done on the gateway host over the gateway socket.

use anyhow::Result;

use crate::cli::{ChannelLoginArgs, GlobalArgs};
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink channels login`.
pub async fn login(
    _global: &GlobalArgs,
    _settings: &Settings,
    _args: &ChannelLoginArgs,
) -> Result<()> {
    Err(Failure::config("channels: being written", None).into())
}

/// `clawlink channels status`.
pub async fn status(_global: &GlobalArgs, _settings: &Settings, _probe: bool) -> Result<()> {
    Err(Failure::config("channels: being written", None).into())
}

/// `clawlink channels logout`.
pub async fn logout(_global: &GlobalArgs, _settings: &Settings, _channel: &str) -> Result<()> {
    Err(Failure::config("channels: being written", None).into())
}
