//! The network fault harness: clawlink in a network namespace of its own, joined to the real peers through a veth pair whose link the tests can delay, drop, reject, cut and re-address.
//!
//! Layout (nothing is ever added to the root namespace):
//!
//! ```text
//!  client ns  <name>-c                 server ns  <name>-s                root ns
//!  nf-client 10.213.0.2/24  ══veth══  nf-server 10.213.0.1/24
//!  (clawlink runs here via             relay threads of THIS process:     127.0.0.1:<gateway port>
//!   `ip netns exec`)                   listen 10.213.0.1:<peer port>  ──▶ 127.0.0.1:<sshd port>
//! ```
//!
//! The relays are threads of the process that owns the [`FaultNet`]: each one enters the
//! server namespace with `setns`, binds its listener there, and returns to the root
//! namespace, so its accepted sockets live in the server namespace while its outbound
//! connects go to the peers on the root namespace's loopback. Traffic therefore only ever
//! flows between the two namespaces the harness made and to 127.0.0.1. Neither namespace
//! has a default route, so nothing else is reachable from them.
//!
//! Faults live inside the two namespaces too: `tc` qdiscs on the veth ends (netem, or tbf
//! for a rate when the kernel lacks netem), nftables tables (black hole, reject, loss
//! fallback), the veth link state and the client address. Deleting the namespaces therefore
//! deletes every fault; [`Drop`] stops the relays, kills any process still inside the
//! namespaces and deletes them, also while a failing test unwinds. A run that was killed
//! outright leaves namespaces named `clawlink-nf-<pid>-…`: the next [`FaultNet::create`]
//! removes those whose pid is gone, and `cargo xtask netns down` removes them all.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Peers;

/// Every namespace the harness makes starts with this (`cargo xtask netns down` sweeps it).
pub const NAMESPACE_PREFIX: &str = "clawlink-nf-";
/// The server end of the veth pair: where the relays listen, as seen from the client.
pub const SERVER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// The client end's address after [`FaultNet::create`].
pub const FIRST_CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
/// One /24 inside each pair of namespaces, so an address change stays on the link. Pairs
/// never see each other, so every pair uses the same addresses.
pub const PREFIX_LENGTH: u8 = 24;
/// The veth end in the client namespace (names are per namespace, so they can be fixed).
pub const CLIENT_DEVICE: &str = "nf-client";
/// The veth end in the server namespace.
pub const SERVER_DEVICE: &str = "nf-server";

/// How long one `ip`/`tc`/`nft` invocation may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the link may take to carry a connection after it is made or brought up.
const LINK_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// A relay stops by itself after this, even if its owner leaked the [`FaultNet`].
const RELAY_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How often a relay's blocking calls wake up to look at the stop flag.
const RELAY_POLL: Duration = Duration::from_millis(100);
/// Connections a relay carries at once; more are closed on accept.
const RELAY_MAX_CONNECTIONS: usize = 64;
/// The relay's connect to a peer on the root namespace's loopback.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Client addresses remembered by the relays (oldest dropped first).
const PEERS_REMEMBERED: usize = 256;

const BLACK_HOLE_TABLE: &str = "clawlink_black_hole";
const REJECT_TABLE: &str = "clawlink_reject";
const LOSS_TABLE: &str = "clawlink_loss";

/// A harness command that failed, or a fault this machine cannot produce.
#[derive(Debug)]
pub enum FaultError {
    /// The command line that ran and what went wrong (exit status and stderr, or a timeout).
    Command { command: String, detail: String },
    /// The fault needs something the kernel or the system lacks.
    Unsupported { fault: String, reason: String },
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultError::Command { command, detail } => write!(f, "`{command}` failed: {detail}"),
            FaultError::Unsupported { fault, reason } => {
                write!(f, "{fault} is not available on this machine: {reason}")
            }
        }
    }
}

impl std::error::Error for FaultError {}

/// Link impairment in each direction (so a 150 ms delay adds 300 ms to a round trip).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Netem {
    pub delay: Duration,
    /// Random variation around `delay` (netem's jitter).
    pub jitter: Duration,
    /// Share of packets dropped, 0–100.
    pub loss_percent: f64,
    /// Bandwidth cap in kbit/s.
    pub rate_kbit: Option<u32>,
}

/// State the relay threads share with their owner.
struct RelayState {
    stop: AtomicBool,
    deadline: Instant,
    live_connections: AtomicUsize,
    peers_seen: Mutex<Vec<SocketAddr>>,
}

/// A client namespace and a server namespace joined by a veth pair, with relays from the
/// server end to the real peers. Dropping it removes all of it.
pub struct FaultNet {
    id: u64,
    name: String,
    client_ns: String,
    server_ns: String,
    client_address: Mutex<Ipv4Addr>,
    gateway_port: u16,
    ssh_port: u16,
    relay_state: Arc<RelayState>,
    relays: Vec<JoinHandle<()>>,
}

impl FaultNet {
    /// Makes the namespaces, the veth pair and the relays to the running peers' main
    /// gateway and sshd, and waits (bounded) until the client reaches the gateway relay.
    /// Panics with the failing command: a test cannot do anything useful without its network.
    pub fn create(label: &str) -> FaultNet {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        remove_stale_namespaces();
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(24)
            .collect();
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAMESPACE_PREFIX}{}-{id}-{label}", std::process::id());
        let peers = Peers::get();
        let port = |key: &str| -> u16 {
            peers
                .var(key)
                .parse()
                .unwrap_or_else(|e| panic!("{key} in the peer env file is not a port: {e}"))
        };
        // Built before the first command so that Drop cleans up a half-made network too.
        let mut net = FaultNet {
            id,
            client_ns: format!("{name}-c"),
            server_ns: format!("{name}-s"),
            name,
            client_address: Mutex::new(FIRST_CLIENT_ADDRESS),
            gateway_port: port("OCPEER_GATEWAY_PORT"),
            ssh_port: port("OCPEER_SSH_PORT"),
            relay_state: Arc::new(RelayState {
                stop: AtomicBool::new(false),
                deadline: Instant::now() + RELAY_MAX_LIFETIME,
                live_connections: AtomicUsize::new(0),
                peers_seen: Mutex::new(Vec::new()),
            }),
            relays: Vec::new(),
        };
        if let Err(e) = net.build() {
            panic!("could not build the fault network {}: {e}", net.name);
        }
        net
    }

    fn build(&mut self) -> Result<(), FaultError> {
        require_tool("ip", "iproute2")?;
        let (client, server) = (self.client_ns.clone(), self.server_ns.clone());
        run("ip", &["netns", "add", &client])?;
        run("ip", &["netns", "add", &server])?;
        for ns in [&client, &server] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        // The pair is created inside the client namespace with its peer end moved straight
        // into the server namespace, so neither end ever exists in the root namespace.
        run(
            "ip",
            &[
                "-n",
                &client,
                "link",
                "add",
                CLIENT_DEVICE,
                "type",
                "veth",
                "peer",
                "name",
                SERVER_DEVICE,
                "netns",
                &server,
            ],
        )?;
        let server_cidr = format!("{SERVER_ADDRESS}/{PREFIX_LENGTH}");
        let client_cidr = format!("{FIRST_CLIENT_ADDRESS}/{PREFIX_LENGTH}");
        run(
            "ip",
            &[
                "-n",
                &server,
                "addr",
                "add",
                &server_cidr,
                "dev",
                SERVER_DEVICE,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &client,
                "addr",
                "add",
                &client_cidr,
                "dev",
                CLIENT_DEVICE,
            ],
        )?;
        run("ip", &["-n", &server, "link", "set", SERVER_DEVICE, "up"])?;
        run("ip", &["-n", &client, "link", "set", CLIENT_DEVICE, "up"])?;
        for port in [self.gateway_port, self.ssh_port] {
            let relay = start_relay(
                self.id,
                &server,
                SocketAddrV4::new(SERVER_ADDRESS, port),
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
                self.relay_state.clone(),
            )?;
            self.relays.push(relay);
        }
        self.wait_until_client_reaches_gateway()
    }

    /// Retries a TCP connect from the client namespace to the gateway relay until it works
    /// or [`LINK_READY_TIMEOUT`] passes.
    fn wait_until_client_reaches_gateway(&self) -> Result<(), FaultError> {
        let target = SocketAddr::from((SERVER_ADDRESS, self.gateway_port));
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < LINK_READY_TIMEOUT {
            match self.in_client(|| TcpStream::connect_timeout(&target, Duration::from_secs(1))) {
                Ok(_) => return Ok(()),
                Err(e) => last_error = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(FaultError::Command {
            command: format!("connect {target} from {}", self.client_ns),
            detail: format!("still failing after {LINK_READY_TIMEOUT:?}: {last_error}"),
        })
    }

    /// This network's number within the process (in its namespace and relay thread names).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The namespace clawlink runs in.
    pub fn client_namespace(&self) -> &str {
        &self.client_ns
    }

    /// The namespace that holds the relays' listeners.
    pub fn server_namespace(&self) -> &str {
        &self.server_ns
    }

    /// The client's current address on the veth link.
    pub fn client_address(&self) -> Ipv4Addr {
        *self.client_address.lock().unwrap()
    }

    /// `program` run inside the client namespace (through `ip netns exec`, which keeps the
    /// environment, so set it on the returned command as usual).
    pub fn client_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.client_ns]).arg(program);
        cmd
    }

    /// The clawlink binary inside the client namespace, isolated like
    /// [`crate::clawlink_command`] (its own data dir, HOME and config, no secrets inherited).
    pub fn clawlink_command(&self, data_dir: &Path) -> Command {
        crate::isolate_clawlink(self.client_command(crate::clawlink_bin()), data_dir)
    }

    /// Runs `f` on a thread inside the client namespace (sockets it opens live there).
    pub fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_namespace(&self.client_ns, f)
    }

    /// Runs `f` on a thread inside the server namespace.
    pub fn in_server<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_namespace(&self.server_ns, f)
    }

    /// The main gateway's port, relayed at [`SERVER_ADDRESS`].
    pub fn gateway_address(&self) -> SocketAddr {
        SocketAddr::from((SERVER_ADDRESS, self.gateway_port))
    }

    /// The peer sshd's port, relayed at [`SERVER_ADDRESS`].
    pub fn ssh_address(&self) -> SocketAddr {
        SocketAddr::from((SERVER_ADDRESS, self.ssh_port))
    }

    /// The main gateway's URL as seen from the client namespace.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}", self.gateway_address())
    }

    /// `user@10.213.0.1:PORT`: the peer sshd as seen from the client namespace.
    pub fn ssh_target(&self, user: &str) -> String {
        format!("{user}@{}", self.ssh_address())
    }

    /// The global flags that select the SSH transport to the peer gateway through the
    /// namespace (the gateway port is the one on the SSH host's loopback).
    pub fn ssh_args(&self, user: &str) -> Vec<String> {
        vec![
            "--ssh".into(),
            self.ssh_target(user),
            "--identity".into(),
            Peers::get().var("OCPEER_SSH_KEY").into(),
            "--remote-port".into(),
            self.gateway_port.to_string(),
        ]
    }

    /// The known_hosts line that trusts the peer sshd's host key at the address and port
    /// the client namespace reaches it on (the peers' own file names 127.0.0.1).
    pub fn ssh_known_hosts_line(&self) -> String {
        let path = Peers::get().var("OCPEER_SSH_HOST_KEY_PUB");
        let public = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read the peer sshd's host key {path}: {e}"));
        let mut words = public.split_whitespace();
        let (Some(kind), Some(key)) = (words.next(), words.next()) else {
            panic!("{path} is not an OpenSSH public key: {public:?}");
        };
        format!("[{SERVER_ADDRESS}]:{} {kind} {key}", self.ssh_port)
    }

    /// A scratch HOME whose `~/.ssh/known_hosts` trusts the peer sshd at its namespace address.
    pub fn ssh_home(&self, name: &str) -> PathBuf {
        let home = crate::scratch_dir(name);
        let ssh = home.join(".ssh");
        std::fs::create_dir_all(&ssh).expect("create the scratch ~/.ssh");
        std::fs::write(
            ssh.join("known_hosts"),
            format!("{}\n", self.ssh_known_hosts_line()),
        )
        .expect("write the scratch known_hosts");
        home
    }

    /// Client addresses the relays accepted connections from, oldest first.
    pub fn relay_peers_seen(&self) -> Vec<SocketAddr> {
        self.relay_state.peers_seen.lock().unwrap().clone()
    }

    /// Whether the kernel has the netem qdisc (probed on the client namespace's loopback).
    pub fn netem_available(&self) -> bool {
        let added = run_output(
            "tc",
            &[
                "-n",
                &self.client_ns,
                "qdisc",
                "replace",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "1ms",
            ],
            None,
        )
        .is_ok_and(|output| output.status.success());
        if added {
            let _ = run(
                "tc",
                &["-n", &self.client_ns, "qdisc", "del", "dev", "lo", "root"],
            );
        }
        added
    }

    /// Impairs both directions of the link as `spec` says, replacing any earlier netem.
    /// Without the netem qdisc (CONFIG_NET_SCH_NETEM) a rate still works through tbf and a
    /// loss through nftables; a delay or jitter is then [`FaultError::Unsupported`].
    pub fn netem(&self, spec: Netem) -> Result<(), FaultError> {
        require_tool("tc", "iproute2")?;
        self.clear_netem()?;
        let mut words: Vec<String> = vec!["netem".into()];
        if !spec.delay.is_zero() || !spec.jitter.is_zero() {
            words.extend(["delay".into(), format!("{}us", spec.delay.as_micros())]);
            if !spec.jitter.is_zero() {
                words.push(format!("{}us", spec.jitter.as_micros()));
            }
        }
        if spec.loss_percent > 0.0 {
            words.extend(["loss".into(), format!("{}%", spec.loss_percent)]);
        }
        if let Some(rate) = spec.rate_kbit {
            words.extend(["rate".into(), format!("{rate}kbit")]);
        }
        let mut netem_missing = None;
        for (ns, device) in self.ends() {
            let mut args = vec!["-n", ns, "qdisc", "replace", "dev", device, "root"];
            args.extend(words.iter().map(String::as_str));
            match run("tc", &args) {
                Ok(_) => {}
                Err(FaultError::Command { command, detail })
                    if detail.contains("Specified qdisc kind is unknown") =>
                {
                    netem_missing = Some(format!("`{command}` answered: {detail}"));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(netem_missing) = netem_missing else {
            return Ok(());
        };
        if !spec.delay.is_zero() || !spec.jitter.is_zero() {
            return Err(FaultError::Unsupported {
                fault: "a netem delay or jitter".into(),
                reason: format!(
                    "the kernel has no sch_netem (CONFIG_NET_SCH_NETEM; try `modprobe sch_netem`); {netem_missing}"
                ),
            });
        }
        if let Some(rate) = spec.rate_kbit {
            let rate = format!("{rate}kbit");
            for (ns, device) in self.ends() {
                run(
                    "tc",
                    &[
                        "-n", ns, "qdisc", "replace", "dev", device, "root", "tbf", "rate", &rate,
                        "burst", "16kb", "latency", "2s",
                    ],
                )?;
            }
        }
        if spec.loss_percent > 0.0 {
            // Drops on receipt in each namespace: one loss per direction, like netem's.
            let per_million = (spec.loss_percent.min(100.0) * 10_000.0).round() as u32;
            // numgen's range ends at 999999, so a total loss is a plain drop.
            let sample = if per_million >= 1_000_000 {
                String::new()
            } else {
                format!("numgen random mod 1000000 < {per_million} ")
            };
            for (ns, device) in self.ends() {
                let chain = format!(
                    "chain input {{ type filter hook input priority -50; policy accept; \
                     iifname \"{device}\" {sample}drop; }}"
                );
                nft_replace_table(ns, LOSS_TABLE, Some(&chain))?;
            }
        }
        Ok(())
    }

    /// Removes every netem/tbf qdisc and the loss fallback; a no-op when there is none.
    pub fn clear_netem(&self) -> Result<(), FaultError> {
        for (ns, device) in self.ends() {
            let shown = run("tc", &["-n", ns, "qdisc", "show", "dev", device, "root"])?;
            if shown.contains("netem") || shown.contains("tbf") {
                run("tc", &["-n", ns, "qdisc", "del", "dev", device, "root"])?;
            }
            if which("nft").is_some() {
                nft_replace_table(ns, LOSS_TABLE, None)?;
            }
        }
        Ok(())
    }

    /// Silently drops every packet that arrives over the link, in both namespaces: connects
    /// hang and established connections go quiet, like a dead path.
    pub fn black_hole(&self, on: bool) -> Result<(), FaultError> {
        for (ns, device) in self.ends() {
            let chain = format!(
                "chain input {{ type filter hook input priority -100; policy accept; \
                 iifname \"{device}\" drop; }}"
            );
            nft_replace_table(ns, BLACK_HOLE_TABLE, on.then_some(chain.as_str()))?;
        }
        Ok(())
    }

    /// Makes the server side refuse everything from the link: TCP answered with a reset,
    /// anything else with ICMP administratively prohibited, so the client fails fast.
    pub fn reject(&self, on: bool) -> Result<(), FaultError> {
        let chain = format!(
            "chain input {{ type filter hook input priority -50; policy accept; \
             iifname \"{SERVER_DEVICE}\" meta l4proto tcp reject with tcp reset; \
             iifname \"{SERVER_DEVICE}\" reject with icmpx type admin-prohibited; }}"
        );
        nft_replace_table(&self.server_ns, REJECT_TABLE, on.then_some(chain.as_str()))
    }

    /// Takes the client's end of the link down or up (both ends lose carrier). Up waits,
    /// bounded, until the client reaches the gateway relay again.
    pub fn link(&self, up: bool) -> Result<(), FaultError> {
        let state = if up { "up" } else { "down" };
        run(
            "ip",
            &["-n", &self.client_ns, "link", "set", CLIENT_DEVICE, state],
        )?;
        if up {
            self.wait_until_client_reaches_gateway()?;
        }
        Ok(())
    }

    /// Moves the client to the next address of the link's /24 (old connections lose their
    /// address, new ones come from the new one) and returns it.
    pub fn change_client_address(&self) -> Result<Ipv4Addr, FaultError> {
        let current = self.client_address();
        let last = current.octets()[3];
        let next = if last >= 254 { 2 } else { last + 1 };
        let [a, b, c, _] = current.octets();
        let next = Ipv4Addr::new(a, b, c, next);
        self.set_client_address(next)?;
        Ok(next)
    }

    /// Gives the client exactly `address` on the link (a no-op when it already has only that).
    pub fn set_client_address(&self, address: Ipv4Addr) -> Result<(), FaultError> {
        assert!(
            address != SERVER_ADDRESS
                && address.octets()[..3] == SERVER_ADDRESS.octets()[..3]
                && address.octets()[3] != 0
                && address.octets()[3] != 255,
            "{address} is not a client address of the link's {SERVER_ADDRESS}/{PREFIX_LENGTH}"
        );
        let shown = run(
            "ip",
            &[
                "-n",
                &self.client_ns,
                "-o",
                "-4",
                "addr",
                "show",
                "dev",
                CLIENT_DEVICE,
            ],
        )?;
        let present: Vec<String> = shown
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|pair| pair[0] == "inet")
            .map(|pair| pair[1].to_owned())
            .collect();
        let wanted = format!("{address}/{PREFIX_LENGTH}");
        // The old address goes first: deleting a primary address would take any secondary
        // in the same subnet (the new one) with it.
        for old in present.iter().filter(|cidr| **cidr != wanted) {
            run(
                "ip",
                &[
                    "-n",
                    &self.client_ns,
                    "addr",
                    "del",
                    old,
                    "dev",
                    CLIENT_DEVICE,
                ],
            )?;
        }
        if !present.contains(&wanted) {
            run(
                "ip",
                &[
                    "-n",
                    &self.client_ns,
                    "addr",
                    "add",
                    &wanted,
                    "dev",
                    CLIENT_DEVICE,
                ],
            )?;
        }
        *self.client_address.lock().unwrap() = address;
        Ok(())
    }

    /// The two veth ends as (namespace, device).
    fn ends(&self) -> [(&str, &str); 2] {
        [
            (self.client_ns.as_str(), CLIENT_DEVICE),
            (self.server_ns.as_str(), SERVER_DEVICE),
        ]
    }
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        self.relay_state.stop.store(true, Ordering::SeqCst);
        for relay in self.relays.drain(..) {
            let _ = relay.join();
        }
        // Connection threads wake every RELAY_POLL; give them a bounded moment to close.
        let started = Instant::now();
        while self.relay_state.live_connections.load(Ordering::SeqCst) > 0
            && started.elapsed() < Duration::from_secs(3)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for ns in [&self.client_ns, &self.server_ns] {
            if let Err(e) = remove_namespace(ns) {
                eprintln!("netfault: could not remove namespace {ns}: {e}");
            }
        }
    }
}

/// The harness's namespaces that exist now (`ip netns list`, filtered by [`NAMESPACE_PREFIX`]).
pub fn harness_namespaces() -> Vec<String> {
    let listed = run("ip", &["netns", "list"]).unwrap_or_default();
    listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NAMESPACE_PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Kills every process inside namespace `ns` (never this one) and deletes it; the veth end,
/// qdiscs and nftables tables in it go with it.
pub fn remove_namespace(ns: &str) -> Result<(), FaultError> {
    assert!(
        ns.starts_with(NAMESPACE_PREFIX),
        "refusing to remove {ns}: not a fault-harness namespace"
    );
    if !Path::new("/run/netns").join(ns).exists() {
        return Ok(());
    }
    let own = std::process::id();
    let pids = run("ip", &["netns", "pids", ns]).unwrap_or_default();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        if pid != own {
            // SAFETY: kill has no memory-safety preconditions; the pid was listed as
            // running inside our own namespace.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    run("ip", &["netns", "del", ns]).map(|_| ())
}

/// Removes harness namespaces whose owning process (the pid in their name) is gone: what a
/// killed test run left behind.
pub fn remove_stale_namespaces() {
    for ns in harness_namespaces() {
        let owner = ns[NAMESPACE_PREFIX.len()..]
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(owner) = owner {
            if !Path::new(&format!("/proc/{owner}")).exists() {
                let _ = remove_namespace(&ns);
            }
        }
    }
}

/// Names of this process's relay threads (listeners `nfr-…`, connections `nfc-…`) of the
/// network numbered `net_id`; empty once its [`FaultNet`] is dropped.
pub fn relay_threads(net_id: u64) -> Vec<String> {
    let prefixes = [format!("nfr-{net_id}-"), format!("nfc-{net_id}-")];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|comm| comm.trim().to_owned())
        .filter(|comm| prefixes.iter().any(|p| comm.starts_with(p.as_str())))
        .collect()
}

/// A relay thread's name: short enough for the kernel's 15-byte `comm`.
fn relay_thread_name(kind: &str, net_id: u64, port: u16) -> String {
    format!("{kind}-{net_id}-{port}")
}

/// Runs `cmd` to completion within `timeout`, killing it when it takes longer (stdin is
/// empty; stdout and stderr are captured). Panics naming the command when it cannot start.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    let description = describe(cmd);
    bounded_output(cmd, timeout).unwrap_or_else(|e| panic!("`{description}`: {e}"))
}

fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            enter_namespace(ns).unwrap_or_else(|e| panic!("enter network namespace {ns}: {e}"));
            f()
        });
        match worker.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread (only it: network namespaces are per thread) into `ns`.
fn enter_namespace(ns: &str) -> io::Result<()> {
    let handle = File::open(Path::new("/run/netns").join(ns))?;
    enter_namespace_of(&handle)
}

fn enter_namespace_of(handle: &File) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `handle` keeps open for the call.
    if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts a relay thread: it binds `listen` inside `server_ns`, goes back to the caller's
/// namespace and forwards each accepted connection to `upstream` there. Returns once the
/// listener is bound.
fn start_relay(
    net_id: u64,
    server_ns: &str,
    listen: SocketAddrV4,
    upstream: SocketAddrV4,
    state: Arc<RelayState>,
) -> Result<JoinHandle<()>, FaultError> {
    let describe_relay = format!("relay {server_ns} {listen} -> root ns {upstream}");
    let home_ns = File::open("/proc/thread-self/ns/net").map_err(|e| FaultError::Command {
        command: describe_relay.clone(),
        detail: format!("open /proc/thread-self/ns/net: {e}"),
    })?;
    let server_ns = server_ns.to_owned();
    let (bound_tx, bound_rx) = mpsc::channel::<io::Result<()>>();
    let thread = std::thread::Builder::new()
        .name(relay_thread_name("nfr", net_id, listen.port()))
        .spawn(move || {
            let listener = (|| {
                enter_namespace(&server_ns)?;
                let listener = TcpListener::bind(listen)?;
                listener.set_nonblocking(true)?;
                // Back home: every thread this one spawns inherits the root namespace,
                // which is where the peers' loopback is.
                enter_namespace_of(&home_ns)?;
                Ok(listener)
            })();
            let listener = match listener {
                Ok(listener) => {
                    let _ = bound_tx.send(Ok(()));
                    listener
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            accept_loop(listener, net_id, upstream, state);
        })
        .map_err(|e| FaultError::Command {
            command: describe_relay.clone(),
            detail: format!("spawn thread: {e}"),
        })?;
    match bound_rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => Err(FaultError::Command {
            command: describe_relay,
            detail: e.to_string(),
        }),
        Err(_) => Err(FaultError::Command {
            command: describe_relay,
            detail: format!("not bound within {COMMAND_TIMEOUT:?}"),
        }),
    }
}

fn accept_loop(listener: TcpListener, net_id: u64, upstream: SocketAddrV4, state: Arc<RelayState>) {
    while !state.stop.load(Ordering::SeqCst) && Instant::now() < state.deadline {
        let (client, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) => {
                // WouldBlock (nothing pending) or a transient error: look at the flag again.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        {
            let mut seen = state.peers_seen.lock().unwrap();
            if seen.len() >= PEERS_REMEMBERED {
                seen.remove(0);
            }
            seen.push(peer);
        }
        if state.live_connections.load(Ordering::SeqCst) >= RELAY_MAX_CONNECTIONS {
            continue;
        }
        state.live_connections.fetch_add(1, Ordering::SeqCst);
        let connection_state = state.clone();
        let spawned = std::thread::Builder::new()
            .name(relay_thread_name("nfc", net_id, upstream.port()))
            .spawn(move || {
                relay_connection(client, upstream, &connection_state);
                connection_state
                    .live_connections
                    .fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            state.live_connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn relay_connection(client: TcpStream, upstream: SocketAddrV4, state: &RelayState) {
    let Ok(server) = TcpStream::connect_timeout(&upstream.into(), UPSTREAM_CONNECT_TIMEOUT) else {
        return;
    };
    let streams = (|| {
        client.set_nonblocking(false)?;
        Ok::<_, io::Error>((client.try_clone()?, server.try_clone()?))
    })();
    let Ok((client_writer, server_writer)) = streams else {
        return;
    };
    std::thread::scope(|scope| {
        scope.spawn(|| pump(&client, &server_writer, state));
        pump(&server, &client_writer, state);
    });
}

/// Copies `from` to `to` until EOF, an error, the stop flag or the relay's deadline, then
/// half-closes `to` so the other side sees the end.
fn pump(mut from: &TcpStream, mut to: &TcpStream, state: &RelayState) {
    if from.set_read_timeout(Some(RELAY_POLL)).is_err()
        || to.set_write_timeout(Some(Duration::from_secs(10))).is_err()
    {
        return;
    }
    let mut buffer = [0u8; 16 * 1024];
    while !state.stop.load(Ordering::SeqCst) && Instant::now() < state.deadline {
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    if state.stop.load(Ordering::SeqCst) {
        let _ = from.shutdown(Shutdown::Both);
    }
}

/// Replaces nftables table `inet <table>` in `ns` with one holding `chain`, or deletes it
/// when `chain` is None. The add-then-delete preamble makes both idempotent.
fn nft_replace_table(ns: &str, table: &str, chain: Option<&str>) -> Result<(), FaultError> {
    require_tool("nft", "nftables")?;
    let mut script = format!("add table inet {table}\ndelete table inet {table}\n");
    if let Some(chain) = chain {
        script.push_str(&format!("table inet {table} {{\n{chain}\n}}\n"));
    }
    let args = ["netns", "exec", ns, "nft", "-f", "-"];
    let output = run_output("ip", &args, Some(&script))?;
    check(&format!("ip {} <<< {script:?}", args.join(" ")), output).map(|_| ())
}

fn require_tool(tool: &str, package: &str) -> Result<(), FaultError> {
    if which(tool).is_some() {
        return Ok(());
    }
    Err(FaultError::Unsupported {
        fault: format!("`{tool}`"),
        reason: format!(
            "it is not on PATH; install {package} (`apt-get install -y {package}`, which `cargo xtask peer install` does)"
        ),
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Runs a harness command; a failure carries the command line and its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, FaultError> {
    let output = run_output(program, args, None)?;
    check(&format!("{program} {}", args.join(" ")), output)
}

fn check(command: &str, output: Output) -> Result<String, FaultError> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(FaultError::Command {
        command: command.to_owned(),
        detail: format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}

fn run_output(program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, FaultError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let command = describe(&cmd);
    let result = match stdin {
        None => bounded_output(&mut cmd, COMMAND_TIMEOUT),
        Some(input) => bounded_output_with_stdin(&mut cmd, input, COMMAND_TIMEOUT),
    };
    result.map_err(|detail| FaultError::Command { command, detail })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| word.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn bounded_output(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    bounded_output_with_stdin(cmd, "", timeout)
}

/// Spawns `cmd` with `input` on stdin and captured output; kills it after `timeout`.
fn bounded_output_with_stdin(
    cmd: &mut Command,
    input: &str,
    timeout: Duration,
) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start: {e}"))?;
    let pid = child.id();
    if let Some(mut stdin) = child.stdin.take() {
        // Small scripts only; a broken pipe just means the program did not read them.
        let _ = stdin.write_all(input.as_bytes());
    }
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    match done_rx.recv_timeout(timeout) {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(format!("waiting for it: {e}")),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the child has not been
            // reaped (its waiter has not returned), so the pid is still ours.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Err(format!("timed out after {timeout:?} (killed)"))
        }
    }
}
