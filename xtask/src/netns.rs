//! `cargo xtask netns up|down|status`: the network fault harness by hand, and the sweep that removes whatever a crashed test run left.
//!
//! The harness itself lives in the tests crate (`tests/src/netfault.rs`, `FaultNet`): the
//! tests use it in-process and xtask must not depend on the whole workspace. `up` therefore
//! runs the tests crate's small holder binary `clawlink-netfault`, whose relay threads keep
//! the network alive until `down` sends it SIGTERM. `down` and `status` only need `ip`, so
//! they are here and work even when the workspace does not build: `down` stops the holders
//! it recorded, then deletes every namespace named with [`NAMESPACE_PREFIX`] after killing
//! the processes inside it (the veth ends, qdiscs and nftables tables go with them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{capture, describe, output_with_timeout, run_command, say, which};

/// Must equal `clawlink_tests::netfault::NAMESPACE_PREFIX` (checked by tests/netfault.rs).
pub const NAMESPACE_PREFIX: &str = "clawlink-nf-";
const HOLDER_BIN: &str = "clawlink-netfault";
const DEFAULT_LABEL: &str = "manual";
const DEFAULT_HOLD_SECS: u64 = 60 * 60;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

pub fn dispatch(args: &[&str]) -> Result<()> {
    match args {
        ["up", rest @ ..] => {
            let (label, secs) = parse_up(rest)?;
            up(&label, secs)
        }
        ["down"] => down(),
        ["status"] => status(),
        _ => bail!("usage: cargo xtask netns up [LABEL] [--secs N]|down|status"),
    }
}

fn parse_up(args: &[&str]) -> Result<(String, u64)> {
    let mut label = DEFAULT_LABEL.to_owned();
    let mut secs = DEFAULT_HOLD_SECS;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match *word {
            "--secs" => {
                let value = words.next().context("--secs needs a number")?;
                secs = value
                    .parse()
                    .with_context(|| format!("--secs {value}: not a number"))?;
            }
            other if !other.starts_with('-') => label = other.to_owned(),
            other => bail!("unknown option {other}"),
        }
    }
    if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("the label {label:?} may only hold letters, digits and '-'");
    }
    Ok((label, secs))
}

/// Where `up` keeps each holder's pid, output and log.
fn state_dir() -> PathBuf {
    crate::util::workspace_root().join("target").join("netns")
}

fn require_tools() -> Result<()> {
    require_root()?;
    for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")] {
        if which(tool).is_none() {
            bail!("`{tool}` is missing: install {package} (`cargo xtask peer install` does)");
        }
    }
    Ok(())
}

fn require_root() -> Result<()> {
    if !crate::util::is_root() {
        bail!("`cargo xtask netns` must run as root (it creates network namespaces)");
    }
    Ok(())
}

fn up(label: &str, secs: u64) -> Result<()> {
    require_tools()?;
    let peer_env = match std::env::var_os("CLAWLINK_PEER_ENV") {
        Some(path) => PathBuf::from(path),
        None => crate::peer::Layout::from_env()?.env_file(),
    };
    if !peer_env.is_file() {
        bail!(
            "{} does not exist: start the peers first (`cargo xtask peer start`) or set CLAWLINK_PEER_ENV",
            peer_env.display()
        );
    }
    let dir = state_dir();
    std::fs::create_dir_all(&dir)?;
    let pid_file = dir.join(format!("{label}.pid"));
    if let Some(pid) = live_holder(&pid_file) {
        bail!("a network labelled {label} is already up (holder pid {pid}); `cargo xtask netns down` first");
    }
    say("netns", format!("building {HOLDER_BIN}"));
    run_command(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
            "build",
            "-p",
            "clawlink-tests",
            "--bin",
            HOLDER_BIN,
        ]),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::util::workspace_root().join("target"));
    let holder = target.join("debug").join(HOLDER_BIN);
    let env_out = dir.join(format!("{label}.env"));
    let log = dir.join(format!("{label}.log"));
    let mut cmd = Command::new(&holder);
    cmd.args([label, &secs.to_string()])
        .env("CLAWLINK_PEER_ENV", &peer_env)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&env_out)?)
        .stderr(std::fs::File::create(&log)?);
    crate::util::detach(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", describe(&cmd)))?;
    std::fs::write(&pid_file, format!("{}\n", child.id()))?;
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&env_out).unwrap_or_default();
        if text.lines().any(|l| l == "READY") {
            print!("{text}");
            say(
                "netns",
                format!(
                    "up for at most {secs} s; run programs with `ip netns exec <NETFAULT_CLIENT_NS> …`, stop with `cargo xtask netns down`"
                ),
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let _ = std::fs::remove_file(&pid_file);
            bail!(
                "{HOLDER_BIN} exited ({status}) before it was ready:\n{}",
                crate::util::tail(&log, 20)
            );
        }
        if started.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&pid_file);
            sweep_namespaces()?;
            bail!(
                "{HOLDER_BIN} was not ready within {READY_TIMEOUT:?}:\n{}",
                crate::util::tail(&log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The holder pid recorded in `pid_file`, when that process still runs our holder (a
/// reused pid belongs to someone else and is left alone).
fn live_holder(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let program = cmdline.split(|b| *b == 0).next()?;
    String::from_utf8_lossy(program)
        .ends_with(HOLDER_BIN)
        .then_some(pid)
}

fn down() -> Result<()> {
    require_root()?;
    let dir = state_dir();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "pid") {
            continue;
        }
        if let Some(pid) = live_holder(&path) {
            say(
                "netns",
                format!("stopping holder {pid} ({})", path.display()),
            );
            stop_holder(pid);
        }
        std::fs::remove_file(&path)?;
    }
    let removed = sweep_namespaces()?;
    say(
        "netns",
        if removed.is_empty() {
            "no harness namespace left".to_owned()
        } else {
            format!("removed {}", removed.join(", "))
        },
    );
    Ok(())
}

/// SIGTERM (the holder tears its network down), then SIGKILL after [`STOP_TIMEOUT`].
fn stop_holder(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions; live_holder checked the pid is ours.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && started.elapsed() < STOP_TIMEOUT {
        if is_zombie(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn harness_namespaces() -> Result<Vec<String>> {
    let listed = capture(Command::new("ip").args(["netns", "list"]))?;
    Ok(listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NAMESPACE_PREFIX))
        .map(str::to_owned)
        .collect())
}

/// Deletes every harness namespace after killing the processes inside it.
fn sweep_namespaces() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in harness_namespaces()? {
        let pids = capture(Command::new("ip").args(["netns", "pids", &ns])).unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if pid as u32 != std::process::id() {
                say("netns", format!("killing pid {pid} left in {ns}"));
                // SAFETY: kill has no memory-safety preconditions; the pid runs inside a
                // namespace only the harness makes.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        run_command(Command::new("ip").args(["netns", "del", &ns]))?;
        removed.push(ns);
    }
    Ok(removed)
}

fn status() -> Result<()> {
    let namespaces = harness_namespaces()?;
    let dir = state_dir();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "pid") {
            match live_holder(&path) {
                Some(pid) => println!("holder {pid} ({})", path.display()),
                None => println!("stale pid file {} (`down` removes it)", path.display()),
            }
        }
    }
    if namespaces.is_empty() {
        println!("no harness namespace");
        return Ok(());
    }
    for ns in namespaces {
        println!("== {ns}");
        let views: [&[&str]; 4] = [
            &["ip", "-n", &ns, "-br", "addr"],
            &["tc", "-n", &ns, "qdisc", "show"],
            &["ip", "netns", "exec", &ns, "nft", "list", "tables"],
            &["ip", "netns", "pids", &ns],
        ];
        for view in views {
            let mut cmd = Command::new(view[0]);
            cmd.args(&view[1..]);
            match output_with_timeout(&mut cmd, COMMAND_TIMEOUT) {
                Ok(output) => {
                    println!("$ {}", describe(&cmd));
                    print!("{}", String::from_utf8_lossy(&output.stdout));
                    print!("{}", String::from_utf8_lossy(&output.stderr));
                }
                Err(e) => println!("$ {}: {e:#}", describe(&cmd)),
            }
        }
    }
    Ok(())
}
