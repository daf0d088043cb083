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
mod forwards;
mod human;
mod keyring_store;
mod logs;
mod network_events;
mod nodes;
mod plugins;
mod prompt;
mod qr;
mod remote_exec;
mod runtime_plugins;
mod secret_env;
mod service;
mod settings;
mod signals;
mod state;
mod style;
mod terminal;
mod test_remote;
mod trust;
mod trusted_file;
mod tunnel;
mod voicewake;

use std::process::ExitCode;

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
    // Before anything else, while this is the only thread: no child may inherit the secrets.
    secret_env::take_from_environment();
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::SUCCESS;
            }
            // `--json` promises JSON on stdout, also when the command line itself is wrong.
            if json_requested(std::env::args_os()) {
                failure::print_json_error(&usage_failure(&e));
            }
            return ExitCode::from(2);
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

/// The settings layer's view of the command line: plain data, so that `settings` and
/// `connect` never depend on the argument types.
pub fn overrides(global: &cli::GlobalArgs) -> settings::Overrides {
    settings::Overrides {
        config: global.config.clone(),
        profile: global.profile.clone(),
        secrets: settings::FlagSecrets {
            token_file: global.connection.token_file.clone(),
            password_file: global.connection.password_file.clone(),
        },
        transport_flags: global.connection.transport_flags.clone(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    clawlink_core::registry::validate()
        .map_err(|e| failure::Failure::config(e.to_string(), None))?;
    plugins::check_linked().map_err(|e| failure::Failure::config(e, None))?;
    cli::check_transport_flags().map_err(|e| failure::Failure::config(e, None))?;
    let global = &cli.global;
    if let Command::Transports = cli.command {
        return commands::transports(global);
    }
    let settings = settings::load(&overrides(global))?;
    match &cli.command {
        Command::Status => commands::status(global, &settings).await,
        Command::Call(args) => commands::call(global, &settings, args).await,
        Command::Config(ConfigCommand::Show) => commands::config_show(global, &settings).await,
        Command::Config(ConfigCommand::Check) => commands::config_check(global, &settings).await,
        Command::Features => commands::features(global, &settings),
        Command::Test(args) => test_remote::test(global, &settings, args.remote_status).await,
        Command::Tunnel => tunnel::tunnel(global, &settings).await,
        Command::Ssh(SshCommand::Trust { target, yes }) => {
            trust::trust(global, &settings, "ssh", target.as_deref(), *yes).await
        }
        Command::Remote(args) => remote_exec::run(global, &settings, args).await,
        Command::Auth(AuthCommand::Set { password }) => {
            commands::auth_set(global, &settings, secret_kind(*password)).await
        }
        Command::Auth(AuthCommand::Status) => commands::auth_status(global, &settings).await,
        Command::Auth(AuthCommand::Clear { password }) => {
            commands::auth_clear(global, &settings, secret_kind(*password)).await
        }
        Command::Tls(TlsCommand::Trust { url, yes }) => {
            trust::trust(global, &settings, "tls", url.as_deref(), *yes).await
        }
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

/// The command line, with `--version` in its long form (commit, protocol, plugins) and `-V`
/// terse, as `rustc`/`cargo` do it.
fn parse_command_line() -> Result<Cli, clap::Error> {
    let short = format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("CLAWLINK_GIT_COMMIT")
    );
    // clap wants 'static text (without its `string` feature); this runs once per process.
    let command = cli::command()
        .version(&*short.leak())
        .long_version(&*long_version().leak());
    let mut matches = command.try_get_matches()?;
    cli::from_matches(&mut matches)
}

/// `clawlink --version`: what a bug report needs to know about this build.
fn long_version() -> String {
    let names = |list: Vec<&'static str>| {
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    };
    let transports = names(
        clawlink_core::registry::transports()
            .iter()
            .map(|d| d.name)
            .collect(),
    );
    let features = names(
        clawlink_core::registry::features()
            .iter()
            .map(|d| d.name)
            .collect(),
    );
    format!(
        "{}\ncommit:     {}\nprotocol:   {} (OpenClaw gateway protocol)\ntransports: {transports}\nfeatures:   {features}",
        env!("CARGO_PKG_VERSION"),
        env!("CLAWLINK_GIT_COMMIT"),
        clawlink_core::gateway::protocol::PROTOCOL_VERSION,
    )
}

/// Whether `--json` is among the arguments (before a `--` that ends the options), for
/// command lines clap refused.
fn json_requested(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// clap's refusal as the app's usage failure: its first line as the message, its tip (or
/// `--help`) as the fix.
fn usage_failure(error: &clap::Error) -> failure::Failure {
    let rendered = error.render().to_string();
    // The message runs up to the usage line ("required arguments were not provided:" is
    // followed by the arguments).
    let message = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("tip:"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let message = match message.trim_start_matches("error: ") {
        "" => "invalid command line".to_owned(),
        text => text.to_owned(),
    };
    let tip = rendered
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("tip: "))
        .map(str::to_owned);
    failure::Failure::config(
        message,
        Some(tip.unwrap_or_else(|| "see `clawlink --help` (or `clawlink COMMAND --help`)".into())),
    )
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
    use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
    use tracing_subscriber::prelude::*;
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        // Our crates at the chosen level (the directive matches targets by prefix: `clawlink`
        // covers the core and every plugin crate, built in or not named here); dependencies
        // one notch quieter unless tracing.
        let deps = if global.verbose >= 3 { "trace" } else { "warn" };
        EnvFilter::new(format!("{deps},clawlink={level}"))
    });
    // Secrets never reach logs, whatever RUST_LOG asks for: the crates of
    // [`logs_frames`] log whole frames, channel data or signing requests at debug/trace, and
    // our connect frame carries the gateway token. A directive added to the EnvFilter would
    // lose to a more specific one (`tungstenite::protocol=trace`), so the cap is a filter of
    // its own that every event must also pass. Their info level (connection events) stays.
    let capped = filter.and(filter_fn(|meta| {
        *meta.level() <= tracing::Level::INFO || !logs_frames(meta.target())
    }));
    let fmt = tracing_subscriber::fmt::layer()
        // stderr, keeping clear of `up`'s status line when one is on the terminal.
        .with_writer(agent::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let layer = match global.log_format {
        LogFormat::Json => fmt.json().with_filter(capped).boxed(),
        LogFormat::Text => fmt.compact().with_filter(capped).boxed(),
    };
    tracing_subscriber::registry().with(layer).init();
}

/// Whether `target` belongs to a crate that logs frames or decrypted data below INFO.
fn logs_frames(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    ["tungstenite", "tokio_tungstenite", "russh", "rustls"]
        .iter()
        .any(|capped| krate == *capped || krate.starts_with(&format!("{capped}_")))
}

#[cfg(test)]
mod tests {
    use super::logs_frames;

    #[test]
    fn the_frame_logging_crates_are_capped_by_crate_not_by_module() {
        for target in [
            "tungstenite",
            "tungstenite::protocol",
            "tokio_tungstenite::compat",
            "russh::client",
            "russh_cryptovec",
            "rustls::client::hs",
        ] {
            assert!(logs_frames(target), "{target}");
        }
        for target in ["clawlink", "clawlink_core::gateway", "hyper", "russhx"] {
            assert!(!logs_frames(target), "{target}");
        }
    }
}
