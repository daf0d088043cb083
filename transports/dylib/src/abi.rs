//! The host's view of the C ABI version 1 (`include/clawlink_transport.h`): the SDK's constants and function types, and a table whose function pointers may be NULL.
//!
//! The plugin SDK's `TransportV1` is what a plugin *builds*, so its `connect` is a plain
//! function pointer. A host reads tables it did not build: here every function pointer is an
//! `Option`, so that a NULL reads as "absent" instead of undefined behaviour. Field order and
//! types are the SDK's (checked against the header by its `tests/abi_layout.rs`), and a test
//! below checks that the two layouts agree.

use std::ffi::c_char;

pub use clawlink_plugin_sdk::{
    CheckSettingsFn, ConnectFn, ConnectPortFn, DescribeFn, GatewayPortFn,
    CLAWLINK_ERR_AUTH as ERR_AUTH, CLAWLINK_ERR_CONFIG as ERR_CONFIG, CLAWLINK_OK as OK,
    CLAWLINK_TRANSPORT_ABI_VERSION as ABI_VERSION,
};

/// `CLAWLINK_TRANSPORT_ENTRY_SYMBOL`, NUL-terminated for dlsym.
pub const ENTRY_SYMBOL: &[u8] = b"clawlink_transport_plugin_v1\0";

/// `clawlink_transport_v1` as the host reads it.
#[repr(C)]
pub struct TableV1 {
    pub abi_version: u32,
    pub struct_size: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub summary: *const c_char,
    pub example_config: *const c_char,
    pub connect: Option<ConnectFn>,
    pub check_settings: Option<CheckSettingsFn>,
    pub describe: Option<DescribeFn>,
    pub gateway_port: Option<GatewayPortFn>,
    pub connect_port: Option<ConnectPortFn>,
}

/// The entry function's type, returning the host's view of the table.
pub type EntryFn = unsafe extern "C" fn() -> *const TableV1;

/// The smallest `struct_size` a version-1 table may declare: every required field, up to
/// and including `connect`. Optional fields beyond it are read only when the declared size
/// covers them (a table compiled against an older header is shorter).
pub const REQUIRED_SIZE: usize = std::mem::offset_of!(TableV1, connect) + size_of::<usize>();

/// Whether a table of `struct_size` bytes holds the field at `offset`.
pub fn covers(struct_size: u32, offset: usize) -> bool {
    struct_size as usize >= offset + size_of::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawlink_plugin_sdk::TransportV1;
    use std::mem::offset_of;

    #[test]
    fn the_host_view_has_the_sdk_layout() {
        assert_eq!(size_of::<TableV1>(), size_of::<TransportV1>());
        assert_eq!(offset_of!(TableV1, name), offset_of!(TransportV1, name));
        assert_eq!(
            offset_of!(TableV1, connect),
            offset_of!(TransportV1, connect)
        );
        assert_eq!(
            offset_of!(TableV1, describe),
            offset_of!(TransportV1, describe)
        );
        assert_eq!(
            offset_of!(TableV1, connect_port),
            offset_of!(TransportV1, connect_port)
        );
        assert_eq!(
            ENTRY_SYMBOL,
            format!("{}\0", clawlink_plugin_sdk::CLAWLINK_TRANSPORT_ENTRY_SYMBOL).as_bytes()
        );
        assert!(covers(
            REQUIRED_SIZE as u32 + 16,
            offset_of!(TableV1, describe)
        ));
        assert!(!covers(
            REQUIRED_SIZE as u32 + 8,
            offset_of!(TableV1, describe)
        ));
    }
}
