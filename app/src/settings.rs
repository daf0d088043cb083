//! Loads the selected profile with figment: defaults → user config → ./clawlink.toml → CLAWLINK_* environment → flags.
//!
//! Files hold one top-level table per profile (`[default]`, `[work]`, …); `[default]` is
//! inherited by every profile. Environment variables apply to whichever profile is selected
//! (`CLAWLINK_MODE=remote`, nested keys with `__`: `CLAWLINK_TRANSPORTS__DIRECT_WS__URL`).
//! Command-line flags come last. Every value keeps its provenance for `config show`.
//!
//! A config file is read only when another local user cannot have written it
//! ([`crate::trusted_file`]); a syntax error in any file is reported first, with its line and
//! column. After loading, [`validate`] holds every transport and feature table to its
//! plugin's descriptor, so that every command accepts and refuses the same configuration.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use clawlink_core::config::{table_key, Profile};
use clawlink_core::registry;
use clawlink_core::transport::TransportEnv;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value as FigValue};
use figment::{Figment, Metadata, Profile as FigProfile};

use crate::failure::Failure;
use crate::prompt::AppPrompter;
use crate::trusted_file;
use clawlink_core::registry::{FlagArgument, GivenTransportFlag};

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
/// The label of command-line overrides in the figment metadata (`config show`, and `agent` telling flags from files).
pub(crate) const FLAGS: &str = "command line";
/// The per-directory config file, read from the current directory when it is trusted.
pub const LOCAL_CONFIG_FILE: &str = "clawlink.toml";

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
    /// The secret files named on the command line, which outrank the environment's secrets
    /// (the profile's `auth` keys come after both).
    pub flag_secrets: FlagSecrets,
}

/// What the command line sets for [`load`], as plain data (the app's composition root builds
/// it from the parsed arguments: `crate::overrides`), so that this module does not depend on
/// the argument types.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`: this file alone instead of the user's and the directory's.
    pub config: Option<PathBuf>,
    /// `--profile NAME`.
    pub profile: Option<String>,
    pub secrets: FlagSecrets,
    /// The transport flags given, in the registry's order.
    pub transport_flags: Vec<GivenTransportFlag>,
}

/// `--token-file` / `--password-file`.
#[derive(Debug, Clone, Default)]
pub struct FlagSecrets {
    pub token_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
}

/// Where the user's config file lives: `$XDG_CONFIG_HOME/clawlink/config.toml` on Linux, the
/// platform config directory on macOS.
pub fn user_config_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "clawlink").map(|d| d.config_dir().join("config.toml"))
}

/// Loads and validates the selected profile.
pub fn load(overrides: &Overrides) -> Result<Settings, Failure> {
    let files = config_files(overrides)?;
    let mut figment = Figment::new().merge(Labeled {
        label: DEFAULTS,
        inner: Serialized::defaults(Profile::default()),
    });
    for file in &files {
        figment = figment.merge(file);
    }
    check_env_names(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
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
            inner: Serialized::globals(flag_overrides(overrides)),
        });
    let files: Vec<PathBuf> = files.into_iter().map(|f| f.path).collect();

    let profile_name = overrides
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
    let profile = extract_profile(&figment)?;
    // Before the tables are checked: a transport from a plugin must be registered for its
    // table to be known.
    crate::runtime_plugins::ensure_profile_transports(&profile, &profile_name)?;
    let settings = Settings {
        profile_name,
        profile,
        figment,
        files,
        flag_secrets: overrides.secrets.clone(),
    };
    validate(&settings)?;
    Ok(settings)
}

/// The selected profile out of the layered configuration, or the one-line refusal naming the
/// bad key and where it came from.
fn extract_profile(figment: &Figment) -> Result<Profile, Failure> {
    figment.extract().map_err(|e| {
        Failure::config(
            format!("invalid configuration: {}", describe_figment_error(&e)),
            Some(
                suggestion_for_figment_error(&e).unwrap_or_else(|| {
                    "fix or remove the key named above (`clawlink config show` lists the resolved values)".into()
                }),
            ),
        )
    })
}

/// One config file, read once (after the ownership check) and parsed once, as a figment
/// provider that names the file.
struct ConfigFile {
    path: PathBuf,
    data: figment::value::Map<FigProfile, Dict>,
}

impl figment::Provider for &ConfigFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path.as_path())
    }

    fn data(&self) -> Result<figment::value::Map<FigProfile, Dict>, figment::Error> {
        Ok(self.data.clone())
    }
}

impl ConfigFile {
    /// Reads `path` when it is trusted ([`trusted_file::read_trusted`]) and parses it; a
    /// syntax error names the file, the line and the column.
    fn read(path: PathBuf) -> Result<Self, Failure> {
        let text = trusted_file::read_trusted(&path, "config file")?;
        Self::parse(path, &text)
    }

    /// Parses the text of the file at `path` (named in messages only).
    fn parse(path: PathBuf, text: &str) -> Result<Self, Failure> {
        let data = figment::Provider::data(&Toml::string(text).nested()).map_err(|e| {
            Failure::config(
                format!(
                    "{} is not valid TOML: {}",
                    path.display(),
                    describe_toml_error(&e.to_string())
                ),
                Some(format!(
                    "fix the TOML syntax at that place in {}",
                    path.display()
                )),
            )
        })?;
        Ok(Self { path, data })
    }
}

/// toml's multi-line message ("TOML parse error at line 3, column 9 | … | ^ invalid string")
/// as one line starting with "line 3, column 9".
fn describe_toml_error(raw: &str) -> String {
    let mut lines = raw.lines();
    let first = lines.next().unwrap_or_default();
    let position = first
        .strip_prefix("TOML parse error at ")
        .unwrap_or(first)
        .to_owned();
    // The excerpt lines start with a gutter ("  |", "3 |"); the rest is the explanation.
    let is_excerpt = |line: &str| {
        let line = line.trim_start();
        line.starts_with('|')
            || line
                .split_once(" |")
                .is_some_and(|(number, _)| number.parse::<u32>().is_ok())
    };
    let explanation: Vec<&str> = lines
        .filter(|l| !is_excerpt(l))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if explanation.is_empty() {
        position
    } else {
        format!("{position}: {}", explanation.join(" "))
    }
}

fn config_files(overrides: &Overrides) -> Result<Vec<ConfigFile>, Failure> {
    if let Some(explicit) = &overrides.config {
        if !explicit.is_file() {
            return Err(Failure::config(
                format!("config file {} does not exist", explicit.display()),
                Some("check the path given to --config".into()),
            ));
        }
        return Ok(vec![ConfigFile::read(explicit.clone())?]);
    }
    let mut files = Vec::new();
    if let Some(user) = user_config_file().filter(|p| p.is_file()) {
        files.push(ConfigFile::read(user)?);
    }
    let local = PathBuf::from(LOCAL_CONFIG_FILE);
    if local.is_file() {
        files.push(ConfigFile::read(
            std::fs::canonicalize(&local).unwrap_or(local),
        )?);
    }
    Ok(files)
}

/// Command-line overrides as a figment dictionary (only what was given). Transport flags
/// come as data from their descriptors: each sets `transports.<table>.<key>`, and a
/// selecting one (`--ssh`, `--url`) also sets `transport` (and `mode` when it implies one).
fn flag_overrides(overrides: &Overrides) -> Dict {
    let mut dict = Dict::new();
    let mut transports = Dict::new();
    for given in &overrides.transport_flags {
        if let Some(selection) = given.flag.selects {
            if let Some(mode) = selection.mode {
                let mode = match mode {
                    clawlink_core::config::Mode::Local => "local",
                    clawlink_core::config::Mode::Remote => "remote",
                };
                dict.insert("mode".into(), FigValue::from(mode));
            }
            dict.insert("transport".into(), FigValue::from(given.transport.name));
        }
        let value = match &given.value {
            FlagArgument::Text(text) => FigValue::from(text.clone()),
            FlagArgument::Path(path) => FigValue::from(path.display().to_string()),
            FlagArgument::Port(port) => FigValue::from(*port),
        };
        let table = transports
            .entry(table_key(given.transport.name))
            .or_insert_with(|| FigValue::from(Dict::new()));
        if let FigValue::Dict(_, table) = table {
            table.insert(given.flag.key.into(), value);
        }
    }
    if !transports.is_empty() {
        dict.insert("transports".into(), FigValue::from(transports));
    }
    let mut auth = Dict::new();
    if let Some(path) = &overrides.secrets.token_file {
        auth.insert(
            "token_file".into(),
            FigValue::from(path.display().to_string()),
        );
    }
    if let Some(path) = &overrides.secrets.password_file {
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

/// figment's error, with the file or the environment variable that supplied the bad value.
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
            // figment's own text for this one nests backticks ("expected `one of `a``").
            let kind = match &e.kind {
                figment::error::Kind::UnknownField(_, expected) => {
                    format!("unknown key; known keys here: {}", expected.join(", "))
                }
                kind => kind.to_string(),
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| {
                    if is_environment(m) && !e.path.is_empty() {
                        format!(
                            " (in environment variable {})",
                            env_var_name(&e.path.join("."))
                        )
                    } else {
                        format!(" (in {})", describe_source(m))
                    }
                })
                .unwrap_or_default();
            format!("{key}{kind}{source}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "did you mean …" for an unknown top-level or nested profile key.
fn suggestion_for_figment_error(error: &figment::Error) -> Option<String> {
    error.clone().into_iter().find_map(|e| match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            closest(field, expected.iter().copied()).map(|best| {
                let mut path = e.path.clone();
                path.pop();
                path.push(best.to_owned());
                format!(
                    "did you mean `{}`? (`clawlink config show` lists the resolved values)",
                    path.join(".")
                )
            })
        }
        _ => None,
    })
}

fn is_environment(metadata: &Metadata) -> bool {
    metadata.name.to_lowercase().contains("environment")
}

/// The variable that sets profile key `key` (`client.request_timeout_ms` →
/// `CLAWLINK_CLIENT__REQUEST_TIMEOUT_MS`).
fn env_var_name(key: &str) -> String {
    format!("CLAWLINK_{}", key.to_uppercase().replace('.', "__"))
}

/// The candidate closest to `typed`, when it is close enough to be a typo of it.
pub fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let typed = typed.to_lowercase();
    let limit = if typed.chars().count() >= 4 { 2 } else { 1 };
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&typed, &c.to_lowercase()), c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Refuses `CLAWLINK_*` variables that look like profile keys but set none (a typo such as
/// `CLAWLINK_TRANSPOTS__DIRECT_WS__URL` would otherwise be ignored silently). Variables
/// with `__` are always profile keys; others only when their name is a near miss of a
/// profile key, so that `CLAWLINK_TOKEN`, `CLAWLINK_DATA_DIR` and the like stay free.
fn check_env_names(names: impl IntoIterator<Item = String>) -> Result<(), Failure> {
    for name in names {
        let Some(rest) = name.strip_prefix("CLAWLINK_") else {
            continue;
        };
        let root = rest.split("__").next().unwrap_or_default();
        if PROFILE_ENV_ROOTS
            .iter()
            .any(|r| root.eq_ignore_ascii_case(r))
        {
            continue;
        }
        let near = closest(root, PROFILE_ENV_ROOTS.iter().copied());
        if !rest.contains("__") && near.is_none() {
            continue;
        }
        let fix = match near {
            Some(best) => format!(
                "did you mean {}? (or unset {name})",
                name.replacen(root, &best.to_uppercase(), 1)
            ),
            None => format!(
                "profile keys are set by CLAWLINK_{{{}}}[__KEY…]; unset {name}",
                PROFILE_ENV_ROOTS
                    .iter()
                    .map(|r| r.to_uppercase())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        return Err(Failure::config(
            format!("environment variable {name} sets no clawlink setting ({root} is not a profile key)"),
            Some(fix),
        ));
    }
    Ok(())
}

/// The one validation every command runs after loading the profile: each transport and
/// feature table names a plugin of this build, and each table is accepted by its plugin's
/// descriptor (the factory that `up` and the connecting commands run). Transport tables are
/// held to their keys and types here: a table may stay incomplete (no `target`) while
/// another transport is in use. Feature tables are held to everything their factory checks
/// when the feature is enabled (what `up` would refuse), else to their keys and types.
fn validate(settings: &Settings) -> Result<(), Failure> {
    let profile = &settings.profile;
    let transports = registry::transports();
    let transport_keys: Vec<String> = transports.iter().map(|d| table_key(d.name)).collect();
    let mut checked = Vec::new();
    for key in profile.transports.keys() {
        let Some(descriptor) = transports
            .iter()
            .find(|d| d.name == key || table_key(d.name) == *key)
        else {
            return Err(unknown_table(
                "transports",
                "transport",
                key,
                &transport_keys,
            ));
        };
        if checked.contains(&descriptor.name) {
            continue;
        }
        checked.push(descriptor.name);
        let table = profile.transport_settings(descriptor.name);
        let env = TransportEnv {
            prompter: Arc::new(AppPrompter::from_environment()),
        };
        // A missing key or a value the transport refuses (a public ws:// URL) is reported
        // by the commands that build the selected transport (`config check` and the
        // connecting ones); here only what no table of this transport may hold.
        if let Err(error) = (descriptor.factory)(&table, &env) {
            let message = error.to_string();
            if is_key_or_type_error(&message) {
                let prefix = format!("transports.{}", table_key(descriptor.name));
                return Err(table_failure(
                    settings,
                    &prefix,
                    &message,
                    error.fix.clone(),
                ));
            }
        }
    }
    let features = registry::features();
    let feature_keys: Vec<String> = features.iter().map(|d| table_key(d.name)).collect();
    for (key, table) in &profile.features {
        let Some(descriptor) = features
            .iter()
            .find(|d| d.name == key || table_key(d.name) == *key)
        else {
            return Err(unknown_table(
                "features",
                "feature plugin",
                key,
                &feature_keys,
            ));
        };
        let enabled = table.enabled.unwrap_or(descriptor.enabled_by_default);
        if let Err(error) = (descriptor.factory)(&profile.feature_config(descriptor.name)) {
            if enabled || is_key_or_type_error(&error.message) {
                let prefix = format!("features.{}", table_key(descriptor.name));
                return Err(table_failure(
                    settings,
                    &prefix,
                    &error.message,
                    error.fix.clone(),
                ));
            }
        }
    }
    Ok(())
}

/// serde's words for a key or a value of the wrong kind (not for a missing key).
fn is_key_or_type_error(message: &str) -> bool {
    [
        "unknown field",
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ]
    .iter()
    .any(|p| message.contains(p))
}

fn unknown_table(section: &str, kind: &str, key: &str, known: &[String]) -> Failure {
    let fix = match closest(key, known.iter().map(String::as_str)) {
        Some(best) => format!(
            "did you mean [PROFILE.{section}.{best}]? (this build has: {})",
            known.join(", ")
        ),
        None if known.is_empty() => format!("remove the table; this build has no {kind}s"),
        None => format!(
            "this build has: {} (`clawlink {section}` lists them)",
            known.join(", ")
        ),
    };
    Failure::config(
        format!("{section}.{key}: this build has no {kind} named {key:?}"),
        Some(fix),
    )
}

/// A plugin's refusal of its table, with "did you mean" for an unknown key and the
/// environment variable when one supplied the value.
fn table_failure(settings: &Settings, prefix: &str, message: &str, fix: Option<String>) -> Failure {
    let mut message = if message.starts_with(prefix) {
        message.to_owned()
    } else {
        format!("{prefix}: {message}")
    };
    let mut fix = fix;
    if let Some((key, variable)) = env_origin(settings, prefix, &message) {
        message.push_str(&format!(
            " (key {key}, set by environment variable {variable})"
        ));
        fix = Some(format!(
            "correct or unset {variable} (`clawlink transports` and `clawlink features` show each setting)"
        ));
    }
    let suggestion = unknown_field(&message).and_then(|(typed, expected)| {
        closest(&typed, expected.iter().map(String::as_str)).map(|best| {
            format!("did you mean `{best}` instead of `{typed}` in [PROFILE.{prefix}]?")
        })
    });
    let fix = match (suggestion, fix) {
        (Some(s), _) => Some(s),
        (None, fix) => fix,
    };
    Failure::config(message, fix)
}

/// serde's "unknown field `intervl_secs`, expected one of `interval_secs`, `timeout_ms`":
/// the typed key and the keys the plugin knows.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    let (typed, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((typed.to_owned(), expected))
}

/// When an environment variable set a value of the table the plugin refused, which one
/// (serde's message names neither the key nor the variable).
fn env_origin(settings: &Settings, prefix: &str, message: &str) -> Option<(String, String)> {
    let table = settings.figment.find_value(prefix).ok()?;
    let dict = table.as_dict()?;
    let mut leaves = Vec::new();
    flatten_fig(prefix, dict, &mut leaves);
    leaves.into_iter().find_map(|(key, value)| {
        let metadata = settings.figment.get_metadata(value.tag())?;
        if !is_environment(metadata) {
            return None;
        }
        let shown = match &value {
            FigValue::String(_, s) => format!("{s:?}"),
            FigValue::Num(_, n) => n
                .to_u128()
                .map(|n| n.to_string())
                .or_else(|| n.to_i128().map(|n| n.to_string()))
                .or_else(|| n.to_f64().map(|n| n.to_string()))
                .unwrap_or_default(),
            FigValue::Bool(_, b) => b.to_string(),
            _ => return None,
        };
        let leaf = key.rsplit('.').next().unwrap_or(&key);
        (message.contains(&shown) || message.contains(&format!("`{leaf}`")))
            .then(|| (key.clone(), env_var_name(&key)))
    })
}

fn flatten_fig(prefix: &str, dict: &Dict, out: &mut Vec<(String, FigValue)>) {
    for (k, v) in dict {
        let key = format!("{prefix}.{k}");
        match v {
            FigValue::Dict(_, inner) => flatten_fig(&key, inner, out),
            other => out.push((key, other.clone())),
        }
    }
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

/// The names of the profiles the config files define besides `default`.
pub fn named_profiles(figment: &Figment) -> Vec<String> {
    figment
        .profiles()
        .filter(|p| *p != FigProfile::Default && *p != FigProfile::Global)
        .map(|p| p.as_str().to_string())
        .collect()
}

/// Whether profile `profile`'s own table sets `key` (a dotted path), as opposed to
/// inheriting it from `[default]` or taking it from the environment, a flag or a default.
pub fn defined_by_profile(figment: &Figment, profile: &str, key: &str) -> bool {
    let selected = figment.clone().select(profile);
    let Ok(value) = selected.find_value(key) else {
        return false;
    };
    // figment's tags tell [default] and global values apart; every named profile is
    // "custom" (`None`), and with `profile` selected no other named profile is merged in.
    let own = if profile == "default" {
        Some(FigProfile::Default)
    } else {
        None
    };
    let from_a_file = selected
        .get_metadata(value.tag())
        .is_some_and(|m| m.name != DEFAULTS);
    from_a_file && value.tag().profile() == own
}

/// Profile `name` resolved from the same sources as `settings`.
pub fn resolve_profile(settings: &Settings, name: &str) -> Result<Profile, Failure> {
    settings
        .figment
        .clone()
        .select(name)
        .extract()
        .map_err(|e| {
            Failure::config(
                format!(
                    "invalid configuration of profile {name:?}: {}",
                    describe_figment_error(&e)
                ),
                None,
            )
        })
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
    use clawlink_core::config::Mode;
    use figment::Jail;

    fn global(args: &[&str]) -> Overrides {
        let mut argv = vec!["clawlink"];
        argv.extend_from_slice(args);
        argv.push("status");
        crate::overrides(&crate::cli::parse_from(argv).global)
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
    #[test]
    fn a_syntax_error_wins_over_an_unknown_profile_and_names_line_and_column() {
        Jail::expect_with(|jail| {
            home(jail);
            std::fs::create_dir_all(jail.directory().join("xdg/clawlink")).unwrap();
            jail.create_file(
                "xdg/clawlink/config.toml",
                "[default]\nmode = \"local\"\n[work]\nmode = \"remote\",\n",
            )?;
            for args in [&["--profile", "work"][..], &[]] {
                let err = load(&global(args)).err().unwrap();
                assert_eq!(err.exit_code, 2);
                assert!(!err.message.contains("does not exist"), "{}", err.message);
                assert!(err.message.contains("config.toml"), "{}", err.message);
                assert!(err.message.contains("line 4, column 16"), "{}", err.message);
            }
            Ok(())
        });
    }

    #[test]
    fn every_command_refuses_typos_in_plugin_tables_with_a_suggestion() {
        Jail::expect_with(|jail| {
            home(jail);
            jail.create_file(
                "clawlink.toml",
                "[default.features.health]\nintervl_secs = 5\n",
            )?;
            let err = load(&global(&[])).err().unwrap();
            assert_eq!(err.exit_code, 2);
            assert!(err.message.contains("intervl_secs"), "{}", err.message);
            assert!(
                err.fix.as_deref().unwrap_or("").contains("`interval_secs`"),
                "{:?}",
                err.fix
            );

            jail.create_file("clawlink.toml", "[default.features.helth]\n")?;
            let err = load(&global(&[])).err().unwrap();
            assert!(
                err.fix.as_deref().unwrap_or("").contains("features.health"),
                "{:?}",
                err.fix
            );

            // An unused transport's table is still held to its keys.
            jail.create_file(
                "clawlink.toml",
                "[default.transports.ssh_tunnel]\ntaget = \"claw@host\"\n",
            )?;
            let err = load(&global(&[])).err().unwrap();
            assert!(err.message.contains("taget"), "{}", err.message);
            assert!(
                err.fix.as_deref().unwrap_or("").contains("`target`"),
                "{:?}",
                err.fix
            );
            // …but it may be incomplete while another transport is in use.
            jail.create_file(
                "clawlink.toml",
                "[default.transports.ssh_tunnel]\nremote_port = 18789\n",
            )?;
            assert!(load(&global(&[])).is_ok());

            jail.create_file("clawlink.toml", "[default.transports.ssh_tunel]\n")?;
            let err = load(&global(&[])).err().unwrap();
            assert!(
                err.fix
                    .as_deref()
                    .unwrap_or("")
                    .contains("transports.ssh_tunnel"),
                "{:?}",
                err.fix
            );
            Ok(())
        });
    }

    #[test]
    fn environment_typos_and_bad_values_name_the_variable() {
        Jail::expect_with(|jail| {
            home(jail);
            jail.set_env("CLAWLINK_TRANSPOTS__DIRECT_WS__URL", "ws://127.0.0.1:9");
            let err = load(&global(&[])).err().unwrap();
            assert_eq!(err.exit_code, 2);
            assert!(
                err.message.contains("CLAWLINK_TRANSPOTS__DIRECT_WS__URL"),
                "{}",
                err.message
            );
            assert!(
                err.fix
                    .as_deref()
                    .unwrap_or("")
                    .contains("CLAWLINK_TRANSPORTS__DIRECT_WS__URL"),
                "{:?}",
                err.fix
            );
            jail.clear_env();
            home(jail);

            jail.set_env("CLAWLINK_TRANSPORTS__SSH_TUNNEL__REMOTE_PORT", "abc");
            let err = load(&global(&[])).err().unwrap();
            assert!(
                err.message
                    .contains("CLAWLINK_TRANSPORTS__SSH_TUNNEL__REMOTE_PORT"),
                "{}",
                err.message
            );
            assert!(err.message.contains("remote_port"), "{}", err.message);
            jail.clear_env();
            home(jail);

            jail.set_env("CLAWLINK_CLIENT__REQUEST_TIMEOUT_MS", "abc");
            let err = load(&global(&[])).err().unwrap();
            assert!(
                err.message.contains("CLAWLINK_CLIENT__REQUEST_TIMEOUT_MS"),
                "{}",
                err.message
            );
            Ok(())
        });
        // Variables that are not profile keys stay free.
        assert!(check_env_names(
            [
                "CLAWLINK_TOKEN",
                "CLAWLINK_DATA_DIR",
                "CLAWLINK_PEER_ENV",
                "CLAWLINK_BIN"
            ]
            .map(String::from)
        )
        .is_ok());
        assert!(check_env_names(["CLAWLINK_MDOE".to_owned()]).is_err());
    }
}

/// Fixed-budget fuzzing of config files: any text is parsed or refused in one line naming the
/// file, never a panic or a hang, and a profile written as TOML reads back as itself.
#[cfg(test)]
mod fuzz {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use clawlink_core::config::{AuthSettings, ClientSettings, FeatureSettings, Mode};
    use clawlink_fuzz_budget::{arbitrary, check, Arbitrary, Unstructured};

    use super::*;

    const BUDGET: Duration = Duration::from_secs(3);
    const FILE: &str = "/fuzz/config.toml";

    /// The file's profile `name` as `load` layers it: the built-in defaults under the file.
    fn profile_from(file: &ConfigFile, name: &str) -> Result<Profile, Failure> {
        let figment = Figment::new()
            .merge(Labeled {
                label: DEFAULTS,
                inner: Serialized::defaults(Profile::default()),
            })
            .merge(file)
            .select(name);
        extract_profile(&figment)
    }

    fn assert_config_text_invariants(text: &str) {
        match ConfigFile::parse(PathBuf::from(FILE), text) {
            Ok(file) => {
                let mut names: Vec<String> = file.data.keys().map(|p| p.to_string()).collect();
                names.push("default".into());
                for name in names {
                    if let Err(failure) = profile_from(&file, &name) {
                        assert!(!failure.message.is_empty(), "{text:?}");
                        assert!(failure.fix.is_some(), "{text:?}");
                    }
                }
            }
            Err(failure) => {
                // A syntax error is one line that names the file and the place.
                assert!(!failure.message.contains('\n'), "{}", failure.message);
                assert!(failure.message.contains(FILE), "{}", failure.message);
                assert!(failure.fix.is_some_and(|f| f.contains(FILE)));
            }
        }
    }

    /// Text mostly made of TOML's own syntax and the profile's keys.
    #[derive(Debug)]
    struct TomlShaped(String);

    impl<'a> Arbitrary<'a> for TomlShaped {
        fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
            const PIECES: &[&str] = &[
                "[default]",
                "[work]",
                "[default.transports.direct_ws]",
                "[[default]]",
                "[default.features.health]",
                "\n",
                " = ",
                "=",
                "\"",
                "'",
                "'''",
                "\"\"\"",
                "mode",
                "remote",
                "\"remote\"",
                "transport",
                "auth",
                "token_file",
                "client",
                "request_timeout_ms",
                "enabled",
                "true",
                "1",
                "-1",
                "9223372036854775808",
                "1.5",
                "{",
                "}",
                "[",
                "]",
                ",",
                ".",
                "#",
                "\\u00e9",
                "\\",
                "1979-05-27",
                "inf",
                "nan",
                "x",
            ];
            let mut text = String::new();
            for _ in 0..u.int_in_range(0..=40)? {
                if u.ratio(1, 10)? {
                    text.push(u.arbitrary::<char>()?);
                } else {
                    text.push_str(u.choose(PIECES)?);
                }
            }
            Ok(TomlShaped(text))
        }
    }

    #[test]
    fn arbitrary_config_text_is_read_or_refused_in_one_line() {
        check("config text", BUDGET, |text: String| {
            assert_config_text_invariants(&text)
        });
    }

    #[test]
    fn toml_shaped_config_text_is_read_or_refused_in_one_line() {
        check("config TOML shapes", BUDGET, |TomlShaped(text)| {
            assert_config_text_invariants(&text)
        });
    }

    /// A profile with every kind of value the file format must carry.
    #[derive(Debug)]
    struct ArbitraryProfile(Profile);

    impl<'a> Arbitrary<'a> for ArbitraryProfile {
        fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
            const NAMES: &[&str] = &["direct_ws", "ssh-tunnel", "health", "a.b", "", "é x"];
            let mut transports = BTreeMap::new();
            for _ in 0..u.int_in_range(0..=2)? {
                let table = serde_json::json!({ "url": u.arbitrary::<String>()? });
                transports.insert((*u.choose(NAMES)?).to_owned(), table);
            }
            let mut features = BTreeMap::new();
            for _ in 0..u.int_in_range(0..=2)? {
                let mut settings = serde_json::Map::new();
                if u.arbitrary::<bool>()? {
                    settings.insert("interval_secs".into(), u.arbitrary::<u32>()?.into());
                }
                features.insert(
                    (*u.choose(NAMES)?).to_owned(),
                    FeatureSettings {
                        enabled: u.arbitrary::<Option<bool>>()?,
                        settings,
                    },
                );
            }
            Ok(ArbitraryProfile(Profile {
                mode: if u.arbitrary::<bool>()? {
                    Mode::Remote
                } else {
                    Mode::Local
                },
                transport: u.arbitrary::<Option<String>>()?,
                transports,
                auth: AuthSettings {
                    token_file: u.arbitrary::<Option<String>>()?.map(PathBuf::from),
                    password_file: u.arbitrary::<Option<String>>()?.map(PathBuf::from),
                },
                features,
                client: ClientSettings {
                    display_name: u.arbitrary::<Option<String>>()?,
                    // TOML integers are signed 64-bit.
                    request_timeout_ms: u.arbitrary::<u32>()?.into(),
                    connect_timeout_ms: u.arbitrary::<u32>()?.into(),
                },
                plugins: Default::default(),
            }))
        }
    }

    #[test]
    fn a_profile_written_as_toml_reads_back_as_itself() {
        check("config round trip", BUDGET, |ArbitraryProfile(profile)| {
            let file: BTreeMap<&str, &Profile> = [("work", &profile)].into();
            let text = toml::to_string(&file).expect("every profile can be written");
            let parsed = ConfigFile::parse(PathBuf::from(FILE), &text)
                .unwrap_or_else(|f| panic!("{}: {text}", f.message));
            let read =
                profile_from(&parsed, "work").unwrap_or_else(|f| panic!("{}: {text}", f.message));
            assert_eq!(read, profile, "{text}");
        });
    }
}
