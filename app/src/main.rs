//! The `clawlink` binary: parses the command line, loads the profile, runs one command, exits with 0, 1 or 2.

mod cli;
mod commands;
mod connect;
mod failure;
mod plugins;
mod prompt;
mod remote;
mod settings;
mod state;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ConfigCommand, GlobalArgs, LogFormat, SshCommand};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(&cli.global);
    let json = cli.global.json;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => ExitCode::from(failure::report(&error, json)),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    clawlink_core::registry::validate()
        .map_err(|e| failure::Failure::config(e.to_string(), None))?;
    plugins::check_linked().map_err(|e| failure::Failure::config(e, None))?;
    let global = &cli.global;
    if let Command::Transports = cli.command {
        return commands::transports(global);
    }
    let settings = settings::load(global)?;
    match &cli.command {
        Command::Status => commands::status(global, &settings).await,
        Command::Call(args) => commands::call(global, &settings, args).await,
        Command::Config(ConfigCommand::Show) => commands::config_show(global, &settings),
        Command::Config(ConfigCommand::Check) => commands::config_check(global, &settings),
        Command::Features => commands::features(global, &settings),
        Command::Test(args) => remote::test(global, &settings, args.remote_status).await,
        Command::Tunnel => remote::tunnel(global, &settings).await,
        Command::Ssh(SshCommand::Trust { target, yes }) => {
            remote::trust(global, &settings, target.as_deref(), *yes).await
        }
        Command::Transports => unreachable!("handled above"),
    }
}

/// Logs go to stderr; stdout is for results. `RUST_LOG` wins over `-v`/`-q`.
fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        // Our crates at the chosen level; dependencies one notch quieter unless tracing.
        let deps = if global.verbose >= 3 { "trace" } else { "warn" };
        EnvFilter::new(format!(
            "{deps},clawlink={level},clawlink_core={level},clawlink_transport_ws={level}"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.compact().init(),
    }
}
