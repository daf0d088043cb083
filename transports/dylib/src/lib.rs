//! Loads transport plugins from shared libraries (the C ABI of `include/clawlink_transport.h`) and registers them like built-in transports.
//!
//! Linked into the app behind the `plugin-loader` cargo feature; the app reaches it only
//! through [`clawlink_core::registry::plugin_loader`]. Each library is checked before it is
//! mapped (owner and mode of the file and its directories, OpenSSH's rule), loaded at most
//! once per process and never unloaded, and refused with one line naming the file, the
//! cause and the fix when it is not a plugin this loader can use. See
//! `docs/transport-plugins.md` for the contract plugin authors rely on.

mod abi;
mod stream;
mod transport;
mod trust;

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clawlink_core::registry::{
    self, LoadedFrom, PluginLoaderDescriptor, PluginOutcome, TransportDescriptor,
};
use clawlink_core::transport::{Capability, TransportEnv};
use serde_json::Value;

pub use abi::ABI_VERSION;
pub use transport::DEFAULT_CONNECT_TIMEOUT;

inventory::submit! {
    PluginLoaderDescriptor {
        abi_versions: &[abi::ABI_VERSION],
        load: load_all,
    }
}

/// Every library this process tried, by canonical path, with what it gave: a file is mapped
/// once, and asking again returns the first answer.
static LOADED: Mutex<BTreeMap<PathBuf, Result<&'static str, String>>> = Mutex::new(BTreeMap::new());

/// Loads each of `paths` (see [`PluginLoaderDescriptor::load`]).
pub fn load_all(paths: &[PathBuf]) -> Vec<PluginOutcome> {
    paths
        .iter()
        .map(|path| PluginOutcome {
            path: path.clone(),
            result: load_one(path),
        })
        .collect()
}

fn load_one(path: &Path) -> Result<&'static str, String> {
    let (file, canonical) = trust::open_trusted(path).map_err(|trust::Refusal(why)| why)?;
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(done) = loaded.get(&canonical) {
        return done.clone();
    }
    let result = load_file(&file, &canonical);
    match &result {
        Ok(name) => {
            tracing::info!(plugin = %canonical.display(), transport = name, "transport plugin loaded")
        }
        Err(why) => tracing::warn!(plugin = %canonical.display(), "{why}"),
    }
    loaded.insert(canonical, result.clone());
    result
}

/// Maps the checked file and registers its transport.
fn load_file(file: &std::fs::File, path: &Path) -> Result<&'static str, String> {
    use std::os::fd::AsRawFd;
    let shown = path.display();
    // On Linux, map the very file that was checked (no window to swap it); elsewhere the
    // directory checks are what keep it from being swapped.
    let map_path = if cfg!(target_os = "linux") {
        PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
    } else {
        path.to_owned()
    };
    // SAFETY: loading runs the library's initialisers, which is what loading a plugin the
    // user configured means; the file passed the ownership rule above.
    let library = unsafe { libloading::Library::new(&map_path) }.map_err(|e| {
        format!(
            "{shown} is not a shared library clawlink can load ({}); a transport plugin is a \
             .so/.dylib built for this machine (see docs/transport-plugins.md)",
            describe_load_error(&e.to_string())
        )
    })?;
    // Never unloaded: thread-local destructors and threads a plugin started would outlive
    // an unmapped image.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol's type is the ABI's entry function type.
    let entry = unsafe { library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL) }.map_err(|_| {
        format!(
            "{shown} is a shared library but not a clawlink transport plugin: it does not export \
             `clawlink_transport_plugin_v1` (see include/clawlink_transport.h)"
        )
    })?;
    // SAFETY: calling the entry function the ABI defines; it takes no arguments.
    let table = unsafe { entry() };
    if table.is_null() {
        return Err(format!(
            "{shown}: clawlink_transport_plugin_v1 returned NULL instead of its table"
        ));
    }
    // SAFETY: the table is static for the life of the process (ABI); only fields the
    // declared size covers are read, the first two before the size is known.
    let plugin = unsafe { read_table(table, path)? };
    if registry::transport(plugin.name).is_some() {
        let holder = match registry::origin(plugin.name) {
            Some(registry::Origin::Loaded(from)) => format!("the plugin {}", from.path.display()),
            _ => "a transport built into clawlink".to_owned(),
        };
        return Err(format!(
            "{shown} registers transport {:?}, a name already taken by {holder}; each transport \
             needs a unique name (leave one of the two out)",
            plugin.name
        ));
    }
    let plugin: &'static transport::Plugin = Box::leak(Box::new(plugin));
    let factory = Box::leak(Box::new(move |settings: &Value, _env: &TransportEnv| {
        transport::PluginTransport::from_settings(plugin, settings).map(|t| {
            std::sync::Arc::new(t) as std::sync::Arc<dyn clawlink_core::transport::Transport>
        })
    }));
    let descriptor = TransportDescriptor {
        name: plugin.name,
        summary: plugin.summary,
        example_config: plugin.example_config,
        flags: &[],
        capabilities: if plugin.ports.is_some() {
            &[Capability::GatewayPorts]
        } else {
            &[]
        },
        layers: &[],
        trust: None,
        factory,
    };
    let from = LoadedFrom {
        path: path.to_owned(),
        version: plugin.version.to_owned(),
        abi_version: abi::ABI_VERSION,
    };
    registry::register_loaded_transport(descriptor, from).map_err(|e| format!("{shown}: {e}"))?;
    Ok(plugin.name)
}

/// Reads and checks a version-1 table.
///
/// # Safety
/// `table` must point to memory readable for at least its first 8 bytes and, if it declares
/// a larger `struct_size`, for that many bytes.
unsafe fn read_table(table: *const abi::TableV1, path: &Path) -> Result<transport::Plugin, String> {
    let shown = path.display();
    let abi_version = std::ptr::addr_of!((*table).abi_version).read();
    let struct_size = std::ptr::addr_of!((*table).struct_size).read();
    if abi_version != abi::ABI_VERSION {
        return Err(format!(
            "{shown} speaks plugin ABI version {abi_version}; this clawlink understands version {} \
             (rebuild the plugin against this clawlink's include/clawlink_transport.h, or use a \
             clawlink that knows that version)",
            abi::ABI_VERSION
        ));
    }
    if (struct_size as usize) < abi::REQUIRED_SIZE {
        return Err(format!(
            "{shown} declares a table of {struct_size} bytes, smaller than the {} bytes every \
             version-1 table has: it was not built against include/clawlink_transport.h",
            abi::REQUIRED_SIZE
        ));
    }
    let text =
        |pointer: *const c_char, field: &str, required: bool| -> Result<&'static str, String> {
            if pointer.is_null() {
                return if required {
                    Err(format!("{shown}: its table's `{field}` is NULL"))
                } else {
                    Ok("")
                };
            }
            // SAFETY: the ABI makes every string static and NUL-terminated.
            let c = unsafe { CStr::from_ptr(pointer) };
            c.to_str()
                .map_err(|_| format!("{shown}: its table's `{field}` is not UTF-8"))
        };
    let name_pointer = std::ptr::addr_of!((*table).name).read();
    let name = text(name_pointer, "name", true)?;
    // SAFETY: `text` checked the pointer is a NUL-terminated string.
    check_name(unsafe { CStr::from_ptr(name_pointer) })
        .map_err(|why| format!("{shown}: transport name {name:?} {why}"))?;
    let version = text(std::ptr::addr_of!((*table).version).read(), "version", true)?;
    let summary = text(std::ptr::addr_of!((*table).summary).read(), "summary", true)?;
    let example = text(
        std::ptr::addr_of!((*table).example_config).read(),
        "example_config",
        false,
    )?;
    let Some(connect) = std::ptr::addr_of!((*table).connect).read() else {
        return Err(format!("{shown}: its table's `connect` is NULL"));
    };
    let optional = |offset: usize| abi::covers(struct_size, offset);
    let check_settings = if optional(std::mem::offset_of!(abi::TableV1, check_settings)) {
        std::ptr::addr_of!((*table).check_settings).read()
    } else {
        None
    };
    let describe = if optional(std::mem::offset_of!(abi::TableV1, describe)) {
        std::ptr::addr_of!((*table).describe).read()
    } else {
        None
    };
    let gateway_port = if optional(std::mem::offset_of!(abi::TableV1, gateway_port)) {
        std::ptr::addr_of!((*table).gateway_port).read()
    } else {
        None
    };
    let connect_port = if optional(std::mem::offset_of!(abi::TableV1, connect_port)) {
        std::ptr::addr_of!((*table).connect_port).read()
    } else {
        None
    };
    // The header asks for both or neither; half a pair cannot serve a forward.
    let ports = match (gateway_port, connect_port) {
        (Some(gateway_port), Some(connect_port)) => Some(transport::PortFns {
            gateway_port,
            connect_port,
        }),
        (None, None) => None,
        _ => {
            return Err(format!(
                "{shown}: its table has only one of `gateway_port` and `connect_port`; a plugin \
                 offers both (local forwards through it) or neither"
            ))
        }
    };
    Ok(transport::Plugin {
        name,
        version,
        summary,
        example_config: example,
        path: path.to_owned(),
        connect,
        check_settings,
        describe,
        ports,
    })
}

/// The header's rule for names (the SDK's, so hosts and plugins agree): 1–32 bytes of
/// `[a-z0-9-]`, starting with a letter.
fn check_name(name: &CStr) -> Result<(), &'static str> {
    if clawlink_plugin_sdk::valid_name(name) {
        Ok(())
    } else {
        Err("is not 1 to 32 characters of a-z, 0-9 and -, starting with a lowercase letter")
    }
}

/// dlopen's message without the `/proc/self/fd/N` path we mapped through.
fn describe_load_error(message: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if head.contains("/proc/self/fd/") => rest.to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_header_rule() {
        assert_eq!(check_name(c"socks5"), Ok(()));
        assert_eq!(check_name(c"tailscale-nc2"), Ok(()));
        for bad in [c"", c"5socks", c"Socks", c"so_cks"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dlopen_errors_lose_the_proc_path() {
        assert_eq!(
            describe_load_error("/proc/self/fd/7: invalid ELF header"),
            "invalid ELF header"
        );
    }
}
