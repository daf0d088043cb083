//! Network checks several transports' diagnoses share: name resolution and a TCP connect, each bounded, with the outcome told apart (refused vs unreachable).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;

use super::LayerReport;

/// Time limits: generous for a slow link, short enough that a dead one is named quickly.
pub const DNS_LIMIT: Duration = Duration::from_secs(5);
pub const TCP_LIMIT: Duration = Duration::from_secs(10);

/// The `dns` layer: resolves `host` (an IP address needs nothing). `what` names the host in
/// the report ("the SSH host", "the gateway host"); `fix` is the transport's advice.
/// Returns the report and, when it passed, the addresses.
pub async fn dns_layer(
    host: &str,
    port: u16,
    what: &str,
    fix: &str,
) -> (LayerReport, Option<Vec<SocketAddr>>) {
    let started = Instant::now();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return (
            LayerReport::ok(
                "dns",
                started,
                format!("{what} {host} is an IP address: nothing to resolve"),
                json!({"host": host, "addresses": [ip.to_string()]}),
            ),
            Some(vec![SocketAddr::new(ip, port)]),
        );
    }
    let lookup = tokio::time::timeout(DNS_LIMIT, tokio::net::lookup_host((host, port)))
        .await
        .map(|r| r.map(|addrs| addrs.collect::<Vec<_>>()));
    let fail = |detail: String| {
        (
            LayerReport::failed(
                "dns",
                started,
                detail,
                Some(fix.to_owned()),
                json!({"host": host}),
            ),
            None,
        )
    };
    match lookup {
        Err(_) => fail(format!(
            "resolving {what} {host} took more than {} s",
            DNS_LIMIT.as_secs()
        )),
        Ok(Err(e)) => fail(format!("cannot resolve {what} {host}: {e}")),
        Ok(Ok(addrs)) if addrs.is_empty() => fail(format!("{what} {host} resolves to no address")),
        Ok(Ok(addrs)) => {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            (
                LayerReport::ok(
                    "dns",
                    started,
                    format!("{what} {host} → {}", list.join(", ")),
                    json!({"host": host, "addresses": list}),
                ),
                Some(addrs),
            )
        }
    }
}

/// How a TCP connect to a list of addresses went.
pub enum TcpOutcome {
    Connected(tokio::net::TcpStream, SocketAddr),
    /// Every address answered with a refusal: the host is up, nothing listens on the port.
    Refused(Vec<String>),
    /// No answer, or the network said no route.
    Unreachable(Vec<String>),
}

/// Tries each address in turn, each within [`TCP_LIMIT`].
pub async fn tcp_connect(addrs: &[SocketAddr]) -> TcpOutcome {
    let mut refused = Vec::new();
    let mut other = Vec::new();
    for addr in addrs {
        match tokio::time::timeout(TCP_LIMIT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return TcpOutcome::Connected(stream, *addr),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused.push(format!("{addr}: {e}"))
            }
            Ok(Err(e)) => other.push(format!("{addr}: {e}")),
            Err(_) => other.push(format!(
                "{addr}: no answer within {} s",
                TCP_LIMIT.as_secs()
            )),
        }
    }
    if other.is_empty() {
        TcpOutcome::Refused(refused)
    } else {
        other.extend(refused);
        TcpOutcome::Unreachable(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LayerStatus;

    #[tokio::test]
    async fn an_ip_address_needs_no_resolution() {
        let (report, addrs) = dns_layer("127.0.0.1", 22, "the SSH host", "fix").await;
        assert_eq!(report.status, LayerStatus::Ok);
        assert!(report.detail.contains("nothing to resolve"));
        assert_eq!(addrs, Some(vec!["127.0.0.1:22".parse().unwrap()]));
    }

    #[tokio::test]
    async fn a_closed_loopback_port_is_a_refusal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(matches!(tcp_connect(&[addr]).await, TcpOutcome::Refused(_)));
    }
}
