//! Unit tests of the exec transport with real child processes (`sh`, `cat`, `sleep`): the stream, the errors of a command that fails, and that no process outlives its stream or the transport.

use std::time::{Duration, Instant};

use clawlink_core::transport::{Transport, TransportError, TransportErrorKind};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::*;

fn exec(settings: serde_json::Value) -> Exec {
    Exec::new(Exec::parse_settings(&settings).unwrap()).unwrap()
}

fn sh(script: &str) -> Exec {
    exec(json!({"command": ["sh", "-c", script]}))
}

/// The transport error a stream failed with, reading until it fails (bounded).
async fn stream_failure(transport: &Exec) -> TransportError {
    let mut connected = transport.connect().await.unwrap();
    // What the client does first: send its upgrade request.
    let _ = connected.stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    let mut buf = Vec::new();
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        connected.stream.read_to_end(&mut buf),
    )
    .await
    .expect("the stream fails in time")
    .expect_err("the stream fails");
    TransportError::from_io(&error)
        .unwrap_or_else(|| panic!("not a transport error: {error:?}"))
        .clone()
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

async fn all_gone_within(pids: &[u32], limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[test]
fn every_setting_is_in_the_example_and_the_error_hint() {
    use clawlink_core::registry::settings_keys;
    let keys = settings_keys::<Settings>();
    assert_eq!(keys.len(), 7, "{keys:?}");
    for key in keys {
        assert!(
            EXAMPLE_CONFIG
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))),
            "{key} missing from the example config"
        );
    }
    let error = Exec::parse_settings(&json!({"comand": ["x"]})).unwrap_err();
    assert!(error.message.contains("comand"), "{error:?}");
    for key in keys {
        assert!(
            error.fix.as_deref().unwrap().contains(key),
            "{key}: {error:?}"
        );
    }
    // The documented ProxyCommand helpers are valid settings as written.
    for command in [
        json!(["ssh", "-W", "127.0.0.1:18789", "gw-host"]),
        json!([
            "cloudflared",
            "access",
            "tcp",
            "--hostname",
            "gw.example.com"
        ]),
        json!(["tailscale", "nc", "gw", "18789"]),
    ] {
        assert!(
            EXAMPLE_CONFIG.contains(&command.to_string().replace(',', ", ")),
            "{command} is not in the example"
        );
        exec(json!({"command": command}));
    }
}

#[test]
fn the_upgrade_goes_to_the_configured_host_and_the_tokens_expand() {
    let transport = exec(json!({
        "command": ["ssh", "-W", "%h:%p", "%r@gw"],
        "host": "::1",
        "port": 28789,
        "user": "claw",
    }));
    assert_eq!(transport.argv(), ["ssh", "-W", "::1:28789", "claw@gw"]);
    assert_eq!(transport.request_url(), "ws://[::1]:28789/");
    let default = exec(json!({"command": ["tailscale", "nc", "gw", "18789"]}));
    assert_eq!(default.request_url(), "ws://127.0.0.1:18789/");
    assert_eq!(
        default.describe(),
        "`tailscale nc gw 18789` → 127.0.0.1:18789"
    );
    assert!(!default.is_loopback_to_gateway());
    assert!(default.diagnosis().is_none());
    assert_eq!(default.ports().unwrap().preferred_local_port(), 18789);
}

#[test]
fn bad_settings_are_config_errors_that_never_echo_env_values() {
    let cases = [
        (json!({"command": []}), "empty"),
        (json!({"command": ["ssh", "%r@gw"]}), "%r"),
        (
            json!({"command": ["nc"], "connect_timeout_ms": 0}),
            "connect_timeout_ms",
        ),
        (
            json!({"command": ["nc"], "env": {"CLAWLINK_TOKEN": "s3cr3t"}}),
            "CLAWLINK_TOKEN",
        ),
        (
            json!({"command": ["nc"], "env": {"clawlink_gateway_password": "s3cr3t"}}),
            "clawlink_gateway_password",
        ),
        (json!({"command": ["nc"], "env": {"A=B": "s3cr3t"}}), "A=B"),
    ];
    for (settings, needle) in cases {
        let error = Exec::parse_settings(&settings)
            .and_then(Exec::new)
            .unwrap_err();
        assert_eq!(error.kind, TransportErrorKind::Config, "{settings}");
        assert!(error.message.contains(needle), "{settings}: {error:?}");
        assert!(error.fix.is_some(), "{settings}");
        assert!(!format!("{error:?}").contains("s3cr3t"), "{settings}");
    }
    let settings =
        Exec::parse_settings(&json!({"command": ["nc"], "env": {"TUNNEL_TOKEN": "s3cr3t"}}))
            .unwrap();
    assert!(!format!("{settings:?}").contains("s3cr3t"));
    assert!(!format!("{:?}", Exec::new(settings).unwrap()).contains("s3cr3t"));
}

#[tokio::test]
async fn stdin_and_stdout_are_the_stream_and_env_reaches_the_command() {
    let transport = exec(json!({
        "command": ["sh", "-c", "printf '%%s|' \"$GREETING\"; exec cat"],
        "env": {"GREETING": "hello"},
    }));
    let mut stream = transport.connect().await.unwrap().stream;
    stream.write_all(b"ping\n").await.unwrap();
    let mut line = String::new();
    BufReader::new(&mut stream)
        .read_line(&mut line)
        .await
        .unwrap();
    assert_eq!(line, "hello|ping\n");
    drop(stream);
    transport.close().await;
}

#[tokio::test]
async fn the_command_gets_no_clawlink_secret() {
    // Set only here; std serialises this with the environment copy of every spawn.
    std::env::set_var("CLAWLINK_EXEC_UNIT_TOKEN", "leaked-token");
    std::env::set_var("CLAWLINK_EXEC_UNIT_PASSWORD", "leaked-password");
    let transport = sh("env");
    let mut stream = transport.connect().await.unwrap().stream;
    let mut listing = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut listing))
        .await
        .unwrap()
        .unwrap();
    std::env::remove_var("CLAWLINK_EXEC_UNIT_TOKEN");
    std::env::remove_var("CLAWLINK_EXEC_UNIT_PASSWORD");
    assert!(listing.contains("PATH="), "{listing}");
    assert!(!listing.contains("leaked"), "{listing}");
    for line in listing.lines() {
        let name = line.split('=').next().unwrap_or_default();
        assert!(!is_clawlink_secret(name), "{name} reached the command");
    }
}

#[tokio::test]
async fn a_command_that_exits_at_once_fails_with_its_status_and_stderr() {
    let error = stream_failure(&sh("echo boom >&2; exit 3")).await;
    assert_eq!(error.kind, TransportErrorKind::Tunnel, "{error:?}");
    assert!(error.kind.is_retryable());
    assert!(error.message.contains("exit status: 3"), "{error:?}");
    assert!(error.message.contains("boom"), "{error:?}");
    assert!(error.message.contains("sh -c"), "{error:?}");
    assert!(
        error.fix.as_deref().unwrap().contains("127.0.0.1:18789"),
        "{error:?}"
    );

    let error = stream_failure(&sh("echo 'sh: 1: nc: not found' >&2; exit 127")).await;
    assert_eq!(error.kind, TransportErrorKind::Config, "{error:?}");

    let error = stream_failure(&sh(
        "echo 'claw@gw: Permission denied (publickey).' >&2; exit 255",
    ))
    .await;
    assert_eq!(error.kind, TransportErrorKind::Authentication, "{error:?}");
}

#[tokio::test]
async fn a_silent_command_fails_after_connect_timeout_ms() {
    let transport = exec(json!({
        "command": ["sh", "-c", "echo waiting >&2; exec sleep 30"],
        "connect_timeout_ms": 300,
    }));
    let started = Instant::now();
    let error = stream_failure(&transport).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(error.kind, TransportErrorKind::Connect, "{error:?}");
    assert!(error.message.contains("300 ms"), "{error:?}");
    assert!(error.message.contains("waiting"), "{error:?}");
    transport.close().await;
}

#[tokio::test]
async fn a_missing_program_is_a_config_error_naming_it_and_path() {
    let transport = exec(json!({"command": ["clawlink-no-such-program", "x"]}));
    let Err(error) = transport.connect().await else {
        panic!("a missing program started")
    };
    assert_eq!(error.kind, TransportErrorKind::Config, "{error:?}");
    assert!(
        error.message.contains("`clawlink-no-such-program`"),
        "{error:?}"
    );
    assert!(error.message.contains("PATH"), "{error:?}");
    assert!(error.fix.is_some());
}

/// The PIDs a `sh -c 'sleep … & echo $$ $!; wait'` prints: the shell and its background job.
async fn group_pids(stream: &mut Box<dyn clawlink_core::transport::DuplexStream>) -> Vec<u32> {
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stream).read_line(&mut line),
    )
    .await
    .unwrap()
    .unwrap();
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{line:?}");
    assert!(pids.iter().all(|p| alive(*p)));
    pids
}

#[tokio::test]
async fn dropping_the_stream_kills_the_whole_group() {
    // The background job ignores SIGTERM: only the SIGKILL after the grace ends it.
    let transport = sh("trap '' TERM; sleep 60 & echo $$ $!; wait");
    let mut stream = transport.connect().await.unwrap().stream;
    let pids = group_pids(&mut stream).await;
    drop(stream);
    assert!(
        all_gone_within(&pids, child::GRACE + Duration::from_secs(3)).await,
        "{pids:?} outlived the stream"
    );
}

#[tokio::test]
async fn close_kills_what_is_still_running() {
    let transport = sh("sleep 60 & echo $$ $!; wait");
    let mut stream = transport.connect().await.unwrap().stream;
    let pids = group_pids(&mut stream).await;
    let started = Instant::now();
    transport.close().await;
    assert!(started.elapsed() < child::GRACE + Duration::from_secs(2));
    assert!(
        all_gone_within(&pids, Duration::from_secs(2)).await,
        "{pids:?} outlived close"
    );
    drop(stream);
}

/// The app restores SIGPIPE's default for most commands: a write to a command that already
/// died must be an error the stream explains, not a signal that kills clawlink.
#[tokio::test]
async fn writing_to_a_dead_command_under_default_sigpipe_is_an_error_not_a_signal() {
    // SAFETY: changes this test process's disposition; every write to a command's pipe in
    // these tests goes through the stream, which must cope with either disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let transport = sh("exec 0<&-; echo gone >&2; exit 3");
    let mut stream = transport.connect().await.unwrap().stream;
    // Let it close its input and exit before the first write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let error = stream
        .write_all(&[b'x'; 70_000])
        .await
        .expect_err("the pipe is broken");
    let error = TransportError::from_io(&error)
        .unwrap_or_else(|| panic!("not a transport error: {error:?}"))
        .clone();
    assert!(error.message.contains("exit status: 3"), "{error:?}");
    assert!(error.message.contains("gone"), "{error:?}");
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

#[tokio::test]
async fn forwards_run_the_command_per_port_and_without_p_only_the_gateway_port() {
    let with_p = exec(json!({
        "command": ["sh", "-c", "printf 'port %p'"],
        "port": 28789,
        "local_port": 38789,
    }));
    let ports = with_p.ports().unwrap();
    assert_eq!(
        (ports.gateway_port(), ports.preferred_local_port()),
        (28789, 38789)
    );
    for port in [28789u16, 28790] {
        let mut stream = ports.open(port).await.unwrap();
        let mut said = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut said))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(said, format!("port {port}"));
    }

    let without_p = exec(json!({"command": ["tailscale", "nc", "gw", "18789"]}));
    let error = match without_p.ports().unwrap().open(18790).await {
        Err(error) => error,
        Ok(_) => panic!("a command without %p reached another port"),
    };
    assert_eq!(error.kind, TransportErrorKind::Unsupported);
    assert!(
        error.message.contains("no %p") && error.message.contains("18790"),
        "{error:?}"
    );
    assert!(error.fix.as_deref().unwrap().contains("%p"), "{error:?}");
    let zero = Exec::parse_settings(&json!({"command": ["x"], "local_port": 0}))
        .and_then(Exec::new)
        .unwrap_err();
    assert!(zero.message.contains("local_port"), "{zero:?}");
}
