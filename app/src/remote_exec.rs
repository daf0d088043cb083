//! `clawlink remote -- COMMAND`: runs a command on the SSH host with a terminal, resolving `openclaw` like `clawlink test`.

use anyhow::Result;

use crate::cli::{GlobalArgs, RemoteArgs};
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink remote`.
pub async fn run(_global: &GlobalArgs, _settings: &Settings, _args: &RemoteArgs) -> Result<()> {
    Err(Failure::config("remote: being written", None).into())
}
