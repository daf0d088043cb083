//! The registries: transports and feature plugins submit typed descriptors with `inventory`;
//! transports can also be added at run time ([`register_transport`], for plugins loaded from
//! shared libraries).
//!
//! Plugins register *descriptors* (name, summary, example config, command-line flags,
//! factory), never live objects: inventory registration runs before `main`, so everything in
//! a descriptor is const. Iteration is always sorted by name, and duplicate names are refused
//! (at run-time registration, and for both sources at start-up by [`validate`]), because two
//! plugins answering to one name would make a profile ambiguous.
//!
//! Pitfall (see ARCHITECTURE.md): inventory silently drops a crate that nothing references.
//! The app links every built-in plugin crate explicitly, and a test asserts the exact set of
//! names.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::config::Mode;
use crate::feature::{Feature, FeatureError};
use crate::transport::{Capability, Transport, TransportEnv, TransportError, TransportErrorKind};

/// Builds a transport from its settings (the profile's `transports.<name>` table as JSON).
///
/// A reference to a function for built-in transports (`factory: &MyTransport::from_settings`);
/// a leaked closure for those registered at run time, which must carry what they were loaded
/// from (a shared library's entry points).
pub type TransportFactory = &'static (dyn Fn(&serde_json::Value, &TransportEnv) -> Result<Arc<dyn Transport>, TransportError>
              + Send
              + Sync);

/// Builds a feature plugin from its settings (the profile's `features.<name>` table as JSON,
/// without the `enabled` key).
pub type FeatureFactory =
    fn(settings: &serde_json::Value) -> Result<Box<dyn Feature>, FeatureError>;

/// The keys of a settings struct, read from its `Deserialize` implementation (what serde
/// itself accepts), so that error hints and documentation tests cannot drift from the struct.
/// Empty for a type that is not a plain struct.
pub fn settings_keys<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    /// A deserializer that only records the field list serde asks a struct for.
    struct Capture<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Capture<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields captured"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// A transport, as it registers itself.
pub struct TransportDescriptor {
    /// Unique name used in profiles (`transport = "direct-ws"`).
    pub name: &'static str,
    /// One line for `clawlink transports`.
    pub summary: &'static str,
    /// A TOML snippet of the transport's settings table, shown by `clawlink transports`.
    pub example_config: &'static str,
    /// The command-line overrides of the transport's settings (`--ssh`, `--url`, …), in the
    /// order `--help` lists them. The app turns them into global flags and profile overrides.
    pub flags: &'static [TransportFlag],
    /// The optional capabilities its transports offer (what their `Transport` accessors
    /// return `Some` for), so that a refusal can name who offers what without building one.
    pub capabilities: &'static [Capability],
    /// The names of the layers its [`crate::transport::Diagnosis`] reports, in order (what
    /// `Diagnosis::layers` returns); empty when it does not offer that capability. The
    /// doctor's report shape is derived from these, so that it never names a transport's
    /// layers itself.
    pub layers: &'static [&'static str],
    /// The `clawlink <command> trust` subcommand this transport answers, through its
    /// [`crate::transport::HostIdentity`] capability; `None`: none.
    pub trust: Option<TrustCommand>,
    pub factory: TransportFactory,
}

impl std::fmt::Debug for TransportDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The factory is code; everything else is data worth printing.
        f.debug_struct("TransportDescriptor")
            .field("name", &self.name)
            .field("summary", &self.summary)
            .field("flags", &self.flags)
            .field("capabilities", &self.capabilities)
            .field("layers", &self.layers)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// How `clawlink <command> trust [ARGUMENT]` reaches a transport's host-identity capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustCommand {
    /// The command group: `ssh` for `clawlink ssh trust`.
    pub command: &'static str,
    /// The key of the transport's settings table the argument sets (`target`, `url`).
    pub argument_key: &'static str,
    /// When set, the argument must be given or configured; `None` leaves a missing one to
    /// the transport's own settings check.
    pub argument_required: Option<RequiredArgument>,
    /// The key of the settings table that pins the identity (`tls.spki_sha256`), when the
    /// transport remembers identities in the profile instead of a store of its own; the
    /// app then chooses the profile before anything goes over the network.
    pub profile_pin_key: Option<&'static str>,
}

/// What `clawlink <command> trust` says when its required argument is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequiredArgument {
    /// The error line: `no gateway URL given`.
    pub missing: &'static str,
    /// How to give it.
    pub fix: &'static str,
}

/// A command-line flag that overrides one key of a transport's settings table
/// (`transports.<name>.<key>`).
#[derive(Debug)]
pub struct TransportFlag {
    /// The long flag without its dashes: `remote-port` for `--remote-port`.
    pub flag: &'static str,
    /// The placeholder `--help` shows for the value (`N`, `FILE`, `user@host[:port]`).
    pub value_name: &'static str,
    /// The key of the transport's settings table the value is written to.
    pub key: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// How the value is parsed, stored and carried into a service file.
    pub value: FlagValue,
    /// Whether giving the flag selects this transport for the run (`transport = <name>`).
    /// Flags of different transports that select are mutually exclusive.
    pub selects: Option<Selection>,
}

/// What a selecting flag sets besides the transport's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// The profile's `mode`, when selecting the transport implies one (`--ssh`: remote);
    /// `None` leaves the profile's mode as it is.
    pub mode: Option<Mode>,
}

/// A transport flag's value as given on the command line, typed as its [`FlagValue`] asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagArgument {
    Text(String),
    Path(std::path::PathBuf),
    Port(u16),
}

/// A transport's flag given on the command line, with its parsed value: what the app's
/// settings layer and service files read, as plain data.
#[derive(Debug, Clone)]
pub struct GivenTransportFlag {
    pub transport: &'static TransportDescriptor,
    pub flag: &'static TransportFlag,
    pub value: FlagArgument,
}

/// The kind of a flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagValue {
    /// Free text, carried verbatim (also paths on the remote host, which this machine cannot
    /// resolve).
    Text,
    /// A gateway URL: text that must not carry user info into a service file.
    Url,
    /// A file on this machine: made absolute where the value outlives the command line.
    LocalPath,
    /// A TCP port number (0–65535).
    Port,
}

/// A feature plugin, as it registers itself.
#[derive(Debug)]
pub struct FeatureDescriptor {
    /// Unique name used in profiles (`features.<name>.enabled`).
    pub name: &'static str,
    /// One line for `clawlink features`.
    pub summary: &'static str,
    /// A TOML snippet of the feature's settings table.
    pub example_config: &'static str,
    /// Whether the feature runs when the profile does not mention it.
    pub enabled_by_default: bool,
    pub factory: FeatureFactory,
}

inventory::collect!(TransportDescriptor);
inventory::collect!(FeatureDescriptor);

/// Transports registered at run time; descriptors are leaked so that they live as long as
/// those from inventory (a loaded plugin is never unloaded).
static RUNTIME_TRANSPORTS: RwLock<Vec<&'static TransportDescriptor>> = RwLock::new(Vec::new());

/// A run-time registration refused because the name is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a transport named {name:?} is already registered; each plugin needs a unique name \
     (rename the plugin's descriptor, or leave one of the two out)"
)]
pub struct DuplicateName {
    pub name: String,
}

/// Where the run-time transports came from, by name (what `clawlink transports` shows).
static LOADED_FROM: RwLock<BTreeMap<&'static str, LoadedFrom>> = RwLock::new(BTreeMap::new());

/// The shared library a run-time transport was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFrom {
    /// The library file, as configured or found in the plugin directory.
    pub path: std::path::PathBuf,
    /// The plugin's own version string.
    pub version: String,
    /// The ABI version of its entry table.
    pub abi_version: u32,
}

/// Where a registered transport comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Linked into this binary (submitted through inventory).
    BuiltIn,
    /// Registered at run time from a shared library.
    Loaded(LoadedFrom),
    /// Registered at run time by the embedding program (tests).
    Registered,
}

/// Where transport `name` comes from; `None` when no transport has that name.
pub fn origin(name: &str) -> Option<Origin> {
    if inventory::iter::<TransportDescriptor>
        .into_iter()
        .any(|d| d.name == name)
    {
        return Some(Origin::BuiltIn);
    }
    transport(name)?;
    let loaded = LOADED_FROM
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Some(
        loaded
            .get(name)
            .cloned()
            .map_or(Origin::Registered, Origin::Loaded),
    )
}

/// [`register_transport`] for a transport loaded from a shared library, remembering where
/// it came from.
pub fn register_loaded_transport(
    descriptor: TransportDescriptor,
    from: LoadedFrom,
) -> Result<&'static TransportDescriptor, DuplicateName> {
    let registered = register_transport(descriptor)?;
    LOADED_FROM
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(registered.name, from);
    Ok(registered)
}

/// A loader of transport plugins from shared libraries, linked into this build when the
/// loader crate is (cargo feature `plugin-loader`). The app finds it here, so that it never
/// names the crate outside `plugins.rs`, and a build without it says so when a profile
/// needs a plugin.
pub struct PluginLoaderDescriptor {
    /// The ABI versions this loader understands.
    pub abi_versions: &'static [u32],
    /// Loads each library in `paths` not loaded before in this process (never twice, never
    /// unloaded) and registers its transport; one outcome per path, in order.
    pub load: fn(paths: &[std::path::PathBuf]) -> Vec<PluginOutcome>,
}

impl std::fmt::Debug for PluginLoaderDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLoaderDescriptor")
            .field("abi_versions", &self.abi_versions)
            .finish_non_exhaustive()
    }
}

/// What loading one library gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginOutcome {
    pub path: std::path::PathBuf,
    /// The name of the transport it registered, or why it was refused (one line naming
    /// the cause and the fix).
    pub result: Result<&'static str, String>,
}

inventory::collect!(PluginLoaderDescriptor);

/// The plugin loader of this build, if it has one.
pub fn plugin_loader() -> Option<&'static PluginLoaderDescriptor> {
    inventory::iter::<PluginLoaderDescriptor>.into_iter().next()
}

/// Adds a transport at run time (a plugin loaded from a shared library). It then appears in
/// [`transports`], [`transport`] and [`validate`] like one submitted through inventory.
pub fn register_transport(
    descriptor: TransportDescriptor,
) -> Result<&'static TransportDescriptor, DuplicateName> {
    let mut runtime = RUNTIME_TRANSPORTS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let taken = inventory::iter::<TransportDescriptor>
        .into_iter()
        .chain(runtime.iter().copied())
        .any(|d| d.name == descriptor.name);
    if taken {
        return Err(DuplicateName {
            name: descriptor.name.to_owned(),
        });
    }
    let leaked: &'static TransportDescriptor = Box::leak(Box::new(descriptor));
    runtime.push(leaked);
    Ok(leaked)
}

/// Every registered transport (inventory and run time), sorted by name.
pub fn transports() -> Vec<&'static TransportDescriptor> {
    let runtime = RUNTIME_TRANSPORTS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut all: Vec<_> = inventory::iter::<TransportDescriptor>
        .into_iter()
        .chain(runtime.iter().copied())
        .collect();
    all.sort_by_key(|d| d.name);
    all
}

/// Every registered feature plugin, sorted by name.
pub fn features() -> Vec<&'static FeatureDescriptor> {
    let mut all: Vec<_> = inventory::iter::<FeatureDescriptor>.into_iter().collect();
    all.sort_by_key(|d| d.name);
    all
}

/// The transport registered under `name`.
pub fn transport(name: &str) -> Option<&'static TransportDescriptor> {
    transports().into_iter().find(|d| d.name == name)
}

/// The feature registered under `name`.
pub fn feature(name: &str) -> Option<&'static FeatureDescriptor> {
    inventory::iter::<FeatureDescriptor>
        .into_iter()
        .find(|d| d.name == name)
}

/// The registered transports that declare `capability`, sorted by name.
pub fn transports_offering(capability: Capability) -> Vec<&'static str> {
    transports()
        .into_iter()
        .filter(|d| d.capabilities.contains(&capability))
        .map(|d| d.name)
        .collect()
}

/// The one-line refusal of a command (`what`, e.g. "`clawlink remote`") that needs
/// `capability` from a transport (`transport`, its name) that does not offer it: names the
/// capability and the transports of this build that have it.
pub fn refuse_missing(what: &str, transport: &str, capability: Capability) -> TransportError {
    missing_capability(
        what,
        transport,
        capability,
        &transports_offering(capability),
    )
}

fn missing_capability(
    what: &str,
    transport: &str,
    capability: Capability,
    offering: &[&str],
) -> TransportError {
    let (who, fix) = match offering {
        [] => (
            "no transport of this build offers it".to_owned(),
            "rebuild clawlink with a transport that offers it (`cargo xtask build`)".to_owned(),
        ),
        names => {
            let quoted: Vec<String> = names
                .iter()
                .map(|n| format!("transport = \"{n}\""))
                .collect();
            (
                format!("offered by: {}", names.join(", ")),
                format!("select a profile with {}", quoted.join(" or ")),
            )
        }
    };
    TransportError::new(
        TransportErrorKind::Unsupported,
        format!(
            "{what} needs {}, which the {transport} transport does not offer ({who})",
            capability.name()
        ),
    )
    .with_fix(fix)
}

/// A registry that cannot be used as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "{kind} name {name:?} is registered {count} times; each plugin needs a unique name \
         (remove one of the crates from the build, or rename its descriptor)"
    )]
    Duplicate {
        kind: &'static str,
        name: String,
        count: usize,
    },
    #[error(
        "transport {name:?} declares doctor layers without the Diagnosis capability, or the \
         capability without layers; its descriptor's `layers` must list what \
         `Diagnosis::layers` returns"
    )]
    Layers { name: String },
    #[error("transport {name:?} declares malformed doctor layers: {why}")]
    LayerNames { name: String, why: String },
}

/// Checks both registries (transports from inventory and from run time); called once at
/// start-up. Besides names, the transports' command-line flags must be unique: one flag
/// cannot set two transports' settings.
pub fn validate() -> Result<(), RegistryError> {
    let transports = transports();
    find_duplicates("transport", transports.iter().map(|d| d.name))?;
    find_duplicates(
        "transport flag",
        transports
            .iter()
            .flat_map(|d| d.flags.iter().map(|f| f.flag)),
    )?;
    for descriptor in &transports {
        let diagnoses = descriptor.capabilities.contains(&Capability::Diagnosis);
        if diagnoses == descriptor.layers.is_empty() {
            return Err(RegistryError::Layers {
                name: descriptor.name.to_owned(),
            });
        }
        crate::transport::diagnosis::check_layer_names(descriptor.layers).map_err(|why| {
            RegistryError::LayerNames {
                name: descriptor.name.to_owned(),
                why,
            }
        })?;
    }
    find_duplicates("feature", features().iter().map(|d| d.name))
}

fn find_duplicates<'a>(
    kind: &'static str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), RegistryError> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_default() += 1;
    }
    match counts.into_iter().find(|(_, count)| *count > 1) {
        Some((name, count)) => Err(RegistryError::Duplicate {
            kind,
            name: name.to_owned(),
            count,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_keys_are_the_struct_fields_serde_accepts() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Example {
            url: String,
            #[serde(default, rename = "timeout_ms")]
            timeout: u64,
        }
        assert_eq!(settings_keys::<Example>(), ["url", "timeout_ms"]);
        assert!(settings_keys::<u32>().is_empty());
    }

    #[test]
    fn duplicates_are_named_with_their_count() {
        let err = find_duplicates("transport", ["a", "b", "a", "c", "a"]).unwrap_err();
        assert_eq!(
            err,
            RegistryError::Duplicate {
                kind: "transport",
                name: "a".into(),
                count: 3
            }
        );
        assert!(err.to_string().contains("registered 3 times"));
    }

    fn probe_factory(
        _settings: &serde_json::Value,
        _env: &TransportEnv,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Err(TransportError::config("a registry test's descriptor"))
    }

    fn runtime_descriptor(name: &'static str) -> TransportDescriptor {
        TransportDescriptor {
            name,
            summary: "registered by a test",
            example_config: "",
            flags: &[TransportFlag {
                flag: "registry-test-flag",
                value_name: "X",
                key: "x",
                help: "a test flag",
                value: FlagValue::Text,
                selects: None,
            }],
            capabilities: &[],
            layers: &[],
            trust: None,
            factory: &probe_factory,
        }
    }

    #[test]
    fn transports_registered_at_run_time_are_listed_found_and_unique() {
        let registered = register_transport(runtime_descriptor("registry-test-runtime"))
            .expect("a fresh name registers");
        assert_eq!(registered.name, "registry-test-runtime");
        assert!(transports()
            .iter()
            .any(|d| d.name == "registry-test-runtime"));
        assert_eq!(
            transport("registry-test-runtime").map(|d| d.summary),
            Some("registered by a test")
        );
        let names: Vec<_> = transports().iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);

        let again = register_transport(runtime_descriptor("registry-test-runtime")).unwrap_err();
        assert_eq!(again.name, "registry-test-runtime");
        assert!(again.to_string().contains("already registered"));
        assert_eq!(validate(), Ok(()));
    }

    #[test]
    fn a_loaded_transport_remembers_its_library() {
        let from = LoadedFrom {
            path: "/plugins/libprobe.so".into(),
            version: "1.2.3".into(),
            abi_version: 1,
        };
        // Without flags: the other test validates the whole registry, flags included.
        let flagless = |name| TransportDescriptor {
            flags: &[],
            ..runtime_descriptor(name)
        };
        register_loaded_transport(flagless("registry-test-loaded"), from.clone()).unwrap();
        assert_eq!(origin("registry-test-loaded"), Some(Origin::Loaded(from)));
        register_transport(flagless("registry-test-plain")).unwrap();
        assert_eq!(origin("registry-test-plain"), Some(Origin::Registered));
        assert_eq!(origin("registry-test-nobody"), None);
    }

    #[test]
    fn a_missing_capability_is_refused_naming_who_offers_it() {
        let refusal = missing_capability(
            "`clawlink remote`",
            "direct-ws",
            Capability::HostCommands,
            &["quic", "ssh-tunnel"],
        );
        assert_eq!(refusal.kind, TransportErrorKind::Unsupported);
        assert_eq!(
            refusal.message,
            "`clawlink remote` needs commands on the gateway host, which the direct-ws transport does not offer (offered by: quic, ssh-tunnel)"
        );
        assert_eq!(
            refusal.fix.as_deref(),
            Some("select a profile with transport = \"quic\" or transport = \"ssh-tunnel\"")
        );
        let nobody = missing_capability("x", "direct-ws", Capability::HostCommands, &[]);
        assert!(nobody
            .message
            .contains("no transport of this build offers it"));
    }

    #[test]
    fn unique_names_pass() {
        assert_eq!(find_duplicates("feature", ["x", "y"]), Ok(()));
    }
}
