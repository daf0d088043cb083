//! `cargo xtask`: clawlink's developer tasks (real test peers, CI, demo, benchmarks).
//!
//! Arguments are parsed by hand on purpose: xtask must build in seconds, so it
//! depends on nothing but std, anyhow and libc.

mod bench;
mod build;
mod chaos;
mod ci;
mod demo;
mod http;
mod netns;
mod peer;
mod util;

use anyhow::{bail, Result};

const HELP: &str = "\
usage: cargo xtask <command> [args]

commands:
  help                          print this list
  build [--release] [--only A,B] [--without A,B] [--list]
                                build a clawlink variant: choose the plugin crates it links
  ci                            fmt check, clippy, build, start the peers, cargo test, stop the peers
  demo                          start the peers and run the clawlink binary against the real gateway
  bench [NAME]                  benchmarks against the running peers (NAME: call-health, test-remote, tunnel-throughput, transport-paths, health-rtt, agent-idle-rss), results in target/bench/
  chaos [CUTS]                  the chaos run (default 100 cuts) under a running agent, figures in target/chaos/summary.md
  peer install                  install Node, openclaw, sshd and the users claw/noclaw under the peer prefix
  peer start                    start stub model, gateways main and pw, sshd and the fake node; print the env
  peer stop                     stop every process that `peer start` recorded
  peer env                      print the env file of the running peers (KEY=VALUE lines)
  peer stop-gateway NAME        stop gateway NAME (main|pw), keeping its state, port and secret
  peer start-gateway NAME       start gateway NAME again with its kept state, port and secret; wait until ready
  peer restart-gateway NAME     stop-gateway then start-gateway
  netns up [LABEL] [--secs N]   the network fault harness by hand: client and server namespaces joined by a
                                veth pair, relays to the running peers; held until `netns down` (at most N s)
  netns down                    stop `netns up`'s holders and delete every clawlink-nf-* namespace (crashed runs too)
  netns status                  the harness's namespaces: addresses, qdiscs, nftables tables, processes

environment:
  CLAWLINK_PEER_DIR             peer prefix (default: <workspace>/target/peer)
  CLAWLINK_PEER_FRESH=0         keep the gateways' state on `peer start` (default: wipe it)
  CLAWLINK_PEER_FAKE_NODE=0     do not start the fake macOS node
  OCPEER_STUB_REPLY             the stub model's canned reply (default: \"stub reply\")
  CLAWLINK_BENCH_CLAWLINK       benchmark this clawlink binary instead of building one
  CLAWLINK_BENCH_IDLE_SECS      how long agent-idle-rss lets the agent idle (default 300)
";

fn main() {
    util::start_clock();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(err) = dispatch(&args) {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["help" | "-h" | "--help"] => {
            print!("{HELP}");
            Ok(())
        }
        ["build", rest @ ..] => build::run(rest),
        ["ci"] => ci::run(),
        ["demo"] => demo::run(),
        ["bench", rest @ ..] => bench::run(rest),
        ["chaos", rest @ ..] => chaos::run(rest),
        ["peer", rest @ ..] => peer::dispatch(rest),
        ["netns", rest @ ..] => netns::dispatch(rest),
        _ => {
            eprint!("{HELP}");
            bail!("unknown command: {}", words.join(" "))
        }
    }
}
