//! The network fault harness (`clawlink_tests::netfault`) proven against the real peers: clawlink reaches the gateway and sshd from its own namespace, and each fault does what it says.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use clawlink_tests::netfault::{
    harness_namespaces, output_within, relay_threads, FaultError, FaultNet, Netem,
    FIRST_CLIENT_ADDRESS, NAMESPACE_PREFIX, SERVER_ADDRESS,
};
use clawlink_tests::{args_with, scratch_dir, text, token_file};
use serde_json::Value;

/// Long enough for a debug clawlink to connect, authenticate and answer over a slow link.
const CLAWLINK_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP connect from the client namespace: how long it took and how it ended.
fn connect_from_client(
    net: &FaultNet,
    target: SocketAddr,
    timeout: Duration,
) -> (Duration, std::io::Result<TcpStream>) {
    net.in_client(|| {
        let started = Instant::now();
        let result = TcpStream::connect_timeout(&target, timeout);
        (started.elapsed(), result)
    })
}

/// The median of five TCP connect round trips from the client to the gateway relay.
fn connect_round_trip(net: &FaultNet) -> Duration {
    let mut samples: Vec<Duration> = (0..5)
        .map(|_| {
            let (took, result) =
                connect_from_client(net, net.gateway_address(), Duration::from_secs(5));
            result.expect("connect to the gateway relay");
            took
        })
        .collect();
    samples.sort();
    samples[2]
}

/// `clawlink … call health` inside the client namespace; panics with its output unless the
/// gateway answered `ok`.
fn assert_health(net: &FaultNet, dir: &std::path::Path, global: &[String]) {
    let mut cmd = net.clawlink_command(dir);
    cmd.args(args_with(global, &["call", "health"]));
    let output = output_within(&mut cmd, CLAWLINK_TIMEOUT);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "clawlink call health in {} failed ({}):\n{stdout}\n{stderr}",
        net.client_namespace(),
        output.status
    );
    let health: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("health is not JSON ({e}): {stdout}"));
    assert_eq!(health["ok"], true, "{health}");
}

#[test]
fn clawlink_reaches_the_gateway_from_its_namespace_and_only_through_the_link() {
    let net = FaultNet::create("ws-health");
    let dir = scratch_dir("netfault-ws-health");
    let token = token_file(&dir);
    let global = vec![
        "--url".to_owned(),
        net.gateway_url(),
        "--token-file".to_owned(),
        token,
    ];
    assert_eq!(
        net.gateway_url(),
        format!("ws://{SERVER_ADDRESS}:{}", net.gateway_address().port())
    );
    assert_health(&net, &dir, &global);
    assert!(
        net.relay_peers_seen()
            .iter()
            .any(|peer| peer.ip() == FIRST_CLIENT_ADDRESS),
        "the relay never saw the client address: {:?}",
        net.relay_peers_seen()
    );

    // The client namespace has its own loopback: the peers' ports are not there, so the
    // link above is the only way to them.
    let direct = SocketAddr::from(([127, 0, 0, 1], net.gateway_address().port()));
    let (_, result) = connect_from_client(&net, direct, Duration::from_secs(2));
    assert_eq!(
        result.map(|_| ()).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
}

#[test]
fn clawlink_reaches_the_gateway_over_ssh_through_the_namespace() {
    let net = FaultNet::create("ssh-health");
    let home = net.ssh_home("netfault-ssh-health");
    let known_hosts = std::fs::read_to_string(home.join(".ssh/known_hosts")).unwrap();
    assert!(
        known_hosts.starts_with(&format!("[{SERVER_ADDRESS}]:{} ", net.ssh_address().port())),
        "{known_hosts}"
    );
    let mut global = net.ssh_args("claw");
    global.extend(["--token-file".to_owned(), token_file(&home)]);
    assert_health(&net, &home, &global);
    assert!(
        net.relay_peers_seen()
            .iter()
            .any(|peer| peer.ip() == FIRST_CLIENT_ADDRESS),
        "{:?}",
        net.relay_peers_seen()
    );
}

#[test]
fn a_black_hole_makes_connects_time_out_and_lifting_it_restores_them() {
    let net = FaultNet::create("black-hole");
    // Twice: every fault call is idempotent.
    net.black_hole(true).unwrap();
    net.black_hole(true).unwrap();
    let timeout = Duration::from_secs(2);
    let (took, result) = connect_from_client(&net, net.gateway_address(), timeout);
    eprintln!("black hole: connect gave up after {took:?}");
    assert_eq!(result.map(|_| ()).unwrap_err().kind(), ErrorKind::TimedOut);
    assert!(
        took >= timeout,
        "gave up after {took:?}, before the timeout"
    );

    net.black_hole(false).unwrap();
    net.black_hole(false).unwrap();
    let (took, result) = connect_from_client(&net, net.gateway_address(), timeout);
    result.expect("connect once the black hole is lifted");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn reject_makes_connects_fail_fast() {
    let net = FaultNet::create("reject");
    net.reject(true).unwrap();
    net.reject(true).unwrap();
    let (took, result) = connect_from_client(&net, net.ssh_address(), Duration::from_secs(5));
    eprintln!("reject: connect failed after {took:?}");
    assert_eq!(
        result.map(|_| ()).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    assert!(took < Duration::from_secs(1), "{took:?}");

    net.reject(false).unwrap();
    net.reject(false).unwrap();
    let (_, result) = connect_from_client(&net, net.ssh_address(), Duration::from_secs(5));
    result.expect("connect once reject is lifted");
}

#[test]
fn a_netem_delay_adds_to_the_round_trip_in_both_directions() {
    let net = FaultNet::create("delay");
    let baseline = connect_round_trip(&net);
    eprintln!("delay: connect round trip without netem {baseline:?}");
    assert!(baseline < Duration::from_millis(100), "{baseline:?}");
    let delay = Netem {
        delay: Duration::from_millis(150),
        ..Netem::default()
    };
    if !net.netem_available() {
        // This kernel cannot delay packets: the harness must say so, naming what is missing.
        let error = net.netem(delay).unwrap_err();
        eprintln!("delay: NOT MEASURED on this machine: {error}");
        assert!(matches!(error, FaultError::Unsupported { .. }), "{error:?}");
        assert!(error.to_string().contains("sch_netem"), "{error}");
        return;
    }
    net.netem(delay).unwrap();
    net.netem(delay).unwrap();
    let delayed = connect_round_trip(&net);
    eprintln!("delay: connect round trip with 150 ms each way {delayed:?}");
    assert!(delayed >= Duration::from_millis(300), "{delayed:?}");
    net.clear_netem().unwrap();
    net.clear_netem().unwrap();
    let cleared = connect_round_trip(&net);
    assert!(cleared < Duration::from_millis(100), "{cleared:?}");
}

/// Seconds for `bytes` to go from the client namespace to a sink in the server namespace.
fn upload_time(net: &FaultNet, bytes: usize) -> Duration {
    let sink = net
        .in_server(|| TcpListener::bind((SERVER_ADDRESS, 0)))
        .expect("bind a sink in the server namespace");
    let sink_address = sink.local_addr().unwrap();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let (mut stream, _) = sink.accept().expect("accept the upload");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut received = Vec::new();
            stream.read_to_end(&mut received).expect("read the upload");
            received.len()
        });
        let started = Instant::now();
        net.in_client(|| {
            let mut stream =
                TcpStream::connect_timeout(&sink_address, Duration::from_secs(5)).unwrap();
            stream
                .set_write_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream.write_all(&vec![0x5a; bytes]).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        });
        assert_eq!(reader.join().unwrap(), bytes);
        started.elapsed()
    })
}

#[test]
fn a_rate_limit_slows_an_upload_to_the_rate() {
    let net = FaultNet::create("rate");
    let bytes = 256 * 1024;
    let unlimited = upload_time(&net, bytes);
    let rate = Netem {
        rate_kbit: Some(1000),
        ..Netem::default()
    };
    net.netem(rate).unwrap();
    net.netem(rate).unwrap();
    let limited = upload_time(&net, bytes);
    eprintln!("rate: 256 KiB unlimited {unlimited:?}, at 1000 kbit/s {limited:?}");
    // 256 KiB is 2097 kbit: about 2.1 s at 1000 kbit/s (a burst may go faster at the start).
    assert!(limited >= Duration::from_millis(1500), "{limited:?}");
    assert!(unlimited < Duration::from_millis(500), "{unlimited:?}");
    net.clear_netem().unwrap();
    let cleared = upload_time(&net, bytes);
    assert!(cleared < Duration::from_millis(500), "{cleared:?}");
}

#[test]
fn losing_every_packet_times_connects_out() {
    let net = FaultNet::create("loss");
    let loss = Netem {
        loss_percent: 100.0,
        ..Netem::default()
    };
    net.netem(loss).unwrap();
    net.netem(loss).unwrap();
    let timeout = Duration::from_secs(2);
    let (_, result) = connect_from_client(&net, net.gateway_address(), timeout);
    assert_eq!(result.map(|_| ()).unwrap_err().kind(), ErrorKind::TimedOut);
    net.clear_netem().unwrap();
    let (_, result) = connect_from_client(&net, net.gateway_address(), timeout);
    result.expect("connect once the loss is cleared");
}

#[test]
fn link_down_makes_the_server_unreachable_until_it_comes_back_up() {
    let net = FaultNet::create("link");
    net.link(false).unwrap();
    net.link(false).unwrap();
    let (took, result) = connect_from_client(&net, net.gateway_address(), Duration::from_secs(5));
    eprintln!("link down: connect failed after {took:?}: {result:?}");
    assert_eq!(
        result.map(|_| ()).unwrap_err().kind(),
        ErrorKind::NetworkUnreachable
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    net.link(true).unwrap();
    net.link(true).unwrap();
    let (_, result) = connect_from_client(&net, net.gateway_address(), Duration::from_secs(5));
    result.expect("connect once the link is up again");
}

#[test]
fn an_address_change_moves_new_connections_to_the_new_address() {
    let net = FaultNet::create("address");
    let dir = scratch_dir("netfault-address");
    let global = vec![
        "--url".to_owned(),
        net.gateway_url(),
        "--token-file".to_owned(),
        token_file(&dir),
    ];
    let before = connect_from_client(&net, net.gateway_address(), Duration::from_secs(5))
        .1
        .expect("connect before the change");
    assert_eq!(before.local_addr().unwrap().ip(), FIRST_CLIENT_ADDRESS);

    let moved = net.change_client_address().unwrap();
    assert_ne!(moved, FIRST_CLIENT_ADDRESS);
    assert_eq!(net.client_address(), moved);
    // Setting the address it already has changes nothing.
    net.set_client_address(moved).unwrap();
    let mut show = net.client_command("ip");
    show.args(["-o", "-4", "addr", "show"]);
    let shown = text(&output_within(&mut show, Duration::from_secs(10))).0;
    assert!(shown.contains(&format!("{moved}/24")), "{shown}");
    assert!(
        !shown.contains(&format!("{FIRST_CLIENT_ADDRESS}/")),
        "{shown}"
    );

    let after = connect_from_client(&net, net.gateway_address(), Duration::from_secs(5))
        .1
        .expect("connect after the change");
    assert_eq!(after.local_addr().unwrap().ip(), moved);
    assert_health(&net, &dir, &global);
    let last_seen = *net.relay_peers_seen().last().unwrap();
    assert_eq!(last_seen.ip(), moved, "{:?}", net.relay_peers_seen());
}

#[test]
fn dropping_the_network_leaves_no_namespace_thread_or_process() {
    let net = FaultNet::create("teardown");
    let (client_ns, server_ns) = (
        net.client_namespace().to_owned(),
        net.server_namespace().to_owned(),
    );
    let id = net.id();
    // Something a test forgot inside the namespace, a live relayed connection and a fault.
    let mut forgotten = net
        .client_command("sleep")
        .arg("60")
        .spawn()
        .expect("start sleep in the client namespace");
    let _open = connect_from_client(&net, net.gateway_address(), Duration::from_secs(5))
        .1
        .expect("connect through the relay");
    net.black_hole(true).unwrap();
    assert!(harness_namespaces().contains(&client_ns));
    assert!(!relay_threads(id).is_empty());

    drop(net);

    let namespaces = harness_namespaces();
    assert!(
        !namespaces.contains(&client_ns) && !namespaces.contains(&server_ns),
        "{namespaces:?}"
    );
    assert_eq!(relay_threads(id), Vec::<String>::new());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = forgotten.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the process left in the client namespace still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status:?}");
}

#[test]
fn a_namespace_left_by_a_dead_run_is_removed_by_the_next_create() {
    // A pid that is certainly gone: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let leftover = format!("{NAMESPACE_PREFIX}{}-0-crashed-c", child.id());
    let added = output_within(
        std::process::Command::new("ip").args(["netns", "add", &leftover]),
        Duration::from_secs(10),
    );
    assert!(added.status.success(), "{:?}", text(&added));
    assert!(harness_namespaces().contains(&leftover));

    let _net = FaultNet::create("after-crash");
    assert!(
        !harness_namespaces().contains(&leftover),
        "{:?}",
        harness_namespaces()
    );
}

#[test]
fn xtask_netns_down_sweeps_the_same_prefix() {
    let xtask =
        std::fs::read_to_string(clawlink_tests::workspace_root().join("xtask/src/netns.rs"))
            .expect("read xtask/src/netns.rs");
    assert!(
        xtask.contains(&format!(
            "pub const NAMESPACE_PREFIX: &str = \"{NAMESPACE_PREFIX}\";"
        )),
        "xtask/src/netns.rs must sweep namespaces named {NAMESPACE_PREFIX}*"
    );
}

#[test]
fn a_failing_test_still_tears_its_network_down() {
    let mut names = None;
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = FaultNet::create("failing");
        net.black_hole(true).unwrap();
        names = Some((
            net.client_namespace().to_owned(),
            net.server_namespace().to_owned(),
            net.id(),
        ));
        panic!("a test assertion failed while the network was up");
    }));
    assert!(unwound.is_err());
    let (client_ns, server_ns, id) = names.expect("the network was made");
    let namespaces = harness_namespaces();
    assert!(
        !namespaces.contains(&client_ns) && !namespaces.contains(&server_ns),
        "{namespaces:?}"
    );
    assert_eq!(relay_threads(id), Vec::<String>::new());
}
