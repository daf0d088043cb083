//! Which shared libraries may hold transports (the config's `plugins.transports` and the plugin directory), and loading them when a profile or a listing needs one.
//!
//! The loading itself is the plugin loader's (`registry::plugin_loader`, linked with the
//! `plugin-loader` cargo feature); this module only decides *which* files and *when*: a
//! library is mapped only when the profile names a transport this build does not have, or
//! when `clawlink transports` lists everything, never on every start.

use std::path::{Path, PathBuf};

use clawlink_core::config::{table_key, Profile};
use clawlink_core::registry::{self, PluginOutcome};

use crate::failure::Failure;

/// The environment variable that replaces the plugin directory.
pub const PLUGIN_DIR_ENV: &str = "CLAWLINK_PLUGIN_DIR";

/// The directory whose libraries are candidates: `$CLAWLINK_PLUGIN_DIR`, else
/// `$XDG_DATA_HOME/clawlink/plugins` (`~/Library/Application Support/clawlink/plugins` on
/// macOS).
pub fn plugin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(PLUGIN_DIR_ENV) {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "clawlink").map(|d| d.data_dir().join("plugins"))
}

/// The candidate libraries: the configured ones first (in order, `~` expanded), then the
/// plugin directory's `.so`/`.dylib` files sorted by name. A missing directory is no
/// candidates; a configured file that is missing is still a candidate, so that its
/// refusal names it.
pub fn candidates(configured: &[PathBuf]) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = configured
        .iter()
        .map(|p| crate::settings::expand_home(p))
        .collect();
    if let Some(dir) = plugin_dir() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| is_library_name(p))
                .collect();
            found.sort();
            for path in found {
                if !all.contains(&path) {
                    all.push(path);
                }
            }
        }
    }
    all
}

fn is_library_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("so" | "dylib")
    )
}

/// Loads every candidate (for `clawlink transports`): what each gave. Empty when this build
/// has no loader.
pub fn load_everything(configured: &[PathBuf]) -> Vec<PluginOutcome> {
    match registry::plugin_loader() {
        Some(loader) => (loader.load)(&candidates(configured)),
        None => Vec::new(),
    }
}

/// Makes sure every transport `profile` names is registered, loading the candidate
/// libraries when one is not. The refusal names the missing transport, what each
/// candidate gave, and the fix.
pub fn ensure_profile_transports(profile: &Profile, profile_name: &str) -> Result<(), Failure> {
    let missing: Vec<String> = named_transports(profile)
        .into_iter()
        .filter(|name| !is_registered(name))
        .collect();
    if missing.is_empty() && profile.plugins.transports.is_empty() {
        return Ok(());
    }
    let Some(loader) = registry::plugin_loader() else {
        if !profile.plugins.transports.is_empty() {
            return Err(Failure::config(
                "the config lists transport plugins (plugins.transports), but this clawlink was \
                 built without the plugin loader",
                Some("build clawlink with the `plugin-loader` feature (`cargo xtask build --variant default`), or remove plugins.transports".into()),
            ));
        }
        // Unknown transport names are the settings check's to report, with suggestions.
        return Ok(());
    };
    if missing.is_empty() {
        return Ok(());
    }
    let candidates = candidates(&profile.plugins.transports);
    let outcomes = (loader.load)(&candidates);
    let still: Vec<&String> = missing.iter().filter(|n| !is_registered(n)).collect();
    let Some(first) = still.first() else {
        return Ok(());
    };
    // A near miss of a transport this build has is a typo, not a missing plugin: the
    // settings check reports it with the name it probably meant.
    let known: Vec<String> = registry::transports()
        .iter()
        .flat_map(|d| [d.name.to_owned(), table_key(d.name)])
        .collect();
    if crate::settings::closest(first, known.iter().map(String::as_str)).is_some() {
        return Ok(());
    }
    let refusals: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().cloned())
        .collect();
    let loaded: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok().copied())
        .collect();
    let looked = if candidates.is_empty() {
        format!(
            "no plugin library was found (plugins.transports is empty and {} holds none)",
            plugin_dir().map_or_else(
                || "the plugin directory".to_owned(),
                |d| d.display().to_string()
            )
        )
    } else if loaded.is_empty() {
        format!("{} plugin libraries tried, none loaded", candidates.len())
    } else {
        format!("plugins loaded: {}", loaded.join(", "))
    };
    let mut message = format!(
        "profile {profile_name:?} names transport {first:?}, which is neither built in nor in a \
         plugin ({looked})"
    );
    for refusal in &refusals {
        message.push_str("\n  refused: ");
        message.push_str(refusal);
    }
    Err(Failure::config(
        message,
        Some(format!(
            "put the plugin's library in {} or list it in plugins.transports; `clawlink \
             transports` shows what is available",
            plugin_dir().map_or_else(
                || "the plugin directory".to_owned(),
                |d| d.display().to_string()
            )
        )),
    ))
}

/// The transports a profile names: the selected one and every settings table.
fn named_transports(profile: &Profile) -> Vec<String> {
    let mut names = vec![profile.transport_name().to_owned()];
    names.extend(profile.transports.keys().cloned());
    names.dedup();
    names
}

/// Whether `name` (or its table key) is a registered transport.
fn is_registered(name: &str) -> bool {
    registry::transports()
        .iter()
        .any(|d| d.name == name || table_key(d.name) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_configured_first_then_the_directory_sorted_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["libb.so", "liba.dylib", "notes.txt", "libc.so.bak"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let configured = vec![
            PathBuf::from("/elsewhere/libz.so"),
            dir.path().join("libb.so"),
        ];
        // No other test of this binary reads CLAWLINK_PLUGIN_DIR.
        std::env::set_var(PLUGIN_DIR_ENV, dir.path());
        let found = candidates(&configured);
        std::env::remove_var(PLUGIN_DIR_ENV);
        assert_eq!(
            found,
            vec![
                PathBuf::from("/elsewhere/libz.so"),
                dir.path().join("libb.so"),
                dir.path().join("liba.dylib"),
            ]
        );
    }
}
