//! `transport-paths`: `call health` and tunnel throughput through the built-in SSH tunnel, the `exec` transport (`ssh -W`) and the SOCKS5 plugin loaded at run time (through `ssh -D`), in one run, each beside the same path without clawlink.
//!
//! The SOCKS5 plugin is built as a cdylib and loaded from a plugin directory like a user's;
//! the proxy is OpenSSH's `ssh -D` to the peers' sshd. Throughput reads 512 MiB of zeros
//! from a loopback source through `clawlink tunnel` over each transport, and through the same
//! hop without clawlink: a SOCKS5 CONNECT made here to the same proxy, and `ssh -W` whose
//! stdout is read here. Rounds interleave every path. Goals: each clawlink path moves at
//! least 95 % of what its own hop moves without clawlink ("a few percent").

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::forward::{self, Forward};
use super::procs::{self, ChildGuard};
use super::throughput::{BulkSource, CHUNK, MIB, TRANSFER_TIMEOUT};
use super::{measure, met, round3, unix_now, write_files, BenchContext, Stats, SummaryRow};
use crate::util::{describe, run_command, say, workspace_root};

const TRANSFER_MIB: u64 = 512;
const ROUNDS: usize = 3;
/// Runs of `call health` per path (after one warm-up).
const HEALTH_RUNS: usize = 10;
/// Each clawlink path must carry this fraction of its hop's own rate.
const GOAL_RATIO: f64 = 0.95;
/// How long `ssh -D` may take to authenticate and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub fn transport_paths(ctx: &BenchContext) -> Result<SummaryRow> {
    let plugin_dir = install_socks5_plugin(ctx)?;
    let proxy = socks_proxy(ctx)?;
    let gateway_port = ctx.gateway_port()?;
    let config = ctx.scratch.join("transport-paths.toml");

    // call health: one fresh connection per run, every path to the real gateway.
    write_profiles(ctx, &config, proxy.local_port, gateway_port, None)?;
    let url = ctx.env.require("OCPEER_GATEWAY_URL")?.to_string();
    let direct = || {
        let mut cmd = ctx.clawlink_cmd();
        cmd.arg("--url").arg(&url);
        Ok(with_call_health(ctx, cmd))
    };
    let ssh = || Ok(with_call_health(ctx, ctx.clawlink_ssh_cmd(gateway_port)?));
    let profile = |name: &'static str| {
        let config = config.clone();
        let plugin_dir = plugin_dir.clone();
        move || {
            Ok(with_call_health(
                ctx,
                profile_cmd(ctx, &config, &plugin_dir, name),
            ))
        }
    };
    let health = [
        measure(ctx, "direct-ws", HEALTH_RUNS, &direct)?.0,
        measure(ctx, "ssh-tunnel", HEALTH_RUNS, &ssh)?.0,
        measure(ctx, "exec (ssh -W)", HEALTH_RUNS, &profile("exec"))?.0,
        measure(
            ctx,
            "socks5 plugin (ssh -D)",
            HEALTH_RUNS,
            &profile("socks5"),
        )?
        .0,
    ];

    // Throughput: the same source through every path.
    let source = BulkSource::start(TRANSFER_MIB * MIB)?;
    let exec_local = procs::free_port()?;
    let socks_local = procs::free_port()?;
    write_profiles(
        ctx,
        &config,
        proxy.local_port,
        source.port,
        Some((exec_local, socks_local)),
    )?;
    let ssh_tunnel = forward::clawlink_tunnel(ctx, source.port, "paths-ssh-tunnel")?;
    let exec_tunnel = forward::tunnel_from(
        ctx,
        profile_cmd(ctx, &config, &plugin_dir, "exec"),
        exec_local,
        "paths-exec-tunnel",
    )?;
    let socks_tunnel = forward::tunnel_from(
        ctx,
        profile_cmd(ctx, &config, &plugin_dir, "socks5"),
        socks_local,
        "paths-socks5-tunnel",
    )?;
    let paths: Vec<(&str, Route)> = vec![
        ("direct (ceiling)", Route::Tcp(source.port)),
        (
            "ssh-tunnel: clawlink tunnel",
            Route::Tcp(ssh_tunnel.local_port),
        ),
        ("exec: clawlink tunnel", Route::Tcp(exec_tunnel.local_port)),
        ("exec's hop: ssh -W, read here", Route::SshW(source.port)),
        (
            "socks5 plugin: clawlink tunnel",
            Route::Tcp(socks_tunnel.local_port),
        ),
        (
            "socks5's hop: SOCKS5 CONNECT here",
            Route::Socks {
                proxy: proxy.local_port,
                target: source.port,
            },
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut buf = vec![0u8; CHUNK];
    for round in 0..ROUNDS {
        for (i, (label, path)) in paths.iter().enumerate() {
            let secs = path
                .transfer(ctx, &mut buf)
                .with_context(|| format!("{label}, round {round}"))?;
            let rate = TRANSFER_MIB as f64 / secs;
            say("bench", format!("{label}: {rate:.0} MiB/s"));
            rates[i].push(rate);
        }
    }
    for forward in [ssh_tunnel, exec_tunnel, socks_tunnel] {
        forward.guard.stop()?;
    }
    proxy.guard.stop()?;
    drop(source);

    let stats: Vec<Stats> = rates.into_iter().map(Stats::new).collect();
    let exec_ratio = stats[2].median() / stats[3].median();
    let socks_ratio = stats[4].median() / stats[5].median();
    let goals_met = exec_ratio >= GOAL_RATIO && socks_ratio >= GOAL_RATIO;

    let json = json!({
        "benchmark": "transport-paths",
        "unix_time": unix_now() as f64,
        "call_health": health.iter().map(|s| json!({
            "path": s.label,
            "command": s.command,
            "wall_ms": s.wall_stats().to_json(true),
            "max_rss_mib": round3(s.max_rss_mib()),
        })).collect::<Vec<Value>>(),
        "throughput": {
            "transfer_mib": TRANSFER_MIB as f64,
            "rounds": ROUNDS as f64,
            "paths": paths.iter().zip(&stats).map(|((label, _), s)| json!({
                "path": label,
                "mib_per_s": s.to_json(false),
            })).collect::<Vec<Value>>(),
        },
        "goals": {
            "exec_over_its_hop": round3(exec_ratio),
            "socks5_plugin_over_its_hop": round3(socks_ratio),
            "goal": GOAL_RATIO,
            "met": goals_met,
        },
    });
    let mut md = format!(
        "# transport-paths\n\n`call health` over a fresh connection ({HEALTH_RUNS} runs after one warm-up), then \
         {TRANSFER_MIB} MiB through `clawlink tunnel` over each transport and through the same hop without \
         clawlink ({ROUNDS} interleaved rounds). SSH server: the peers' sshd; SOCKS5 proxy: `ssh -D` to it; the \
         socks5 transport is the plugin, loaded at run time from a plugin directory.\n\n\
         | call health over | median ms | p99 ms | max RSS MiB |\n| --- | ---: | ---: | ---: |\n"
    );
    for series in &health {
        let wall = series.wall_stats();
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} |",
            series.label,
            wall.median(),
            wall.percentile(99.0),
            series.max_rss_mib()
        );
    }
    let _ = write!(
        md,
        "\n| {TRANSFER_MIB} MiB through | median MiB/s | min | max |\n| --- | ---: | ---: | ---: |\n"
    );
    for ((label, _), s) in paths.iter().zip(&stats) {
        let _ = writeln!(
            md,
            "| {label} | {:.0} | {:.0} | {:.0} |",
            s.median(),
            s.min(),
            s.max()
        );
    }
    let _ = write!(
        md,
        "\n| goal | ratio | target | result |\n| --- | ---: | ---: | --- |\n\
         | exec tunnel / `ssh -W` alone | {exec_ratio:.3} | ≥ {GOAL_RATIO} | {} |\n\
         | socks5 plugin tunnel / SOCKS5 alone | {socks_ratio:.3} | ≥ {GOAL_RATIO} | {} |\n",
        met(exec_ratio >= GOAL_RATIO),
        met(socks_ratio >= GOAL_RATIO),
    );
    write_files(ctx, "transport-paths", &json, &md)?;

    Ok(SummaryRow {
        result: format!(
            "call health ssh {:.0} / exec {:.0} / socks5 plugin {:.0} ms; tunnel ssh {:.0} / exec {:.0} / socks5 {:.0} MiB/s",
            health[1].median_ms(),
            health[2].median_ms(),
            health[3].median_ms(),
            stats[1].median(),
            stats[2].median(),
            stats[4].median()
        ),
        goal: format!(
            "each ≥ {GOAL_RATIO} of its hop alone: exec {exec_ratio:.2}, socks5 {socks_ratio:.2}"
        ),
        met: Some(goals_met),
    })
}

/// One way to read the bulk source.
enum Route {
    /// A loopback port: the source itself or a `clawlink tunnel` forward.
    Tcp(u16),
    /// `ssh -W 127.0.0.1:PORT` to the peers' sshd, its stdout read here.
    SshW(u16),
    /// A SOCKS5 CONNECT to `127.0.0.1:target` made here through the proxy.
    Socks { proxy: u16, target: u16 },
}

impl Route {
    /// Seconds from the first connect to the last byte; the byte count is checked.
    fn transfer(&self, ctx: &BenchContext, buf: &mut [u8]) -> Result<f64> {
        let started = Instant::now();
        let got = match self {
            Route::Tcp(port) => procs::drain(&mut procs::connect(*port, TRANSFER_TIMEOUT)?, buf)?,
            Route::SshW(port) => {
                let mut cmd = ctx.ssh_cmd()?;
                cmd.arg("-W")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg(ctx.ssh_target()?)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped());
                let mut guard =
                    ChildGuard::spawn("ssh -W", &mut cmd, &ctx.log_path("paths-ssh-w.stderr"))?;
                let mut stdout = guard.child_mut().stdout.take().context("ssh's stdout")?;
                let got = drain(&mut stdout, buf)?;
                guard.stop()?;
                got
            }
            Route::Socks { proxy, target } => {
                let mut stream = procs::connect(*proxy, TRANSFER_TIMEOUT)?;
                socks5_connect(&mut stream, *target)?;
                procs::drain(&mut stream, buf)?
            }
        };
        let secs = started.elapsed().as_secs_f64();
        if got != TRANSFER_MIB * MIB {
            bail!("got {got} bytes, expected {}", TRANSFER_MIB * MIB);
        }
        if secs > TRANSFER_TIMEOUT.as_secs_f64() {
            bail!("the transfer took {secs:.1} s");
        }
        Ok(secs)
    }
}

/// Reads to EOF; the byte count.
fn drain(reader: &mut impl Read, buf: &mut [u8]) -> Result<u64> {
    let mut total = 0u64;
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err).context(format!("reading after {total} bytes")),
        }
    }
}

/// RFC 1928 without authentication: CONNECT 127.0.0.1:`port`, success expected.
fn socks5_connect(stream: &mut std::net::TcpStream, port: u16) -> Result<()> {
    stream.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice)?;
    if choice != [5, 0] {
        bail!("the proxy chose method {choice:?}, not 'no authentication'");
    }
    let [high, low] = port.to_be_bytes();
    stream.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, high, low])?;
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply)?;
    if reply[1] != 0 {
        bail!(
            "the proxy refused CONNECT 127.0.0.1:{port} (reply {})",
            reply[1]
        );
    }
    Ok(())
}

/// `cargo build --release -p clawlink-transport-socks5`, copied into a plugin directory of
/// the scratch HOME's (0755, as the loader's ownership rule wants); the directory.
fn install_socks5_plugin(ctx: &BenchContext) -> Result<PathBuf> {
    let root = workspace_root();
    say(
        "bench",
        "cargo build --release -p clawlink-transport-socks5",
    );
    run_command(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "-p", "clawlink-transport-socks5"])
            .current_dir(&root),
    )?;
    let dir = ctx.scratch.join("plugins");
    std::fs::create_dir_all(&dir)?;
    crate::util::set_mode(&dir, 0o755)?;
    let library = dir.join("libclawlink_transport_socks5.so");
    std::fs::copy(
        root.join("target/release/libclawlink_transport_socks5.so"),
        &library,
    )
    .context("copying the socks5 plugin")?;
    crate::util::set_mode(&library, 0o755)?;
    Ok(dir)
}

/// `ssh -D 127.0.0.1:FREE -N` to the peers' sshd, listening when returned.
fn socks_proxy(ctx: &BenchContext) -> Result<Forward> {
    let local_port = procs::free_port()?;
    let mut cmd = ctx.ssh_cmd()?;
    cmd.args(["-o", "ExitOnForwardFailure=yes", "-N", "-D"])
        .arg(format!("127.0.0.1:{local_port}"))
        .arg(ctx.ssh_target()?)
        .stdout(Stdio::null());
    let command = describe(&cmd);
    say("bench", format!("socks proxy: $ {command}"));
    std::fs::create_dir_all(ctx.out_dir.join("logs"))?;
    let mut guard = ChildGuard::spawn("ssh -D", &mut cmd, &ctx.log_path("paths-ssh-d.stderr"))?;
    procs::wait_listening(local_port, &mut guard, READY_TIMEOUT)?;
    Ok(Forward {
        guard,
        local_port,
        command,
    })
}

/// Profiles `exec` (`ssh -W 127.0.0.1:%p` with the bench's ssh options) and `socks5`
/// (through `proxy_port`), both to `port`; `local_ports` (exec, socks5) for tunnels.
fn write_profiles(
    ctx: &BenchContext,
    config: &Path,
    proxy_port: u16,
    port: u16,
    local_ports: Option<(u16, u16)>,
) -> Result<()> {
    let ssh = ctx.ssh_cmd()?;
    let mut command: Vec<String> = vec!["ssh".into()];
    command.extend(ssh.get_args().map(|a| a.to_string_lossy().into_owned()));
    command.extend(["-W".into(), "127.0.0.1:%p".into(), ctx.ssh_target()?]);
    let quoted: Vec<String> = command.iter().map(|a| toml_string(a)).collect();
    let (exec_local, socks_local) = match local_ports {
        Some((exec, socks)) => (
            format!("local_port = {exec}\n"),
            format!("local_port = {socks}\n"),
        ),
        None => (String::new(), String::new()),
    };
    let text = format!(
        "[exec]\nmode = \"remote\"\ntransport = \"exec\"\n\n[exec.transports.exec]\ncommand = [{}]\nport = {port}\n{exec_local}\n\
         [socks5]\nmode = \"remote\"\ntransport = \"socks5\"\n\n[socks5.transports.socks5]\nproxy = \"127.0.0.1:{proxy_port}\"\n\
         target_port = {port}\n{socks_local}",
        quoted.join(", ")
    );
    std::fs::write(config, text).with_context(|| format!("writing {}", config.display()))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// clawlink with the bench config's profile `name` and the plugin directory.
fn profile_cmd(ctx: &BenchContext, config: &Path, plugin_dir: &Path, name: &str) -> Command {
    let mut cmd = ctx.clawlink_cmd();
    cmd.env("CLAWLINK_PLUGIN_DIR", plugin_dir)
        .arg("--config")
        .arg(config)
        .arg("--profile")
        .arg(name);
    cmd
}

/// `cmd --token-file … call health`.
fn with_call_health(ctx: &BenchContext, mut cmd: Command) -> Command {
    cmd.arg("--token-file")
        .arg(&ctx.token_file)
        .args(["call", "health"]);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks5_connect_speaks_rfc_1928() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut greeting = [0u8; 3];
            conn.read_exact(&mut greeting).unwrap();
            conn.write_all(&[5, 0]).unwrap();
            let mut request = [0u8; 10];
            conn.read_exact(&mut request).unwrap();
            conn.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
            (greeting, request)
        });
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        socks5_connect(&mut stream, 0x1234).unwrap();
        let (greeting, request) = proxy.join().unwrap();
        assert_eq!(greeting, [5, 1, 0]);
        assert_eq!(request, [5, 1, 0, 1, 127, 0, 0, 1, 0x12, 0x34]);
    }

    #[test]
    fn toml_strings_quote_and_escape() {
        assert_eq!(toml_string("a\"b\\c"), r#""a\"b\\c""#);
    }
}
