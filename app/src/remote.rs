//! The remote-mode commands: `clawlink test` (the seed's "Test remote", done right), `clawlink tunnel`, `clawlink ssh trust`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clawlink_core::gateway::GatewayClient;
use clawlink_core::transport::{RemoteOutput, Transport, TransportError};
use clawlink_transport_ssh::forward::{self, ForwardSpec};
use clawlink_transport_ssh::{exec, SshTunnel};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::GlobalArgs;
use crate::connect;
use crate::failure::Failure;
use crate::prompt::AppPrompter;
use crate::settings::Settings;
use crate::signals::shutdown_signal;

/// One step of `clawlink test`.
#[derive(Debug, Serialize)]
pub(crate) struct Step {
    pub(crate) step: &'static str,
    pub(crate) ok: bool,
    pub(crate) ms: u64,
    pub(crate) detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub(crate) data: Value,
}

impl Step {
    fn ok(step: &'static str, started: Instant, detail: String, data: Value) -> Self {
        Self {
            step,
            ok: true,
            ms: ms(started),
            detail,
            fix: None,
            data,
        }
    }

    fn failed(step: &'static str, started: Instant, detail: String, fix: Option<String>) -> Self {
        Self {
            step,
            ok: false,
            ms: ms(started),
            detail,
            fix,
            data: Value::Null,
        }
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// The profile's SSH tunnel, when it uses one.
pub fn ssh_tunnel(settings: &Settings) -> Result<Option<Arc<SshTunnel>>, Failure> {
    if settings.profile.transport_name() != clawlink_transport_ssh::NAME {
        return Ok(None);
    }
    let raw = settings
        .profile
        .transport_settings(clawlink_transport_ssh::NAME);
    let parsed = SshTunnel::parse_settings(&raw)?;
    Ok(Some(Arc::new(SshTunnel::new(
        parsed,
        Arc::new(AppPrompter::from_environment()),
    )?)))
}

/// `clawlink test`.
pub async fn test(global: &GlobalArgs, settings: &Settings, remote_status: bool) -> Result<()> {
    let options = connect::operator_options(global, settings).await?;
    let mut steps = Vec::new();
    // Keywords of the SSH config that `ssh` would act on but the in-process client does not
    // (the system ssh of the openssh backend reads the file itself).
    let mut ignored: Option<(String, Vec<String>)> = None;
    match ssh_tunnel(settings)? {
        Some(tunnel) => {
            if tunnel.openssh().is_none() {
                if let Ok((resolved, _)) = tunnel.resolve() {
                    let file = tunnel
                        .settings()
                        .ssh_config
                        .as_ref()
                        .map(|f| f.display().to_string())
                        .unwrap_or_else(|| "~/.ssh/config".into());
                    ignored = Some((file, resolved.ignored));
                }
            }
            let started = Instant::now();
            let reached = match tunnel.openssh() {
                Some(ssh) => ssh.run("true", Duration::from_secs(30)).await.map(|_| {
                    Step::ok(
                        "ssh",
                        started,
                        format!(
                            "{} · system ssh (openssh backend) connected and authenticated",
                            tunnel.target()
                        ),
                        json!({"backend": "openssh"}),
                    )
                }),
                None => tunnel
                    .session()
                    .await
                    .map(|session| ssh_step(started, &session.info)),
            };
            match reached {
                Err(e) => steps.push(Step::failed(
                    "ssh",
                    started,
                    e.message.clone(),
                    e.fix.clone(),
                )),
                Ok(step) => {
                    steps.push(step);
                    // The CLI check and the gateway check share the SSH connection and run
                    // side by side: a missing CLI must not hide a healthy gateway.
                    let transport: Arc<dyn Transport> = tunnel.clone();
                    let (cli, gateway) = tokio::join!(
                        remote_cli_step(&tunnel, remote_status),
                        gateway_step(transport, options)
                    );
                    steps.push(cli);
                    steps.push(gateway);
                    tunnel.close().await;
                }
            }
        }
        None => {
            let transport = connect::build_transport(settings)?;
            steps.push(gateway_step(transport, options).await);
        }
    }
    let ok = steps.iter().all(|s| s.ok);
    if global.json {
        let mut report = json!({"ok": ok, "steps": steps});
        if let Some((file, keywords)) = &ignored {
            report["ignoredSshConfig"] = json!({"file": file, "keywords": keywords});
        }
        println!("{report}");
    } else {
        for s in &steps {
            crate::terminal::println_safe!(
                "{:<11} {:<6} {:>6} ms  {}",
                s.step,
                if s.ok { "ok" } else { "FAILED" },
                s.ms,
                s.detail
            );
            if let Some(fix) = &s.fix {
                crate::terminal::println_safe!("{:<11} {:<6} {:>9}  fix: {fix}", "", "", "");
            }
        }
        if steps.len() == 1 && steps[0].ok {
            println!("(no SSH steps: this profile connects directly)");
        }
        if let Some((file, keywords)) = ignored.filter(|(_, k)| !k.is_empty()) {
            println!(
                "note: {file} sets keywords for this host that ssh would act on but clawlink's in-process SSH ignores: {}. \
                 To have them applied, use the system ssh: backend = \"openssh\" in [PROFILE.transports.ssh_tunnel]",
                keywords.join(", ")
            );
        }
    }
    if ok {
        Ok(())
    } else {
        Err(Failure {
            layer: steps
                .iter()
                .find(|s| !s.ok)
                .map(|s| s.step.to_string())
                .unwrap_or_default(),
            message: "the connection test failed (see the steps above)".into(),
            fix: None,
            exit_code: 1,
            json: Value::Null,
        }
        .into())
    }
}

fn ssh_step(started: Instant, info: &clawlink_transport_ssh::SessionInfo) -> Step {
    let host_key = info
        .host_key
        .as_ref()
        .map(|t| format!("host key {} ({})", t.fingerprint, t.how))
        .unwrap_or_default();
    Step::ok(
        "ssh",
        started,
        format!(
            "{} · {host_key} · auth: {}",
            info.endpoint, info.auth_method
        ),
        json!({
            "backend": "russh",
            "endpoint": info.endpoint,
            "tcpMs": info.tcp.as_millis() as u64,
            "handshakeMs": info.handshake.as_millis() as u64,
            "authMs": info.auth.as_millis() as u64,
            "hostKey": info.host_key.as_ref().map(|t| json!({"fingerprint": t.fingerprint, "trustedBy": t.how})),
            "auth": info.auth_method,
        }),
    )
}

pub(crate) async fn remote_cli_step(tunnel: &SshTunnel, remote_status: bool) -> Step {
    let started = Instant::now();
    let (args, limit): (&[&str], _) = if remote_status {
        (&["status", "--json"], Duration::from_secs(90))
    } else {
        (&["--version"], Duration::from_secs(30))
    };
    let host = tunnel.target().host.clone();
    let output = match tunnel.run_cli(args, limit).await {
        Ok(output) => output,
        Err(e) => return Step::failed("remote-cli", started, e.message, e.fix),
    };
    match output.exit_code {
        Some(0) => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            if remote_status {
                summarize_status(started, &stdout)
            } else {
                let version = stdout.lines().next().unwrap_or("").trim().to_owned();
                Step::ok(
                    "remote-cli",
                    started,
                    version.clone(),
                    json!({"version": version}),
                )
            }
        }
        Some(exec::NOT_FOUND) => cli_missing(started, &output, &host),
        code => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            Step::failed(
                "remote-cli",
                started,
                format!(
                    "openclaw {} exited with {}: {}",
                    args.join(" "),
                    code.map(|c| c.to_string())
                        .unwrap_or_else(|| "a signal".into()),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ),
                Some("run the same command on the host to see the full error".into()),
            )
        }
    }
}

fn cli_missing(started: Instant, output: &RemoteOutput, host: &str) -> Step {
    let (detail, fix) = explain_exit_127(&String::from_utf8_lossy(&output.stderr), host);
    Step::failed(
        "remote-cli",
        started,
        format!("exit 127: {detail} on {host}"),
        Some(fix),
    )
}

/// What an exit 127 of the remote CLI script means, from the marker line it printed on
/// stderr (project root missing, node missing, or the CLI itself), and how to fix it.
pub(crate) fn explain_exit_127(stderr: &str, host: &str) -> (String, String) {
    let line = |marker: &str| {
        stderr
            .lines()
            .find(|l| l.contains(marker))
            .map(|l| l.replace(&format!("{marker}: "), ""))
    };
    if let Some(detail) = line(exec::MARK_NO_PROJECT) {
        return (
            detail,
            "fix project_root (--project-root) to the directory of the openclaw checkout on the host".into(),
        );
    }
    if let Some(detail) = line(exec::MARK_NO_NODE) {
        return (
            detail,
            "install Node.js ≥ 24 on the host so that non-interactive shells find it (e.g. in /usr/local/bin)".into(),
        );
    }
    let detail = line(exec::MARK_NO_CLI).unwrap_or_else(|| stderr.trim().to_owned());
    (
        detail,
        format!(
            "on {host}, link it into a standard directory: `sudo ln -s \"$(command -v openclaw)\" /usr/local/bin/openclaw` \
             (run in an interactive shell there); or set cli_path (--cli-path) to its full path; or add its directory to \
             PATH in ~/.profile / ~/.zshenv, which non-interactive shells read"
        ),
    )
}

fn summarize_status(started: Instant, stdout: &str) -> Step {
    let Some(json) = stdout
        .find('{')
        .and_then(|i| serde_json::from_str::<Value>(&stdout[i..]).ok())
    else {
        return Step::failed(
            "remote-cli",
            started,
            "openclaw status --json printed no JSON".into(),
            Some("run `openclaw status --json` on the host to see what it prints".into()),
        );
    };
    let version = json["runtimeVersion"].as_str().unwrap_or("?");
    let reachable = json.pointer("/gateway/reachable").and_then(Value::as_bool);
    let sessions = json
        .pointer("/sessions/count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let gateway = match reachable {
        Some(true) => "gateway reachable",
        Some(false) => "gateway NOT reachable from the host",
        None => "gateway state unknown",
    };
    let detail = format!(
        "openclaw {version} · {gateway} · {}",
        crate::human::count(sessions, "session")
    );
    let data =
        json!({"runtimeVersion": version, "gatewayReachable": reachable, "sessions": sessions});
    if reachable == Some(false) {
        let mut step = Step::failed(
            "remote-cli",
            started,
            detail,
            Some("start the gateway on the host: `openclaw gateway run`".into()),
        );
        step.data = data;
        return step;
    }
    Step::ok("remote-cli", started, detail, data)
}

async fn gateway_step(
    transport: Arc<dyn Transport>,
    options: clawlink_core::gateway::ClientOptions,
) -> Step {
    let started = Instant::now();
    let client = match GatewayClient::connect(transport, options).await {
        Ok(client) => client,
        Err(e) => {
            let failure = Failure::from(e);
            return Step::failed(
                "gateway",
                started,
                format!("{}: {}", failure.layer, failure.message),
                failure.fix,
            );
        }
    };
    let handshake_ms = ms(started);
    let health_started = Instant::now();
    let health = client.request("health", Value::Null).await;
    let health_ms = ms(health_started);
    let hello = client.hello().expect("connected");
    // The tunnel's SSH session is shared with the other steps: close only the WebSocket.
    let step = match health {
        Ok(health) => {
            let auth = hello.auth.method.clone().unwrap_or_else(|| "?".into());
            Step::ok(
                "gateway",
                started,
                format!(
                    "openclaw {} · auth {auth} (device paired) · health {} (ping {health_ms} ms)",
                    hello.server.version,
                    if health["ok"] == true { "ok" } else { "NOT ok" }
                ),
                json!({"server": hello.server.version, "auth": auth, "handshakeMs": handshake_ms, "healthMs": health_ms, "paired": hello.auth.device_token.is_some()}),
            )
        }
        Err(e) => {
            let failure = Failure::from(e);
            Step::failed(
                "gateway",
                started,
                format!("{}: {}", failure.layer, failure.message),
                failure.fix,
            )
        }
    };
    client.shutdown().await;
    step
}

/// `clawlink tunnel`.
pub async fn tunnel(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let Some(tunnel) = ssh_tunnel(settings)? else {
        return Err(Failure::config(
            format!(
                "`clawlink tunnel` forwards over SSH, but profile {:?} uses the {} transport",
                settings.profile_name,
                settings.profile.transport_name()
            ),
            Some(
                "pass --ssh user@host, or select a profile with transport = \"ssh-tunnel\"".into(),
            ),
        )
        .into());
    };
    if tunnel.openssh().is_none() {
        // Fail fast (host key, auth) before binding anything.
        tunnel.session().await.map_err(Failure::from)?;
    }
    let [gateway, sandbox] = bind_forwards(&tunnel).await?;
    let forwards = vec![gateway, sandbox];
    tunnel.set_local_endpoints(forwards.iter().flat_map(|f| f.endpoints()).collect());

    let stop = match tunnel.openssh() {
        Some(ssh) => {
            // We keep the listeners and relay to ssh's private Unix sockets: a port released
            // for `ssh -L` could be taken by another local user before ssh binds it.
            let remote_ports: Vec<u16> = forwards.iter().map(|f| f.spec.remote_port).collect();
            let sockets = clawlink_transport_ssh::openssh::ForwardSockets::new(&remote_ports)
                .map_err(Failure::from)?;
            let child = ssh.start_forwards(&sockets).await.map_err(Failure::from)?;
            print_forwards(global, &tunnel, &forwards);
            let serving = tokio::spawn(forward::serve_to_sockets(forwards, sockets.paths.clone()));
            let stop = supervise_openssh(&tunnel, child).await;
            serving.abort();
            stop?
        }
        None => {
            print_forwards(global, &tunnel, &forwards);
            let serving = tokio::spawn(forward::serve(tunnel.clone(), forwards));
            // The real reason (host key, auth) when SSH cannot be restored.
            let stop = tokio::select! {
                stop = shutdown_signal() => Ok(stop),
                lost = keep_ssh_up(tunnel.clone()) => Err(lost),
            };
            serving.abort();
            tunnel.close().await;
            stop.map_err(Failure::from)?
        }
    };
    tracing::info!("{stop}: tunnel closed");
    Ok(())
}

/// Binds the loopback listeners of the gateway forward and of the Control UI's widget
/// sandbox (the gateway port + 1, which moves with it).
pub async fn bind_forwards(tunnel: &SshTunnel) -> Result<[forward::BoundForward; 2], Failure> {
    let remote = tunnel.settings().remote_port;
    let gateway = forward::bind(ForwardSpec {
        purpose: "gateway".into(),
        preferred_local_port: tunnel.settings().local_port,
        remote_port: remote,
    })
    .await
    .map_err(Failure::from)?;
    let sandbox = forward::bind(ForwardSpec {
        purpose: "widget sandbox".into(),
        preferred_local_port: gateway.local_port.saturating_add(1),
        remote_port: remote.saturating_add(1),
    })
    .await
    .map_err(Failure::from)?;
    Ok([gateway, sandbox])
}

fn print_forwards(global: &GlobalArgs, tunnel: &SshTunnel, forwards: &[forward::BoundForward]) {
    let listen = |f: &forward::BoundForward| -> Vec<String> {
        match f.addresses() {
            addresses if addresses.is_empty() => vec![format!("127.0.0.1:{}", f.local_port)],
            addresses => addresses.iter().map(|a| a.to_string()).collect(),
        }
    };
    if global.json {
        let list: Vec<Value> = forwards
            .iter()
            .map(|f| {
                json!({
                    "purpose": f.spec.purpose,
                    "url": f.endpoints()[0].url,
                    "localPort": f.local_port,
                    "remotePort": f.spec.remote_port,
                    "listen": listen(f),
                    "fallback": f.fallback_reason,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"ok": true, "target": tunnel.target().to_string(), "forwards": list})
        );
    } else {
        for f in forwards {
            if let Some(reason) = &f.fallback_reason {
                eprintln!("note: {reason}; using port {} instead", f.local_port);
            }
            println!(
                "{:<15} {}  (listening on {}, → 127.0.0.1:{} on {})",
                f.spec.purpose,
                f.endpoints()[0].url,
                listen(f).join(" and "),
                f.spec.remote_port,
                tunnel.target()
            );
        }
        println!("forwarding until Ctrl-C");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Keeps the openssh backend's `ssh -N -L` child alive (restarting it with backoff on the
/// same sockets) until a signal; failures a retry cannot fix end the command.
async fn supervise_openssh(
    tunnel: &SshTunnel,
    mut child: clawlink_transport_ssh::openssh::ForwardChild,
) -> Result<&'static str, Failure> {
    let ssh = tunnel.openssh().expect("openssh backend");
    let sockets = child.sockets().clone();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            stop = &mut signal => {
                child.stop().await;
                return Ok(stop);
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if child.is_running() {
            continue;
        }
        eprintln!(
            "clawlink: ssh exited: {}; restarting it",
            child.stderr_tail().join(" / ")
        );
        child = tokio::select! {
            stop = &mut signal => return Ok(stop),
            next = restore(|| ssh.start_forwards(&sockets)) => next.map_err(Failure::from)?,
        };
        eprintln!("clawlink: ssh forward restored");
    }
}

/// Retries `attempt` with capped, jittered backoff until it succeeds or fails with an error
/// retrying cannot fix (host key, auth), saying each time what failed. Callers stop it by
/// dropping the future (on a signal).
async fn restore<T, Fut>(mut attempt: impl FnMut() -> Fut) -> Result<T, TransportError>
where
    Fut: std::future::Future<Output = Result<T, TransportError>>,
{
    let backoff = clawlink_core::gateway::Backoff::default();
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if !e.kind.is_retryable() => return Err(e),
            Err(e) => {
                let delay = backoff.delay(failures);
                failures += 1;
                eprintln!(
                    "clawlink: {} (retrying in {:.1}s)",
                    e.message,
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Notices a lost SSH connection and restores it (the listeners stay bound; connections
/// accepted meanwhile wait for the new session). Returns only with an error retrying cannot
/// fix (host key, auth).
pub async fn keep_ssh_up(tunnel: Arc<SshTunnel>) -> TransportError {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if tunnel.is_connected().await {
            continue;
        }
        eprintln!(
            "clawlink: SSH connection to {} lost; reconnecting",
            tunnel.target()
        );
        match restore(|| tunnel.session()).await {
            Ok(_) => eprintln!("clawlink: SSH connection restored"),
            Err(e) => return e,
        }
    }
}
