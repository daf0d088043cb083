//! Loads the selected profile with figment: defaults → user config → ./clawlink.toml → CLAWLINK_* environment → flags.
//!
//! Files hold one top-level table per profile (`[default]`, `[work]`, …); `[default]` is
//! inherited by every profile. Environment variables apply to whichever profile is selected
//! (`CLAWLINK_MODE=remote`, nested keys with `__`: `CLAWLINK_TRANSPORTS__DIRECT_WS__URL`).
//! Command-line flags come last. Every value keeps its provenance for `config show`.

use std::path::{Path, PathBuf};

use clawlink_core::config::{table_key, Profile};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value as FigValue};
use figment::{Figment, Metadata, Profile as FigProfile};

use crate::cli::GlobalArgs;
use crate::failure::Failure;

/// The top-level profile keys the environment may set. Other `CLAWLINK_*` variables
/// (`CLAWLINK_TOKEN`, `CLAWLINK_PROFILE`, test plumbing…) are not profile keys; below these
/// roots, unknown keys are still refused.
const PROFILE_ENV_ROOTS: &[&str] = &[
    "mode",
    "transport",
    "transports",
    "auth",
    "features",
    "client",
];

const DEFAULTS: &str = "built-in default";
/// The SSH transport's registered name (the app composes it; core does not know it).
const SSH_TRANSPORT: &str = clawlink_core::config::DEFAULT_REMOTE_TRANSPORT;
/// The label of command-line overrides in the figment metadata (`config show`, and `agent` telling flags from files).
pub(crate) const FLAGS: &str = "command line";

/// A provider under a name of our choosing, so that `config show` can say "command line"
/// rather than a Rust type name.
struct Labeled<P> {
    label: &'static str,
    inner: P,
}

impl<P: figment::Provider> figment::Provider for Labeled<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.label)
    }

    fn data(&self) -> Result<figment::value::Map<FigProfile, Dict>, figment::Error> {
        self.inner.data()
    }

    fn profile(&self) -> Option<FigProfile> {
        self.inner.profile()
    }
}

/// The resolved configuration of one run.
pub struct Settings {
    pub profile_name: String,
    pub profile: Profile,
    pub figment: Figment,
    /// Config files that were read, in order.
    pub files: Vec<PathBuf>,
}

/// Where the user's config file lives: `$XDG_CONFIG_HOME/clawlink/config.toml` on Linux, the
/// platform config directory on macOS.
pub fn user_config_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "clawlink").map(|d| d.config_dir().join("config.toml"))
}

/// Loads and validates the selected profile.
pub fn load(global: &GlobalArgs) -> Result<Settings, Failure> {
    let files = config_files(global)?;
    let mut figment = Figment::new().merge(Labeled {
        label: DEFAULTS,
        inner: Serialized::defaults(Profile::default()),
    });
    for file in &files {
        figment = figment.merge(Toml::file_exact(file).nested());
    }
    figment = figment
        .merge(
            Env::prefixed("CLAWLINK_")
                .filter(|key| {
                    let root = key.as_str().split("__").next().unwrap_or_default();
                    PROFILE_ENV_ROOTS
                        .iter()
                        .any(|r| root.eq_ignore_ascii_case(r))
                })
                .split("__")
                .global(),
        )
        .merge(Labeled {
            label: FLAGS,
            inner: Serialized::globals(flag_overrides(global)),
        });

    let profile_name = global
        .profile
        .clone()
        .or_else(|| std::env::var("CLAWLINK_PROFILE").ok())
        .unwrap_or_else(|| "default".into());
    let known: Vec<String> = figment
        .profiles()
        .filter(|p| *p != FigProfile::Default && *p != FigProfile::Global)
        .map(|p| p.as_str().to_string())
        .collect();
    if profile_name != "default" && !known.iter().any(|p| p == &profile_name) {
        let where_ = if files.is_empty() {
            "no config file was found".to_owned()
        } else {
            format!(
                "{} define{}: {}",
                join_paths(&files),
                if files.len() == 1 { "s" } else { "" },
                if known.is_empty() {
                    "only [default]".to_owned()
                } else {
                    format!("default, {}", known.join(", "))
                }
            )
        };
        return Err(Failure::config(
            format!("profile {profile_name:?} does not exist ({where_})"),
            Some(format!(
                "add a [{profile_name}] table to {} or pick another --profile",
                files
                    .last()
                    .cloned()
                    .or_else(user_config_file)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the config file".into())
            )),
        ));
    }
    let figment = figment.select(profile_name.as_str());
    let profile: Profile = figment.extract().map_err(|e| {
        Failure::config(
            format!("invalid configuration: {}", describe_figment_error(&e)),
            Some("fix or remove the key named above (`clawlink config show` lists the resolved values)".into()),
        )
    })?;
    Ok(Settings {
        profile_name,
        profile,
        figment,
        files,
    })
}

fn config_files(global: &GlobalArgs) -> Result<Vec<PathBuf>, Failure> {
    if let Some(explicit) = &global.config {
        if !explicit.is_file() {
            return Err(Failure::config(
                format!("config file {} does not exist", explicit.display()),
                Some("check the path given to --config".into()),
            ));
        }
        return Ok(vec![explicit.clone()]);
    }
    let mut files = Vec::new();
    if let Some(user) = user_config_file().filter(|p| p.is_file()) {
        files.push(user);
    }
    let local = PathBuf::from("clawlink.toml");
    if local.is_file() {
        files.push(std::fs::canonicalize(&local).unwrap_or(local));
    }
    Ok(files)
}

/// Command-line overrides as a figment dictionary (only what was given).
fn flag_overrides(global: &GlobalArgs) -> Dict {
    let mut dict = Dict::new();
    let conn = &global.connection;
    if let Some(url) = &conn.url {
        dict.insert(
            "transport".into(),
            FigValue::from(clawlink_core::config::LOCAL_TRANSPORT),
        );
        let mut table = Dict::new();
        table.insert("url".into(), FigValue::from(url.clone()));
        let mut transports = Dict::new();
        transports.insert(
            table_key(clawlink_core::config::LOCAL_TRANSPORT),
            FigValue::from(table),
        );
        dict.insert("transports".into(), FigValue::from(transports));
    }
    let mut ssh = Dict::new();
    if let Some(target) = &conn.ssh {
        dict.insert("mode".into(), FigValue::from("remote"));
        dict.insert("transport".into(), FigValue::from(SSH_TRANSPORT));
        ssh.insert("target".into(), FigValue::from(target.clone()));
    }
    let ssh_values: [(&str, Option<FigValue>); 6] = [
        (
            "identity_file",
            conn.identity
                .as_ref()
                .map(|p| FigValue::from(p.display().to_string())),
        ),
        ("remote_port", conn.remote_port.map(FigValue::from)),
        ("local_port", conn.local_port.map(FigValue::from)),
        (
            "project_root",
            conn.project_root.clone().map(FigValue::from),
        ),
        ("cli_path", conn.cli_path.clone().map(FigValue::from)),
        (
            "host_key_policy",
            conn.host_key_policy.clone().map(FigValue::from),
        ),
    ];
    for (key, value) in ssh_values {
        if let Some(value) = value {
            ssh.insert(key.into(), value);
        }
    }
    if !ssh.is_empty() {
        let mut transports = match dict.remove("transports") {
            Some(FigValue::Dict(_, d)) => d,
            _ => Dict::new(),
        };
        transports.insert(table_key(SSH_TRANSPORT), FigValue::from(ssh));
        dict.insert("transports".into(), FigValue::from(transports));
    }
    let mut auth = Dict::new();
    if let Some(path) = &conn.token_file {
        auth.insert(
            "token_file".into(),
            FigValue::from(path.display().to_string()),
        );
    }
    if let Some(path) = &conn.password_file {
        auth.insert(
            "password_file".into(),
            FigValue::from(path.display().to_string()),
        );
    }
    if !auth.is_empty() {
        dict.insert("auth".into(), FigValue::from(auth));
    }
    dict
}

/// figment's error, with the file that supplied the bad value.
fn describe_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("key `{}`: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (in {})", describe_source(m)))
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "TOML file /path" or "environment variable CLAWLINK_X" or "command line".
pub fn describe_source(metadata: &Metadata) -> String {
    match &metadata.source {
        Some(figment::Source::File(path)) => format!("{} {}", metadata.name, path.display()),
        Some(source) => format!("{} {source}", metadata.name),
        None => metadata.name.to_string(),
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Each leaf of the resolved profile with the place it came from, for `config show`.
pub fn provenance(settings: &Settings) -> Vec<(String, serde_json::Value, String)> {
    let resolved = serde_json::to_value(&settings.profile).unwrap_or_default();
    let mut leaves = Vec::new();
    flatten("", &resolved, &mut leaves);
    leaves
        .into_iter()
        .map(|(key, value)| {
            let origin = source_of(settings, &key);
            (key, value, origin)
        })
        .collect()
}

fn source_of(settings: &Settings, key: &str) -> String {
    let value = settings.figment.find_value(key).ok();
    match value.and_then(|v| settings.figment.get_metadata(v.tag()).cloned()) {
        Some(md) if md.name == DEFAULTS || md.name == FLAGS => md.name.to_string(),
        Some(md) if md.name.to_lowercase().contains("environment") => {
            let parts: Vec<&str> = key.split('.').collect();
            let var = md
                .interpolate(&FigProfile::Global, &parts)
                .to_uppercase()
                .replace('.', "__");
            format!("environment variable CLAWLINK_{var}")
        }
        Some(md) => describe_source(&md),
        None => "built-in default".into(),
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Object(_) => {}
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// Expands a leading `~/` with the home directory.
pub fn expand_home(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => directories::BaseDirs::new()
            .map(|b| b.home_dir().join(rest))
            .unwrap_or_else(|| path.to_path_buf()),
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use clap::Parser;
    use clawlink_core::config::Mode;
    use figment::Jail;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["clawlink"];
        argv.extend_from_slice(args);
        argv.push("status");
        crate::cli::Cli::parse_from(argv).global
    }

    fn home(jail: &mut Jail) {
        let dir = jail.directory().to_path_buf();
        jail.set_env("HOME", dir.display());
        jail.set_env("XDG_CONFIG_HOME", dir.join("xdg").display());
    }

    #[test]
    fn layers_apply_in_order_files_env_flags() {
        Jail::expect_with(|jail| {
            home(jail);
            std::fs::create_dir_all(jail.directory().join("xdg/clawlink")).unwrap();
            jail.create_file(
                "xdg/clawlink/config.toml",
                r#"
                [default]
                mode = "local"
                [default.transports.direct_ws]
                url = "ws://127.0.0.1:1"
                connect_timeout_ms = 111
                [work]
                mode = "remote"
                transport = "direct-ws"
                "#,
            )?;
            jail.create_file(
                "clawlink.toml",
                "[default.client]\nrequest_timeout_ms = 5\n",
            )?;

            let s = load(&global(&[])).unwrap();
            assert_eq!(s.profile.mode, Mode::Local);
            assert_eq!(s.profile.client.request_timeout_ms, 5);
            assert_eq!(s.files.len(), 2);

            jail.set_env("CLAWLINK_TRANSPORTS__DIRECT_WS__URL", "ws://127.0.0.1:2");
            let s = load(&global(&["--profile", "work"])).unwrap();
            assert_eq!(s.profile.mode, Mode::Remote);
            let ws = s.profile.transport_settings("direct-ws");
            assert_eq!(ws["url"], "ws://127.0.0.1:2");
            assert_eq!(ws["connect_timeout_ms"], 111);

            let s = load(&global(&["--url", "ws://127.0.0.1:3"])).unwrap();
            assert_eq!(
                s.profile.transport_settings("direct-ws")["url"],
                "ws://127.0.0.1:3"
            );

            jail.set_env("CLAWLINK_PROFILE", "work");
            let s = load(&global(&[])).unwrap();
            assert_eq!(s.profile_name, "work");
            Ok(())
        });
    }

    #[test]
    fn provenance_names_file_env_flag_and_default() {
        Jail::expect_with(|jail| {
            home(jail);
            jail.create_file("clawlink.toml", "[default]\nmode = \"remote\"\n")?;
            jail.set_env("CLAWLINK_CLIENT__REQUEST_TIMEOUT_MS", "7");
            let s = load(&global(&["--token-file", "/tmp/t"])).unwrap();
            let rows = provenance(&s);
            let origin = |k: &str| rows.iter().find(|r| r.0 == k).map(|r| r.2.clone()).unwrap();
            assert!(
                origin("mode").contains("clawlink.toml"),
                "{}",
                origin("mode")
            );
            assert_eq!(
                origin("client.request_timeout_ms"),
                "environment variable CLAWLINK_CLIENT__REQUEST_TIMEOUT_MS"
            );
            assert_eq!(origin("auth.token_file"), "command line");
            assert_eq!(origin("client.connect_timeout_ms"), "built-in default");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
        Jail::expect_with(|jail| {
            home(jail);
            jail.create_file("clawlink.toml", "[default]\nmoed = \"local\"\n")?;
            let err = load(&global(&[])).err().unwrap();
            assert_eq!(err.exit_code, 2);
            assert!(err.message.contains("moed"), "{}", err.message);
            assert!(err.message.contains("clawlink.toml"), "{}", err.message);

            jail.create_file("clawlink.toml", "[default]\nmode = \"sideways\"\n")?;
            let err = load(&global(&[])).err().unwrap();
            assert!(err.message.contains("mode"), "{}", err.message);
            assert!(err.message.contains("sideways"), "{}", err.message);
            Ok(())
        });
    }

    #[test]
    fn secrets_in_env_are_not_profile_keys_and_unknown_profiles_are_named() {
        Jail::expect_with(|jail| {
            home(jail);
            jail.set_env("CLAWLINK_TOKEN", "s3cret-value");
            jail.set_env("CLAWLINK_PASSWORD", "s3cret-value");
            jail.set_env("CLAWLINK_PEER_DIR", "/elsewhere");
            let s = load(&global(&[])).unwrap();
            assert_eq!(s.profile.mode, Mode::Local);
            let err = load(&global(&["--profile", "nope"])).err().unwrap();
            assert!(err.message.contains("\"nope\""), "{}", err.message);
            assert!(!err.message.contains("s3cret"));
            Ok(())
        });
    }
}
