//! `clawlink service install|uninstall|status`: the agent as a systemd user unit (Linux) or a launchd agent (macOS).
//!
//! The service runs `clawlink up --profile NAME` with the config file, the non-secret
//! connection flags and the state directories of the command line that installed it, and is
//! restarted when it fails. It never holds a secret: a `CLAWLINK_TOKEN`/`CLAWLINK_PASSWORD`
//! in the installer's environment is refused (a service cannot inherit it, and writing it into
//! the file would leak it), and `--token-file`/`--password-file` travel as paths. Both file
//! formats are built by pure functions, compiled and unit-tested on every platform; only the
//! calls to `systemctl`/`launchctl` differ by platform.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::cli::{FlagArgument, GlobalArgs};
use crate::failure::Failure;
use crate::secret_env;
use crate::settings::{self, expand_home, Settings};
use crate::state;
use clawlink_core::registry::FlagValue;

/// Seconds between a failure and the restart (systemd `RestartSec`).
const RESTART_DELAY_S: u32 = 5;
/// A service that fails this many times within `START_LIMIT_INTERVAL_S` is left stopped:
/// whatever makes it fail that fast (a port in use, a wrong key) needs a human.
const START_LIMIT_BURST: u32 = 5;
const START_LIMIT_INTERVAL_S: u32 = 300;
/// How long the agent gets to close its connections after SIGTERM before it is killed.
const STOP_TIMEOUT_S: u32 = 15;
/// launchd has no start limit, so a profile that can never start is retried at this pace;
/// slow enough to be harmless, fast enough to come back quickly after a network outage.
const LAUNCHD_THROTTLE_S: u32 = 10;
/// Where the unit's `Documentation=` points besides the repository.
const OPENCLAW_DOCS: &str = "https://docs.openclaw.ai";
/// The exit status of configuration errors (see `failure.rs`): restarting cannot fix them.
const CONFIG_EXIT_STATUS: u8 = 2;
/// The longest a `systemctl`/`launchctl` call may take (a restart waits for the old agent to
/// stop, up to `STOP_TIMEOUT_S`); a stuck service manager must not hang the CLI.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Environment variables that choose clawlink's state, carried into the service when set so
/// that it uses the same device identity, control socket and passphrase file. All are paths.
const CARRIED_PATH_VARIABLES: &[&str] = &[
    "CLAWLINK_DATA_DIR",
    "CLAWLINK_RUNTIME_DIR",
    "CLAWLINK_SSH_PASSPHRASE_FILE",
];

/// `clawlink service install`.
pub async fn install(global: &GlobalArgs, settings: &Settings, no_start: bool) -> Result<()> {
    let manager = Manager::current()?;
    let host = Host::current()?;
    let spec = plan(global, &settings.profile_name, &settings.files, &host)?;
    let location = Location::of(manager, &spec.profile)?;
    let mut notes = environment_notes(settings);
    if global.config.is_none() {
        if let Some(file) = &spec.config {
            notes.push(format!(
                "the service reads {file} (--config), the ./{} this command read",
                settings::LOCAL_CONFIG_FILE
            ));
        }
    }
    let text = match manager {
        Manager::Systemd => systemd_unit(&spec),
        Manager::Launchd => {
            let log = location
                .log_file
                .as_deref()
                .expect("launchd has a log file");
            let log = path_text(log, "the log file")?;
            launchd_plist(&spec, &location.unit, &log)
        }
    };
    // Everything that can be refused has been checked: only now touch the disk.
    let outcome = write_service_file(&location.path, &text).map_err(|e| {
        Failure::config(
            format!("cannot write {}: {e}", location.path.display()),
            Some(format!(
                "make {} writable by you",
                location.path.parent().unwrap_or(Path::new("/")).display()
            )),
        )
    })?;
    if let Some(log) = &location.log_file {
        // launchd does not create the directories of StandardOutPath.
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::config(format!("cannot create {}: {e}", dir.display()), None)
            })?;
        }
    }
    let activation = if no_start {
        Activation::skipped_by_flag(manager, &location)
    } else {
        match manager {
            Manager::Systemd => systemd_activate(&location, outcome)?,
            Manager::Launchd => launchd_activate(&location)?,
        }
    };
    let command_line = match manager {
        Manager::Systemd => format!("ExecStart={}", exec_start(&spec.argv)),
        Manager::Launchd => format!("runs: {}", shell_command(&spec.argv)),
    };
    if global.json {
        let mut out = json!({
            "ok": true,
            "profile": spec.profile,
            "manager": manager.name(),
            "unit": location.unit,
            "path": location.path,
            "file": outcome.name(),
            "argv": spec.argv,
            "environment": spec.environment.iter().cloned().collect::<BTreeMap<_, _>>(),
            "workingDirectory": spec.working_directory,
            "notes": notes,
        });
        activation.extend_json(&mut out);
        println!("{out}");
    } else {
        let verb = match outcome {
            WriteOutcome::Created => "wrote",
            WriteOutcome::Replaced => "replaced the existing",
            WriteOutcome::Unchanged => "rewrote (unchanged)",
        };
        println!("{verb} {}", location.path.display());
        println!("  {command_line}");
        for note in &notes {
            eprintln!("clawlink: note: {note}");
        }
        for line in activation.lines() {
            println!("{line}");
        }
    }
    Ok(())
}

/// `clawlink service uninstall`.
pub async fn uninstall(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let manager = Manager::current()?;
    validate_profile_name(&settings.profile_name)?;
    let location = Location::of(manager, &settings.profile_name)?;
    if !location.path.exists() {
        let message = format!(
            "no service is installed for profile {:?} (no {})",
            settings.profile_name,
            location.path.display()
        );
        if global.json {
            println!(
                "{}",
                json!({"ok": true, "profile": settings.profile_name, "manager": manager.name(),
                       "path": location.path, "installed": false, "removed": false})
            );
        } else {
            println!("{message}");
        }
        return Ok(());
    }
    let stop = match manager {
        Manager::Systemd => systemd_deactivate(&location),
        Manager::Launchd => launchd_deactivate(&location),
    };
    std::fs::remove_file(&location.path).map_err(|e| {
        Failure::config(
            format!("cannot remove {}: {e}", location.path.display()),
            Some(format!(
                "remove it by hand: rm {}",
                shell_word(&location.path.display().to_string())
            )),
        )
    })?;
    if manager == Manager::Systemd && stop.manager_reachable {
        // Forget the removed unit now rather than at the next reload.
        let _ = systemctl(&["daemon-reload"]);
        let _ = systemctl(&["reset-failed", &location.unit]);
    }
    if global.json {
        println!(
            "{}",
            json!({"ok": true, "profile": settings.profile_name, "manager": manager.name(),
                   "unit": location.unit, "path": location.path, "installed": true,
                   "removed": true, "stopped": stop.stopped, "managerAvailable": stop.manager_reachable,
                   "notes": stop.notes})
        );
    } else {
        if stop.stopped {
            println!(
                "stopped and disabled {} ({})",
                location.unit,
                manager.name()
            );
        }
        println!("removed {}", location.path.display());
        for note in &stop.notes {
            println!("{note}");
        }
    }
    Ok(())
}

/// `clawlink service status`.
pub async fn status(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let manager = Manager::current()?;
    validate_profile_name(&settings.profile_name)?;
    let profile = &settings.profile_name;
    let location = Location::of(manager, profile)?;
    let text = match std::fs::read_to_string(&location.path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(Failure::config(
                format!("cannot read {}: {e}", location.path.display()),
                None,
            )
            .into())
        }
    };
    let Some(text) = text else {
        if global.json {
            println!(
                "{}",
                json!({"ok": true, "profile": profile, "manager": manager.name(),
                       "unit": location.unit, "path": location.path, "installed": false})
            );
        } else {
            println!(
                "not installed: no service for profile {profile:?} ({} does not exist)",
                location.path.display()
            );
            println!(
                "  install it with: {}",
                clawlink_command(
                    config_for_hints(global).as_deref(),
                    profile,
                    "service install"
                )
            );
        }
        return Ok(());
    };
    let (command_line, argv) = match manager {
        Manager::Systemd => {
            let line = text
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix("ExecStart="))
                .map(str::to_owned);
            let argv = line.as_deref().map(systemd_words).unwrap_or_default();
            (line.map(|l| format!("ExecStart={l}")), argv)
        }
        Manager::Launchd => {
            let argv = plist_program_arguments(&text);
            (Some(format!("runs: {}", shell_command(&argv))), argv)
        }
    };
    let executable_exists = argv.first().map(|exe| Path::new(exe).is_file());
    let live = match manager {
        Manager::Systemd => systemd_state(&location.unit),
        Manager::Launchd => launchd_state(&location.unit),
    };
    if global.json {
        println!(
            "{}",
            json!({"ok": true, "profile": profile, "manager": manager.name(),
                   "unit": location.unit, "path": location.path, "installed": true,
                   "execStart": command_line, "argv": argv,
                   "executableExists": executable_exists, "state": live})
        );
        return Ok(());
    }
    println!("installed: {} ({})", location.unit, location.path.display());
    if let Some(line) = &command_line {
        println!("  {line}");
    }
    if executable_exists == Some(false) {
        println!(
            "  warning: {} does not exist any more (clawlink moved or was removed); \
             run `{}` again",
            argv[0],
            clawlink_command(
                config_for_hints(global).as_deref(),
                profile,
                "service install"
            )
        );
    }
    match manager {
        Manager::Systemd => {
            if let Some(active) = live.get("active").and_then(Value::as_str) {
                println!("  active:  {active}");
            }
            if let Some(enabled) = live.get("enabled").and_then(Value::as_str) {
                println!("  enabled: {enabled}");
            }
            if let Some(reason) = live.get("reason").and_then(Value::as_str) {
                println!(
                    "  running state unknown: no systemd user manager is reachable ({reason})"
                );
            }
        }
        Manager::Launchd => {
            let loaded = live.get("loaded").and_then(Value::as_bool) == Some(true);
            println!("  loaded:  {}", if loaded { "yes" } else { "no" });
            if let Some(state) = live.get("state").and_then(Value::as_str) {
                println!("  state:   {state}");
            }
            if let Some(pid) = live.get("pid").and_then(Value::as_u64) {
                println!("  pid:     {pid}");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// What the service runs (platform-independent)
// ---------------------------------------------------------------------------------------

/// The service manager of this platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    fn current() -> Result<Self, Failure> {
        if cfg!(target_os = "macos") {
            Ok(Manager::Launchd)
        } else if cfg!(target_os = "linux") {
            Ok(Manager::Systemd)
        } else {
            Err(Failure::config(
                format!(
                    "`clawlink service` knows systemd (Linux) and launchd (macOS), not the service manager of {}",
                    std::env::consts::OS
                ),
                Some("have your service manager run `clawlink up --profile NAME`".into()),
            ))
        }
    }

    fn name(self) -> &'static str {
        match self {
            Manager::Systemd => "systemd",
            Manager::Launchd => "launchd",
        }
    }
}

/// Where the service file of a profile lives and what the manager calls it.
struct Location {
    /// The systemd unit name or the launchd label.
    unit: String,
    path: PathBuf,
    /// launchd only: where the agent's output goes (systemd has the journal).
    log_file: Option<PathBuf>,
}

impl Location {
    fn of(manager: Manager, profile: &str) -> Result<Self, Failure> {
        let base = directories::BaseDirs::new().ok_or_else(|| {
            Failure::config(
                "cannot find your home directory for the service file",
                Some("set HOME".into()),
            )
        })?;
        Ok(match manager {
            Manager::Systemd => {
                let unit = format!("clawlink-{profile}.service");
                Location {
                    path: base.config_dir().join("systemd/user").join(&unit),
                    unit,
                    log_file: None,
                }
            }
            Manager::Launchd => {
                let label = format!("dev.clawlink.{profile}");
                let home = base.home_dir();
                Location {
                    path: home
                        .join("Library/LaunchAgents")
                        .join(format!("{label}.plist")),
                    unit: label,
                    log_file: Some(home.join(format!("Library/Logs/clawlink/{profile}.log"))),
                }
            }
        })
    }
}

/// The facts of this process the plan depends on, gathered once so that the plan itself is a
/// pure function (and testable without touching the process environment).
struct Host {
    /// The running executable, absolute and canonical.
    exe: PathBuf,
    cwd: PathBuf,
    /// The user's config file (`settings::user_config_file`).
    user_config: Option<PathBuf>,
    /// The environment variables that matter here, when set and non-empty.
    vars: BTreeMap<String, OsString>,
}

impl Host {
    fn current() -> Result<Self, Failure> {
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| {
                Failure::config(
                    format!("cannot find the path of the running clawlink executable: {e}"),
                    Some("run clawlink by its full path".into()),
                )
            })?;
        let cwd = std::env::current_dir().map_err(|e| {
            Failure::config(
                format!("cannot read the current directory: {e}"),
                Some("run the command from an existing directory".into()),
            )
        })?;
        let names = ["HOME"]
            .into_iter()
            .chain(CARRIED_PATH_VARIABLES.iter().copied())
            .chain(["XDG_CONFIG_HOME", "XDG_DATA_HOME"]);
        // The secret variables left the environment at start-up (secret_env); only whether
        // they were set matters here, so their values are not copied.
        let secrets_set = [secret_env::TOKEN, secret_env::PASSWORD]
            .into_iter()
            .filter(|name| secret_env::get(name).is_some())
            .map(|name| (name.to_owned(), OsString::from("(set)")));
        let vars = names
            .filter_map(|name| {
                std::env::var_os(name)
                    .filter(|v| !v.is_empty())
                    .map(|v| (name.to_owned(), v))
            })
            .chain(secrets_set)
            .collect();
        Ok(Host {
            exe,
            cwd,
            user_config: settings::user_config_file(),
            vars,
        })
    }

    fn var(&self, name: &str) -> Option<&OsString> {
        self.vars.get(name)
    }

    /// `path` as the service must see it: `~` expanded, relative to the current directory.
    fn absolute(&self, path: &Path) -> PathBuf {
        let path = expand_home(path);
        let joined = if path.is_absolute() {
            path
        } else {
            self.cwd.join(path)
        };
        // Drops `.` components; `..` stays, as only the file system knows what it means.
        std::path::absolute(&joined).unwrap_or(joined)
    }
}

/// What the service runs. Built only from paths and non-secret flags.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceSpec {
    profile: String,
    /// The command: the absolute executable, then `up --profile NAME` and the carried flags.
    argv: Vec<String>,
    environment: Vec<(String, String)>,
    working_directory: Option<String>,
    /// The absolute `--config` file, when one was given (for the commands the file suggests).
    config: Option<String>,
}

/// Decides what the service runs, refusing what would make it differ from this command line
/// or put a secret into its file. Touches nothing.
fn plan(
    global: &GlobalArgs,
    profile: &str,
    files: &[PathBuf],
    host: &Host,
) -> Result<ServiceSpec, Failure> {
    validate_profile_name(profile)?;
    let config = match &global.config {
        Some(config) => Some(path_text(&host.absolute(config), "--config")?),
        None => local_config_file(files, host)?,
    };
    refuse_secret_environment(global, profile, config.as_deref(), host)?;
    let conn = &global.connection;
    let mut argv = vec![
        path_text(&host.exe, "the clawlink executable")?,
        "up".to_owned(),
        "--profile".to_owned(),
        profile.to_owned(),
    ];
    let mut push = |flag: &str, value: String| {
        argv.push(flag.to_owned());
        argv.push(value);
    };
    if let Some(config) = &config {
        push("--config", config.clone());
    }
    // The transports' flags, as their descriptors declare them; each value is made fit for
    // a service file by its kind.
    for given in &conn.transport_flags {
        let flag = format!("--{}", given.flag.flag);
        let value = match (&given.value, given.flag.value) {
            (FlagArgument::Text(url), FlagValue::Url) => {
                refuse_url_credentials(url, &flag)?;
                plain_text(url, &flag)?
            }
            // Paths on the remote host: carried verbatim, this machine cannot resolve them.
            (FlagArgument::Text(text), _) => plain_text(text, &flag)?,
            (FlagArgument::Path(path), _) => path_text(&host.absolute(path), &flag)?,
            (FlagArgument::Port(port), _) => port.to_string(),
        };
        push(&flag, value);
    }
    for (flag, file, what) in [
        ("--token-file", &conn.token_file, "the token file"),
        ("--password-file", &conn.password_file, "the password file"),
    ] {
        if let Some(file) = file {
            let file = host.absolute(file);
            // The service would fail on every start (and be restarted in vain): say it now.
            state::check_private(&file, what)?;
            push(flag, path_text(&file, flag)?);
        }
    }

    let mut environment = Vec::new();
    for name in CARRIED_PATH_VARIABLES {
        if let Some(value) = host.var(name) {
            let path = host.absolute(Path::new(value));
            environment.push(((*name).to_owned(), path_text(&path, name)?));
        }
    }
    // XDG base directories matter where clawlink uses them: the user's config file (without
    // --config) and the data directory (without CLAWLINK_DATA_DIR). They are carried when
    // they differ from the defaults below $HOME, which is what a service manager provides.
    let home = host.var("HOME").map(PathBuf::from);
    let xdg = [
        ("XDG_CONFIG_HOME", ".config", config.is_none()),
        (
            "XDG_DATA_HOME",
            ".local/share",
            host.var("CLAWLINK_DATA_DIR").is_none(),
        ),
    ];
    for (name, default, matters) in xdg {
        let Some(value) = host.var(name).map(PathBuf::from).filter(|_| matters) else {
            continue;
        };
        // Relative XDG paths are ignored by everyone (XDG base directory spec).
        let is_default = home.as_ref().map(|h| h.join(default)) == Some(value.clone());
        if value.is_absolute() && !is_default {
            environment.push(((*name).to_owned(), path_text(&value, name)?));
        }
    }

    // The service runs in the home directory, never in the directory it was installed from:
    // whatever appears there later (a ./clawlink.toml) must not reconfigure it.
    let working_directory = home
        .filter(|h| h.is_absolute())
        .map(|h| path_text(&h, "HOME"))
        .transpose()?;

    Ok(ServiceSpec {
        profile: profile.to_owned(),
        argv,
        environment,
        working_directory,
        config,
    })
}

/// Without `--config`, the `./clawlink.toml` this command read (if any), as the absolute
/// `--config` of the service, so that the service reads that very file wherever it runs. A
/// service reads one file: when the user's config file was read too, the merge cannot be
/// reproduced and the install is refused with the two ways out.
fn local_config_file(files: &[PathBuf], host: &Host) -> Result<Option<String>, Failure> {
    let Some(local) = files
        .iter()
        .find(|file| Some(*file) != host.user_config.as_ref())
    else {
        return Ok(None);
    };
    let local = host.absolute(local);
    if files.len() > 1 {
        let user = host
            .user_config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the user's config file".into());
        return Err(Failure::config(
            format!(
                "this command read both {user} and {}; a service reads one config file and never \
                 depends on the directory it was installed from",
                local.display()
            ),
            Some(format!(
                "move the profile into {user}, or install with `--config {}` (the service then reads only that file)",
                shell_word(&local.display().to_string())
            )),
        ));
    }
    path_text(&local, "--config").map(Some)
}

/// Profile names become part of a file name and of a unit name or launchd label.
fn validate_profile_name(name: &str) -> Result<(), Failure> {
    let mut chars = name.chars();
    let valid = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        return Ok(());
    }
    Err(Failure::config(
        format!("profile name {name:?} cannot be used in a service file name"),
        Some(
            "use a profile of up to 64 letters, digits, '.', '_' and '-', starting with a letter \
             or digit (rename its table in the config file)"
                .into(),
        ),
    ))
}

/// A secret the installer's environment holds cannot reach the service: refuse rather than
/// install a service that fails, and never write the value into the file.
fn refuse_secret_environment(
    global: &GlobalArgs,
    profile: &str,
    config: Option<&str>,
    host: &Host,
) -> Result<(), Failure> {
    let conn = &global.connection;
    let secrets = [
        (
            "CLAWLINK_TOKEN",
            conn.token_file.is_some(),
            "token",
            "",
            "--token-file",
            "auth.token_file",
        ),
        (
            "CLAWLINK_PASSWORD",
            conn.password_file.is_some(),
            "password",
            " --password",
            "--password-file",
            "auth.password_file",
        ),
    ];
    for (variable, file_flag_given, kind, auth_flag, file_flag, profile_key) in secrets {
        // A file flag takes precedence over the variable: the service reads the same file.
        if file_flag_given || host.var(variable).is_none() {
            continue;
        }
        let auth_set = clawlink_command(config, profile, &format!("auth set{auth_flag}"));
        return Err(Failure::config(
            format!(
                "{variable} is set in this environment; a service does not inherit it, and its \
                 value is never written into the service file, so nothing was installed"
            ),
            Some(format!(
                "make the {kind} available to the service: store it in the OS keyring with \
                 `{auth_set}`, or write it to a file with \
                 mode 0600 and pass {file_flag} FILE (or set {profile_key} in the profile); then \
                 unset {variable} and run the install again"
            )),
        ));
    }
    Ok(())
}

/// A URL with user info would put a credential into the service file.
fn refuse_url_credentials(url: &str, flag: &str) -> Result<(), Failure> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    if authority.contains('@') {
        // The URL itself is not repeated: its user info may be a secret.
        return Err(Failure::config(
            format!("the {flag} carries user info before '@', which must not be written into a service file"),
            Some(
                "remove it from the URL and give the secret with --token-file FILE or `clawlink auth set`"
                    .into(),
            ),
        ));
    }
    Ok(())
}

/// A path as UTF-8 text fit for a service file.
fn path_text(path: &Path, what: &str) -> Result<String, Failure> {
    let text = path.to_str().ok_or_else(|| {
        Failure::config(
            format!(
                "the path of {what} ({}) is not valid UTF-8 and cannot be written into a service file",
                path.display()
            ),
            Some("rename it, or move it to a path of UTF-8 characters".into()),
        )
    })?;
    plain_text(text, what)
}

/// Refuses control characters: they have no place in an argument a service file carries.
fn plain_text(text: &str, what: &str) -> Result<String, Failure> {
    if text.chars().any(char::is_control) {
        return Err(Failure::config(
            format!("{what} contains a control character (such as a newline)"),
            Some("use a value without control characters".into()),
        ));
    }
    Ok(text.to_owned())
}

/// Profile values this command took from `CLAWLINK_*` variables: the service will not see them.
fn environment_notes(settings: &Settings) -> Vec<String> {
    let mut variables: Vec<String> = settings::provenance(settings)
        .into_iter()
        .filter_map(|(_, _, origin)| {
            origin
                .strip_prefix("environment variable ")
                .map(str::to_owned)
        })
        .collect();
    variables.sort();
    variables.dedup();
    if variables.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "the service does not get {}: values from this environment are not copied into the \
         service file (they might be secrets); put the setting into the profile in the config file",
        variables.join(", ")
    )]
}

// ---------------------------------------------------------------------------------------
// The file formats
// ---------------------------------------------------------------------------------------

/// The systemd user unit.
fn systemd_unit(spec: &ServiceSpec) -> String {
    let profile = &spec.profile;
    let mut lines = vec![
        format!(
            "# clawlink agent for profile {profile}, written by `clawlink service install` (clawlink {}).",
            env!("CARGO_PKG_VERSION")
        ),
        format!(
            "# Run that command again to change it; `{}` removes it.",
            clawlink_command(spec.config.as_deref(), profile, "service uninstall")
        ),
        "# No secret is kept here: the agent reads the gateway token or password from a 0600 file or the OS keyring.".to_owned(),
        String::new(),
        "[Unit]".to_owned(),
        format!("Description=clawlink agent: OpenClaw gateway remote control, profile {profile}"),
    ];
    // The project's repository when the build knows it; the OpenClaw documentation (which
    // the README points to) in any case, for the gateway this agent drives.
    let repository = option_env!("CARGO_PKG_REPOSITORY").filter(|r| !r.is_empty());
    lines.push(format!(
        "Documentation={}{OPENCLAW_DOCS}",
        repository.map(|r| format!("{r} ")).unwrap_or_default()
    ));
    lines.extend([
        format!("StartLimitIntervalSec={START_LIMIT_INTERVAL_S}"),
        format!("StartLimitBurst={START_LIMIT_BURST}"),
        String::new(),
        "[Service]".to_owned(),
        "Type=exec".to_owned(),
        format!("ExecStart={}", exec_start(&spec.argv)),
    ]);
    for (name, value) in &spec.environment {
        lines.push(format!(
            "Environment={}",
            systemd_quoted(&format!("{name}={value}"), false)
        ));
    }
    if let Some(dir) = &spec.working_directory {
        // Not unquoted by systemd; only specifiers need escaping.
        lines.push(format!("WorkingDirectory={}", dir.replace('%', "%%")));
    }
    lines.extend([
        "Restart=on-failure".to_owned(),
        format!("RestartSec={RESTART_DELAY_S}"),
        "# Exit status 2 is a configuration error: restarting cannot fix it.".to_owned(),
        format!("RestartPreventExitStatus={CONFIG_EXIT_STATUS}"),
        "KillSignal=SIGTERM".to_owned(),
        format!("TimeoutStopSec={STOP_TIMEOUT_S}"),
        format!("SyslogIdentifier=clawlink-{profile}"),
        String::new(),
        "[Install]".to_owned(),
        "WantedBy=default.target".to_owned(),
    ]);
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The value of `ExecStart=`: every argument as one systemd word.
fn exec_start(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| systemd_word(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One argument of an `ExecStart=` line (systemd.service "Command lines"): left bare when
/// it is made of harmless characters, else double-quoted with C escapes. `%` (specifiers)
/// and `$` (variable expansion) are doubled in either case.
fn systemd_word(arg: &str) -> String {
    let bare = !arg.is_empty()
        && arg.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '_' | '.' | ',' | ':' | '@' | '+' | '=' | '-')
        });
    if bare {
        arg.to_owned()
    } else {
        systemd_quoted(arg, true)
    }
}

/// `text` in double quotes for a systemd setting that unquotes and C-unescapes its value;
/// `dollar` doubles `$` where the setting expands variables (command lines).
fn systemd_quoted(text: &str, dollar: bool) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' if dollar => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits an `ExecStart=` value back into arguments (for `status`): the inverse of
/// [`exec_start`], and good enough for hand-edited lines.
fn systemd_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            if quote.is_none() && c.is_whitespace() {
                break;
            }
            chars.next();
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some('u') => {
                        let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                        if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            word.push(c);
                        }
                    }
                    Some(other) => word.push(other),
                    None => {}
                },
                (_, '$') if chars.peek() == Some(&'$') => {
                    chars.next();
                    word.push('$');
                }
                (_, '%') if chars.peek() == Some(&'%') => {
                    chars.next();
                    word.push('%');
                }
                (_, c) => word.push(c),
            }
        }
        words.push(word);
    }
    // Executable prefixes (`-`, `@`, `:`, `+`, `!`) are not part of the path.
    if let Some(first) = words.first_mut() {
        let path = first
            .trim_start_matches(['-', '@', ':', '+', '!'])
            .to_owned();
        *first = path;
    }
    words
}

/// The launchd agent: `label` names it, `log_file` receives its stdout and stderr.
fn launchd_plist(spec: &ServiceSpec, label: &str, log_file: &str) -> String {
    let string = |s: &str| format!("<string>{}</string>", xml_escape(s));
    let mut lines = vec![
        r#"<?xml version="1.0" encoding="UTF-8"?>"#.to_owned(),
        r#"<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">"#.to_owned(),
        format!(
            // No profile name or command here: XML comments must not contain "--".
            "<!-- clawlink agent, written by `clawlink service install` (clawlink {}). No secret is kept here. -->",
            env!("CARGO_PKG_VERSION")
        ),
        r#"<plist version="1.0">"#.to_owned(),
        "<dict>".to_owned(),
        "\t<key>Label</key>".to_owned(),
        format!("\t{}", string(label)),
        "\t<key>ProgramArguments</key>".to_owned(),
        "\t<array>".to_owned(),
    ];
    lines.extend(spec.argv.iter().map(|arg| format!("\t\t{}", string(arg))));
    lines.push("\t</array>".to_owned());
    if !spec.environment.is_empty() {
        lines.push("\t<key>EnvironmentVariables</key>".to_owned());
        lines.push("\t<dict>".to_owned());
        for (name, value) in &spec.environment {
            lines.push(format!("\t\t<key>{}</key>", xml_escape(name)));
            lines.push(format!("\t\t{}", string(value)));
        }
        lines.push("\t</dict>".to_owned());
    }
    if let Some(dir) = &spec.working_directory {
        lines.push("\t<key>WorkingDirectory</key>".to_owned());
        lines.push(format!("\t{}", string(dir)));
    }
    lines.extend([
        "\t<key>RunAtLoad</key>".to_owned(),
        "\t<true/>".to_owned(),
        // Restart after a failure, not after `launchctl bootout` or a clean SIGTERM exit.
        "\t<key>KeepAlive</key>".to_owned(),
        "\t<dict>".to_owned(),
        "\t\t<key>SuccessfulExit</key>".to_owned(),
        "\t\t<false/>".to_owned(),
        "\t</dict>".to_owned(),
        "\t<key>ThrottleInterval</key>".to_owned(),
        format!("\t<integer>{LAUNCHD_THROTTLE_S}</integer>"),
        "\t<key>ExitTimeOut</key>".to_owned(),
        format!("\t<integer>{STOP_TIMEOUT_S}</integer>"),
        "\t<key>ProcessType</key>".to_owned(),
        "\t<string>Background</string>".to_owned(),
        "\t<key>StandardOutPath</key>".to_owned(),
        format!("\t{}", string(log_file)),
        "\t<key>StandardErrorPath</key>".to_owned(),
        format!("\t{}", string(log_file)),
        "</dict>".to_owned(),
        "</plist>".to_owned(),
    ]);
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `ProgramArguments` of a plist (for `status`).
fn plist_program_arguments(xml: &str) -> Vec<String> {
    let Some(after_key) = xml.find("<key>ProgramArguments</key>").map(|i| &xml[i..]) else {
        return Vec::new();
    };
    let Some(array) = after_key
        .find("<array>")
        .zip(after_key.find("</array>"))
        .filter(|(open, close)| open < close)
        .map(|(open, close)| &after_key[open + "<array>".len()..close])
    else {
        return Vec::new();
    };
    array
        .split("<string>")
        .skip(1)
        .filter_map(|part| part.split_once("</string>").map(|(s, _)| xml_unescape(s)))
        .collect()
}

/// A clawlink command line for the user to run with this profile (and config file).
fn clawlink_command(config: Option<&str>, profile: &str, rest: &str) -> String {
    let config = config
        .map(|c| format!("--config {} ", shell_word(c)))
        .unwrap_or_default();
    format!("clawlink {config}--profile {profile} {rest}")
}

/// The `--config` of this command line as an absolute path, for the commands we suggest.
fn config_for_hints(global: &GlobalArgs) -> Option<String> {
    global.config.as_ref().map(|config| {
        let config = expand_home(config);
        std::path::absolute(&config)
            .unwrap_or(config)
            .display()
            .to_string()
    })
}

/// One argument for a POSIX shell, for commands shown to the user.
fn shell_word(arg: &str) -> String {
    let bare = !arg.is_empty()
        && arg.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '_' | '.' | ',' | ':' | '@' | '+' | '=' | '-')
        });
    if bare {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn shell_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// Side effects: the file and the service manager
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOutcome {
    Created,
    Replaced,
    Unchanged,
}

impl WriteOutcome {
    fn name(self) -> &'static str {
        match self {
            WriteOutcome::Created => "created",
            WriteOutcome::Replaced => "replaced",
            WriteOutcome::Unchanged => "unchanged",
        }
    }
}

/// Writes the service file atomically (temporary file, then rename), mode 0644: the service
/// manager reads it, and it holds nothing private.
fn write_service_file(path: &Path, text: &str) -> std::io::Result<WriteOutcome> {
    let outcome = match std::fs::read_to_string(path) {
        Ok(old) if old == text => WriteOutcome::Unchanged,
        Ok(_) => WriteOutcome::Replaced,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => WriteOutcome::Created,
        // Unreadable but present: replacing it is still what the user asked for.
        Err(_) => WriteOutcome::Replaced,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("service");
    // A dot name that does not end in .service/.plist: no manager mistakes it for a unit.
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o644);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| outcome)
}

/// What a manager tool printed.
struct ToolRun {
    success: bool,
    stdout: String,
    stderr: String,
}

impl ToolRun {
    /// The first line of stderr, which is where systemctl and launchctl say what went wrong.
    fn reason(&self) -> String {
        self.stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no error message")
            .to_owned()
    }
}

/// Runs a service-manager tool with a deadline. (A blocking call: this one-shot command has
/// nothing else to do meanwhile.)
fn run_tool(program: &str, args: &[&str]) -> std::io::Result<ToolRun> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "`{program} {}` did not finish within {} s",
                    args.join(" "),
                    TOOL_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect =
        |handle: Option<JoinHandle<String>>| handle.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(ToolRun {
        success: status.success(),
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// What happened after the file was written.
struct Activation {
    enabled: bool,
    started: bool,
    /// `None` when the manager was not asked (`--no-start`).
    manager_available: Option<bool>,
    reason: Option<String>,
    lines: Vec<String>,
}

impl Activation {
    fn skipped_by_flag(manager: Manager, location: &Location) -> Self {
        let how = match manager {
            Manager::Systemd => format!(
                "systemctl --user daemon-reload && systemctl --user enable --now {}",
                location.unit
            ),
            Manager::Launchd => format!(
                "launchctl bootstrap gui/{} {}",
                current_uid(),
                shell_word(&location.path.display().to_string())
            ),
        };
        Activation {
            enabled: false,
            started: false,
            manager_available: None,
            reason: None,
            lines: vec![format!("not started (--no-start); to start it: {how}")],
        }
    }

    fn lines(&self) -> &[String] {
        &self.lines
    }

    fn extend_json(&self, out: &mut Value) {
        out["enabled"] = json!(self.enabled);
        out["started"] = json!(self.started);
        out["managerAvailable"] = json!(self.manager_available);
        out["reason"] = json!(self.reason);
        out["hint"] = json!(self.lines);
    }
}

fn systemctl(args: &[&str]) -> std::io::Result<ToolRun> {
    let mut full = vec!["--user"];
    full.extend_from_slice(args);
    run_tool("systemctl", &full)
}

/// Whether a systemd user manager answers; the error says why not (no user bus, root in a
/// container, no systemctl at all).
fn systemd_reachable() -> Result<(), String> {
    match systemctl(&["show", "--property=Version"]) {
        Ok(run) if run.success => Ok(()),
        Ok(run) => Err(run.reason()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("systemctl is not installed".to_owned())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn systemd_activate(location: &Location, outcome: WriteOutcome) -> Result<Activation, Failure> {
    let unit = location.unit.as_str();
    let start_by_hand =
        format!("systemctl --user daemon-reload && systemctl --user enable --now {unit}");
    if let Err(reason) = systemd_reachable() {
        // `enable` works on the files alone: the service then starts with the user manager.
        let enabled = systemctl(&["enable", unit]).is_ok_and(|run| run.success);
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "$USER".to_owned());
        let mut lines = vec![format!(
            "not started: no systemd user manager is reachable here ({reason}); the unit file is written{}",
            if enabled {
                " and enabled, so it starts with your user manager"
            } else {
                ""
            }
        )];
        lines.push(format!(
            "  to start it from a login session: {start_by_hand}"
        ));
        lines.push(format!(
            "  to keep it running without a login session (at boot, after logout): loginctl enable-linger {user}"
        ));
        return Ok(Activation {
            enabled,
            started: false,
            manager_available: Some(false),
            reason: Some(reason),
            lines,
        });
    }
    // `restart` rather than `enable --now`: a re-install must replace a running agent with the
    // new command line; an unchanged file only needs the agent running.
    let start = if outcome == WriteOutcome::Unchanged {
        "start"
    } else {
        "restart"
    };
    for args in [
        vec!["daemon-reload"],
        vec!["enable", unit],
        vec![start, unit],
    ] {
        let failed = match systemctl(&args) {
            Ok(run) if run.success => None,
            Ok(run) => Some(run.reason()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = failed {
            return Err(service_failure(
                format!(
                    "the unit file {} is written, but `systemctl --user {}` failed: {reason}",
                    location.path.display(),
                    args.join(" ")
                ),
                format!(
                    "see `systemctl --user status {unit}` and `journalctl --user -u {unit}`, then: {start_by_hand}"
                ),
            ));
        }
    }
    Ok(Activation {
        enabled: true,
        started: true,
        manager_available: Some(true),
        reason: None,
        lines: vec![
            format!("enabled and {start}ed {unit}"),
            format!("  follow it with: journalctl --user -u {unit} -f"),
        ],
    })
}

/// The result of stopping a service before its file is removed.
struct Deactivation {
    stopped: bool,
    manager_reachable: bool,
    notes: Vec<String>,
}

fn systemd_deactivate(location: &Location) -> Deactivation {
    let unit = location.unit.as_str();
    match systemd_reachable() {
        Ok(()) => match systemctl(&["disable", "--now", unit]) {
            Ok(run) if run.success => Deactivation {
                stopped: true,
                manager_reachable: true,
                notes: Vec::new(),
            },
            failed => {
                let reason = failed.map_or_else(|e| e.to_string(), |run| run.reason());
                Deactivation {
                    stopped: false,
                    manager_reachable: true,
                    notes: vec![format!(
                        "warning: `systemctl --user disable --now {unit}` failed ({reason}); check `systemctl --user status {unit}`"
                    )],
                }
            }
        },
        Err(reason) => {
            // Without a manager nothing runs; `disable` still removes the enablement links.
            let _ = systemctl(&["disable", unit]);
            Deactivation {
                stopped: false,
                manager_reachable: false,
                notes: vec![format!(
                    "no systemd user manager is reachable here ({reason}), so there was nothing to stop"
                )],
            }
        }
    }
}

/// `is-active`/`is-enabled` of the unit (`is-enabled` works without a manager, on the files).
fn systemd_state(unit: &str) -> Value {
    let ask = |verb: &str| {
        systemctl(&[verb, unit])
            .ok()
            .map(|run| run.stdout.trim().to_owned())
            .filter(|answer| !answer.is_empty())
    };
    let mut state = json!({"enabled": ask("is-enabled")});
    match systemd_reachable() {
        Ok(()) => {
            state["available"] = json!(true);
            state["active"] = json!(ask("is-active"));
        }
        Err(reason) => {
            state["available"] = json!(false);
            state["active"] = Value::Null;
            state["reason"] = json!(reason);
        }
    }
    state
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn launchctl(args: &[&str]) -> std::io::Result<ToolRun> {
    run_tool("launchctl", args)
}

fn launchd_activate(location: &Location) -> Result<Activation, Failure> {
    let domain = format!("gui/{}", current_uid());
    let target = format!("{domain}/{}", location.unit);
    let path = path_text(&location.path, "the service file")?;
    // A loaded agent keeps its old definition: unload it first (fails harmlessly when it is
    // not loaded), and clear a `launchctl disable` that would make bootstrap refuse.
    let _ = launchctl(&["bootout", &target]);
    let _ = launchctl(&["enable", &target]);
    let failed = match launchctl(&["bootstrap", &domain, &path]) {
        Ok(run) if run.success => None,
        Ok(run) => Some(run.reason()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(reason) = failed {
        return Err(service_failure(
            format!(
                "the agent file {path} is written, but `launchctl bootstrap {domain}` failed: {reason}"
            ),
            format!(
                "launchd loads it at your next login; to load it now, from a session logged in \
                 to the desktop: launchctl bootstrap {domain} {}",
                shell_word(&path)
            ),
        ));
    }
    Ok(Activation {
        enabled: true,
        started: true,
        manager_available: Some(true),
        reason: None,
        lines: vec![
            format!("loaded {} into {domain}", location.unit),
            format!(
                "  its output goes to {}",
                location
                    .log_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        ],
    })
}

fn launchd_deactivate(location: &Location) -> Deactivation {
    let target = format!("gui/{}/{}", current_uid(), location.unit);
    // bootout fails when the agent is not loaded, which is the state we want anyway.
    let stopped = launchctl(&["bootout", &target]).is_ok_and(|run| run.success);
    Deactivation {
        stopped,
        manager_reachable: true,
        notes: Vec::new(),
    }
}

/// `launchctl print` of the agent: loaded or not, its state and pid.
fn launchd_state(label: &str) -> Value {
    let target = format!("gui/{}/{label}", current_uid());
    match launchctl(&["print", &target]) {
        Ok(run) if run.success => {
            let field = |name: &str| {
                run.stdout.lines().find_map(|line| {
                    line.trim()
                        .strip_prefix(name)
                        .and_then(|rest| rest.trim_start().strip_prefix('='))
                        .map(|value| value.trim().to_owned())
                })
            };
            json!({
                "available": true,
                "loaded": true,
                "state": field("state"),
                "pid": field("pid").and_then(|p| p.parse::<u64>().ok()),
            })
        }
        Ok(_) => json!({"available": true, "loaded": false}),
        Err(e) => json!({"available": false, "loaded": false, "reason": e.to_string()}),
    }
}

/// A failure of the service manager (exit 1: the file is fine, the manager said no).
fn service_failure(message: String, fix: String) -> Failure {
    Failure {
        json: json!({"layer": "service", "message": message, "fix": fix}),
        layer: "service".into(),
        message,
        fix: Some(fix),
        exit_code: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["clawlink"];
        argv.extend_from_slice(args);
        argv.extend(["service", "install"]);
        crate::cli::parse_from(argv).global
    }

    fn host(vars: &[(&str, &str)]) -> Host {
        Host {
            exe: PathBuf::from("/opt/claw link/bin/clawlink"),
            cwd: PathBuf::from("/home/ann/work"),
            user_config: Some(PathBuf::from("/home/ann/.config/clawlink/config.toml")),
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
                .collect(),
        }
    }

    fn spec(argv: &[&str]) -> ServiceSpec {
        ServiceSpec {
            profile: "work".into(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            environment: vec![("CLAWLINK_DATA_DIR".into(), "/data/50% & <more>".into())],
            working_directory: Some("/home/ann/my project".into()),
            config: Some("/home/ann/my configs/c.toml".into()),
        }
    }

    #[test]
    fn profile_names_must_fit_a_file_name() {
        for good in ["default", "work", "a.b_c-9", "X"] {
            assert!(validate_profile_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "../x",
            "a/b",
            "-x",
            ".hidden",
            "we ird",
            "a@b",
            "é",
            long.as_str(),
        ] {
            let err = validate_profile_name(bad).expect_err(bad);
            assert_eq!(err.exit_code, 2);
            assert!(err
                .message
                .contains("cannot be used in a service file name"));
            assert!(err.fix.unwrap().contains("letters, digits"));
        }
    }

    #[test]
    fn systemd_words_are_bare_or_quoted_and_escaped() {
        assert_eq!(systemd_word("/usr/bin/clawlink"), "/usr/bin/clawlink");
        assert_eq!(systemd_word("--profile"), "--profile");
        assert_eq!(systemd_word("ws://127.0.0.1:18789"), "ws://127.0.0.1:18789");
        assert_eq!(systemd_word("/a b/c"), "\"/a b/c\"");
        assert_eq!(systemd_word(""), "\"\"");
        assert_eq!(systemd_word("50%"), "\"50%%\"");
        assert_eq!(systemd_word("$HOME"), "\"$$HOME\"");
        assert_eq!(systemd_word(r#"say "hi" \ ok"#), r#""say \"hi\" \\ ok""#);
        assert_eq!(systemd_word(";"), "\";\"");
        assert_eq!(systemd_word("it's"), "\"it's\"");
        assert_eq!(systemd_quoted("A=$x 1%", false), "\"A=$x 1%%\"");
    }

    #[test]
    fn exec_start_round_trips_through_the_parser() {
        let argv: Vec<String> = [
            "/opt/claw link/clawlink",
            "up",
            "--profile",
            "work",
            "--config",
            "/home/ann/it's \"mine\"/50% $HOME\\x.toml",
            "",
            "tab\there",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(systemd_words(&exec_start(&argv)), argv);
        assert_eq!(
            systemd_words("-/usr/bin/clawlink up 'a b'"),
            vec!["/usr/bin/clawlink", "up", "a b"]
        );
    }

    #[test]
    fn the_unit_has_restart_policy_environment_and_install_section() {
        let unit = systemd_unit(&spec(&[
            "/opt/claw link/clawlink",
            "up",
            "--profile",
            "work",
        ]));
        let lines: Vec<&str> = unit.lines().collect();
        for expected in [
            "[Unit]",
            "Description=clawlink agent: OpenClaw gateway remote control, profile work",
            "StartLimitIntervalSec=300",
            "StartLimitBurst=5",
            "[Service]",
            "Type=exec",
            "ExecStart=\"/opt/claw link/clawlink\" up --profile work",
            "Environment=\"CLAWLINK_DATA_DIR=/data/50%% & <more>\"",
            "WorkingDirectory=/home/ann/my project",
            "Restart=on-failure",
            "RestartSec=5",
            "RestartPreventExitStatus=2",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=15",
            "[Install]",
            "WantedBy=default.target",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{unit}");
        }
        assert!(lines
            .iter()
            .any(|l| l.starts_with("Documentation=https://")));
        assert!(
            unit.contains(
                "`clawlink --config '/home/ann/my configs/c.toml' --profile work service uninstall` removes it"
            ),
            "{unit}"
        );
        assert!(!unit.contains("--log-format"));
    }

    #[test]
    fn the_plist_escapes_xml_and_keeps_alive_on_failure() {
        let plist = launchd_plist(
            &spec(&[
                "/Apps/Claw & Co/clawlink",
                "up",
                "--profile",
                "work",
                "--url",
                "wss://h/<x>?a='b'",
            ]),
            "dev.clawlink.work",
            "/Users/ann/Library/Logs/clawlink/work.log",
        );
        assert!(plist.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist"));
        for expected in [
            "<key>Label</key>\n\t<string>dev.clawlink.work</string>",
            "<string>/Apps/Claw &amp; Co/clawlink</string>",
            "<string>wss://h/&lt;x&gt;?a=&apos;b&apos;</string>",
            "<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>",
            "<key>RunAtLoad</key>\n\t<true/>",
            "<key>ThrottleInterval</key>\n\t<integer>10</integer>",
            "<key>StandardOutPath</key>\n\t<string>/Users/ann/Library/Logs/clawlink/work.log</string>",
            "<key>StandardErrorPath</key>\n\t<string>/Users/ann/Library/Logs/clawlink/work.log</string>",
            "<key>CLAWLINK_DATA_DIR</key>\n\t\t<string>/data/50% &amp; &lt;more&gt;</string>",
            "<key>WorkingDirectory</key>\n\t<string>/home/ann/my project</string>",
        ] {
            assert!(plist.contains(expected), "missing {expected:?} in\n{plist}");
        }
        // Nothing but the escaped forms: every '&' starts an entity.
        assert!(!plist.contains("& "));
        // XML comments must not contain "--".
        for comment in plist.split("<!--").skip(1) {
            let body = comment.split("-->").next().unwrap();
            assert!(!body.contains("--"), "{body}");
        }
        assert_eq!(
            plist_program_arguments(&plist),
            vec![
                "/Apps/Claw & Co/clawlink",
                "up",
                "--profile",
                "work",
                "--url",
                "wss://h/<x>?a='b'"
            ]
        );
        assert_eq!(xml_unescape("&#65;&#x42;&bogus; &amp;"), "AB&bogus; &");
    }

    #[test]
    fn the_plan_carries_non_secret_flags_as_absolute_paths() {
        let dir =
            std::env::temp_dir().join(format!("clawlink-service-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "never-in-the-unit\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let token_arg = token.display().to_string();
        let g = global(&[
            "--config",
            "conf/clawlink.toml",
            "--ssh",
            "ann@gw:2222",
            "--identity",
            "keys/id",
            "--remote-port",
            "18789",
            "--local-port",
            "18790",
            "--project-root",
            "~/oc",
            "--cli-path",
            "bin/openclaw",
            "--host-key-policy",
            "accept-new",
            "--token-file",
            &token_arg,
        ]);
        let h = host(&[
            ("HOME", "/home/ann"),
            ("CLAWLINK_DATA_DIR", "state"),
            ("XDG_CONFIG_HOME", "/home/ann/.config"),
            ("XDG_DATA_HOME", "/srv/xdg-data"),
        ]);
        let spec = plan(&g, "work", &[], &h).unwrap();
        assert_eq!(
            spec.argv,
            vec![
                "/opt/claw link/bin/clawlink",
                "up",
                "--profile",
                "work",
                "--config",
                "/home/ann/work/conf/clawlink.toml",
                "--ssh",
                "ann@gw:2222",
                "--identity",
                "/home/ann/work/keys/id",
                "--remote-port",
                "18789",
                "--local-port",
                "18790",
                "--project-root",
                "~/oc",
                "--cli-path",
                "bin/openclaw",
                "--host-key-policy",
                "accept-new",
                "--token-file",
                token_arg.as_str(),
            ]
        );
        assert_eq!(
            spec.environment,
            vec![(
                "CLAWLINK_DATA_DIR".to_owned(),
                "/home/ann/work/state".to_owned()
            )],
            "XDG directories do not matter with --config and CLAWLINK_DATA_DIR"
        );
        assert_eq!(spec.working_directory.as_deref(), Some("/home/ann"));
        assert_eq!(
            spec.config.as_deref(),
            Some("/home/ann/work/conf/clawlink.toml")
        );
        assert!(!systemd_unit(&spec).contains("never-in-the-unit"));

        // Without them, non-default XDG directories choose the files: they are carried.
        let h = host(&[
            ("HOME", "/home/ann"),
            ("XDG_CONFIG_HOME", "/home/ann/.config"),
            ("XDG_DATA_HOME", "/srv/xdg-data"),
        ]);
        let spec = plan(&global(&[]), "work", &[], &h).unwrap();
        assert_eq!(
            spec.environment,
            vec![("XDG_DATA_HOME".to_owned(), "/srv/xdg-data".to_owned())],
            "XDG_CONFIG_HOME is the default, XDG_DATA_HOME is not"
        );
        let h = host(&[
            ("HOME", "/home/ann"),
            ("XDG_CONFIG_HOME", "/cfg"),
            ("XDG_DATA_HOME", "rel"),
        ]);
        let spec = plan(&global(&[]), "work", &[], &h).unwrap();
        assert_eq!(
            spec.environment,
            vec![("XDG_CONFIG_HOME".to_owned(), "/cfg".to_owned())],
            "relative XDG paths are ignored"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_local_config_file_becomes_the_services_config_and_never_its_directory() {
        let h = host(&[("HOME", "/home/ann")]);
        let files = [
            PathBuf::from("/home/ann/.config/clawlink/config.toml"),
            PathBuf::from("/home/ann/proj/clawlink.toml"),
        ];
        // Only ./clawlink.toml: the service reads it by its absolute path, from $HOME.
        let spec = plan(&global(&[]), "default", &files[1..], &h).unwrap();
        assert_eq!(spec.working_directory.as_deref(), Some("/home/ann"));
        assert_eq!(
            spec.argv[1..],
            [
                "up",
                "--profile",
                "default",
                "--config",
                "/home/ann/proj/clawlink.toml"
            ]
        );
        // Both files: a service reads one; refused with the two ways out.
        let err = plan(&global(&[]), "default", &files, &h).unwrap_err();
        assert_eq!(err.exit_code, 2);
        assert!(err
            .fix
            .unwrap()
            .contains("--config /home/ann/proj/clawlink.toml"));
        // Only the user's file: nothing from the current directory.
        let only_user = plan(&global(&[]), "default", &files[..1], &h).unwrap();
        assert_eq!(only_user.working_directory.as_deref(), Some("/home/ann"));
        assert_eq!(only_user.config, None);
        assert!(!systemd_unit(&only_user).contains("/home/ann/work"));
    }

    #[test]
    fn secrets_in_the_environment_or_the_url_are_refused() {
        let err = plan(
            &global(&[]),
            "work",
            &[],
            &host(&[("CLAWLINK_TOKEN", "s3cret")]),
        )
        .err()
        .unwrap();
        assert_eq!(err.exit_code, 2);
        assert!(err.message.contains("CLAWLINK_TOKEN"));
        let fix = err.fix.unwrap();
        assert!(fix.contains("clawlink --profile work auth set`"), "{fix}");
        assert!(fix.contains("--token-file FILE"), "{fix}");
        assert!(!err.message.contains("s3cret") && !fix.contains("s3cret"));

        let err = plan(
            &global(&[]),
            "work",
            &[],
            &host(&[("CLAWLINK_PASSWORD", "pw")]),
        )
        .err()
        .unwrap();
        assert!(err.fix.unwrap().contains("auth set --password"));

        let err = plan(
            &global(&["--url", "wss://user:hunter2@gw.example/ws"]),
            "work",
            &[],
            &host(&[]),
        )
        .err()
        .unwrap();
        assert!(err.message.contains("user info"));
        assert!(!err.message.contains("hunter2"));
        assert!(refuse_url_credentials("ws://127.0.0.1:1/a@b", "--url").is_ok());
    }

    #[test]
    fn a_readable_token_file_is_refused_before_anything_is_written() {
        let dir =
            std::env::temp_dir().join(format!("clawlink-service-perm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "x\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
            let g = global(&["--token-file", token.to_str().unwrap()]);
            let err = plan(&g, "work", &[], &host(&[])).err().unwrap();
            assert!(err.fix.unwrap().starts_with("chmod 600"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn control_characters_are_refused() {
        let err = plan(&global(&["--cli-path", "a\nb"]), "work", &[], &host(&[]))
            .err()
            .unwrap();
        assert!(err.message.contains("control character"));
    }

    #[test]
    fn atomic_writes_report_created_replaced_unchanged() {
        let dir =
            std::env::temp_dir().join(format!("clawlink-service-write-{}", std::process::id()));
        let path = dir.join("sub/clawlink-x.service");
        assert_eq!(
            write_service_file(&path, "a\n").unwrap(),
            WriteOutcome::Created
        );
        assert_eq!(
            write_service_file(&path, "a\n").unwrap(),
            WriteOutcome::Unchanged
        );
        assert_eq!(
            write_service_file(&path, "b\n").unwrap(),
            WriteOutcome::Replaced
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shell_words_quote_for_display() {
        assert_eq!(shell_word("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
