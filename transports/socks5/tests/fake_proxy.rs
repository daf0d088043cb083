//! The socks5 plugin against an in-process SOCKS5 server that checks every handshake byte and answers each way a real proxy can: success, every reply code, login accepted and refused, silence, and a non-SOCKS peer.

use std::ffi::CStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clawlink_plugin_sdk::{
    TransportV1, CLAWLINK_ERR_AUTH, CLAWLINK_ERR_CONFIG, CLAWLINK_ERR_CONNECT, CLAWLINK_OK,
};
use clawlink_transport_socks5::clawlink_transport_plugin_v1;
use serde_json::{json, Value};

/// What the fake proxy expects and answers, step by step.
struct Script {
    /// The greeting's method list we expect.
    methods: Vec<u8>,
    /// The method the proxy picks (0xFF: none acceptable, then it hangs up).
    choose: u8,
    /// Expected RFC 1929 request (username, password) and the status to answer.
    login: Option<(&'static str, &'static str, u8)>,
    /// The CONNECT request's address part (ATYP, address, port) we expect.
    address: Vec<u8>,
    /// The reply code.
    reply: u8,
    /// The bound address the proxy reports (ATYP, address, port).
    bound: Vec<u8>,
}

impl Script {
    fn plain(address: Vec<u8>, reply: u8) -> Script {
        Script {
            methods: vec![0x00],
            choose: 0x00,
            login: None,
            address,
            reply,
            bound: vec![0x01, 0, 0, 0, 0, 0, 0],
        }
    }
}

/// 127.0.0.1:18789 as a CONNECT address.
fn loopback_default() -> Vec<u8> {
    vec![0x01, 127, 0, 0, 1, 0x49, 0x65]
}

/// Greets with this after a successful CONNECT, as the gateway would speak first.
const GATEWAY_BYTES: &[u8] = b"gateway says hi";

fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

/// Runs one scripted proxy session on a fresh port; the handle panics (failing the test at
/// join) if the client sent anything but the expected bytes.
fn fake_proxy(script: Script) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = read_exact(&mut s, 2);
        assert_eq!(head[0], 5, "greeting version");
        assert_eq!(
            read_exact(&mut s, head[1].into()),
            script.methods,
            "methods"
        );
        s.write_all(&[5, script.choose]).unwrap();
        if script.choose == 0xFF {
            return;
        }
        if let Some((user, pass, status)) = script.login {
            let mut expected = vec![1, user.len() as u8];
            expected.extend_from_slice(user.as_bytes());
            expected.push(pass.len() as u8);
            expected.extend_from_slice(pass.as_bytes());
            assert_eq!(read_exact(&mut s, expected.len()), expected, "login");
            s.write_all(&[1, status]).unwrap();
            if status != 0 {
                return;
            }
        }
        let mut expected = vec![5, 1, 0];
        expected.extend_from_slice(&script.address);
        assert_eq!(
            read_exact(&mut s, expected.len()),
            expected,
            "CONNECT request"
        );
        let mut reply = vec![5, script.reply, 0];
        reply.extend_from_slice(&script.bound);
        s.write_all(&reply).unwrap();
        if script.reply == 0 {
            s.write_all(GATEWAY_BYTES).unwrap();
        }
    });
    (port, handle)
}

/// What the host sees from one `connect` through the exported table.
struct Outcome {
    code: i32,
    message: String,
    fd: Option<OwnedFd>,
}

fn table() -> &'static TransportV1 {
    clawlink_transport_plugin_v1()
}

fn connect(settings: &Value) -> Outcome {
    let json = settings.to_string();
    let mut fd = -1;
    let mut buf = [0u8; 1024];
    let mut len = 0usize;
    // SAFETY: every pointer is valid for the call.
    let code = unsafe {
        (table().connect)(
            json.as_ptr(),
            json.len(),
            &mut fd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        )
    };
    Outcome {
        code,
        message: String::from_utf8(buf[..len].to_vec()).unwrap(),
        // SAFETY: on success the fd is ours.
        fd: (code == CLAWLINK_OK).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
    }
}

fn expect_gateway(outcome: Outcome) {
    assert_eq!(outcome.code, CLAWLINK_OK, "{}", outcome.message);
    let mut stream = TcpStream::from(outcome.fd.unwrap());
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    assert_eq!(got, GATEWAY_BYTES);
}

fn password_file(dir: &Path, password: &str, mode: u32) -> PathBuf {
    let path = dir.join("socks5.password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn the_table_names_the_plugin() {
    let table = table();
    // SAFETY: static C strings.
    unsafe {
        assert_eq!(CStr::from_ptr(table.name), c"socks5");
        assert!(CStr::from_ptr(table.example_config)
            .to_str()
            .unwrap()
            .contains("proxy = "));
    }
    assert!(table.check_settings.is_some() && table.describe.is_some());
}

#[test]
fn connects_to_the_default_target_without_login() {
    let (port, proxy) = fake_proxy(Script::plain(loopback_default(), 0));
    expect_gateway(connect(&json!({"proxy": format!("127.0.0.1:{port}")})));
    proxy.join().unwrap();
}

#[test]
fn names_go_to_the_proxy_unresolved_and_a_named_bound_address_is_consumed() {
    let mut address = vec![0x03, 11];
    address.extend_from_slice(b"gw.internal");
    address.extend_from_slice(&443u16.to_be_bytes());
    let mut script = Script::plain(address, 0);
    script.bound = vec![0x03, 4, b'a', b'b', b'c', b'd', 0x12, 0x34];
    let (port, proxy) = fake_proxy(script);
    expect_gateway(connect(&json!({
        "proxy": format!("localhost:{port}"), "target_host": "gw.internal", "target_port": 443
    })));
    proxy.join().unwrap();
}

#[test]
fn ipv6_targets_use_atyp_4() {
    let mut address = vec![0x04];
    address.extend_from_slice(&"fd00::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    address.extend_from_slice(&18789u16.to_be_bytes());
    let mut script = Script::plain(address, 0);
    script.bound = vec![0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let (port, proxy) = fake_proxy(script);
    expect_gateway(connect(&json!({
        "proxy": format!("127.0.0.1:{port}"), "target_host": "fd00::7"
    })));
    proxy.join().unwrap();
}

#[test]
fn every_reply_code_is_explained() {
    let cases: [(u8, i32, &str); 9] = [
        (0x01, CLAWLINK_ERR_CONNECT, "general SOCKS server failure (reply 0x01): the proxy failed on its side"),
        (0x02, CLAWLINK_ERR_AUTH, "connection not allowed by ruleset (reply 0x02): the proxy's rules forbid 127.0.0.1:18789"),
        (0x03, CLAWLINK_ERR_CONNECT, "network unreachable (reply 0x03): the proxy has no route to 127.0.0.1"),
        (0x04, CLAWLINK_ERR_CONNECT, "host unreachable (reply 0x04): the proxy cannot reach 127.0.0.1"),
        (0x05, CLAWLINK_ERR_CONNECT, "connection refused (reply 0x05): the proxy reached 127.0.0.1 but nothing listens on port 18789: is the gateway running there?"),
        (0x06, CLAWLINK_ERR_CONNECT, "TTL expired (reply 0x06)"),
        (0x07, CLAWLINK_ERR_CONFIG, "command not supported (reply 0x07): the proxy does not support CONNECT"),
        (0x08, CLAWLINK_ERR_CONFIG, "address type not supported (reply 0x08): the proxy does not take IPv4 addresses"),
        (0x42, CLAWLINK_ERR_CONNECT, "unassigned reply code (reply 0x42)"),
    ];
    for (reply, code, text) in cases {
        let (port, proxy) = fake_proxy(Script::plain(loopback_default(), reply));
        let outcome = connect(&json!({"proxy": format!("127.0.0.1:{port}")}));
        proxy.join().unwrap();
        assert_eq!(
            outcome.code, code,
            "reply 0x{reply:02x}: {}",
            outcome.message
        );
        assert!(
            outcome.message.starts_with(&format!(
                "SOCKS5 proxy 127.0.0.1:{port} could not connect to 127.0.0.1:18789: "
            )),
            "{}",
            outcome.message
        );
        assert!(outcome.message.contains(text), "{}", outcome.message);
    }
}

#[test]
fn a_name_the_proxy_cannot_resolve_suggests_an_address() {
    let mut address = vec![0x03, 2, b'g', b'w'];
    address.extend_from_slice(&18789u16.to_be_bytes());
    let (port, proxy) = fake_proxy(Script::plain(address, 0x08));
    let outcome = connect(&json!({"proxy": format!("127.0.0.1:{port}"), "target_host": "gw"}));
    proxy.join().unwrap();
    assert_eq!(outcome.code, CLAWLINK_ERR_CONFIG);
    assert!(
        outcome
            .message
            .contains("set `target_host` to an IP address"),
        "{}",
        outcome.message
    );
}

#[test]
fn a_login_the_proxy_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), "s3cret-pw", 0o600);
    let (port, proxy) = fake_proxy(Script {
        methods: vec![0x00, 0x02],
        choose: 0x02,
        login: Some(("alice", "s3cret-pw", 0)),
        ..Script::plain(loopback_default(), 0)
    });
    expect_gateway(connect(&json!({
        "proxy": format!("127.0.0.1:{port}"), "username": "alice", "password_file": file
    })));
    proxy.join().unwrap();
}

#[test]
fn a_login_the_proxy_refuses_is_an_auth_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), "s3cret-pw", 0o600);
    let (port, proxy) = fake_proxy(Script {
        methods: vec![0x00, 0x02],
        choose: 0x02,
        login: Some(("alice", "s3cret-pw", 0x01)),
        ..Script::plain(loopback_default(), 0)
    });
    let outcome = connect(&json!({
        "proxy": format!("127.0.0.1:{port}"), "username": "alice", "password_file": file
    }));
    proxy.join().unwrap();
    assert_eq!(outcome.code, CLAWLINK_ERR_AUTH);
    assert_eq!(
        outcome.message,
        format!(
            "SOCKS5 proxy 127.0.0.1:{port} refused username `alice` (status 0x01): check `username` and the password in {}",
            file.display()
        )
    );
    assert!(!outcome.message.contains("s3cret"));
}

#[test]
fn a_proxy_that_wants_a_login_we_lack_says_which_settings_to_add() {
    let (port, proxy) = fake_proxy(Script {
        choose: 0xFF,
        ..Script::plain(loopback_default(), 0)
    });
    let outcome = connect(&json!({"proxy": format!("127.0.0.1:{port}")}));
    proxy.join().unwrap();
    assert_eq!(outcome.code, CLAWLINK_ERR_AUTH);
    assert!(
        outcome
            .message
            .contains("set `username` and `password_file`"),
        "{}",
        outcome.message
    );
}

#[test]
fn a_group_readable_password_file_is_refused_before_any_network() {
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), "s3cret-pw", 0o644);
    // Nothing listens: the file must be refused first, as a config error.
    let outcome = connect(&json!({
        "proxy": "127.0.0.1:1", "username": "alice", "password_file": file
    }));
    assert_eq!(outcome.code, CLAWLINK_ERR_CONFIG);
    assert_eq!(
        outcome.message,
        format!(
            "password file {} is accessible to group or others (mode 0644): run `chmod 600 {}`",
            file.display(),
            file.display()
        )
    );
    // check_settings says the same, without network.
    let json =
        json!({"proxy": "127.0.0.1:1", "username": "alice", "password_file": file}).to_string();
    let mut buf = [0u8; 512];
    let mut len = 0;
    // SAFETY: valid pointers for the call.
    let code = unsafe {
        (table().check_settings.unwrap())(
            json.as_ptr(),
            json.len(),
            buf.as_mut_ptr(),
            512,
            &mut len,
        )
    };
    assert_eq!(code, CLAWLINK_ERR_CONFIG);
    assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), outcome.message);
}

#[test]
fn a_peer_that_is_not_socks5_is_named_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.read(&mut [0u8; 16]);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let outcome = connect(&json!({"proxy": format!("127.0.0.1:{port}")}));
    server.join().unwrap();
    assert_eq!(outcome.code, CLAWLINK_ERR_CONFIG);
    assert!(
        outcome
            .message
            .contains("is not a SOCKS5 proxy (its first reply byte is 0x48"),
        "{}",
        outcome.message
    );
}

#[test]
fn a_proxy_that_is_not_running_is_a_connect_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let outcome = connect(&json!({"proxy": format!("127.0.0.1:{port}")}));
    assert_eq!(outcome.code, CLAWLINK_ERR_CONNECT);
    assert_eq!(
        outcome.message,
        format!("SOCKS5 proxy 127.0.0.1:{port} refused the connection: is the proxy running (e.g. `ssh -D {port} -N <host>`)?")
    );
}

#[test]
fn a_silent_proxy_times_out_on_time() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Hold the connection open, say nothing, until the client gives up.
        let _ = s.read_to_end(&mut Vec::new());
    });
    let start = Instant::now();
    let outcome = connect(&json!({
        "proxy": format!("127.0.0.1:{port}"), "connect_timeout_ms": 300
    }));
    let elapsed = start.elapsed();
    server.join().unwrap();
    assert_eq!(outcome.code, CLAWLINK_ERR_CONNECT);
    assert!(
        outcome
            .message
            .contains("no answer during the method negotiation within 300 ms"),
        "{}",
        outcome.message
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[test]
fn settings_mistakes_are_config_errors_naming_the_key() {
    let outcome = connect(&json!({"proxy": "127.0.0.1:1080", "proxy_port": 1}));
    assert_eq!(outcome.code, CLAWLINK_ERR_CONFIG);
    assert!(
        outcome
            .message
            .starts_with("unknown setting `proxy_port` for transport socks5"),
        "{}",
        outcome.message
    );
    let outcome = connect(&json!({"target_port": 1}));
    assert_eq!(outcome.code, CLAWLINK_ERR_CONFIG);
    assert!(outcome.message.contains("`proxy`"), "{}", outcome.message);
}

#[test]
fn describe_names_proxy_and_target() {
    let json = json!({"proxy": "127.0.0.1:1080", "target_host": "gw.example.com"}).to_string();
    let mut buf = [0u8; 128];
    let mut len = 0;
    // SAFETY: valid pointers for the call.
    let code = unsafe {
        (table().describe.unwrap())(json.as_ptr(), json.len(), buf.as_mut_ptr(), 128, &mut len)
    };
    assert_eq!(code, CLAWLINK_OK);
    assert_eq!(
        std::str::from_utf8(&buf[..len]).unwrap(),
        "socks5 127.0.0.1:1080 → gw.example.com:18789"
    );
}
