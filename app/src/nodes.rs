//! `clawlink nodes` and `clawlink notify`: the gateway's nodes, their permissions and pairing, and notifications sent to them.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink nodes …`.
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the gateway's nodes
    List,
}

/// Options of `clawlink notify`.
#[derive(Debug, Args)]
pub struct NotifyArgs {}

/// `clawlink nodes …`.
pub async fn nodes(
    _global: &GlobalArgs,
    _settings: &Settings,
    _command: &NodesCommand,
) -> Result<()> {
    Err(Failure::config("nodes: being written", None).into())
}

/// `clawlink notify`.
pub async fn notify(_global: &GlobalArgs, _settings: &Settings, _args: &NotifyArgs) -> Result<()> {
    Err(Failure::config("notify: being written", None).into())
}
