//! Compiles a small C program against `include/clawlink_transport.h` and checks that the Rust table has the C struct's size and field offsets on this platform.

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use clawlink_plugin_sdk::{
    TransportV1, CLAWLINK_ERR_AUTH, CLAWLINK_ERR_CONFIG, CLAWLINK_ERR_CONNECT, CLAWLINK_OK,
    CLAWLINK_TRANSPORT_ABI_VERSION, CLAWLINK_TRANSPORT_ENTRY_SYMBOL,
};

const PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include "clawlink_transport.h"
#define FIELD(f) printf(#f " %zu\n", offsetof(clawlink_transport_v1, f))
int main(void) {
    printf("size %zu\n", sizeof(clawlink_transport_v1));
    FIELD(abi_version); FIELD(struct_size); FIELD(name); FIELD(version); FIELD(summary);
    FIELD(example_config); FIELD(connect); FIELD(check_settings); FIELD(describe);
    FIELD(gateway_port); FIELD(connect_port);
    printf("abi %u\n", (unsigned)CLAWLINK_TRANSPORT_ABI_VERSION);
    printf("ok %d\nconfig %d\nconnect_err %d\nauth %d\n", CLAWLINK_OK, CLAWLINK_ERR_CONFIG,
           CLAWLINK_ERR_CONNECT, CLAWLINK_ERR_AUTH);
    printf("symbol %s\n", CLAWLINK_TRANSPORT_ENTRY_SYMBOL);
    return 0;
}
"#;

/// Every Rust toolchain on Unix links through `cc`, so it is there wherever this test runs.
fn c_layout() -> Vec<(String, String)> {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("layout.c");
    let binary = dir.path().join("layout");
    std::fs::write(&source, PROGRAM).unwrap();
    let status = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("running cc");
    assert!(status.success(), "cc failed on the header: {status}");
    let output = Command::new(&binary).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (key, value) = line.split_once(' ').unwrap();
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn the_rust_table_is_the_c_struct() {
    let rust = [
        ("size", size_of::<TransportV1>()),
        ("abi_version", offset_of!(TransportV1, abi_version)),
        ("struct_size", offset_of!(TransportV1, struct_size)),
        ("name", offset_of!(TransportV1, name)),
        ("version", offset_of!(TransportV1, version)),
        ("summary", offset_of!(TransportV1, summary)),
        ("example_config", offset_of!(TransportV1, example_config)),
        ("connect", offset_of!(TransportV1, connect)),
        ("check_settings", offset_of!(TransportV1, check_settings)),
        ("describe", offset_of!(TransportV1, describe)),
        ("gateway_port", offset_of!(TransportV1, gateway_port)),
        ("connect_port", offset_of!(TransportV1, connect_port)),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_string()));
    let constants = [
        ("abi", CLAWLINK_TRANSPORT_ABI_VERSION.to_string()),
        ("ok", CLAWLINK_OK.to_string()),
        ("config", CLAWLINK_ERR_CONFIG.to_string()),
        ("connect_err", CLAWLINK_ERR_CONNECT.to_string()),
        ("auth", CLAWLINK_ERR_AUTH.to_string()),
        ("symbol", CLAWLINK_TRANSPORT_ENTRY_SYMBOL.to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let expected: Vec<_> = rust.into_iter().chain(constants).collect();
    assert_eq!(c_layout(), expected);
}
