//! `clawlink tls trust URL`: show a wss:// gateway's certificate fingerprints and pin its public key in the profile.
//!
//! The pin written is the SPKI one (`tls.spki_sha256`): it survives certificate renewal as
//! long as the gateway keeps its key, which leaf pins do not (openclaw #150152).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clawlink_transport_ws::tls::{colon_hex, hex};
use clawlink_transport_ws::{DirectWs, GatewayUrl};
use serde_json::json;

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::prompt;
use crate::settings::{self, Settings};

pub async fn trust(
    global: &GlobalArgs,
    settings: &Settings,
    url: Option<&str>,
    yes: bool,
) -> Result<()> {
    let configured = settings
        .profile
        .transport_settings(clawlink_transport_ws::NAME);
    let url_text = match url {
        Some(url) => url.to_owned(),
        None => configured["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                Failure::config(
                    "no gateway URL given",
                    Some("pass the wss:// URL: `clawlink tls trust wss://HOST`".into()),
                )
            })?,
    };
    let url = GatewayUrl::parse(&url_text).map_err(Failure::from)?;
    if !url.tls {
        return Err(Failure::config(
            format!(
                "{} is not a wss:// URL; there is no certificate to trust",
                url.to_url()
            ),
            None,
        )
        .into());
    }
    // Decided before anything goes over the network: which profile the pin is for.
    let profile_chosen = global.profile.is_some() || std::env::var_os("CLAWLINK_PROFILE").is_some();
    let plan = plan_pin(settings, profile_chosen, &url.to_url())?;
    let file = target_file(settings)?;
    let probe = DirectWs::new(url.clone(), Duration::from_secs(10)).map_err(Failure::from)?;
    let seen = probe.probe_certificate().await.map_err(Failure::from)?;
    let Some(spki) = seen.spki else {
        return Err(Failure::config(
            "the certificate's public key could not be extracted; pin the leaf instead (tls.fingerprint)",
            Some(format!("tls.fingerprint = \"sha256:{}\"", hex(&seen.leaf))),
        )
        .into());
    };
    if global.json {
        println!(
            "{}",
            json!({"url": url.to_url(), "leafSha256": hex(&seen.leaf), "spkiSha256": hex(&spki), "file": file, "profile": plan.profile})
        );
    } else {
        println!("{} presents a certificate with", url.to_url());
        println!("  leaf sha256 {}", colon_hex(&seen.leaf));
        println!("  spki sha256 {}", colon_hex(&spki));
        println!(
            "(on the gateway host: `openssl x509 -in ~/.openclaw/gateway/tls/gateway-cert.pem -noout -fingerprint -sha256` shows the leaf one)"
        );
    }
    let mut question = format!(
        "Pin this public key for profile {} in {}?",
        plan.profile,
        file.display()
    );
    if let Some(previous) = &plan.switches_from {
        question.push_str(&format!(
            " (profile {} then connects to {} through direct-ws instead of {previous})",
            plan.profile,
            url.to_url()
        ));
    }
    prompt::consent(yes, "pinning the certificate's key", question).await?;
    write_pin(&file, &plan, &url.to_url(), &hex(&spki))
        .map_err(|e| Failure::config(format!("cannot update {}: {e}", file.display()), None))?;
    if !global.json {
        println!(
            "pinned: [{}.transports.direct_ws] tls.spki_sha256 for {} written to {}",
            plan.profile,
            url.to_url(),
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
    /// The transport the profile used before, when it was not direct-ws (only with an
    /// explicit `--profile`: then `transport = "direct-ws"` is written into that profile).
    switches_from: Option<String>,
}

const URL_KEYS: [&str; 2] = ["transports.direct_ws.url", "transports.direct-ws.url"];
const PIN_KEYS: [&str; 2] = [
    "transports.direct_ws.tls.spki_sha256",
    "transports.direct-ws.tls.spki_sha256",
];

/// The URL a profile connects to through direct-ws, normalized (`None`: the built-in default).
fn profile_url(profile: &clawlink_core::config::Profile) -> Option<String> {
    profile
        .transport_settings(clawlink_transport_ws::NAME)
        .get("url")
        .and_then(|u| u.as_str())
        .map(|u| {
            GatewayUrl::parse(u)
                .map(|g| g.to_url())
                .unwrap_or_else(|_| u.to_owned())
        })
}

/// Chooses the profile the pin is for, so that no other profile changes where it connects:
/// the one named by `--profile`; else the profile whose own table holds this URL; else
/// `[default]` when it is the only profile. Writing into `[default]` is refused when a
/// profile inheriting from it would then connect elsewhere (every profile inherits
/// `[default]`), and so is guessing between several profiles.
fn plan_pin(settings: &Settings, profile_chosen: bool, url: &str) -> Result<PinPlan, Failure> {
    let named = settings::named_profiles(&settings.figment);
    let all: Vec<String> = std::iter::once("default".to_owned())
        .chain(named.iter().cloned())
        .collect();
    let owns_url = |name: &str| -> Result<bool, Failure> {
        let own = URL_KEYS
            .iter()
            .any(|k| settings::defined_by_profile(&settings.figment, name, k));
        Ok(own && profile_url(&settings::resolve_profile(settings, name)?).as_deref() == Some(url))
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
    let set_url = profile_url(&current).as_deref() != Some(url);
    let transport = current.transport_name().to_owned();
    let switches_from = (transport != clawlink_transport_ws::NAME).then_some(transport);
    let plan = PinPlan {
        profile,
        set_url,
        switches_from,
    };
    if plan.profile == "default" {
        let affected = inheritors_affected(settings, &named, &plan, url)?;
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
    named: &[String],
    plan: &PinPlan,
    url: &str,
) -> Result<Vec<String>, Failure> {
    let mut affected = Vec::new();
    for name in named {
        let own = |keys: &[&str]| {
            keys.iter()
                .any(|k| settings::defined_by_profile(&settings.figment, name, k))
        };
        let before = settings::resolve_profile(settings, name)?;
        let transport_before = before.transport_name().to_owned();
        let transport_after = if plan.switches_from.is_some() && !own(&["transport"]) {
            clawlink_transport_ws::NAME.to_owned()
        } else {
            transport_before.clone()
        };
        let url_before = profile_url(&before);
        let url_after = if plan.set_url && !own(&URL_KEYS) {
            Some(url.to_owned())
        } else {
            url_before.clone()
        };
        let inherits_pin = !own(&PIN_KEYS);
        let changes = transport_after != transport_before
            || (transport_after == clawlink_transport_ws::NAME
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

/// Sets `[profile.transports.direct_ws] tls.spki_sha256` (and the URL and transport when the
/// plan says so), keeping the rest of the file (comments, order) as it was. `mode` is left
/// alone: the transport chooses where the profile connects.
fn write_pin(file: &std::path::Path, plan: &PinPlan, url: &str, spki: &str) -> std::io::Result<()> {
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
        table.insert("transport", toml_edit::value(clawlink_transport_ws::NAME));
    }
    let transports = table
        .entry("transports")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .ok_or_else(|| std::io::Error::other("transports is not a table"))?;
    transports.set_implicit(true);
    let direct = transports
        .entry("direct_ws")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .ok_or_else(|| std::io::Error::other("transports.direct_ws is not a table"))?;
    if plan.set_url {
        direct.insert("url", toml_edit::value(url));
    }
    let tls = direct
        .entry("tls")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .ok_or_else(|| std::io::Error::other("transports.direct_ws.tls is not a table"))?;
    tls.remove("fingerprint");
    tls.insert("spki_sha256", toml_edit::value(spki));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        write_pin(&file, &plan, "wss://gw.example:443/", &"ab".repeat(32)).unwrap();
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
        settings::load(&crate::cli::parse_from(argv).global)
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
            let err = plan_pin(&load(&[]).unwrap(), false, url).unwrap_err();
            assert_eq!(err.exit_code, 2);
            assert!(err.fix.unwrap().contains("--profile NAME"));

            // Explicitly [default]: allowed, because [work] keeps its SSH transport.
            let plan = plan_pin(&load(&["--profile", "default"]).unwrap(), true, url).unwrap();
            assert_eq!(plan.profile, "default");
            assert_eq!(plan.switches_from, None);
            let file = dir.join("clawlink.toml");
            write_pin(&file, &plan, url, &"ab".repeat(32)).unwrap();
            let work = load(&["--profile", "work"]).unwrap();
            assert_eq!(work.profile.transport_name(), "ssh-tunnel");
            assert_eq!(work.profile.mode, clawlink_core::config::Mode::Remote);
            let default = load(&[]).unwrap();
            assert_eq!(default.profile.mode, clawlink_core::config::Mode::Local);

            // Now [default] owns the URL: trusting it again needs no --profile.
            let plan = plan_pin(&default, false, url).unwrap();
            assert_eq!(plan.profile, "default");
            assert!(!plan.set_url);
            // …unless [work] holds the same URL too: then it asks which.
            let text = std::fs::read_to_string(&file).unwrap();
            jail.create_file(
                "clawlink.toml",
                &format!("{text}\n[work.transports.direct_ws]\nurl = \"{url}\"\n"),
            )?;
            let err = plan_pin(&load(&[]).unwrap(), false, url).unwrap_err();
            assert!(err.message.contains("default, work"), "{}", err.message);

            // A profile inheriting [default]'s transport would be switched: refused.
            jail.create_file(
                "clawlink.toml",
                "[default]\nmode = \"remote\"\n[default.transports.ssh_tunnel]\n\
                 target = \"claw@host\"\n[home]\n",
            )?;
            let err = plan_pin(&load(&["--profile", "default"]).unwrap(), true, url).unwrap_err();
            assert!(err.message.contains("home"), "{}", err.message);
            // The profile named explicitly is switched, and told so.
            let plan = plan_pin(&load(&["--profile", "home"]).unwrap(), true, url).unwrap();
            assert_eq!(plan.switches_from.as_deref(), Some("ssh-tunnel"));
            Ok(())
        });
    }
}
