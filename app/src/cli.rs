//! The command line: global options, connection overrides and subcommands (clap derive).

use std::path::PathBuf;

use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use clawlink_core::notify::Priority;
use clawlink_core::registry::{self, FlagValue, TransportDescriptor};
pub use clawlink_core::registry::{FlagArgument, GivenTransportFlag};

/// A remote control for an OpenClaw Gateway.
#[derive(Debug, Parser)]
#[command(name = "clawlink", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Profile to use (a top-level table of the config file) [env: CLAWLINK_PROFILE]
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Read this config file instead of the user's config and ./clawlink.toml
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only print errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log line format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Connection overrides usable without any config file. Secrets are only ever taken from
/// files or the environment, never from a flag value (argv is visible to every user).
///
/// The transports' own flags (`--url`, `--ssh`, `--identity`, …) are not fields here: each
/// transport's descriptor declares them ([`registry::TransportFlag`]), [`command`] adds them to the
/// command line, and [`from_matches`] collects the ones given into `transport_flags`.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectionArgs {
    /// Read the gateway token from this file (mode 0600)
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Read the gateway password from this file (mode 0600)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "token_file"
    )]
    pub password_file: Option<PathBuf>,
    /// The transport flags given, in the registry's order (transports by name, then each
    /// transport's flags as declared).
    #[arg(skip)]
    pub transport_flags: Vec<GivenTransportFlag>,
}

/// The whole command line: the derived [`Cli`] plus every registered transport's flags,
/// global like the connection overrides above.
pub fn command() -> clap::Command {
    let transports = registry::transports();
    let selecting = |d: &TransportDescriptor| {
        d.flags
            .iter()
            .filter(|f| f.selects.is_some())
            .map(|f| f.flag)
            .collect::<Vec<_>>()
    };
    let mut command = Cli::command();
    let mut taken = app_flags(&command);
    for descriptor in &transports {
        // A run selects one transport: selecting flags of two transports cannot be combined.
        let rivals: Vec<&str> = transports
            .iter()
            .filter(|other| other.name != descriptor.name)
            .flat_map(|other| selecting(other))
            .collect();
        for flag in descriptor.flags {
            // A flag the app or another transport already has is left out here, so that
            // `check_transport_flags` / `registry::validate` can name the clash at start-up
            // instead of clap panicking.
            if taken.iter().any(|t| t == flag.flag) {
                continue;
            }
            taken.push(flag.flag.to_owned());
            let arg = clap::Arg::new(flag.flag)
                .long(flag.flag)
                .value_name(flag.value_name)
                .help(flag.help)
                .global(true)
                .action(clap::ArgAction::Set);
            let arg = match flag.value {
                FlagValue::Text | FlagValue::Url => arg.value_parser(clap::value_parser!(String)),
                FlagValue::LocalPath => arg.value_parser(clap::value_parser!(PathBuf)),
                FlagValue::Port => arg.value_parser(clap::value_parser!(u16)),
            };
            let arg = if flag.selects.is_some() {
                arg.conflicts_with_all(rivals.clone())
            } else {
                arg
            };
            command = command.arg(arg);
        }
    }
    command
}

/// Every long flag of the derived command line, subcommands included (a global transport
/// flag reaches every subcommand, so it must not reuse any of them).
fn app_flags(command: &clap::Command) -> Vec<String> {
    let mut longs: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .map(str::to_owned)
        .collect();
    for sub in command.get_subcommands() {
        longs.extend(app_flags(sub));
    }
    longs
}

/// Refuses a transport flag that reuses a flag of the app (`--config`, `--timeout`, …):
/// [`command`] left it out, so the transport's setting would be unreachable.
pub fn check_transport_flags() -> Result<(), String> {
    let app = app_flags(&Cli::command());
    for transport in registry::transports() {
        if let Some(flag) = transport
            .flags
            .iter()
            .find(|f| app.iter().any(|a| a == f.flag))
        {
            return Err(format!(
                "transport {} declares the flag --{}, which clawlink itself uses; this build is \
                 broken — rename the transport's flag",
                transport.name, flag.flag
            ));
        }
    }
    Ok(())
}

/// The [`Cli`] of matches made by [`command`], with the transport flags given.
pub fn from_matches(matches: &mut clap::ArgMatches) -> Result<Cli, clap::Error> {
    let mut cli = Cli::from_arg_matches_mut(matches)?;
    let mut given = Vec::new();
    // `try_get_one`: a flag `command` left out (a clash `registry::validate` reports) has
    // no value here, and asking for it must not panic.
    for transport in registry::transports() {
        for flag in transport.flags {
            let value = match flag.value {
                FlagValue::Text | FlagValue::Url => matches
                    .try_get_one::<String>(flag.flag)
                    .ok()
                    .flatten()
                    .map(|v| FlagArgument::Text(v.clone())),
                FlagValue::LocalPath => matches
                    .try_get_one::<PathBuf>(flag.flag)
                    .ok()
                    .flatten()
                    .map(|v| FlagArgument::Path(v.clone())),
                FlagValue::Port => matches
                    .try_get_one::<u16>(flag.flag)
                    .ok()
                    .flatten()
                    .map(|v| FlagArgument::Port(*v)),
            };
            if let Some(value) = value {
                given.push(GivenTransportFlag {
                    transport,
                    flag,
                    value,
                });
            }
        }
    }
    cli.global.connection.transport_flags = given;
    Ok(cli)
}

// ---------------------------------------------------------------------------------------
// The arguments of the command modules' subcommands. They live here so that this module is
// a leaf: command modules use it, it uses none of them.
// ---------------------------------------------------------------------------------------

/// Options of `clawlink dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Print the URL (with its one-time sign-in when there is one) instead of opening a browser
    #[arg(long)]
    pub print: bool,
    /// How long to wait for the browser to load the sign-in page, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub wait: u64,
}

/// `clawlink nodes …`.
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the gateway's nodes: connection, pairing, commands and permissions
    List(ListArgs),
    /// Show one node (id, display name or IP): commands, permissions, pairing
    Describe {
        /// Node id (or a prefix of 6+ characters), display name or IP
        node: String,
    },
    /// List node pairing requests waiting for an operator
    Pending,
    /// Approve a pending node pairing request (its command surface)
    Approve {
        /// The request id (`clawlink nodes pending` lists them)
        request: String,
    },
    /// Reject a pending node pairing request
    Reject {
        /// The request id (`clawlink nodes pending` lists them)
        request: String,
    },
}

/// Options of `clawlink nodes list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only show connected nodes
    #[arg(long)]
    pub connected: bool,
}

/// `--priority` of `clawlink notify`: the wire names, as clap's possible values.
fn priority_parser() -> impl clap::builder::TypedValueParser<Value = Priority> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Priority::NAMES)
        .map(|name| Priority::parse(&name).expect("clap admits only Priority::NAMES"))
}

/// `--delivery` of `clawlink notify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Delivery {
    /// The node's notification service
    System,
    /// The node's own overlay (in-app toast, console)
    Overlay,
    /// The notification service, else the overlay
    Auto,
}

impl Delivery {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Overlay => "overlay",
            Self::Auto => "auto",
        }
    }
}

/// Options of `clawlink notify`.
#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// The node: id (or a prefix of 6+ characters), display name or IP
    #[arg(long, value_name = "NODE")]
    pub node: String,
    /// Notification title
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// Notification body
    #[arg(long, value_name = "TEXT")]
    pub body: Option<String>,
    /// Sound: a macOS system sound name (Glass, Ping, Pop, …) or a freedesktop sound name
    #[arg(long, value_name = "NAME")]
    pub sound: Option<String>,
    /// How insistent the notification is
    #[arg(long, value_parser = priority_parser())]
    pub priority: Option<Priority>,
    /// Where the node shows it
    #[arg(long, value_enum, default_value_t = Delivery::System)]
    pub delivery: Delivery,
    /// How long the node may take, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub invoke_timeout: u64,
}

/// `clawlink voicewake …`.
#[derive(Debug, Subcommand)]
pub enum VoicewakeCommand {
    /// Show the gateway's trigger phrases, or change them (the gateway's global list)
    Triggers(TriggersArgs),
    /// Show the gateway's voice-wake routing (trigger → agent or session)
    Routes,
    /// Forward one transcript now, as push-to-talk does (a leading trigger is taken off)
    Send(SendArgs),
    /// Run the recognizer source in the foreground and print each detection and outcome
    Listen(ListenArgs),
    /// The running agent's last detections and their outcomes
    Recent,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("edit").args(["set", "add", "remove"])))]
pub struct TriggersArgs {
    /// Replace the list (comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    pub set: Option<Vec<String>>,
    /// Add a trigger phrase
    #[arg(long, value_name = "PHRASE")]
    pub add: Option<String>,
    /// Remove a trigger phrase
    #[arg(long, value_name = "PHRASE")]
    pub remove: Option<String>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// What was said (a leading trigger phrase is sent as the trigger)
    pub text: String,
    /// The trigger to report (`voiceWakeTrigger`, which the gateway's routes use)
    #[arg(long, value_name = "PHRASE")]
    pub trigger: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").args(["stdin", "fifo", "command"])))]
pub struct ListenArgs {
    /// Read transcripts from standard input (ends when it closes)
    #[arg(long)]
    pub stdin: bool,
    /// Read transcripts from this named pipe (created when missing)
    #[arg(long, value_name = "PATH")]
    pub fifo: Option<PathBuf>,
    /// A trigger anywhere in the utterance fires, not only at its start
    #[arg(long)]
    pub anywhere: bool,
    /// Send runs to this session instead of the main one
    #[arg(long, value_name = "KEY")]
    pub session: Option<String>,
    /// Run this recognizer and read its output (must come last: everything after it is its argv)
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "ARGV")]
    pub command: Option<Vec<String>>,
}

/// Parses `argv` as the binary does; panics (with clap's message) on a refused command line.
#[cfg(test)]
pub fn parse_from<I, T>(argv: I) -> Cli
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut matches = command().get_matches_from(argv);
    from_matches(&mut matches).unwrap_or_else(|e| e.exit())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect, then show the gateway's status and health
    Status,
    /// Call one gateway method and print its result (like `openclaw gateway call`)
    Call(CallArgs),
    /// Show or check the resolved configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List the transports this build knows
    Transports,
    /// List the feature plugins this build knows and whether the profile enables them
    Features,
    /// Test the connection step by step: SSH, the remote openclaw CLI, the gateway
    Test(TestArgs),
    /// Forward the gateway's ports to this machine's loopback, like `ssh -N -L`, until Ctrl-C
    Tunnel,
    /// SSH helpers
    #[command(subcommand)]
    Ssh(SshCommand),
    /// TLS helpers for wss:// gateways
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Keep the gateway token or password in the OS keyring
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Run the agent: keep the connection up and run the enabled features until SIGINT/SIGTERM
    Up(UpArgs),
    /// Make the running agent drop its connection (and SSH session) and connect afresh
    Reconnect,
    /// Check the gateway's health now (through the running agent when there is one)
    Health,
    /// Walk every layer from config to health, stop at the first that fails, and say how to fix it
    Doctor,
    /// Show the remote gateway's log (`logs.tail`)
    Logs(LogsArgs),
    /// Messaging channels on the gateway host: WhatsApp login, status, logout
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// Run an openclaw CLI command on the SSH host, with a terminal (e.g. `-- openclaw channels login --verbose`)
    Remote(RemoteArgs),
    /// Run `clawlink up` as a user service (systemd on Linux, launchd on macOS)
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Chat with the gateway's agent (interactive on a terminal; `-m TEXT` for one message)
    Chat(ChatArgs),
    /// Open the gateway's Control UI through the profile's transport
    Dashboard(DashboardArgs),
    /// The gateway's nodes: list, describe, pairing requests
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Show a notification (with a sound) on a node: `node.invoke` `system.notify`
    Notify(NotifyArgs),
    /// Voice Wake: the gateway's trigger phrases, forwarding, the recognizer
    #[command(subcommand)]
    Voicewake(VoicewakeCommand),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Do not open the local port forwards of an SSH profile (the agent still connects)
    #[arg(long)]
    pub no_forward: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines as the gateway writes them
    #[arg(short, long)]
    pub follow: bool,
    /// How many of the last lines to show first (0 with -f: only new lines)
    #[arg(short = 'n', long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(0..=5000))]
    pub lines: u32,
}

#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// Link a channel by QR code, on the gateway host (WhatsApp Web)
    Login(ChannelLoginArgs),
    /// Show every channel's state
    Status {
        /// Ask the gateway to probe each channel now
        #[arg(long)]
        probe: bool,
    },
    /// Unlink a channel on the gateway host
    Logout {
        /// The channel to log out
        #[arg(long, default_value = "whatsapp")]
        channel: String,
    },
}

#[derive(Debug, Args)]
pub struct ChannelLoginArgs {
    /// Start a new login even if one is linked
    #[arg(long)]
    pub force: bool,
    /// Also save the QR code as a PNG file
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// How long to wait for the phone to scan the code, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Never allocate a terminal on the remote side, even when this one is a TTY
    #[arg(short = 'T', long)]
    pub no_tty: bool,
    /// The command: several words are passed as exact arguments, a single word is run as a
    /// shell command line; `openclaw` as the first word uses the same CLI resolution as
    /// `clawlink test`
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write and enable the user service that runs `clawlink up --profile NAME`
    Install {
        /// Write the unit file but do not enable or start it
        #[arg(long)]
        no_start: bool,
    },
    /// Stop, disable and remove the user service
    Uninstall,
    /// Show whether the user service is installed and running
    Status,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Store the secret for this profile, read from standard input or a no-echo prompt (never argv)
    Set {
        /// Store the password instead of the token
        #[arg(long)]
        password: bool,
    },
    /// Show where this profile's token and password come from (never their values)
    Status,
    /// Remove this profile's secret from the keyring
    Clear {
        /// Remove the password instead of the token
        #[arg(long)]
        password: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Show a wss:// gateway's certificate fingerprints and pin its public key in the profile
    Trust {
        /// The gateway URL (default: the profile's direct_ws url)
        // Its own id: under the global `--url`'s id the URL would also become a flag
        // override of the profile being pinned.
        #[arg(id = "trust_url", value_name = "URL")]
        url: Option<String>,
        /// Do not ask; pin the key shown (for scripts)
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Run the seed's full check `openclaw status --json` on the remote host (several
    /// seconds of remote work) instead of `openclaw --version`
    #[arg(long)]
    pub remote_status: bool,
}

#[derive(Debug, Subcommand)]
pub enum SshCommand {
    /// Show the SSH host's key fingerprint and add it to known_hosts after confirmation
    Trust {
        /// The SSH target (default: the profile's)
        target: Option<String>,
        /// Do not ask; trust the key shown (for scripts)
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Method name, e.g. `health` or `node.list`
    pub method: String,
    /// Parameters as a JSON object; `-` reads them from standard input
    pub params: Option<String>,
    /// Wait for the final response of a two-phase method (`agent`)
    #[arg(long)]
    pub expect_final: bool,
    /// Give up after this many milliseconds (default: client.request_timeout_ms)
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved profile, each value with where it came from (secrets masked)
    Show,
    /// Check the configuration without connecting; exit 2 when it is not usable
    Check,
}

/// Options of `clawlink chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Send this one message, print the final reply and exit (without it, text on a
    /// non-terminal stdin is sent the same way; on a terminal the chat is interactive)
    #[arg(short, long, value_name = "TEXT")]
    pub message: Option<String>,
    /// The session to talk in (default: the gateway's main session; `main` is an alias)
    #[arg(short, long, value_name = "KEY")]
    pub session: Option<String>,
    /// Attach a file to the `-m` message (repeatable; checked against the gateway's limits)
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Give up after this many seconds (connecting, delivering and the reply together;
    /// default 300); an undelivered message stays in the outbox. Given, it also waits that
    /// long for an unreachable gateway to come back; without it, `-m` gives up after 3
    /// failed connection attempts
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// List the messages waiting in the outbox (not yet acknowledged by the gateway) and exit
    #[arg(long, conflicts_with_all = ["message", "attach"])]
    pub outbox: bool,
    /// With --outbox: discard the waiting message with this key (or a unique start of it),
    /// or `all` of this gateway's (asks first; --yes does not)
    #[arg(long, value_name = "KEY|all", requires = "outbox")]
    pub discard: Option<String>,
    /// With --discard all: do not ask for confirmation (for scripts)
    #[arg(long, requires = "discard")]
    pub yes: bool,
    /// How many messages of history the interactive chat paints first
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub history: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_flags_join_a_command_line_clap_accepts() {
        command().debug_assert();
        let help = command().render_long_help().to_string();
        for transport in registry::transports() {
            for flag in transport.flags {
                let line = format!("--{} <{}>", flag.flag, flag.value_name);
                assert!(help.contains(&line), "{line} missing from:\n{help}");
                assert!(help.contains(flag.help), "{} missing", flag.help);
            }
        }
    }

    #[test]
    fn no_transport_flag_clashes_with_the_apps() {
        assert_eq!(check_transport_flags(), Ok(()));
        assert!(app_flags(&Cli::command()).iter().any(|f| f == "token-file"));
        assert!(!app_flags(&Cli::command()).iter().any(|f| f == "ssh"));
    }

    #[test]
    fn given_transport_flags_are_collected_typed_and_in_registry_order() {
        let cli = parse_from([
            "clawlink",
            "status",
            "--remote-port",
            "2222",
            "--ssh",
            "claw@gw",
            "--identity",
            "key",
        ]);
        let given: Vec<(&str, &str, FlagArgument)> = cli
            .global
            .connection
            .transport_flags
            .iter()
            .map(|g| (g.transport.name, g.flag.flag, g.value.clone()))
            .collect();
        assert_eq!(
            given,
            [
                ("ssh-tunnel", "ssh", FlagArgument::Text("claw@gw".into())),
                ("ssh-tunnel", "identity", FlagArgument::Path("key".into())),
                ("ssh-tunnel", "remote-port", FlagArgument::Port(2222)),
            ]
        );
    }

    #[test]
    fn selecting_flags_of_two_transports_conflict() {
        let err = command()
            .try_get_matches_from(["clawlink", "--url", "ws://a:1", "--ssh", "b", "status"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
