//! The command line: global options, connection overrides and subcommands (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectionArgs {
    /// Connect straight to this gateway URL (selects the direct-ws transport)
    #[arg(long, global = true, value_name = "ws://HOST:PORT")]
    pub url: Option<String>,
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
    /// Reach the gateway through SSH to this target (selects the ssh-tunnel transport)
    #[arg(
        long,
        global = true,
        value_name = "user@host[:port]",
        conflicts_with = "url"
    )]
    pub ssh: Option<String>,
    /// SSH identity file; like `ssh -i`, only this key is offered
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The gateway's port on the remote host
    #[arg(long, global = true, value_name = "N")]
    pub remote_port: Option<u16>,
    /// Preferred local port for `clawlink tunnel`
    #[arg(long, global = true, value_name = "N")]
    pub local_port: Option<u16>,
    /// Directory to run remote openclaw commands from
    #[arg(long, global = true, value_name = "DIR")]
    pub project_root: Option<String>,
    /// The openclaw CLI on the remote host (a file; .js/.mjs run with node)
    #[arg(long, global = true, value_name = "PATH")]
    pub cli_path: Option<String>,
    /// How SSH host keys are trusted: strict, accept-new, openssh, or a SHA256:… fingerprint
    #[arg(long, global = true, value_name = "POLICY")]
    pub host_key_policy: Option<String>,
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
    Dashboard(crate::dashboard::DashboardArgs),
    /// The gateway's nodes: list, describe, pairing requests
    #[command(subcommand)]
    Nodes(crate::nodes::NodesCommand),
    /// Show a notification (with a sound) on a node: `node.invoke` `system.notify`
    Notify(crate::nodes::NotifyArgs),
    /// Voice Wake: the gateway's trigger phrases, forwarding, the recognizer
    #[command(subcommand)]
    Voicewake(crate::voicewake::VoicewakeCommand),
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
