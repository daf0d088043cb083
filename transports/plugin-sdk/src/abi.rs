//! The Rust mirror of `include/clawlink_transport.h`: the table a plugin exports, its function types and constants.
//!
//! Field order and types follow the header exactly; `tests/abi_layout.rs` compiles a small C
//! file against the header and compares sizes and offsets, so a drift fails a test rather
//! than a user's process.

use std::ffi::{c_char, CStr};

use crate::trampoline;
use crate::TransportPlugin;

/// `CLAWLINK_TRANSPORT_ABI_VERSION`: the ABI version this crate implements.
pub const CLAWLINK_TRANSPORT_ABI_VERSION: u32 = 1;

/// `CLAWLINK_TRANSPORT_ENTRY_SYMBOL`: the one symbol a plugin exports.
pub const CLAWLINK_TRANSPORT_ENTRY_SYMBOL: &str = "clawlink_transport_plugin_v1";

/// `CLAWLINK_OK`: success.
pub const CLAWLINK_OK: i32 = 0;
/// `CLAWLINK_ERR_CONFIG`: the settings are wrong; retrying will not help.
pub const CLAWLINK_ERR_CONFIG: i32 = 1;
/// `CLAWLINK_ERR_CONNECT`: the gateway or a hop could not be reached; clawlink retries.
pub const CLAWLINK_ERR_CONNECT: i32 = 2;
/// `CLAWLINK_ERR_AUTH`: a hop refused our credentials; retrying will not help.
pub const CLAWLINK_ERR_AUTH: i32 = 3;

/// The longest transport name the host accepts, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// `connect` in the table: settings JSON in, a connected stream fd or an error message out.
pub type ConnectFn = unsafe extern "C" fn(
    settings_json: *const u8,
    settings_len: usize,
    out_fd: *mut i32,
    err_buf: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32;

/// `check_settings` in the table: validates the settings without any network.
pub type CheckSettingsFn = unsafe extern "C" fn(
    settings_json: *const u8,
    settings_len: usize,
    err_buf: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32;

/// `describe` in the table: one line saying where the settings connect, without secrets.
pub type DescribeFn = unsafe extern "C" fn(
    settings_json: *const u8,
    settings_len: usize,
    out_buf: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> i32;

/// `gateway_port` in the table: the gateway's port on its host, 0 when the settings do not say.
pub type GatewayPortFn = unsafe extern "C" fn(settings_json: *const u8, settings_len: usize) -> u16;

/// `connect_port` in the table: like [`ConnectFn`], to a given port on the gateway host.
pub type ConnectPortFn = unsafe extern "C" fn(
    settings_json: *const u8,
    settings_len: usize,
    port: u16,
    out_fd: *mut i32,
    err_buf: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32;

/// The signature of `clawlink_transport_plugin_v1` (`clawlink_transport_plugin_v1_fn`).
pub type EntryFn = unsafe extern "C" fn() -> *const TransportV1;

/// `clawlink_transport_v1`: the static table describing a transport and how to connect it.
///
/// Only ever built by [`TransportV1::of`] (through [`export_transport!`](crate::export_transport))
/// as an immutable `static`; every string it points at is a `'static` C string.
#[repr(C)]
#[derive(Debug)]
pub struct TransportV1 {
    /// [`CLAWLINK_TRANSPORT_ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<TransportV1>()` as this plugin was compiled; tells the host which fields exist.
    pub struct_size: u32,
    /// The transport's name: 1-32 bytes of `[a-z0-9-]` starting with a letter.
    pub name: *const c_char,
    /// The plugin's own version, e.g. "1.2.0".
    pub version: *const c_char,
    /// One line for `clawlink transports`.
    pub summary: *const c_char,
    /// A TOML snippet of the settings table; may be "".
    pub example_config: *const c_char,
    /// Opens a stream to the gateway's WebSocket port.
    pub connect: ConnectFn,
    /// Checks the settings without network; `None` is NULL.
    pub check_settings: Option<CheckSettingsFn>,
    /// Describes where the settings connect; `None` is NULL.
    pub describe: Option<DescribeFn>,
    /// The gateway's port on its host; NULL unless the plugin offers [`Ports`](crate::Ports).
    pub gateway_port: Option<GatewayPortFn>,
    /// Opens a stream to a port on the gateway host; NULL unless the plugin offers ports.
    pub connect_port: Option<ConnectPortFn>,
}

// SAFETY: the table is immutable and every pointer in it points at immutable `'static` data
// (C string literals) or at functions, so sharing it between threads is sound. The header
// promises the host may call from several threads at once.
unsafe impl Sync for TransportV1 {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for TransportV1 {}

impl TransportV1 {
    /// The table for plugin `P`, built at compile time.
    ///
    /// Evaluated in a `static`, so a name the host would refuse (see [`valid_name`]) or a
    /// string that is not UTF-8 stops the plugin's build instead of failing at load time.
    pub const fn of<P: TransportPlugin>() -> TransportV1 {
        assert!(
            valid_name(P::NAME),
            "TransportPlugin::NAME must be 1-32 bytes of [a-z0-9-] starting with a letter"
        );
        assert!(
            utf8(P::VERSION) && utf8(P::SUMMARY) && utf8(P::EXAMPLE_CONFIG),
            "TransportPlugin's VERSION, SUMMARY and EXAMPLE_CONFIG must be UTF-8"
        );
        TransportV1 {
            abi_version: CLAWLINK_TRANSPORT_ABI_VERSION,
            struct_size: size_of::<TransportV1>() as u32,
            name: P::NAME.as_ptr(),
            version: P::VERSION.as_ptr(),
            summary: P::SUMMARY.as_ptr(),
            example_config: P::EXAMPLE_CONFIG.as_ptr(),
            connect: trampoline::connect::<P>,
            check_settings: match P::CHECK_SETTINGS {
                Some(_) => Some(trampoline::check_settings::<P>),
                None => None,
            },
            describe: match P::DESCRIBE {
                Some(_) => Some(trampoline::describe::<P>),
                None => None,
            },
            // Both or neither, as the header asks: one `Option` decides the two.
            gateway_port: match P::PORTS {
                Some(_) => Some(trampoline::gateway_port::<P>),
                None => None,
            },
            connect_port: match P::PORTS {
                Some(_) => Some(trampoline::connect_port::<P>),
                None => None,
            },
        }
    }
}

/// Whether the host accepts `name` as a transport name: 1-32 bytes of `[a-z0-9-]`,
/// starting with a letter.
pub const fn valid_name(name: &CStr) -> bool {
    let bytes = name.to_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN || !bytes[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

const fn utf8(text: &CStr) -> bool {
    std::str::from_utf8(text.to_bytes()).is_ok()
}

/// A `'static` C string from bytes ending in one NUL, checked at compile time when used in a
/// const: `cstr(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes())`, which is what
/// [`plugin_version!`](crate::plugin_version) expands to.
pub const fn cstr(bytes: &'static [u8]) -> &'static CStr {
    match CStr::from_bytes_with_nul(bytes) {
        Ok(text) => text,
        Err(_) => panic!("cstr: the bytes must end in one NUL and contain no other"),
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn layout_matches_the_header_on_64_bit_targets() {
        // Two u32 then nine pointers, no padding: the header's order and types.
        if size_of::<usize>() == 8 {
            assert_eq!(size_of::<TransportV1>(), 80);
            assert_eq!(offset_of!(TransportV1, abi_version), 0);
            assert_eq!(offset_of!(TransportV1, struct_size), 4);
            assert_eq!(offset_of!(TransportV1, name), 8);
            assert_eq!(offset_of!(TransportV1, version), 16);
            assert_eq!(offset_of!(TransportV1, summary), 24);
            assert_eq!(offset_of!(TransportV1, example_config), 32);
            assert_eq!(offset_of!(TransportV1, connect), 40);
            assert_eq!(offset_of!(TransportV1, check_settings), 48);
            assert_eq!(offset_of!(TransportV1, describe), 56);
            assert_eq!(offset_of!(TransportV1, gateway_port), 64);
            assert_eq!(offset_of!(TransportV1, connect_port), 72);
        }
    }

    #[test]
    fn optional_functions_are_nullable_pointers() {
        // `Option<fn>` must be exactly a nullable pointer for NULL to mean "absent".
        assert_eq!(size_of::<Option<CheckSettingsFn>>(), size_of::<usize>());
        assert_eq!(size_of::<Option<DescribeFn>>(), size_of::<usize>());
        assert_eq!(size_of::<Option<GatewayPortFn>>(), size_of::<usize>());
        assert_eq!(size_of::<Option<ConnectPortFn>>(), size_of::<usize>());
    }

    #[test]
    fn names_follow_the_host_rule() {
        assert!(valid_name(c"socks5"));
        assert!(valid_name(c"my-proxy-2"));
        assert!(valid_name(c"abcdefghijklmnopqrstuvwxyzabcdef"));
        assert!(!valid_name(c"abcdefghijklmnopqrstuvwxyzabcdefg"));
        assert!(!valid_name(c""));
        assert!(!valid_name(c"2fast"));
        assert!(!valid_name(c"-x"));
        assert!(!valid_name(c"Socks"));
        assert!(!valid_name(c"so_cks"));
    }
}
