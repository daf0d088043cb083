//! The `clawlink` binary: parses the command line, loads the profile, runs one command, exits with 0, 1 or 2.

mod agent;
mod channels;
#[cfg(feature = "feature-webchat")]
mod chat;
mod cli;
mod commands;
mod connect;
mod control;
mod dashboard;
mod doctor;
mod failure;
mod human;
mod keyring_store;
mod logs;
mod nodes;
mod plugins;
mod prompt;
mod qr;
#[cfg(feature = "transport-ssh")]
mod remote;
#[cfg(feature = "transport-ssh")]
mod remote_exec;
mod service;
mod settings;
mod signals;
mod state;
#[cfg(feature = "transport-ws")]
mod tls_trust;
mod trusted_file;
mod voicewake;

use std::process::ExitCode;

use clap::Parser;

use cli::{
    AuthCommand, ChannelsCommand, Cli, Command, ConfigCommand, GlobalArgs, LogFormat,
    ServiceCommand, SshCommand, TlsCommand,
};
use keyring_store::SecretKind;

fn secret_kind(password: bool) -> SecretKind {
    if password {
        SecretKind::Password
    } else {
        SecretKind::Token
    }
}

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
    if prints_and_exits(&cli.command) {
        // `clawlink features | head`: end quietly when the reader goes away, as Unix tools
        // do (Rust ignores SIGPIPE, which turns the next print into a panic). Sockets are
        // unaffected: std sends with MSG_NOSIGNAL / SO_NOSIGPIPE. Commands that feed pipes
        // of child processes keep SIGPIPE ignored.
        #[cfg(unix)]
        // SAFETY: restoring a signal's default disposition before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // One crypto provider for the whole process, chosen here (ring), so that no dependency's
    // feature set can make rustls panic over an ambiguous default.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
        Command::Config(ConfigCommand::Show) => commands::config_show(global, &settings).await,
        Command::Config(ConfigCommand::Check) => commands::config_check(global, &settings).await,
        Command::Features => commands::features(global, &settings),
        #[cfg(feature = "transport-ssh")]
        Command::Test(args) => remote::test(global, &settings, args.remote_status).await,
        #[cfg(feature = "transport-ssh")]
        Command::Tunnel => remote::tunnel(global, &settings).await,
        #[cfg(feature = "transport-ssh")]
        Command::Ssh(SshCommand::Trust { target, yes }) => {
            remote::trust(global, &settings, target.as_deref(), *yes).await
        }
        #[cfg(feature = "transport-ssh")]
        Command::Remote(args) => remote_exec::run(global, &settings, args).await,
        // The commands stay in the CLI of every build, so that asking for one names what
        // is missing instead of clap calling it an unknown subcommand.
        #[cfg(not(feature = "transport-ssh"))]
        Command::Test(_)
        | Command::Tunnel
        | Command::Ssh(SshCommand::Trust { .. })
        | Command::Remote(_) => Err(failure::Failure::config(
            "this build of clawlink has no ssh-tunnel transport",
            Some("rebuild with `cargo xtask build` (the default includes it)".into()),
        )
        .into()),
        Command::Auth(AuthCommand::Set { password }) => {
            commands::auth_set(global, &settings, secret_kind(*password)).await
        }
        Command::Auth(AuthCommand::Status) => commands::auth_status(global, &settings).await,
        Command::Auth(AuthCommand::Clear { password }) => {
            commands::auth_clear(global, &settings, secret_kind(*password)).await
        }
        #[cfg(feature = "transport-ws")]
        Command::Tls(TlsCommand::Trust { url, yes }) => {
            tls_trust::trust(global, &settings, url.as_deref(), *yes).await
        }
        #[cfg(not(feature = "transport-ws"))]
        Command::Tls(TlsCommand::Trust { .. }) => Err(missing_plugin("transport", "direct-ws")),
        Command::Up(args) => agent::up(global, &settings, args).await,
        Command::Reconnect => agent::reconnect(global, &settings).await,
        Command::Health => agent::health(global, &settings).await,
        Command::Doctor => doctor::run(global, &settings).await,
        Command::Logs(args) => logs::run(global, &settings, args).await,
        Command::Channels(ChannelsCommand::Login(args)) => {
            channels::login(global, &settings, args).await
        }
        Command::Channels(ChannelsCommand::Status { probe }) => {
            channels::status(global, &settings, *probe).await
        }
        Command::Channels(ChannelsCommand::Logout { channel }) => {
            channels::logout(global, &settings, channel).await
        }
        Command::Service(ServiceCommand::Install { no_start }) => {
            service::install(global, &settings, *no_start).await
        }
        Command::Service(ServiceCommand::Uninstall) => service::uninstall(global, &settings).await,
        Command::Service(ServiceCommand::Status) => service::status(global, &settings).await,
        #[cfg(feature = "feature-webchat")]
        Command::Chat(args) => chat::chat(global, &settings, args).await,
        #[cfg(not(feature = "feature-webchat"))]
        Command::Chat(_) => Err(missing_plugin("feature", "webchat")),
        Command::Dashboard(args) => dashboard::dashboard(global, &settings, args).await,
        Command::Nodes(command) => nodes::nodes(global, &settings, command).await,
        Command::Notify(args) => nodes::notify(global, &settings, args).await,
        Command::Voicewake(command) => voicewake::run(global, &settings, command).await,
        Command::Transports => unreachable!("handled above"),
    }
}

/// Whether the command only talks to the gateway and prints: a closed stdout may end it.
fn prints_and_exits(command: &Command) -> bool {
    !matches!(
        command,
        Command::Up(_) | Command::Remote(_) | Command::Service(_) | Command::Voicewake(_)
    )
}

/// The error for a command whose plugin this build left out (`cargo xtask build --only …`).
#[allow(dead_code)] // unused when every plugin is built in
fn missing_plugin(kind: &str, name: &str) -> anyhow::Error {
    failure::Failure::config(
        format!("this build of clawlink has no {name} {kind}"),
        Some("rebuild with `cargo xtask build` (the default includes it)".into()),
    )
    .into()
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
    let mut filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        // Our crates at the chosen level; dependencies one notch quieter unless tracing.
        let deps = if global.verbose >= 3 { "trace" } else { "warn" };
        EnvFilter::new(format!(
            "{deps},clawlink={level},clawlink_core={level},clawlink_transport_ws={level}"
        ))
    });
    // Secrets never reach logs, whatever RUST_LOG asks for: these crates log whole frames,
    // channel data or signing requests at debug/trace, and our connect frame carries the
    // gateway token. Their info level (connection events) stays available.
    for cap in [
        "tungstenite=info",
        "tokio_tungstenite=info",
        "russh=info",
        "rustls=info",
    ] {
        filter = filter.add_directive(cap.parse().expect("a valid directive"));
    }
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
