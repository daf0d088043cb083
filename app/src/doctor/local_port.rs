//! The doctor's local-port layer: whether the loopback port this profile's local forwards would listen on is free, or held by this profile's own agent (asked over its control socket), or by whom.

use std::time::Instant;

use clawlink_core::transport::diagnosis::LOCAL_PORT_LAYER;
use clawlink_core::transport::Stopped;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use super::{ports, Walk};
use crate::settings::Settings;

/// The local-port layer, where the transport's walk asks for it: `port` is where local
/// forwards of this profile (`clawlink tunnel`, `up`) would listen, `explicit` when the
/// profile names it.
pub(super) async fn layer(
    walk: &mut Walk,
    settings: &Settings,
    port: u16,
    explicit: bool,
) -> Result<(), Stopped> {
    let started = Instant::now();
    match ports::check_loopback_port(port) {
        ports::PortState::Free => {
            walk.pass(
                LOCAL_PORT_LAYER,
                started,
                format!(
                    "127.0.0.1:{port} is free for `clawlink tunnel`{}",
                    if explicit { "" } else { " (the default; clawlink's own connection needs no local port: it rides an SSH channel)" }
                ),
                json!({"port": port, "explicit": explicit, "free": true}),
            );
            Ok(())
        }
        ports::PortState::Taken {
            address,
            error,
            holders,
            hidden_owner_uids,
        } => {
            // The profile's own agent holding its forward is the healthy case. It is ours
            // only when both agree: the agent (asked on its control socket, whose peer UID
            // is checked) says it forwards this port, and the kernel says its pid holds it.
            // Only then does the doctor talk to the port, and even then sends no credential.
            let agent = crate::agent::ask(settings, &crate::control::Request::Status)
                .await
                .ok()
                .flatten();
            if let Some(forward) = agent
                .as_ref()
                .and_then(|a| agent_forward(a, port, &holders))
            {
                let through = probe_agent_forward(port).await;
                walk.pass(
                    LOCAL_PORT_LAYER,
                    started,
                    format!(
                        "{address} is this profile's agent's gateway forward (pid {}, socket {}) · {through}",
                        forward.pid, forward.socket
                    ),
                    json!({"port": port, "explicit": explicit, "free": false, "heldByAgent": {"pid": forward.pid, "socket": forward.socket}, "throughForward": through}),
                );
                return Ok(());
            }
            let who = describe_holders(&holders, &hidden_owner_uids);
            let data = json!({"port": port, "explicit": explicit, "free": false, "address": address, "holders": holders, "hiddenOwnerUids": hidden_owner_uids});
            if !explicit {
                walk.pass(
                    LOCAL_PORT_LAYER,
                    started,
                    format!("the default tunnel port {address} is {who}; `clawlink tunnel` and `clawlink up` would fall back to a free port, and clawlink's own connection needs none"),
                    data,
                );
                return Ok(());
            }
            let stop = match holders.first() {
                Some(h) => format!(
                    "stop {} (pid {}) if it is a leftover — `kill {}` —, or",
                    h.comm, h.pid, h.pid
                ),
                None => "free it, or".into(),
            };
            Err(walk.fail(
                LOCAL_PORT_LAYER,
                started,
                format!("{address} (local_port) is {who} ({error})"),
                Some(format!(
                    "{stop} pick another port with --local-port N / local_port; `clawlink tunnel` and `clawlink up` would fall back to a free port by themselves (and say which)"
                )),
                data,
            ))
        }
    }
}

/// The running agent's gateway forward on `port`, as the agent reported it.
#[derive(Debug, PartialEq, Eq)]
struct AgentForward {
    pid: u32,
    socket: String,
}

/// The agent's forward on `port`, when the agent's `status` lists a gateway endpoint on that
/// port and the agent's pid is among the processes the kernel says hold it.
fn agent_forward(status: &Value, port: u16, holders: &[ports::Holder]) -> Option<AgentForward> {
    let pid = u32::try_from(status.get("pid")?.as_u64()?).ok()?;
    let forwards_port = status
        .pointer("/transport/localEndpoints")?
        .as_array()?
        .iter()
        .filter(|e| e["purpose"] == "gateway")
        .filter_map(|e| e["url"].as_str())
        .any(|url| {
            url.trim_end_matches('/')
                .ends_with(&format!("127.0.0.1:{port}"))
        });
    let holds = holders.iter().any(|h| h.pid == pid);
    (forwards_port && holds).then(|| AgentForward {
        pid,
        socket: status["socket"].as_str().unwrap_or("?").to_owned(),
    })
}

/// Checks the agent's forward end to end without credentials: the gateway's HTTP `/health`
/// (liveness, no auth) through it. Plain HTTP, not a WebSocket: a socket that upgrades and
/// leaves before `connect` is logged by the gateway as a warning.
async fn probe_agent_forward(port: u16) -> String {
    use tokio::io::AsyncWriteExt;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: clawlink-doctor/{}\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(16 * 1024)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(super::HTTP_ANSWER_LIMIT, exchange).await {
        Err(_) => "its forward did not answer in time".into(),
        Ok(Err(e)) => format!("its forward broke the connection: {e}"),
        Ok(Ok(answer)) => {
            let status = answer.lines().next().unwrap_or_default().trim().to_owned();
            let body = answer
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.trim())
                .unwrap_or_default();
            if status.contains(" 200") && body.contains("\"ok\":true") {
                "through it the gateway's /health answers ok".into()
            } else {
                format!("through it the gateway's /health answered {status:?}")
            }
        }
    }
}

fn describe_holders(holders: &[ports::Holder], hidden_uids: &[u32]) -> String {
    if !holders.is_empty() {
        let list: Vec<String> = holders
            .iter()
            .map(|h| format!("{} (pid {})", h.comm, h.pid))
            .collect();
        return format!("held by {}", list.join(", "));
    }
    if !hidden_uids.is_empty() {
        let uids: Vec<String> = hidden_uids.iter().map(|u| u.to_string()).collect();
        return format!(
            "held by a process of another user (uid {}; `sudo ss -ltnp` names it)",
            uids.join(", ")
        );
    }
    "already in use".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_named_with_pid() {
        let holders = vec![ports::Holder {
            pid: 42,
            comm: "node".into(),
        }];
        assert_eq!(describe_holders(&holders, &[]), "held by node (pid 42)");
        assert!(describe_holders(&[], &[0]).contains("another user"));
    }

    #[test]
    fn a_port_is_the_agents_only_when_the_agent_and_the_kernel_agree() {
        let status = json!({
            "pid": 42,
            "socket": "/run/user/1000/clawlink/work.sock",
            "transport": {"localEndpoints": [
                {"purpose": "gateway", "url": "ws://127.0.0.1:18789"},
                {"purpose": "widget sandbox", "url": "http://127.0.0.1:18790"},
            ]},
        });
        let agent = vec![ports::Holder {
            pid: 42,
            comm: "clawlink".into(),
        }];
        let other = vec![ports::Holder {
            pid: 7,
            comm: "clawlink".into(),
        }];
        assert_eq!(
            agent_forward(&status, 18789, &agent),
            Some(AgentForward {
                pid: 42,
                socket: "/run/user/1000/clawlink/work.sock".into()
            })
        );
        // Another process on the port the agent claims, or the agent on another port: not it.
        assert_eq!(agent_forward(&status, 18789, &other), None);
        assert_eq!(agent_forward(&status, 18790, &agent), None);
        assert_eq!(agent_forward(&status, 1878, &agent), None);
    }
}
