//! The profile model: what one named clawlink profile holds, as plain serde types.
//!
//! Layering (defaults → files → environment → flags) happens in the app with figment; this
//! module only defines the shape and its rules. Unknown keys are refused
//! (`deny_unknown_fields`) so a typo is an error naming the key, not a silently ignored
//! setting. Transport and feature tables stay JSON: their owners validate them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the gateway runs, as the macOS app's "OpenClaw runs" setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// On this machine; connect to loopback, no SSH.
    #[default]
    Local,
    /// On another host, through the selected transport.
    Remote,
}

/// One profile (a top-level table of the config file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub mode: Mode,
    /// Name of a registered transport; when absent, chosen from the mode
    /// (see [`Profile::transport_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Settings of each transport, keyed by transport name (`-` may be written `_`, so that
    /// environment variables can reach them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transports: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub auth: AuthSettings,
    /// Feature plugins: `features.<name>.enabled` plus the feature's own settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, FeatureSettings>,
    #[serde(default)]
    pub client: ClientSettings,
    /// Shared libraries to load transports from, besides the plugin directory.
    #[serde(default, skip_serializing_if = "PluginSettings::is_empty")]
    pub plugins: PluginSettings,
}

/// The key of a plugin's table: its registered name with `-` written `_`.
pub fn table_key(name: &str) -> String {
    name.replace('-', "_")
}

/// The transport local mode uses.
pub const LOCAL_TRANSPORT: &str = "direct-ws";
/// The transport remote mode uses unless the profile names another.
pub const DEFAULT_REMOTE_TRANSPORT: &str = "ssh-tunnel";

impl Profile {
    /// The transport this profile selects.
    pub fn transport_name(&self) -> &str {
        match (&self.transport, self.mode) {
            (Some(name), _) => name,
            (None, Mode::Local) => LOCAL_TRANSPORT,
            (None, Mode::Remote) => DEFAULT_REMOTE_TRANSPORT,
        }
    }

    /// The settings table of transport `name` (`{}` when the profile has none).
    ///
    /// Tables are keyed with underscores (`transports.direct_ws`) because environment
    /// variables cannot contain `-`; a table written with the registered name
    /// (`transports.direct-ws`) is accepted too, and the underscored one wins key by key.
    pub fn transport_settings(&self, name: &str) -> serde_json::Value {
        let mut merged = serde_json::Map::new();
        for key in [name.to_owned(), table_key(name)] {
            if let Some(serde_json::Value::Object(table)) = self.transports.get(&key) {
                merged.extend(table.clone());
            }
        }
        serde_json::Value::Object(merged)
    }

    /// Whether feature `name` runs, given its descriptor's default.
    pub fn feature_enabled(&self, name: &str, enabled_by_default: bool) -> bool {
        self.feature_settings(name)
            .and_then(|f| f.enabled)
            .unwrap_or(enabled_by_default)
    }

    fn feature_settings(&self, name: &str) -> Option<&FeatureSettings> {
        self.features
            .get(&table_key(name))
            .or_else(|| self.features.get(name))
    }

    /// The settings a feature's factory receives (its table without `enabled`).
    pub fn feature_config(&self, name: &str) -> serde_json::Value {
        let settings = self
            .feature_settings(name)
            .map(|f| f.settings.clone())
            .unwrap_or_default();
        serde_json::Value::Object(settings)
    }
}

/// Where the gateway's shared secret comes from. There is deliberately no key for the secret
/// itself: secrets live in files (mode 0600) or the environment, never in a config file that
/// gets copied around, and never in argv.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// Plugins loaded at run time: `plugins.transports = ["~/lib/libfoo.so"]`. Every library in
/// the plugin directory is a candidate too; a library is loaded only when a profile names
/// a transport this build does not have, or when `clawlink transports` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transports: Vec<PathBuf>,
}

impl PluginSettings {
    fn is_empty(&self) -> bool {
        self.transports.is_empty()
    }
}

/// One feature's table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// How this client presents itself and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// Name shown in the gateway's presence and pairing lists (default: the host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// How long one RPC may take before it fails with a timeout.
    pub request_timeout_ms: u64,
    /// How long the transport connect plus WebSocket and protocol handshake may take.
    pub connect_timeout_ms: u64,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            display_name: None,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 15_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_defaults_follow_the_mode() {
        let local = Profile::default();
        assert_eq!(local.transport_name(), "direct-ws");
        let remote = Profile {
            mode: Mode::Remote,
            ..Profile::default()
        };
        assert_eq!(remote.transport_name(), "ssh-tunnel");
        let named = Profile {
            mode: Mode::Remote,
            transport: Some("quic".into()),
            ..Profile::default()
        };
        assert_eq!(named.transport_name(), "quic");
    }

    #[test]
    fn transport_tables_accept_underscored_names() {
        let profile: Profile = serde_json::from_value(serde_json::json!({
            "transports": {"direct_ws": {"url": "ws://127.0.0.1:1"}}
        }))
        .unwrap();
        assert_eq!(
            profile.transport_settings("direct-ws")["url"],
            "ws://127.0.0.1:1"
        );
        assert_eq!(
            profile.transport_settings("ssh-tunnel"),
            serde_json::json!({})
        );
        let both: Profile = serde_json::from_value(serde_json::json!({
            "transports": {
                "direct-ws": {"url": "ws://file:1", "connect_timeout_ms": 5},
                "direct_ws": {"url": "ws://env:2"}
            }
        }))
        .unwrap();
        assert_eq!(
            both.transport_settings("direct-ws"),
            serde_json::json!({"url": "ws://env:2", "connect_timeout_ms": 5})
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = serde_json::from_value::<Profile>(serde_json::json!({"modee": "local"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("modee"), "{err}");
        let err = serde_json::from_value::<Profile>(serde_json::json!({"auth": {"token": "x"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("token"), "{err}");
    }

    #[test]
    fn features_split_enabled_from_settings() {
        let profile: Profile = serde_json::from_value(serde_json::json!({
            "features": {"health": {"enabled": false, "interval_s": 60}}
        }))
        .unwrap();
        assert!(!profile.feature_enabled("health", true));
        assert!(profile.feature_enabled("notify", true));
        assert!(!profile.feature_enabled("notify", false));
        assert_eq!(
            profile.feature_config("health"),
            serde_json::json!({"interval_s": 60})
        );
    }
}
