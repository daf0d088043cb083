//! Links every built-in plugin crate this build was compiled with, so that their inventory registrations exist.
//!
//! inventory drops a crate that nothing references (its `submit!` never runs), so each
//! enabled plugin gets one `use … as _;` here, behind its cargo feature. `cargo xtask`
//! builds variants by choosing features; a test asserts the exact set of registered names.

#[cfg(feature = "feature-health")]
use clawlink_feature_health as _;
#[cfg(feature = "feature-notify")]
use clawlink_feature_notify as _;
#[cfg(feature = "feature-voicewake")]
use clawlink_feature_voicewake as _;
#[cfg(feature = "feature-webchat")]
use clawlink_feature_webchat as _;
#[cfg(feature = "plugin-loader")]
use clawlink_transport_dylib as _;
#[cfg(feature = "transport-exec")]
use clawlink_transport_exec as _;
#[cfg(feature = "transport-ssh")]
use clawlink_transport_ssh as _;
#[cfg(feature = "transport-ws")]
use clawlink_transport_ws as _;

/// The transport names this build must register (checked by tests and at start-up), in the
/// registry's order (sorted by name).
pub const EXPECTED_TRANSPORTS: &[&str] = &[
    #[cfg(feature = "transport-ws")]
    clawlink_transport_ws::NAME,
    #[cfg(feature = "transport-exec")]
    clawlink_transport_exec::NAME,
    #[cfg(feature = "transport-ssh")]
    clawlink_transport_ssh::NAME,
];

/// The feature-plugin names this build must register.
pub const EXPECTED_FEATURES: &[&str] = &[
    #[cfg(feature = "feature-health")]
    clawlink_feature_health::NAME,
    #[cfg(feature = "feature-notify")]
    clawlink_feature_notify::NAME,
    #[cfg(feature = "feature-voicewake")]
    clawlink_feature_voicewake::NAME,
    #[cfg(feature = "feature-webchat")]
    clawlink_feature_webchat::NAME,
];

/// Whether this build links the loader of transport plugins from shared libraries.
pub const PLUGIN_LOADER: bool = cfg!(feature = "plugin-loader");

/// Fails when a plugin this build links did not register (the inventory pitfall above) or
/// when something unexpected registered.
pub fn check_linked() -> Result<(), String> {
    let transports: Vec<&str> = clawlink_core::registry::transports()
        .iter()
        .map(|d| d.name)
        .collect();
    let features: Vec<&str> = clawlink_core::registry::features()
        .iter()
        .map(|d| d.name)
        .collect();
    // Transports loaded at run time are not linked: only the built-in ones are compared.
    let transports: Vec<&str> = transports
        .into_iter()
        .filter(|name| {
            clawlink_core::registry::origin(name) == Some(clawlink_core::registry::Origin::BuiltIn)
        })
        .collect();
    if clawlink_core::registry::plugin_loader().is_some() != PLUGIN_LOADER {
        return Err(format!(
            "plugin registry mismatch: the plugin loader is {} but this build was compiled {} it; rebuild with `cargo xtask build`",
            if PLUGIN_LOADER { "missing" } else { "present" },
            if PLUGIN_LOADER { "with" } else { "without" },
        ));
    }
    if transports != EXPECTED_TRANSPORTS || features != EXPECTED_FEATURES {
        return Err(format!(
            "plugin registry mismatch: transports {transports:?} (expected {EXPECTED_TRANSPORTS:?}), \
             features {features:?} (expected {EXPECTED_FEATURES:?}); this build is broken — rebuild with `cargo xtask build`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registries_hold_exactly_the_linked_plugins() {
        check_linked().unwrap();
        clawlink_core::registry::validate().unwrap();
    }
}
