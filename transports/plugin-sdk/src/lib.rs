//! The Rust SDK for clawlink transport plugins: implement [`TransportPlugin`], call [`export_transport!`], build a `cdylib`.
//!
//! clawlink loads transport plugins at run time through the plain C ABI of
//! `include/clawlink_transport.h`. This crate is that ABI for Rust authors: [`TransportV1`]
//! is the table, [`export_transport!`] exports it under `clawlink_transport_plugin_v1`, and
//! the table's functions are trampolines that
//! - parse the settings JSON (not JSON, or not an object: `CLAWLINK_ERR_CONFIG`),
//! - run the plugin inside `catch_unwind` (a panic: `CLAWLINK_ERR_CONNECT`, "plugin panicked: …"),
//! - write messages into the host's buffer cut at a UTF-8 character boundary, never past
//!   its capacity, and tolerate NULL pointers,
//! - hand the connected fd over with `into_raw_fd` (the host owns it from then on).
//!
//! ```
//! use std::ffi::CStr;
//! use std::net::TcpStream;
//! use std::os::fd::OwnedFd;
//! use clawlink_plugin_sdk::{export_transport, plugin_version, PluginError, TransportPlugin};
//!
//! struct Loopback;
//!
//! impl TransportPlugin for Loopback {
//!     const NAME: &'static CStr = c"loopback";
//!     const VERSION: &'static CStr = plugin_version!();
//!     const SUMMARY: &'static CStr = c"the gateway on this machine, port 18789";
//!     const EXAMPLE_CONFIG: &'static CStr = c"";
//!
//!     fn connect(_settings: &clawlink_plugin_sdk::serde_json::Value) -> Result<OwnedFd, PluginError> {
//!         TcpStream::connect("127.0.0.1:18789")
//!             .map(OwnedFd::from)
//!             .map_err(|e| PluginError::connect(format!("127.0.0.1:18789: {e}: is the gateway running?")))
//!     }
//! }
//!
//! export_transport!(Loopback);
//! ```
//!
//! Plugins must not use tokio (a cdylib would carry a runtime of its own that clawlink's
//! never drives): use std threads and blocking sockets, and [`socketpair_pump`] for a
//! connection that is not a socket. Build plugins with `panic = "unwind"` (cargo's default):
//! with `panic = "abort"` no panic can be caught and one would end clawlink.

#![warn(missing_docs)]

mod abi;
mod error;
mod pump;
mod trampoline;

use std::ffi::CStr;
use std::os::fd::OwnedFd;

pub use abi::{
    cstr, valid_name, CheckSettingsFn, ConnectFn, ConnectPortFn, DescribeFn, EntryFn,
    GatewayPortFn, TransportV1, CLAWLINK_ERR_AUTH, CLAWLINK_ERR_CONFIG, CLAWLINK_ERR_CONNECT,
    CLAWLINK_OK, CLAWLINK_TRANSPORT_ABI_VERSION, CLAWLINK_TRANSPORT_ENTRY_SYMBOL, MAX_NAME_LEN,
};
pub use error::{ErrorCode, PluginError};
pub use pump::socketpair_pump;

/// Re-exported so plugins name the same `serde_json` the trampolines parse with.
pub use serde_json;

/// Validates settings without any network: `Ok(())` or a `Config` error.
pub type CheckSettings = fn(&serde_json::Value) -> Result<(), PluginError>;

/// Says where settings connect, in one line without secrets.
pub type Describe = fn(&serde_json::Value) -> Result<String, PluginError>;

/// Ports on the gateway host, for `clawlink tunnel`, `up`'s forwards and `dashboard`.
///
/// Both functions together, as the header asks ("offer both or neither").
#[derive(Clone, Copy)]
pub struct Ports {
    /// The gateway's port on its host for these settings (the port `connect` reaches).
    /// Offline: no network.
    pub gateway_port: fn(&serde_json::Value) -> Result<u16, PluginError>,
    /// Opens a connected stream to `port` on the gateway host's loopback interface; the
    /// same rules as [`TransportPlugin::connect`].
    pub connect_port: fn(&serde_json::Value, u16) -> Result<OwnedFd, PluginError>,
}

/// A transport plugin: its static description and how it connects.
///
/// Everything is associated (no `self`): the host keeps no plugin instance, only the table,
/// and may call from several threads at once.
pub trait TransportPlugin {
    /// The name profiles use (`transport = "<name>"`): 1-32 bytes of `[a-z0-9-]` starting
    /// with a letter, checked when the table is built.
    const NAME: &'static CStr;
    /// The plugin's version; [`plugin_version!`] gives the crate's.
    const VERSION: &'static CStr;
    /// One line for `clawlink transports`.
    const SUMMARY: &'static CStr;
    /// A TOML snippet of the settings table (`[PROFILE.transports.<name>]`); may be `c""`.
    const EXAMPLE_CONFIG: &'static CStr;

    /// The optional `check_settings` function; `None` leaves it NULL in the table.
    ///
    /// A function pointer rather than a defaulted method so the table can tell, at compile
    /// time, whether the plugin has one.
    const CHECK_SETTINGS: Option<CheckSettings> = None;

    /// The optional `describe` function; `None` leaves it NULL in the table and the host
    /// describes the transport itself.
    const DESCRIBE: Option<Describe> = None;

    /// The optional port functions (`gateway_port` and `connect_port`); `None` leaves both
    /// NULL and clawlink offers no local forwards through this transport.
    const PORTS: Option<Ports> = None;

    /// Opens a connected stream to the gateway's WebSocket port.
    ///
    /// `settings` is the profile's `transports.<name>` table, always a JSON object. Runs on
    /// a blocking thread of the host, under its time limit: bound every wait.
    fn connect(settings: &serde_json::Value) -> Result<OwnedFd, PluginError>;
}

/// `&'static CStr` of the calling crate's version (`CARGO_PKG_VERSION`), for
/// [`TransportPlugin::VERSION`].
#[macro_export]
macro_rules! plugin_version {
    () => {
        $crate::cstr(::core::concat!(::core::env!("CARGO_PKG_VERSION"), "\0").as_bytes())
    };
}

/// Exports plugin type `$plugin` as this library's `clawlink_transport_plugin_v1`.
///
/// Use it once per `cdylib`. The table is a `static` built at compile time, so a bad name
/// fails the build.
#[macro_export]
macro_rules! export_transport {
    ($plugin:ty) => {
        /// The entry point clawlink looks up: the plugin's static table, never NULL.
        #[unsafe(no_mangle)]
        pub extern "C" fn clawlink_transport_plugin_v1() -> &'static $crate::TransportV1 {
            static TABLE: $crate::TransportV1 = $crate::TransportV1::of::<$plugin>();
            &TABLE
        }
    };
}
