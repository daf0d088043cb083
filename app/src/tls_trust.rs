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
    let probe = DirectWs::new(url.clone(), Duration::from_secs(10)).map_err(Failure::from)?;
    let seen = probe.probe_certificate().await.map_err(Failure::from)?;
    let Some(spki) = seen.spki else {
        return Err(Failure::config(
            "the certificate's public key could not be extracted; pin the leaf instead (tls.fingerprint)",
            Some(format!("tls.fingerprint = \"sha256:{}\"", hex(&seen.leaf))),
        )
        .into());
    };
    let file = target_file(settings)?;
    if global.json {
        println!(
            "{}",
            json!({"url": url.to_url(), "leafSha256": hex(&seen.leaf), "spkiSha256": hex(&spki), "file": file})
        );
    } else {
        println!("{} presents a certificate with", url.to_url());
        println!("  leaf sha256 {}", colon_hex(&seen.leaf));
        println!("  spki sha256 {}", colon_hex(&spki));
        println!(
            "(on the gateway host: `openssl x509 -in ~/.openclaw/gateway/tls/gateway-cert.pem -noout -fingerprint -sha256` shows the leaf one)"
        );
    }
    let question = format!(
        "Pin this public key for profile {} in {}?",
        settings.profile_name,
        file.display()
    );
    prompt::consent(yes, "pinning the certificate's key", question).await?;
    write_pin(&file, &settings.profile_name, &url.to_url(), &hex(&spki))
        .map_err(|e| Failure::config(format!("cannot update {}: {e}", file.display()), None))?;
    if !global.json {
        println!(
            "pinned: [{}.transports.direct_ws] url = {:?}, tls.spki_sha256 written to {}",
            settings.profile_name,
            url.to_url(),
            file.display()
        );
    }
    Ok(())
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

/// Sets `[profile.transports.direct_ws] url` and `tls.spki_sha256`, keeping the rest of the
/// file (comments, order) as it was.
fn write_pin(file: &std::path::Path, profile: &str, url: &str, spki: &str) -> std::io::Result<()> {
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
    table.insert("mode", toml_edit::value("remote"));
    table.insert("transport", toml_edit::value(clawlink_transport_ws::NAME));
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
    direct.insert("url", toml_edit::value(url));
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
        write_pin(&file, "work", "wss://gw.example:443/", &"ab".repeat(32)).unwrap();
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
