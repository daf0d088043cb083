//! The C ABI version 1 of transport plugins, mirrored from `include/clawlink_transport.h`.
//!
//! Field order and types follow the header exactly; the function pointers are `Option`s so
//! that a NULL in the table reads as "absent" instead of undefined behaviour.

use std::ffi::c_char;

/// `CLAWLINK_TRANSPORT_ABI_VERSION`.
pub const ABI_VERSION: u32 = 1;
/// `CLAWLINK_TRANSPORT_ENTRY_SYMBOL`, NUL-terminated for dlsym.
pub const ENTRY_SYMBOL: &[u8] = b"clawlink_transport_plugin_v1\0";

pub const OK: i32 = 0;
pub const ERR_CONFIG: i32 = 1;
// CLAWLINK_ERR_CONNECT (2), like any code the ABI does not define, reads as "could not
// connect, retry later".
pub const ERR_AUTH: i32 = 3;

/// `connect(settings_json, settings_len, &out_fd, err_buf, err_cap, &err_len)`.
pub type ConnectFn = unsafe extern "C" fn(
    settings_json: *const u8,
    settings_len: usize,
    out_fd: *mut i32,
    err_buf: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32;

/// `check_settings(settings_json, settings_len, err_buf, err_cap, &err_len)`.
pub type CheckSettingsFn = unsafe extern "C" fn(
    settings_json: *const u8,
    settings_len: usize,
    err_buf: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32;

/// `describe(settings_json, settings_len, out_buf, out_cap, &out_len)`.
pub type DescribeFn = CheckSettingsFn;

/// `clawlink_transport_v1`.
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
}

/// The entry function's type.
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

    #[test]
    fn the_table_has_the_header_layout_on_this_platform() {
        // Two u32s, then eight pointers: what a C compiler lays out for the header's struct
        // on every 64-bit Unix clawlink supports.
        assert_eq!(std::mem::offset_of!(TableV1, name), 8);
        assert_eq!(std::mem::offset_of!(TableV1, connect), 8 + 4 * 8);
        assert_eq!(size_of::<TableV1>(), 8 + 7 * 8);
        assert_eq!(REQUIRED_SIZE, 48);
        assert!(covers(64, std::mem::offset_of!(TableV1, describe)));
        assert!(!covers(56, std::mem::offset_of!(TableV1, describe)));
    }
}
