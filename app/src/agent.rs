//! `clawlink up`, the long-running agent, and the commands that talk to it (`reconnect`, `health`).

use anyhow::Result;

use crate::cli::{GlobalArgs, UpArgs};
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink up`.
pub async fn up(_global: &GlobalArgs, _settings: &Settings, _args: &UpArgs) -> Result<()> {
    Err(Failure::config("up: being written", None).into())
}

/// `clawlink reconnect`.
pub async fn reconnect(_global: &GlobalArgs, _settings: &Settings) -> Result<()> {
    Err(Failure::config("reconnect: being written", None).into())
}

/// `clawlink health`.
pub async fn health(_global: &GlobalArgs, _settings: &Settings) -> Result<()> {
    Err(Failure::config("health: being written", None).into())
}
