//! The exported table end to end, called the way a C host calls it: raw pointers, small and NULL buffers, bad JSON, and a plugin that panics.

use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread;

use clawlink_plugin_sdk::serde_json::Value;
use clawlink_plugin_sdk::{
    export_transport, plugin_version, PluginError, TransportPlugin, TransportV1, CLAWLINK_ERR_AUTH,
    CLAWLINK_ERR_CONFIG, CLAWLINK_ERR_CONNECT, CLAWLINK_OK, CLAWLINK_TRANSPORT_ABI_VERSION,
};

/// A plugin whose connect always panics: the trampoline must turn that into an error.
struct Panicky;

impl TransportPlugin for Panicky {
    const NAME: &'static CStr = c"panicky";
    const VERSION: &'static CStr = plugin_version!();
    const SUMMARY: &'static CStr = c"panics in connect";
    const EXAMPLE_CONFIG: &'static CStr = c"";

    fn connect(_settings: &Value) -> Result<OwnedFd, PluginError> {
        panic!("the dial tone is gone ({})", "line 2");
    }
}

export_transport!(Panicky);

/// A plugin whose settings say what to do: `{"fail": "config"|"auth"|"connect", "message": …}`
/// fails that way; anything else connects to a socketpair that greets with "hi".
struct Scripted;

impl TransportPlugin for Scripted {
    const NAME: &'static CStr = c"scripted";
    const VERSION: &'static CStr = c"9.9.9";
    const SUMMARY: &'static CStr = c"does what its settings say";
    const EXAMPLE_CONFIG: &'static CStr = c"fail = \"auth\"\n";
    const CHECK_SETTINGS: Option<clawlink_plugin_sdk::CheckSettings> =
        Some(|settings| match settings.get("fail") {
            Some(_) => Err(PluginError::config("`fail` is set")),
            None => Ok(()),
        });
    const DESCRIBE: Option<clawlink_plugin_sdk::Describe> = Some(|settings| {
        Ok(format!(
            "scripted → {}",
            settings
                .get("to")
                .and_then(Value::as_str)
                .unwrap_or("nowhere")
        ))
    });

    const PORTS: Option<clawlink_plugin_sdk::Ports> = Some(clawlink_plugin_sdk::Ports {
        gateway_port: |settings| match settings.get("port").and_then(Value::as_u64) {
            Some(port) => Ok(port as u16),
            None if settings.get("panic").is_some() => panic!("no port"),
            None => Err(PluginError::config("`port` is missing")),
        },
        connect_port: |_settings, port| {
            // The greeting names the port, so the test sees which one was asked for.
            let (ours, theirs) = UnixStream::pair().unwrap();
            thread::spawn(move || (&ours).write_all(format!("port {port}").as_bytes()));
            Ok(OwnedFd::from(theirs))
        },
    });

    fn connect(settings: &Value) -> Result<OwnedFd, PluginError> {
        let message = settings
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("failed")
            .to_owned();
        match settings.get("fail").and_then(Value::as_str) {
            Some("config") => Err(PluginError::config(message)),
            Some("auth") => Err(PluginError::auth(message)),
            Some(_) => Err(PluginError::connect(message)),
            None => {
                let (ours, theirs) = UnixStream::pair().unwrap();
                thread::spawn(move || (&ours).write_all(b"hi"));
                Ok(OwnedFd::from(theirs))
            }
        }
    }
}

static SCRIPTED: TransportV1 = TransportV1::of::<Scripted>();

/// What a host sees from one `connect`: the code, the fd if any, the message.
struct Outcome {
    code: i32,
    fd: Option<OwnedFd>,
    message: Vec<u8>,
}

fn connect(table: &TransportV1, settings: &[u8], cap: usize) -> Outcome {
    let mut fd = -1;
    let mut buf = vec![0xAAu8; cap + 8];
    let mut len = usize::MAX;
    // SAFETY: every pointer is valid for the call, the buffer for cap (+ guard) bytes.
    let code = unsafe {
        (table.connect)(
            settings.as_ptr(),
            settings.len(),
            &mut fd,
            buf.as_mut_ptr(),
            cap,
            &mut len,
        )
    };
    assert!(buf[cap..].iter().all(|&b| b == 0xAA), "wrote past err_cap");
    assert!(len <= cap, "err_len {len} > err_cap {cap}");
    buf.truncate(len);
    Outcome {
        code,
        // SAFETY: on success the fd is ours to own, as the header says.
        fd: (code == CLAWLINK_OK).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
        message: buf,
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("the host always gets UTF-8")
}

#[test]
fn the_exported_entry_point_describes_the_plugin() {
    let table = clawlink_transport_plugin_v1();
    assert_eq!(table.abi_version, CLAWLINK_TRANSPORT_ABI_VERSION);
    assert_eq!(table.struct_size as usize, size_of::<TransportV1>());
    // SAFETY: the table's strings are static C strings.
    unsafe {
        assert_eq!(CStr::from_ptr(table.name), c"panicky");
        assert_eq!(
            CStr::from_ptr(table.version).to_str().unwrap(),
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(CStr::from_ptr(table.example_config), c"");
    }
    assert!(table.check_settings.is_none() && table.describe.is_none());
    assert!(table.gateway_port.is_none() && table.connect_port.is_none());
    assert!(SCRIPTED.check_settings.is_some() && SCRIPTED.describe.is_some());
    assert!(SCRIPTED.gateway_port.is_some() && SCRIPTED.connect_port.is_some());
}

#[test]
fn a_panic_in_connect_is_an_error_not_an_abort() {
    let outcome = connect(clawlink_transport_plugin_v1(), b"{}", 256);
    assert_eq!(outcome.code, CLAWLINK_ERR_CONNECT);
    assert!(outcome.fd.is_none());
    assert_eq!(
        text(&outcome.message),
        "plugin panicked: the dial tone is gone (line 2)"
    );
}

#[test]
fn success_hands_over_a_connected_fd() {
    let outcome = connect(&SCRIPTED, br#"{"to": "x"}"#, 64);
    assert_eq!(outcome.code, CLAWLINK_OK, "{}", text(&outcome.message));
    assert!(outcome.message.is_empty());
    let mut stream = UnixStream::from(outcome.fd.unwrap());
    let mut greeting = String::new();
    stream.read_to_string(&mut greeting).unwrap();
    assert_eq!(greeting, "hi");
}

#[test]
fn error_codes_and_messages_reach_the_host() {
    for (fail, code) in [
        ("config", CLAWLINK_ERR_CONFIG),
        ("auth", CLAWLINK_ERR_AUTH),
        ("connect", CLAWLINK_ERR_CONNECT),
    ] {
        let settings = format!(r#"{{"fail": "{fail}", "message": "no {fail}"}}"#);
        let outcome = connect(&SCRIPTED, settings.as_bytes(), 64);
        assert_eq!(outcome.code, code);
        assert_eq!(text(&outcome.message), format!("no {fail}"));
    }
}

#[test]
fn a_long_message_is_cut_at_a_character_boundary() {
    // "ü" is 2 bytes and "→" 3: a cap of 6 falls inside "→" ("ab" + "ü" = 4, "→" = 4..7).
    let settings = r#"{"fail": "auth", "message": "abü→ü"}"#;
    for (cap, expected) in [
        (0, ""),
        (3, "ab"),
        (4, "abü"),
        (6, "abü"),
        (7, "abü→"),
        (99, "abü→ü"),
    ] {
        let outcome = connect(&SCRIPTED, settings.as_bytes(), cap);
        assert_eq!(outcome.code, CLAWLINK_ERR_AUTH);
        assert_eq!(text(&outcome.message), expected, "cap {cap}");
    }
}

#[test]
fn bad_json_is_a_config_error_from_the_sdk() {
    for settings in [
        &b"{\"fail\": "[..],
        b"not json",
        b"",
        b"[]",
        b"\"text\"",
        b"\xff\xfe",
    ] {
        let outcome = connect(&SCRIPTED, settings, 200);
        assert_eq!(outcome.code, CLAWLINK_ERR_CONFIG, "{settings:?}");
        let message = text(&outcome.message);
        assert!(
            message.contains("not valid JSON") || message.contains("must be a JSON object"),
            "{message}"
        );
    }
}

#[test]
fn null_pointers_are_refused_or_tolerated_never_dereferenced() {
    let settings = br#"{"fail": "auth", "message": "nope"}"#;
    let mut fd = -1;
    let mut len = 5usize;
    let mut buf = [0u8; 32];
    // SAFETY: the NULLs are what is under test; the rest is valid for the call.
    unsafe {
        // No settings at all.
        let code = (SCRIPTED.connect)(
            std::ptr::null(),
            10,
            &mut fd,
            buf.as_mut_ptr(),
            32,
            &mut len,
        );
        assert_eq!(code, CLAWLINK_ERR_CONFIG);
        assert!(text(&buf[..len]).contains("no settings"));
        // Nowhere to put the fd: refused before connecting, so no fd can leak.
        let code = (SCRIPTED.connect)(
            b"{}".as_ptr(),
            2,
            std::ptr::null_mut(),
            buf.as_mut_ptr(),
            32,
            &mut len,
        );
        assert_eq!(code, CLAWLINK_ERR_CONFIG);
        assert!(text(&buf[..len]).contains("null out_fd"));
        // No error buffer and no length: the code still comes back.
        let code = (SCRIPTED.connect)(
            settings.as_ptr(),
            settings.len(),
            &mut fd,
            std::ptr::null_mut(),
            32,
            std::ptr::null_mut(),
        );
        assert_eq!(code, CLAWLINK_ERR_AUTH);
        // No error buffer but a length: zero bytes written.
        len = 99;
        let code = (SCRIPTED.connect)(
            settings.as_ptr(),
            settings.len(),
            &mut fd,
            std::ptr::null_mut(),
            32,
            &mut len,
        );
        assert_eq!(code, CLAWLINK_ERR_AUTH);
        assert_eq!(len, 0);
    }
    assert_eq!(fd, -1, "no fd on failure");
}

#[test]
fn check_settings_and_describe_go_through_the_same_guards() {
    let check = SCRIPTED.check_settings.unwrap();
    let describe = SCRIPTED.describe.unwrap();
    let mut buf = [0u8; 64];
    let mut len = 0usize;
    // SAFETY: pointers valid for the call.
    unsafe {
        assert_eq!(
            check(b"{}".as_ptr(), 2, buf.as_mut_ptr(), 64, &mut len),
            CLAWLINK_OK
        );
        assert_eq!(len, 0);
        let s = br#"{"fail": 1}"#;
        assert_eq!(
            check(s.as_ptr(), s.len(), buf.as_mut_ptr(), 64, &mut len),
            CLAWLINK_ERR_CONFIG
        );
        assert_eq!(text(&buf[..len]), "`fail` is set");
        assert_eq!(
            check(b"{".as_ptr(), 1, buf.as_mut_ptr(), 64, &mut len),
            CLAWLINK_ERR_CONFIG
        );
        let s = br#"{"to": "gw"}"#;
        assert_eq!(
            describe(s.as_ptr(), s.len(), buf.as_mut_ptr(), 64, &mut len),
            CLAWLINK_OK
        );
        assert_eq!(text(&buf[..len]), "scripted → gw");
        // "scripted " is 9 bytes, "→" 3: a cap of 10 keeps only the ASCII part.
        assert_eq!(
            describe(s.as_ptr(), s.len(), buf.as_mut_ptr(), 10, &mut len),
            CLAWLINK_OK
        );
        assert_eq!(text(&buf[..len]), "scripted ");
        assert_ne!(
            describe(b"7".as_ptr(), 1, buf.as_mut_ptr(), 64, &mut len),
            CLAWLINK_OK
        );
    }
}

#[test]
fn port_functions_name_the_port_and_hand_over_a_stream_to_it() {
    let gateway_port = SCRIPTED.gateway_port.unwrap();
    let connect_port = SCRIPTED.connect_port.unwrap();
    // SAFETY: pointers valid for the call.
    unsafe {
        let s = br#"{"port": 18789}"#;
        assert_eq!(gateway_port(s.as_ptr(), s.len()), 18789);
        // Missing, a panic, bad JSON and NULL all read as 0: "the settings do not say".
        for s in [&b"{}"[..], br#"{"panic": 1}"#, b"{"] {
            assert_eq!(gateway_port(s.as_ptr(), s.len()), 0, "{s:?}");
        }
        assert_eq!(gateway_port(std::ptr::null(), 4), 0);

        let mut fd = -1;
        let mut buf = [0u8; 32];
        let mut len = 0usize;
        let code = connect_port(
            b"{}".as_ptr(),
            2,
            18790,
            &mut fd,
            buf.as_mut_ptr(),
            32,
            &mut len,
        );
        assert_eq!(code, CLAWLINK_OK);
        let mut greeting = String::new();
        UnixStream::from(OwnedFd::from_raw_fd(fd))
            .read_to_string(&mut greeting)
            .unwrap();
        assert_eq!(greeting, "port 18790");
        let code = connect_port(
            b"[]".as_ptr(),
            2,
            1,
            &mut fd,
            buf.as_mut_ptr(),
            32,
            &mut len,
        );
        assert_eq!(code, CLAWLINK_ERR_CONFIG);
    }
}
