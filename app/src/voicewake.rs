//! `clawlink voicewake …`: the gateway's trigger phrases and routes, one-shot forwarding, and the recognizer in the foreground.

use anyhow::Result;
use clap::Subcommand;

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::settings::Settings;

/// `clawlink voicewake …`.
#[derive(Debug, Subcommand)]
pub enum VoicewakeCommand {
    /// Show the gateway's trigger phrases
    Triggers,
}

/// `clawlink voicewake …`.
pub async fn run(
    _global: &GlobalArgs,
    _settings: &Settings,
    _command: &VoicewakeCommand,
) -> Result<()> {
    Err(Failure::config("voicewake: being written", None).into())
}
