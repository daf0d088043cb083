//! `clawlink logs`: the remote gateway's log through the `logs.tail` RPC.

use anyhow::Result;

use crate::cli::{GlobalArgs, LogsArgs};
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink logs`.
pub async fn run(_global: &GlobalArgs, _settings: &Settings, _args: &LogsArgs) -> Result<()> {
    Err(Failure::config("logs: being written", None).into())
}
