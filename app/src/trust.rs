//! `clawlink ssh trust`, `clawlink tls trust`: show the identity a transport's peer presents and remember it, through the transport's host-identity capability.
//!
//! Which transport answers `<command> trust` is descriptor data ([`TrustCommand`]). A
//! transport with a trust store of its own (known_hosts) records the identity itself; one
//! whose trust is a pin in the profile (direct-ws's `tls.spki_sha256`, which survives
//! certificate renewal, openclaw #150152) hands back the key to set, and this module chooses
//! the profile — before anything goes over the network — and writes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use clawlink_core::registry::{TransportDescriptor, TrustCommand};
use clawlink_core::transport::{
    Destination, HostIdentity, PresentedIdentity, Remembered, Standing, TransportEnv,
};
use serde_json::{json, Value};

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::prompt::{self, AppPrompter};
use crate::settings::{self, Settings};

/// `clawlink <command> trust [ARGUMENT] [--yes]`: `command` is `ssh` or `tls` (whatever a
/// linked transport declares).
pub async fn trust(
    global: &GlobalArgs,
    settings: &Settings,
    command: &str,
    argument: Option<&str>,
    yes: bool,
) -> Result<()> {
    let (descriptor, how) = trust_transport(command)?;
    let mut raw = settings.profile.transport_settings(descriptor.name);
    match argument {
        Some(argument) => raw[how.argument_key] = json!(argument),
        None => {
            if let Some(required) = how.argument_required {
                if !raw[how.argument_key].is_string() {
                    return Err(Failure::config(required.missing, Some(required.fix.into())).into());
                }
            }
        }
    }
    // A bad argument is a configuration error (exit 2), as it is through the flags.
    let transport = (descriptor.factory)(&raw, &transport_env()).map_err(Failure::from)?;
    let identity = transport
        .host_identity()
        .ok_or_else(|| not_offered(command))?;
    match how.profile_pin_key {
        Some(pin_key) => {
            let keys = PinKeys {
                descriptor,
                argument_key: how.argument_key,
                pin_key,
            };
            pin_in_profile(global, settings, &keys, identity, yes).await
        }
        None => add_to_store(global, identity, yes).await,
    }
}

/// The transport answering `<command> trust`, and how.
fn trust_transport(command: &str) -> Result<(&'static TransportDescriptor, TrustCommand), Failure> {
    clawlink_core::registry::transports()
        .into_iter()
        .find_map(|d| d.trust.filter(|t| t.command == command).map(|t| (d, t)))
        .ok_or_else(|| not_offered(command))
}

/// The one-line refusal when no linked transport checks host identities for `command`.
fn not_offered(command: &str) -> Failure {
    Failure::config(
        format!(
            "this build of clawlink has no transport offering `{command} trust` (host identity)"
        ),
        Some("rebuild with `cargo xtask build` (the default includes it)".into()),
    )
}

fn transport_env() -> TransportEnv {
    TransportEnv {
        prompter: Arc::new(AppPrompter::from_environment()),
    }
}

/// Ends the command when the identity needs no question: trusted already, or refused.
fn settled(global: &GlobalArgs, presented: &PresentedIdentity) -> Option<Result<()>> {
    match &presented.standing {
        Standing::AlreadyTrusted { message, detail } => {
            if global.json {
                println!(
                    "{}",
                    with_status(presented, "already-trusted", detail.clone())
                );
            } else {
                println!("{message}");
            }
            Some(Ok(()))
        }
        Standing::Refused(error) => Some(Err(Failure::from(error.clone()).into())),
        Standing::Unknown { .. } => None,
    }
}

/// The transport's JSON fields plus the outcome.
fn with_status(presented: &PresentedIdentity, status: &str, detail: Value) -> Value {
    let mut fields = presented.fields.clone();
    fields.insert("status".into(), json!(status));
    fields.insert("detail".into(), detail);
    Value::Object(fields)
}

/// A transport whose identities live in a store of its own (known_hosts): show, ask, let
/// the transport write it.
async fn add_to_store(global: &GlobalArgs, identity: &dyn HostIdentity, yes: bool) -> Result<()> {
    let presented = identity.presented().await.map_err(Failure::from)?;
    if let Some(done) = settled(global, &presented) {
        return done;
    }
    let Standing::Unknown {
        destination: Destination::File(file),
    } = &presented.standing
    else {
        return Err(unexpected("a pin in the profile", &presented).into());
    };
    if !global.json {
        for line in &presented.lines {
            println!("{line}");
        }
    }
    prompt::consent(
        yes,
        &presented.action,
        format!("Add this key to {}?", file.display()),
    )
    .await?;
    let Remembered::Stored { file } = identity.remember(&presented).map_err(Failure::from)? else {
        return Err(unexpected("a pin in the profile", &presented).into());
    };
    if global.json {
        println!(
            "{}",
            with_status(&presented, "added", json!({"file": file}))
        );
    } else {
        println!("added {} to {}", presented.peer, file.display());
    }
    Ok(())
}

/// A transport answered other than its descriptor declared: its bug, said plainly.
fn unexpected(what: &str, presented: &PresentedIdentity) -> Failure {
    Failure::config(
        format!(
            "the transport asked to remember {} as {what}, which its descriptor does not declare",
            presented.peer
        ),
        None,
    )
}

/// The settings keys a profile pin involves, named after the transport's table.
struct PinKeys {
    descriptor: &'static TransportDescriptor,
    /// The key the command's argument sets (`url`).
    argument_key: &'static str,
    /// The key the pin is written to (`tls.spki_sha256`).
    pin_key: &'static str,
}

impl PinKeys {
    /// The table in the config file: `direct_ws` for `direct-ws`.
    fn table(&self) -> String {
        self.descriptor.name.replace('-', "_")
    }

    /// `key` under the transport's table, spelled both ways the config accepts.
    fn profile_keys(&self, key: &str) -> [String; 2] {
        [
            format!("transports.{}.{key}", self.table()),
            format!("transports.{}.{key}", self.descriptor.name),
        ]
    }

    /// The peer a profile's argument names, as the transport normalizes it (`None`: the
    /// transport's built-in default). A value the transport refuses is compared as written.
    fn profile_peer(&self, profile: &clawlink_core::config::Profile) -> Option<String> {
        let raw = profile.transport_settings(self.descriptor.name);
        let written = raw.get(self.argument_key)?.as_str()?.to_owned();
        let alone = json!({ self.argument_key: written });
        let normalized = (self.descriptor.factory)(&alone, &transport_env())
            .ok()
            .and_then(|t| t.host_identity().and_then(|i| i.peer().ok()));
        Some(normalized.unwrap_or(written))
    }
}

/// A transport whose trust is a pin in the profile: choose the profile first, show, ask,
/// write the pin the transport hands back.
async fn pin_in_profile(
    global: &GlobalArgs,
    settings: &Settings,
    keys: &PinKeys,
    identity: &dyn HostIdentity,
    yes: bool,
) -> Result<()> {
    let peer = identity.peer().map_err(Failure::from)?;
    // Decided before anything goes over the network: which profile the pin is for.
    let profile_chosen = global.profile.is_some() || std::env::var_os("CLAWLINK_PROFILE").is_some();
    let plan = plan_pin(settings, keys, profile_chosen, &peer)?;
    let file = target_file(settings)?;
    let presented = identity.presented().await.map_err(Failure::from)?;
    if let Some(done) = settled(global, &presented) {
        return done;
    }
    if global.json {
        let mut fields = presented.fields.clone();
        fields.insert("file".into(), json!(file));
        fields.insert("profile".into(), json!(plan.profile));
        println!("{}", Value::Object(fields));
    } else {
        for line in &presented.lines {
            println!("{line}");
        }
    }
    let mut question = format!(
        "Pin this public key for profile {} in {}?",
        plan.profile,
        file.display()
    );
    if let Some(previous) = &plan.switches_from {
        question.push_str(&format!(
            " (profile {} then connects to {peer} through {} instead of {previous})",
            plan.profile, keys.descriptor.name
        ));
    }
    prompt::consent(yes, &presented.action, question).await?;
    let Remembered::ProfilePatch { key, value, remove } =
        identity.remember(&presented).map_err(Failure::from)?
    else {
        return Err(unexpected("a file of its own", &presented).into());
    };
    let patch = PinPatch {
        url: &peer,
        key: &key,
        value: &value,
        remove: &remove,
    };
    write_pin(&file, keys, &plan, &patch)
        .map_err(|e| Failure::config(format!("cannot update {}: {e}", file.display()), None))?;
    if !global.json {
        println!(
            "pinned: [{}.transports.{}] {key} for {peer} written to {}",
            plan.profile,
            keys.table(),
            file.display()
        );
    }
    Ok(())
}

/// What `tls trust` writes, and into which profile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PinPlan {
    profile: String,
    /// The profile does not connect to this URL yet: write it.
    set_url: bool,
    /// The transport the profile used before, when it was another (only with an explicit
    /// `--profile`: then `transport = "<this one>"` is written into that profile).
    switches_from: Option<String>,
}

/// Chooses the profile the pin is for, so that no other profile changes where it connects:
/// the one named by `--profile`; else the profile whose own table holds this URL; else
/// `[default]` when it is the only profile. Writing into `[default]` is refused when a
/// profile inheriting from it would then connect elsewhere (every profile inherits
/// `[default]`), and so is guessing between several profiles.
fn plan_pin(
    settings: &Settings,
    keys: &PinKeys,
    profile_chosen: bool,
    url: &str,
) -> Result<PinPlan, Failure> {
    let named = settings::named_profiles(&settings.figment);
    let all: Vec<String> = std::iter::once("default".to_owned())
        .chain(named.iter().cloned())
        .collect();
    let url_keys = keys.profile_keys(keys.argument_key);
    let owns_url = |name: &str| -> Result<bool, Failure> {
        let own = url_keys
            .iter()
            .any(|k| settings::defined_by_profile(&settings.figment, name, k));
        Ok(own
            && keys
                .profile_peer(&settings::resolve_profile(settings, name)?)
                .as_deref()
                == Some(url))
    };
    let profile = if profile_chosen {
        settings.profile_name.clone()
    } else {
        let mut owners = Vec::new();
        for name in &all {
            if owns_url(name)? {
                owners.push(name.clone());
            }
        }
        match owners.as_slice() {
            [one] => one.clone(),
            [] if named.is_empty() => "default".to_owned(),
            [] => {
                return Err(Failure::config(
                    format!(
                        "no profile connects to {url}, and pinning it in [default] could change                          where the other profiles ({}) connect",
                        named.join(", ")
                    ),
                    Some(format!(
                        "say which profile the pin is for: `clawlink --profile NAME tls trust {url}`"
                    )),
                ))
            }
            several => {
                return Err(Failure::config(
                    format!("profiles {} all connect to {url}", several.join(", ")),
                    Some(format!(
                        "pin it for each one you mean: `clawlink --profile NAME tls trust {url}`"
                    )),
                ))
            }
        }
    };
    let current = settings::resolve_profile(settings, &profile)?;
    let set_url = keys.profile_peer(&current).as_deref() != Some(url);
    let transport = current.transport_name().to_owned();
    let switches_from = (transport != keys.descriptor.name).then_some(transport);
    let plan = PinPlan {
        profile,
        set_url,
        switches_from,
    };
    if plan.profile == "default" {
        let affected = inheritors_affected(settings, keys, &named, &plan, url)?;
        if !affected.is_empty() {
            return Err(Failure::config(
                format!(
                    "pinning {url} in [default] would change where profile{} {} connect{} (they inherit [default])",
                    if affected.len() == 1 { "" } else { "s" },
                    affected.join(", "),
                    if affected.len() == 1 { "s" } else { "" },
                ),
                Some(format!(
                    "pin it for the profile that uses this gateway: `clawlink --profile NAME tls trust {url}`"
                )),
            ));
        }
    }
    Ok(plan)
}

/// The profiles that inherit from `[default]` and would connect elsewhere, or with another
/// pin, once `plan` is written into `[default]`.
fn inheritors_affected(
    settings: &Settings,
    keys: &PinKeys,
    named: &[String],
    plan: &PinPlan,
    url: &str,
) -> Result<Vec<String>, Failure> {
    let url_keys = keys.profile_keys(keys.argument_key);
    let pin_keys = keys.profile_keys(keys.pin_key);
    let mut affected = Vec::new();
    for name in named {
        let own = |candidates: &[String]| {
            candidates
                .iter()
                .any(|k| settings::defined_by_profile(&settings.figment, name, k))
        };
        let before = settings::resolve_profile(settings, name)?;
        let transport_before = before.transport_name().to_owned();
        let transport_after = if plan.switches_from.is_some() && !own(&["transport".to_owned()]) {
            keys.descriptor.name.to_owned()
        } else {
            transport_before.clone()
        };
        let url_before = keys.profile_peer(&before);
        let url_after = if plan.set_url && !own(&url_keys) {
            Some(url.to_owned())
        } else {
            url_before.clone()
        };
        let inherits_pin = !own(&pin_keys);
        let changes = transport_after != transport_before
            || (transport_after == keys.descriptor.name
                && (url_after != url_before
                    || (inherits_pin && url_after.as_deref() != Some(url))));
        if changes {
            affected.push(name.clone());
        }
    }
    Ok(affected)
}

/// The file the pin goes to: the last config file read (the most specific), else the
/// user's config file.
fn target_file(settings: &Settings) -> Result<PathBuf, Failure> {
    settings
        .files
        .last()
        .cloned()
        .or_else(settings::user_config_file)
        .ok_or_else(|| {
            Failure::config(
                "no config file to write the pin to",
                Some("pass --config FILE".into()),
            )
        })
}

/// What the transport asks to be written: `key = value` under its table, the keys in
/// `remove` deleted, and the URL the pin is for.
struct PinPatch<'a> {
    url: &'a str,
    key: &'a str,
    value: &'a str,
    remove: &'a [String],
}

/// Sets the pin under `[profile.transports.<table>]` (and the URL and transport when the
/// plan says so), keeping the rest of the file (comments, order) as it was. `mode` is left
/// alone: the transport chooses where the profile connects.
fn write_pin(file: &Path, keys: &PinKeys, plan: &PinPlan, patch: &PinPatch) -> std::io::Result<()> {
    let profile = plan.profile.as_str();
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not valid TOML: {e}"),
        )
    })?;
    let table = doc
        .entry(profile)
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .ok_or_else(|| std::io::Error::other(format!("[{profile}] is not a table")))?;
    if plan.switches_from.is_some() {
        table.insert("transport", toml_edit::value(keys.descriptor.name));
    }
    let transports = sub_table(table, "transports", "transports")?;
    transports.set_implicit(true);
    let mut path = format!("transports.{}", keys.table());
    let own = sub_table(transports, &keys.table(), &path)?;
    if plan.set_url {
        own.insert(keys.argument_key, toml_edit::value(patch.url));
    }
    for gone in patch.remove {
        remove_dotted(own, gone);
    }
    let (parents, last) = split_key(patch.key);
    let mut at = own;
    for part in parents {
        path = format!("{path}.{part}");
        at = sub_table(at, part, &path)?;
    }
    at.insert(last, toml_edit::value(patch.value));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, doc.to_string())
}

/// Deletes `tls.fingerprint` (a dotted key) from `table`, when it is there.
fn remove_dotted(table: &mut toml_edit::Table, dotted: &str) {
    match dotted.split_once('.') {
        None => {
            table.remove(dotted);
        }
        Some((first, rest)) => {
            if let Some(inner) = table.get_mut(first).and_then(|i| i.as_table_mut()) {
                remove_dotted(inner, rest);
            }
        }
    }
}

/// `tls.spki_sha256` → (`[tls]`, `spki_sha256`).
fn split_key(dotted: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().unwrap_or(dotted);
    (parts, last)
}

/// The table `name` inside `table`, created when missing; `path` names it in errors.
fn sub_table<'t>(
    table: &'t mut toml_edit::Table,
    name: &str,
    path: &str,
) -> std::io::Result<&'t mut toml_edit::Table> {
    table
        .entry(name)
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .ok_or_else(|| std::io::Error::other(format!("{path} is not a table")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of the transport answering `tls trust` (direct-ws, linked in test builds).
    fn tls_keys() -> PinKeys {
        let (descriptor, how) = trust_transport("tls").unwrap();
        PinKeys {
            descriptor,
            argument_key: how.argument_key,
            pin_key: how.profile_pin_key.unwrap(),
        }
    }

    fn spki_pin(url: &str) -> PinPatch<'_> {
        const SPKI: &str = "abababababababababababababababababababababababababababababababab";
        PinPatch {
            url,
            key: "tls.spki_sha256",
            value: SPKI,
            remove: &[],
        }
    }

    #[test]
    fn the_pin_lands_in_the_profile_and_the_rest_of_the_file_survives() {
        let dir = std::env::temp_dir().join(format!("clawlink-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("clawlink.toml");
        std::fs::write(
            &file,
            "# my gateways\n[default]\nmode = \"local\"\n\n[work]\nmode = \"local\" # keep me\n",
        )
        .unwrap();
        let plan = PinPlan {
            profile: "work".into(),
            set_url: true,
            switches_from: Some("ssh-tunnel".into()),
        };
        write_pin(
            &file,
            &tls_keys(),
            &plan,
            &spki_pin("wss://gw.example:443/"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("# my gateways\n[default]\nmode = \"local\""),
            "{text}"
        );
        let value: toml_edit::DocumentMut = text.parse().unwrap();
        assert_eq!(
            value["work"]["transports"]["direct_ws"]["url"].as_str(),
            Some("wss://gw.example:443/")
        );
        assert_eq!(
            value["work"]["transports"]["direct_ws"]["tls"]["spki_sha256"].as_str(),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(value["work"]["transport"].as_str(), Some("direct-ws"));
        assert_eq!(value["default"]["mode"].as_str(), Some("local"));
        assert_eq!(value["work"]["mode"].as_str(), Some("local"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn load(args: &[&str]) -> Result<Settings, Failure> {
        let mut argv = vec!["clawlink"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["tls", "trust"]);
        settings::load(&crate::overrides(&crate::cli::parse_from(argv).global))
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API
    fn trusting_a_url_never_retargets_another_profile() {
        figment::Jail::expect_with(|jail| {
            let dir = jail.directory().to_path_buf();
            jail.set_env("HOME", dir.display());
            jail.set_env("XDG_CONFIG_HOME", dir.join("xdg").display());
            jail.create_file(
                "clawlink.toml",
                "[default]\nmode = \"local\"\n[work]\nmode = \"remote\"\n\
                 [work.transports.ssh_tunnel]\ntarget = \"claw@host\"\n",
            )?;
            let url = "wss://gw.example:443/";
            // No profile named, none connects there: ask which instead of writing [default].
            let err = plan_pin(&load(&[]).unwrap(), &tls_keys(), false, url).unwrap_err();
            assert_eq!(err.exit_code, 2);
            assert!(err.fix.unwrap().contains("--profile NAME"));

            // Explicitly [default]: allowed, because [work] keeps its SSH transport.
            let plan = plan_pin(
                &load(&["--profile", "default"]).unwrap(),
                &tls_keys(),
                true,
                url,
            )
            .unwrap();
            assert_eq!(plan.profile, "default");
            assert_eq!(plan.switches_from, None);
            let file = dir.join("clawlink.toml");
            write_pin(&file, &tls_keys(), &plan, &spki_pin(url)).unwrap();
            let work = load(&["--profile", "work"]).unwrap();
            assert_eq!(work.profile.transport_name(), "ssh-tunnel");
            assert_eq!(work.profile.mode, clawlink_core::config::Mode::Remote);
            let default = load(&[]).unwrap();
            assert_eq!(default.profile.mode, clawlink_core::config::Mode::Local);

            // Now [default] owns the URL: trusting it again needs no --profile.
            let plan = plan_pin(&default, &tls_keys(), false, url).unwrap();
            assert_eq!(plan.profile, "default");
            assert!(!plan.set_url);
            // …unless [work] holds the same URL too: then it asks which.
            let text = std::fs::read_to_string(&file).unwrap();
            jail.create_file(
                "clawlink.toml",
                &format!("{text}\n[work.transports.direct_ws]\nurl = \"{url}\"\n"),
            )?;
            let err = plan_pin(&load(&[]).unwrap(), &tls_keys(), false, url).unwrap_err();
            assert!(err.message.contains("default, work"), "{}", err.message);

            // A profile inheriting [default]'s transport would be switched: refused.
            jail.create_file(
                "clawlink.toml",
                "[default]\nmode = \"remote\"\n[default.transports.ssh_tunnel]\n\
                 target = \"claw@host\"\n[home]\n",
            )?;
            let err = plan_pin(
                &load(&["--profile", "default"]).unwrap(),
                &tls_keys(),
                true,
                url,
            )
            .unwrap_err();
            assert!(err.message.contains("home"), "{}", err.message);
            // The profile named explicitly is switched, and told so.
            let plan = plan_pin(
                &load(&["--profile", "home"]).unwrap(),
                &tls_keys(),
                true,
                url,
            )
            .unwrap();
            assert_eq!(plan.switches_from.as_deref(), Some("ssh-tunnel"));
            Ok(())
        });
    }
}
