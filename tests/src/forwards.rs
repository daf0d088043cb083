//! Local forwards seen from outside, shared by the tests that serve them: a `clawlink tunnel` child reaped on drop and its first JSON report, HTTP through a forward or through a transport's stream, and the gateway's widget sandbox started on demand.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use clawlink_core::transport::{DuplexStream, Transport};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{clawlink, token_file};

/// A child process killed when the test ends, whatever happens.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A loopback port whose successor is free too (a tunnel forwards both).
pub fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of loopback ports");
}

/// The first line `child` prints (a `--json` report), as JSON; the test fails with the
/// child's stderr if it ends first. Bounded to 64 KiB.
pub fn first_json_line(child: &mut Child, label: &str) -> Value {
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") && line.len() < 64 * 1024 {
        if stdout.read(&mut byte).unwrap() == 0 {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            panic!("{label}: ended before reporting: {stderr}");
        }
        line.push(byte[0]);
    }
    serde_json::from_slice(&line).unwrap_or_else(|e| panic!("{label}: {e}: {line:?}"))
}

/// The child's exit code if it exits within `limit`, polled every 50 ms.
pub fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Asks the gateway at `url` for a canvas preview, which starts its widget sandbox; the
/// sandbox path it names.
pub fn start_sandbox(home: &Path, url: &str) -> Option<String> {
    let token = token_file(home);
    let out = clawlink(
        home,
        &[
            "--url",
            url,
            "--token-file",
            &token,
            "call",
            "canvas.document.preview",
            r#"{"html": "<p>compliance</p>"}"#,
        ],
    );
    let preview: Value = serde_json::from_slice(&out.stdout).ok()?;
    preview["sandboxUrl"].as_str().map(str::to_owned)
}

/// `GET path` on 127.0.0.1:`port`: the status code and the whole response.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    parse_response(&response, &format!("{port}{path}"))
}

/// `GET path` over a stream a transport opened to `port` on the gateway host.
pub async fn http_over(mut stream: Box<dyn DuplexStream>, port: u16, path: &str) -> (u16, String) {
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    parse_response(&response, &format!("stream to {port}{path}"))
}

fn parse_response(response: &[u8], what: &str) -> (u16, String) {
    let response = String::from_utf8_lossy(response).into_owned();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer on {what}: {response:?}"));
    (code, response)
}

/// The GatewayPorts contract: a fresh stream to the gateway port answers `/health`, and the
/// sandbox port (started on demand by a canvas preview asked at `gateway_url`) answers its
/// own path through the transport.
pub async fn ports_reach_the_gateway_and_sandbox(
    label: &str,
    home: &Path,
    gateway_url: &str,
    transport: &dyn Transport,
) {
    let ports = transport
        .ports()
        .unwrap_or_else(|| panic!("{label}: offers no GatewayPorts"));
    let gateway = ports.gateway_port();
    let (code, body) = http_over(ports.open(gateway).await.unwrap(), gateway, "/health").await;
    assert_eq!(code, 200, "{label}: {body}");
    assert!(body.contains(r#""status":"live""#), "{label}: {body}");

    let path = start_sandbox(home, gateway_url).expect("a canvas preview names the sandbox path");
    let sandbox = gateway + 1;
    let (code, body) = http_over(ports.open(sandbox).await.unwrap(), sandbox, &path).await;
    assert_eq!(code, 200, "{label}: sandbox: {body}");
}
