//! `peer start` / `peer stop`: the whole harness (port of shared/peer/start.sh and stop.sh).
//!
//! Starts, on free 127.0.0.1 ports: the stub model, gateways `main` (token) and
//! `pw` (password) concurrently, a key-only sshd, and the fake macOS node
//! (approved through the real CLI). Writes `<prefix>/run/env` and `run/pids`.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::gateway::{self, Auth, Launch};
use super::procs::{self, PidEntry};
use super::{script, users, EnvFile, Gateway, Layout, USER_WITHOUT_OPENCLAW, USER_WITH_OPENCLAW};
use crate::http::port_listening;
use crate::util::{
    detach, output_with_timeout, random_hex, run_command, say, secs, set_mode, tail,
    write_file_mode,
};

/// Where the port search starts (away from OpenClaw's default 18789, which may be in use).
const PORT_SEARCH_BASE: u16 = 28789;
/// A gateway derives more ports from its own (browser control = port + 2, …), so each
/// gateway gets a block of free ports to itself.
const GATEWAY_PORT_BLOCK: u16 = 10;

#[derive(Debug, PartialEq, Eq)]
struct Ports {
    main: u16,
    pw: u16,
    tls: u16,
    tlsca: u16,
    stub: u16,
    ssh: u16,
}

/// `peer start`; the env (with the secrets) goes to stdout and to the 0600 env file.
pub fn start(layout: &Layout) -> Result<()> {
    super::require_root("start")?;
    check_installed(layout)?;
    stop(layout)?;
    let result = start_all(layout);
    if result.is_err() {
        // Leave nothing half-started behind; the logs in run/ stay for diagnosis.
        say("peer", "start failed; stopping what was started");
        let _ = stop(layout);
    }
    print!("{}", result?.render());
    Ok(())
}

fn check_installed(layout: &Layout) -> Result<()> {
    let missing = [
        layout.node_bin(),
        layout.openclaw_mjs(),
        layout.offline_guard(),
        layout.host_key(),
    ]
    .into_iter()
    .find(|path| !path.exists());
    if let Some(path) = missing {
        bail!(
            "{} is missing: run `cargo xtask peer install` first",
            path.display()
        );
    }
    for user in [USER_WITH_OPENCLAW, USER_WITHOUT_OPENCLAW] {
        match users::lookup(user) {
            Some(info) if info.home == layout.home(user) => {}
            _ => bail!("user {user} is missing or has its home elsewhere: run `cargo xtask peer install` first"),
        }
    }
    Ok(())
}

fn start_all(layout: &Layout) -> Result<EnvFile> {
    let started = Instant::now();
    let run_dir = layout.run_dir();
    fs::create_dir_all(&run_dir)?;
    set_mode(&run_dir, 0o755)?;
    write_file_mode(&layout.pids_file(), b"", 0o644)?;
    // Per-run request logs, so a test only sees its own run's traffic.
    let stub_log = run_dir.join("stub-requests.jsonl");
    let fake_node_invokes = run_dir.join("fake-node-invokes.jsonl");
    for log in [&stub_log, &fake_node_invokes] {
        write_file_mode(log, b"", 0o644)?;
    }
    let fresh = std::env::var("CLAWLINK_PEER_FRESH").map_or(true, |v| v != "0");
    let with_fake_node = std::env::var("CLAWLINK_PEER_FAKE_NODE").map_or(true, |v| v != "0");

    let ports = pick_ports(PORT_SEARCH_BASE)?;
    let token = random_hex(24)?;
    let password = random_hex(16)?;

    start_stub(layout, ports.stub, &stub_log)?;

    let mut launches = Vec::new();
    for (gateway, port, auth) in [
        (Gateway::Main, ports.main, Auth::Token(token.clone())),
        (Gateway::Pw, ports.pw, Auth::Password(password.clone())),
        (Gateway::Tls, ports.tls, Auth::Token(token.clone())),
        (Gateway::TlsCa, ports.tlsca, Auth::Token(token.clone())),
    ] {
        gateway::prepare_state(layout, gateway, port, &auth, ports.stub, fresh)?;
        let entry = gateway::spawn(layout, gateway, port, true)?;
        launches.push(Launch {
            gateway,
            entry,
            port,
        });
    }
    // sshd starts while the gateways boot (they take 15-25 s).
    start_sshd(layout, ports.ssh)?;
    gateway::wait_ready(layout, &launches)?;

    let node_id = if with_fake_node {
        start_fake_node(layout, ports.main, &token, &fake_node_invokes)?
    } else {
        String::new()
    };

    let env = env_file(layout, &ports, &token, &password, &launches, &node_id)?;
    env.save(&layout.env_file())?;
    say(
        "peer",
        format!(
            "all up in {}; env file {}",
            secs(started.elapsed()),
            layout.env_file().display()
        ),
    );
    Ok(env)
}

/// `peer stop`: only the processes `start` recorded, then forget them.
pub fn stop(layout: &Layout) -> Result<()> {
    super::require_root("stop")?;
    let pids_file = layout.pids_file();
    let entries = procs::read_pids(&pids_file);
    if entries.is_empty() {
        say("peer", "nothing recorded to stop");
    } else {
        let started = Instant::now();
        procs::stop_entries(&entries, "peer");
        say("peer", format!("stopped in {}", secs(started.elapsed())));
    }
    match fs::remove_file(&pids_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Free ports from `base` upward: a block per gateway, then one each for stub and sshd.
fn pick_ports(base: u16) -> Result<Ports> {
    let mut cursor = base;
    let mut next_block = |size: u16| -> Result<u16> {
        while cursor.checked_add(size).is_some() {
            let start = cursor;
            if (start..start + size).all(port_free) {
                cursor = start + size;
                return Ok(start);
            }
            cursor += 1;
        }
        bail!("no free block of {size} loopback ports above {base}")
    };
    Ok(Ports {
        main: next_block(GATEWAY_PORT_BLOCK)?,
        pw: next_block(GATEWAY_PORT_BLOCK)?,
        tls: next_block(GATEWAY_PORT_BLOCK)?,
        tlsca: next_block(GATEWAY_PORT_BLOCK)?,
        stub: next_block(1)?,
        ssh: next_block(1)?,
    })
}

/// Free on 127.0.0.1 and on [::1] (the gateway's loopback bind opens both).
fn port_free(port: u16) -> bool {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        return false;
    }
    match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
        Ok(_) => true,
        // No IPv6 on this host: only IPv4 matters then.
        Err(e) => e.kind() == std::io::ErrorKind::AddrNotAvailable,
    }
}

fn open_log(path: &Path) -> Result<fs::File> {
    fs::File::create(path).with_context(|| format!("creating {}", path.display()))
}

fn python3() -> PathBuf {
    // The system python (not a pyenv shim that depends on root's environment).
    let system = PathBuf::from("/usr/bin/python3");
    if system.exists() {
        system
    } else {
        PathBuf::from("python3")
    }
}

/// Waits for a daemon's port; fails early if the daemon dies.
fn wait_listening(entry: &PidEntry, port: u16, what: &str, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !port_listening(port) {
        if !entry.alive() || Instant::now() > deadline {
            eprintln!(
                "--- last 30 lines of {} ---\n{}",
                log.display(),
                tail(log, 30)
            );
            bail!("{what} did not start on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn start_stub(layout: &Layout, port: u16, request_log: &Path) -> Result<()> {
    let log = layout.run_dir().join("stub.log");
    let reply = std::env::var("OCPEER_STUB_REPLY").unwrap_or_else(|_| "stub reply".into());
    let log_file = open_log(&log)?;
    let mut cmd = Command::new(python3());
    cmd.arg(script("stub_model.py"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("STUB_PORT", port.to_string())
        .env("STUB_LOG", request_log)
        .env("STUB_REPLY", reply)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let child = detach(&mut cmd)
        .spawn()
        .context("starting the stub model")?;
    let entry = PidEntry::for_pid("stub", child.id());
    procs::record(&layout.pids_file(), entry.clone())?;
    wait_listening(&entry, port, "stub model", &log)?;
    say("peer", format!("stub model on 127.0.0.1:{port}"));
    Ok(())
}

fn start_sshd(layout: &Layout, port: u16) -> Result<()> {
    let config = format!(
        "# clawlink peer sshd: loopback only, key only.
Port {port}
ListenAddress 127.0.0.1
AddressFamily inet
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized}/%u
AllowUsers {USER_WITH_OPENCLAW} {USER_WITHOUT_OPENCLAW}
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The checkout may live under a world-writable directory (/tmp); StrictModes would then
# refuse the authorized_keys path. This sshd is loopback-only, key-only and test-only.
StrictModes no
AllowTcpForwarding local
GatewayPorts no
PermitTunnel no
X11Forwarding no
AllowAgentForwarding no
PrintMotd no
PrintLastLog no
UseDNS no
LogLevel VERBOSE
Subsystem sftp internal-sftp
# noclaw: a user whose non-interactive PATH lacks /usr/local/bin, so \"openclaw\" is not found (exit 127).
Match User {USER_WITHOUT_OPENCLAW}
    SetEnv PATH=/usr/bin:/bin
",
        host_key = layout.host_key().display(),
        authorized = layout.authorized_keys_dir().display(),
    );
    write_file_mode(&layout.sshd_config(), config.as_bytes(), 0o644)?;
    let host_pub = fs::read_to_string(layout.host_key_pub())?;
    let key_type_and_blob: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    write_file_mode(
        &layout.known_hosts(),
        format!("[127.0.0.1]:{port} {}\n", key_type_and_blob.join(" ")).as_bytes(),
        0o644,
    )?;
    // sshd's privilege-separation directory.
    fs::create_dir_all("/run/sshd")?;
    set_mode(Path::new("/run/sshd"), 0o755)?;
    run_command(
        Command::new("/usr/sbin/sshd")
            .arg("-t")
            .arg("-f")
            .arg(layout.sshd_config()),
    )
    .context("sshd config test failed")?;
    let log = layout.run_dir().join("sshd.log");
    write_file_mode(&log, b"", 0o644)?;
    let mut cmd = Command::new("/usr/sbin/sshd");
    cmd.arg("-D")
        .arg("-f")
        .arg(layout.sshd_config())
        .arg("-E")
        .arg(&log)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = detach(&mut cmd).spawn().context("starting sshd")?;
    let entry = PidEntry::for_pid("sshd", child.id());
    procs::record(&layout.pids_file(), entry.clone())?;
    wait_listening(&entry, port, "sshd", &log)?;
    say("peer", format!("sshd on 127.0.0.1:{port}"));
    Ok(())
}

/// The fake macOS node (offers `system.notify`) against gateway `main`, then its
/// command surface approved through the real CLI as an operator would.
fn start_fake_node(layout: &Layout, port: u16, token: &str, invokes: &Path) -> Result<String> {
    let log = layout.run_dir().join("fake-node.log");
    let log_file = open_log(&log)?;
    let mut cmd = Command::new(layout.node_bin());
    cmd.arg(script("fake_node.mjs"))
        .arg("--url")
        .arg(format!("ws://127.0.0.1:{port}"))
        .arg("--key")
        .arg(layout.run_dir().join("fake-node-key.pem"))
        .arg("--log")
        .arg(invokes)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        // The token goes by env, never by argv (argv is world-readable in /proc).
        .env("FAKE_NODE_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let child = detach(&mut cmd).spawn().context("starting the fake node")?;
    let entry = PidEntry::for_pid("fake-node", child.id());
    procs::record(&layout.pids_file(), entry.clone())?;

    let deadline = Instant::now() + Duration::from_secs(20);
    let node_id = loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("NODE_ID=")) {
            break id.trim().to_string();
        }
        if !entry.alive() || Instant::now() > deadline {
            eprintln!(
                "--- last 30 lines of {} ---\n{}",
                log.display(),
                tail(&log, 30)
            );
            bail!("fake node did not connect");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    approve_node(layout, &node_id)?;
    say(
        "peer",
        format!("fake node {node_id} connected and approved"),
    );
    Ok(node_id)
}

/// Approves the node's pending request with `openclaw nodes pending/approve` as claw.
/// The request can show up a moment after the node's hello, hence the retries; with
/// CLAWLINK_PEER_FRESH=0 the node may already be approved from an earlier run.
fn approve_node(layout: &Layout, node_id: &str) -> Result<()> {
    for attempt in 1..=3 {
        let started = Instant::now();
        let pending = run_cli_json(layout, &["nodes", "pending", "--json"])?;
        let request_id = json_query(PICK_PENDING_REQUEST, &pending, node_id)?;
        say(
            "peer",
            format!(
                "nodes pending (attempt {attempt}) took {}",
                secs(started.elapsed())
            ),
        );
        if !request_id.is_empty() {
            run_cli_json(layout, &["nodes", "approve", &request_id, "--json"])?;
            return Ok(());
        }
        let listed = run_cli_json(layout, &["nodes", "list", "--json"])?;
        if json_query(IS_APPROVED, &listed, node_id)? == "yes" {
            say("peer", "fake node was already approved");
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!("fake node {node_id} never showed up as pending or approved")
}

/// Runs an openclaw CLI command as claw against gateway main; returns its stdout.
fn run_cli_json(layout: &Layout, args: &[&str]) -> Result<String> {
    let output = output_with_timeout(
        gateway::openclaw_cli(layout, Gateway::Main).args(args),
        Duration::from_secs(90),
    )?;
    if !output.status.success() {
        bail!(
            "`openclaw {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Prints the requestId of node argv[1] in `nodes pending --json` (a list, or
/// {"pending": [...]}), or nothing.
const PICK_PENDING_REQUEST: &str = r#"
items = data if isinstance(data, list) else data.get("pending") or []
print(next((p.get("requestId", "") for p in items
            if isinstance(p, dict) and p.get("nodeId") == node_id), ""))
"#;

/// Prints "yes" if node argv[1] is paired and approved in `nodes list --json`.
const IS_APPROVED: &str = r#"
items = data.get("paired") or [] if isinstance(data, dict) else []
print("yes" if any(isinstance(p, dict) and p.get("nodeId") == node_id
                   and p.get("approvalState") == "approved" for p in items) else "no")
"#;

/// Runs a python3 snippet on JSON printed by the openclaw CLI (`data`: the first JSON
/// value in it; `node_id`: the argument) and returns what it prints. JSON is parsed by
/// python3 (already a dependency for the stub) rather than by hand: the format is
/// openclaw's, and a real parser survives extra fields and log lines around it.
fn json_query(query: &str, cli_stdout: &str, node_id: &str) -> Result<String> {
    const LOAD_FIRST_JSON_VALUE: &str = r#"
import json, sys
raw = sys.stdin.read()
node_id = sys.argv[1]
starts = [i for i in (raw.find("{"), raw.find("[")) if i >= 0]
data = json.JSONDecoder().raw_decode(raw[min(starts):])[0] if starts else []
"#;
    let mut child = Command::new(python3())
        .arg("-c")
        .arg(format!("{LOAD_FIRST_JSON_VALUE}{query}"))
        .arg(node_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running python3 to parse openclaw's JSON")?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("python3 stdin")?
        .write_all(cli_stdout.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("could not parse the openclaw CLI's JSON output:\n{cli_stdout}");
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn env_file(
    layout: &Layout,
    ports: &Ports,
    token: &str,
    password: &str,
    launches: &[Launch],
    node_id: &str,
) -> Result<EnvFile> {
    let pid_of = |gateway: Gateway| {
        launches
            .iter()
            .find(|l| l.gateway == gateway)
            .map_or(0, |l| l.entry.pid)
    };
    let path = |p: PathBuf| p.display().to_string();
    let run_dir = layout.run_dir();
    let exe = std::env::current_exe().context("locating the xtask executable")?;
    let mut env = EnvFile::default();
    let pairs: Vec<(&str, String)> = vec![
        ("CLAWLINK_PEER_DIR", path(layout.prefix.clone())),
        ("CLAWLINK_XTASK_BIN", path(exe)),
        (
            "OCPEER_GATEWAY_URL",
            format!("ws://127.0.0.1:{}", ports.main),
        ),
        (
            "OCPEER_GATEWAY_HTTP",
            format!("http://127.0.0.1:{}", ports.main),
        ),
        ("OCPEER_GATEWAY_PORT", ports.main.to_string()),
        ("OCPEER_GATEWAY_TOKEN", token.to_string()),
        ("OCPEER_GATEWAY_PID", pid_of(Gateway::Main).to_string()),
        ("OCPEER_STATE_DIR", path(layout.state_dir(Gateway::Main))),
        (
            "OCPEER_GATEWAY_LOG",
            path(layout.gateway_json_log(Gateway::Main)),
        ),
        (
            "OCPEER_PW_GATEWAY_URL",
            format!("ws://127.0.0.1:{}", ports.pw),
        ),
        ("OCPEER_PW_GATEWAY_PORT", ports.pw.to_string()),
        ("OCPEER_PW_GATEWAY_PASSWORD", password.to_string()),
        ("OCPEER_PW_GATEWAY_PID", pid_of(Gateway::Pw).to_string()),
        ("OCPEER_PW_STATE_DIR", path(layout.state_dir(Gateway::Pw))),
        (
            "OCPEER_TLS_GATEWAY_URL",
            format!("wss://127.0.0.1:{}", ports.tls),
        ),
        ("OCPEER_TLS_GATEWAY_PORT", ports.tls.to_string()),
        ("OCPEER_TLS_GATEWAY_PID", pid_of(Gateway::Tls).to_string()),
        (
            "OCPEER_TLS_CERT",
            path(
                layout
                    .state_dir(Gateway::Tls)
                    .join("gateway/tls/gateway-cert.pem"),
            ),
        ),
        (
            "OCPEER_TLSCA_GATEWAY_URL",
            format!("wss://127.0.0.1:{}", ports.tlsca),
        ),
        ("OCPEER_TLSCA_GATEWAY_PORT", ports.tlsca.to_string()),
        (
            "OCPEER_TLSCA_GATEWAY_PID",
            pid_of(Gateway::TlsCa).to_string(),
        ),
        (
            "OCPEER_TLSCA_CA_CERT",
            path(super::pki::pki_files(layout).ca_cert),
        ),
        (
            "OCPEER_STUB_URL",
            format!("http://127.0.0.1:{}/v1", ports.stub),
        ),
        ("OCPEER_STUB_PORT", ports.stub.to_string()),
        ("OCPEER_STUB_LOG", path(run_dir.join("stub-requests.jsonl"))),
        ("OCPEER_SSH_HOST", "127.0.0.1".to_string()),
        ("OCPEER_SSH_PORT", ports.ssh.to_string()),
        ("OCPEER_SSH_USER", USER_WITH_OPENCLAW.to_string()),
        (
            "OCPEER_SSH_USER_NO_OPENCLAW",
            USER_WITHOUT_OPENCLAW.to_string(),
        ),
        ("OCPEER_SSH_KEY", path(layout.client_key())),
        ("OCPEER_SSH_KNOWN_HOSTS", path(layout.known_hosts())),
        ("OCPEER_SSH_HOST_KEY_PUB", path(layout.host_key_pub())),
        ("OCPEER_OPENCLAW_BIN", path(layout.openclaw_wrapper())),
        ("OCPEER_NODE_BIN", path(layout.node_bin())),
        ("OCPEER_FAKE_NODE_ID", node_id.to_string()),
        (
            "OCPEER_FAKE_NODE_LOG",
            path(run_dir.join("fake-node-invokes.jsonl")),
        ),
        ("OCPEER_LOG_DIR", path(run_dir)),
    ];
    for (key, value) in pairs {
        env.set(key, value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_distinct_free_ports_and_skips_busy_ones() {
        // Occupy a port and start the search right there: it must be skipped.
        let busy = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let busy_port = busy.local_addr().unwrap().port();
        let ports = pick_ports(busy_port).unwrap();
        assert!(ports.main > busy_port);
        assert!(ports.pw >= ports.main + GATEWAY_PORT_BLOCK);
        assert!(ports.tls >= ports.pw + GATEWAY_PORT_BLOCK);
        assert!(ports.stub >= ports.tlsca + GATEWAY_PORT_BLOCK);
        assert!(ports.ssh > ports.stub);
    }

    #[test]
    fn queries_openclaw_json() {
        let json = r#"{"pending":[{"requestId":"r1","nodeId":"other"},{"requestId":"r2","nodeId":"n1"}],"paired":[]}"#;
        assert_eq!(json_query(PICK_PENDING_REQUEST, json, "n1").unwrap(), "r2");
        assert_eq!(json_query(PICK_PENDING_REQUEST, json, "n9").unwrap(), "");
        let list = "warning: something\n[{\"requestId\":\"r3\",\"nodeId\":\"n1\"}]";
        assert_eq!(json_query(PICK_PENDING_REQUEST, list, "n1").unwrap(), "r3");
        assert_eq!(json_query(PICK_PENDING_REQUEST, "", "n1").unwrap(), "");
        let paired = r#"{"pending":[],"paired":[{"nodeId":"n1","approvalState":"approved"}]}"#;
        assert_eq!(json_query(IS_APPROVED, paired, "n1").unwrap(), "yes");
        assert_eq!(json_query(IS_APPROVED, paired, "n2").unwrap(), "no");
        assert_eq!(json_query(IS_APPROVED, "[]", "n1").unwrap(), "no");
    }
}
