//! What `clawlink service install` puts into the service: the command line, environment and working directory, decided from this command line and this process, refusing secrets.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::cli::{FlagArgument, GlobalArgs};
use crate::failure::Failure;
use crate::secret_env;
use crate::settings::{self, expand_home, Settings};
use crate::state;
use clawlink_core::registry::FlagValue;

use super::{clawlink_command, shell_word};

/// Environment variables that choose clawlink's state, carried into the service when set so
/// that it uses the same device identity, control socket and passphrase file. All are paths.
const CARRIED_PATH_VARIABLES: &[&str] = &[
    "CLAWLINK_DATA_DIR",
    "CLAWLINK_RUNTIME_DIR",
    "CLAWLINK_SSH_PASSPHRASE_FILE",
];

/// The facts of this process the plan depends on, gathered once so that the plan itself is a
/// pure function (and testable without touching the process environment).
pub(super) struct Host {
    /// The running executable, absolute and canonical.
    exe: PathBuf,
    cwd: PathBuf,
    /// The user's config file (`settings::user_config_file`).
    user_config: Option<PathBuf>,
    /// The environment variables that matter here, when set and non-empty.
    vars: BTreeMap<String, OsString>,
}

impl Host {
    pub(super) fn current() -> Result<Self, Failure> {
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
pub(super) struct ServiceSpec {
    pub(super) profile: String,
    /// The command: the absolute executable, then `up --profile NAME` and the carried flags.
    pub(super) argv: Vec<String>,
    pub(super) environment: Vec<(String, String)>,
    pub(super) working_directory: Option<String>,
    /// The absolute `--config` file, when one was given (for the commands the file suggests).
    pub(super) config: Option<String>,
}

/// Decides what the service runs, refusing what would make it differ from this command line
/// or put a secret into its file. Touches nothing.
pub(super) fn plan(
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
pub(super) fn validate_profile_name(name: &str) -> Result<(), Failure> {
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
pub(super) fn path_text(path: &Path, what: &str) -> Result<String, Failure> {
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
pub(super) fn environment_notes(settings: &Settings) -> Vec<String> {
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

/// A plan as the file-format tests use it: paths that need quoting or escaping.
#[cfg(test)]
pub(super) fn test_spec(argv: &[&str]) -> ServiceSpec {
    ServiceSpec {
        profile: "work".into(),
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        environment: vec![("CLAWLINK_DATA_DIR".into(), "/data/50% & <more>".into())],
        working_directory: Some("/home/ann/my project".into()),
        config: Some("/home/ann/my configs/c.toml".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::systemd::systemd_unit;

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
}
