//! `clawlink chat` and `clawlink dashboard`: the gateway's web chat in the terminal, and its Control UI in the browser, over the profile's transport.

use anyhow::Result;
use clap::Args;

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::settings::Settings;

/// Options of `clawlink chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {}

/// Options of `clawlink dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {}

/// `clawlink chat`.
pub async fn chat(_global: &GlobalArgs, _settings: &Settings, _args: &ChatArgs) -> Result<()> {
    Err(Failure::config("chat: being written", None).into())
}

/// `clawlink dashboard`.
pub async fn dashboard(
    _global: &GlobalArgs,
    _settings: &Settings,
    _args: &DashboardArgs,
) -> Result<()> {
    Err(Failure::config("dashboard: being written", None).into())
}
