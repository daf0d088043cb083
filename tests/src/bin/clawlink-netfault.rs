//! Holds one fault network (`clawlink_tests::netfault::FaultNet`) open for manual use; `cargo xtask netns up` starts it and `down` stops it.
//!
//! Usage: `clawlink-netfault LABEL SECONDS`. It builds the namespaces and relays (the relays
//! are threads of this process, so the network lives exactly as long as it does), prints
//! KEY=VALUE lines describing them and `READY`, then waits for SIGTERM or SIGINT, or at most
//! SECONDS, and tears everything down before it exits.

use clawlink_tests::netfault::{FaultNet, SERVER_ADDRESS};

/// The longest a held network may live, whatever SECONDS says.
const MAX_HOLD_SECS: u64 = 24 * 60 * 60;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [label, seconds] = args.as_slice() else {
        eprintln!("usage: clawlink-netfault LABEL SECONDS");
        std::process::exit(2);
    };
    let Ok(seconds) = seconds.parse::<u64>() else {
        eprintln!("clawlink-netfault: SECONDS must be a number, got {seconds:?}");
        std::process::exit(2);
    };
    // Blocked before any thread exists, so every thread inherits the mask and the signals
    // wait for sigtimedwait below instead of killing us before the teardown.
    let signals = termination_signals();
    // SAFETY: `signals` is an initialised sigset; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };

    let net = FaultNet::create(label);
    println!("NETFAULT_CLIENT_NS={}", net.client_namespace());
    println!("NETFAULT_SERVER_NS={}", net.server_namespace());
    println!("NETFAULT_CLIENT_ADDRESS={}", net.client_address());
    println!("NETFAULT_SERVER_ADDRESS={SERVER_ADDRESS}");
    println!("NETFAULT_GATEWAY_URL={}", net.gateway_url());
    println!("NETFAULT_SSH_TARGET={}", net.ssh_target("claw"));
    println!(
        "NETFAULT_SSH_KNOWN_HOSTS_LINE={}",
        net.ssh_known_hosts_line()
    );
    println!("NETFAULT_HOLDER_PID={}", std::process::id());
    println!("READY");

    let timeout = libc::timespec {
        tv_sec: seconds.min(MAX_HOLD_SECS) as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: both pointers are to initialised locals; a null siginfo pointer is allowed.
    let signal = unsafe { libc::sigtimedwait(&signals, std::ptr::null_mut(), &timeout) };
    let reason = if signal > 0 {
        format!("signal {signal}")
    } else {
        "the time limit".to_owned()
    };
    eprintln!(
        "clawlink-netfault: tearing {} down after {reason}",
        net.client_namespace()
    );
    drop(net);
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}
