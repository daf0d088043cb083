//! `clawlink doctor`: walks the layers from config to health and names the first that fails.

use anyhow::Result;

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink doctor`.
pub async fn run(_global: &GlobalArgs, _settings: &Settings) -> Result<()> {
    Err(Failure::config("doctor: being written", None).into())
}
