//! `cargo xtask bench [NAME]`: clawlink against the real openclaw CLI and OpenSSH on the
//! running peers.
//!
//! Each benchmark is one function in [`BENCHMARKS`] that writes `target/bench/<name>.json`
//! and `<name>.md` and returns its row of `target/bench/summary.md`. Commands are timed
//! with [`measure`]: wall time and peak RSS come from fork/exec plus `wait4`, whose
//! rusage covers exactly that child (and any children it reaped).
//!
//! clawlink always runs with a private HOME under `target/bench/scratch` (its
//! `.ssh/known_hosts` a copy of the peers' one), `CLAWLINK_DATA_DIR` beside it and an
//! otherwise empty environment; secrets reach it only through files or env.

mod forward;
mod idle;
mod procs;
mod remote;
mod rtt;
mod throughput;
mod transport_paths;
mod ws;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::peer::{self, EnvFile, Layout};
use crate::util::{describe, run_command, say, tail, workspace_root};

/// Measured runs per command of call-health, after [`WARMUP_RUNS`] unmeasured ones.
const RUNS: usize = 10;
const WARMUP_RUNS: usize = 1;

/// No single measured command may take longer than this (the slowest, the seed's
/// `openclaw status --json` over SSH, takes about 8 s); it is killed and the bench fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Goals from the project brief: clawlink needs at most this fraction of openclaw's
/// median wall time and of its peak RSS.
const TIME_GOAL_RATIO: f64 = 1.0 / 20.0;
const MEMORY_GOAL_RATIO: f64 = 1.0 / 10.0;

type Benchmark = fn(&BenchContext) -> Result<SummaryRow>;

/// Every benchmark by name, in the order `cargo xtask bench` runs them; add new ones here.
const BENCHMARKS: &[(&str, Benchmark)] = &[
    ("call-health", call_health),
    ("test-remote", remote::test_remote),
    ("tunnel-throughput", throughput::tunnel_throughput),
    ("transport-paths", transport_paths::transport_paths),
    ("health-rtt", rtt::health_rtt),
    ("agent-idle-rss", idle::agent_idle_rss),
];

/// What every benchmark needs: the running peers and a release clawlink.
struct BenchContext {
    layout: Layout,
    env: EnvFile,
    clawlink: PathBuf,
    token_file: PathBuf,
    out_dir: PathBuf,
    /// clawlink's private HOME and data dir live here; it is also every child's cwd.
    scratch: PathBuf,
}

pub fn run(args: &[&str]) -> Result<()> {
    let selected: Vec<&(&str, Benchmark)> = match args {
        [] => BENCHMARKS.iter().collect(),
        [name] => match BENCHMARKS.iter().find(|(n, _)| n == name) {
            Some(bench) => vec![bench],
            None => bail!(
                "unknown benchmark {name:?}; known: {}",
                BENCHMARKS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        _ => bail!("usage: cargo xtask bench [NAME]"),
    };
    let context = BenchContext::prepare()?;
    for (name, bench) in selected {
        say("bench", format!("=== {name}"));
        let row = bench(&context).with_context(|| format!("benchmark {name}"))?;
        update_summary(&context, name, &row)?;
    }
    let summary = context.out_dir.join("summary.md");
    print!("\n{}", fs::read_to_string(&summary).unwrap_or_default());
    say("bench", format!("summary in {}", summary.display()));
    Ok(())
}

impl BenchContext {
    fn prepare() -> Result<BenchContext> {
        let root = workspace_root();
        let layout = Layout::from_env()?;
        peer::ensure_started(&layout)?;
        let env = EnvFile::load(&layout.env_file())?;
        // CLAWLINK_BENCH_CLAWLINK benchmarks a given binary instead (e.g. one built elsewhere).
        let clawlink = match std::env::var_os("CLAWLINK_BENCH_CLAWLINK") {
            Some(bin) => PathBuf::from(bin),
            None => {
                say("bench", "cargo build --release -p clawlink");
                run_command(
                    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                        .args(["build", "--release", "-p", "clawlink"])
                        .current_dir(&root),
                )?;
                root.join("target/release/clawlink")
            }
        };
        // Absolute: children run with the scratch dir as their cwd.
        let clawlink = if clawlink.is_absolute() {
            clawlink
        } else {
            std::env::current_dir()?.join(clawlink)
        };
        let token_file = peer::write_token_file(&layout, &env, "bench-token")?;
        let out_dir = root.join("target/bench");
        fs::create_dir_all(&out_dir)?;
        // The data dir survives between bench runs on purpose: clawlink's device key stays
        // paired, so the gateway's device list does not grow by one per run.
        let scratch = out_dir.join("scratch");
        let ssh_dir = scratch.join("home/.ssh");
        fs::create_dir_all(&ssh_dir)?;
        fs::create_dir_all(scratch.join("data"))?;
        crate::util::set_mode(&ssh_dir, 0o700)?;
        let known_hosts = fs::read(env.require("OCPEER_SSH_KNOWN_HOSTS")?)
            .context("reading the peers' known_hosts")?;
        crate::util::write_file_mode(&ssh_dir.join("known_hosts"), &known_hosts, 0o600)?;
        Ok(BenchContext {
            layout,
            env,
            clawlink,
            token_file,
            out_dir,
            scratch,
        })
    }

    fn gateway_port(&self) -> Result<u16> {
        let port = self.env.require("OCPEER_GATEWAY_PORT")?;
        port.parse()
            .with_context(|| format!("OCPEER_GATEWAY_PORT={port:?} is not a port"))
    }

    fn token(&self) -> Result<&str> {
        self.env.require("OCPEER_GATEWAY_TOKEN")
    }

    /// A file under target/bench for a child's stdout/stderr.
    fn log_path(&self, name: &str) -> PathBuf {
        self.out_dir.join("logs").join(name)
    }

    /// The clawlink binary with its private HOME and data dir and nothing else from our env.
    fn clawlink_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.clawlink);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", self.scratch.join("home"))
            .env("CLAWLINK_DATA_DIR", self.scratch.join("data"))
            .current_dir(&self.scratch);
        // For diagnosing a benchmark: clawlink's log filter (its stderr is in target/bench/logs).
        if let Some(filter) = std::env::var_os("CLAWLINK_BENCH_RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        cmd
    }

    /// `clawlink --ssh claw@127.0.0.1:PORT --identity KEY --remote-port N` (global options;
    /// the caller adds the rest and the subcommand).
    fn clawlink_ssh_cmd(&self, remote_port: u16) -> Result<Command> {
        let mut cmd = self.clawlink_cmd();
        cmd.arg("--ssh")
            .arg(format!(
                "{}@{}:{}",
                self.env.require("OCPEER_SSH_USER")?,
                self.env.require("OCPEER_SSH_HOST")?,
                self.env.require("OCPEER_SSH_PORT")?
            ))
            .arg("--identity")
            .arg(self.env.require("OCPEER_SSH_KEY")?)
            .arg("--remote-port")
            .arg(remote_port.to_string());
        Ok(cmd)
    }

    /// OpenSSH's client against the peers' sshd: batch mode, strict host key checking
    /// against the peers' known_hosts, only the peers' key, no user config (`-F none`).
    /// The caller adds options, then [`BenchContext::ssh_target`] and a remote command.
    fn ssh_cmd(&self) -> Result<Command> {
        let mut cmd = Command::new("ssh");
        cmd.args([
            "-F",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            self.env.require("OCPEER_SSH_KNOWN_HOSTS")?
        ))
        .args(["-o", "IdentitiesOnly=yes", "-i"])
        .arg(self.env.require("OCPEER_SSH_KEY")?)
        .arg("-p")
        .arg(self.env.require("OCPEER_SSH_PORT")?)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("HOME", self.scratch.join("home"))
        .current_dir(&self.scratch);
        Ok(cmd)
    }

    fn ssh_target(&self) -> Result<String> {
        Ok(format!(
            "{}@{}",
            self.env.require("OCPEER_SSH_USER")?,
            self.env.require("OCPEER_SSH_HOST")?
        ))
    }

    /// `openclaw gateway call health --json` against the gateway at 127.0.0.1:port.
    ///
    /// The openclaw CLI refuses `--url` without an explicit `--token` (argv, which other
    /// users can read in /proc). Without `--url` it targets the local gateway, so it gets
    /// the port and the token from OPENCLAW_GATEWAY_PORT / OPENCLAW_GATEWAY_TOKEN (env
    /// only), with an empty HOME: nothing comes from claw's config, like a remote client.
    /// It runs as root under the DNS guard (never any DNS traffic off loopback); the
    /// guard costs about 10 ms, well under 1% of the CLI's time.
    fn openclaw_call_health(&self, port: u16) -> Result<Command> {
        let openclaw_home = self.out_dir.join("openclaw-home");
        fs::create_dir_all(&openclaw_home)?;
        let mut cmd = Command::new(self.layout.offline_guard());
        cmd.arg(self.layout.openclaw_wrapper())
            .args(["gateway", "call", "health", "--json"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &openclaw_home)
            .env("OPENCLAW_GATEWAY_PORT", port.to_string())
            .env("OPENCLAW_GATEWAY_TOKEN", self.token()?)
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .env("DO_NOT_TRACK", "1")
            .current_dir(&openclaw_home);
        Ok(cmd)
    }
}

/// `call health` once over a fresh connection: clawlink vs `openclaw gateway call health`.
fn call_health(ctx: &BenchContext) -> Result<SummaryRow> {
    let url = ctx.env.require("OCPEER_GATEWAY_URL")?.to_string();
    let port = ctx.gateway_port()?;

    let clawlink = || {
        let mut cmd = ctx.clawlink_cmd();
        cmd.arg("--url")
            .arg(&url)
            .arg("--token-file")
            .arg(&ctx.token_file)
            .args(["call", "health"]);
        Ok(cmd)
    };
    let openclaw = || ctx.openclaw_call_health(port);

    let (ours, _) = measure(ctx, "clawlink", RUNS, &clawlink)?;
    let (theirs, _) = measure(ctx, "openclaw", RUNS, &openclaw)?;
    let comparison = Comparison::new(&ours, &theirs);
    write_report(ctx, "call-health", &[&ours, &theirs], &comparison)?;
    Ok(SummaryRow {
        result: format!(
            "clawlink {:.1} ms / {:.1} MiB vs openclaw {:.1} ms / {:.1} MiB (median wall / max RSS)",
            ours.median_ms(),
            ours.max_rss_mib(),
            theirs.median_ms(),
            theirs.max_rss_mib()
        ),
        goal: format!(
            "time ≤ 1/20: 1/{:.0}; RSS ≤ 1/10: 1/{:.0}",
            1.0 / comparison.time_ratio,
            1.0 / comparison.memory_ratio
        ),
        met: Some(comparison.time_met() && comparison.memory_met()),
    })
}

/// One benchmark's line in target/bench/summary.md.
struct SummaryRow {
    /// The headline numbers.
    result: String,
    /// The goal and where we are against it.
    goal: String,
    /// None when the benchmark has no pass/fail goal.
    met: Option<bool>,
}

const SUMMARY_HEADER: &str = "# clawlink benchmarks\n\n\
    Latest result of each benchmark (`cargo xtask bench [NAME]`); details in `<name>.md` / `<name>.json`.\n\n\
    | benchmark | result | goal | met | when (unix) |\n\
    | --- | --- | --- | --- | ---: |\n";

/// Replaces (or appends) `name`'s row in summary.md, keeping the other benchmarks' rows
/// from earlier runs, in [`BENCHMARKS`] order.
fn update_summary(ctx: &BenchContext, name: &str, row: &SummaryRow) -> Result<()> {
    let path = ctx.out_dir.join("summary.md");
    let old = fs::read_to_string(&path).unwrap_or_default();
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let new_line = format!(
        "| {name} | {} | {} | {} | {now} |",
        cell(&row.result),
        cell(&row.goal),
        match row.met {
            Some(ok) => met(ok),
            None => "—",
        }
    );
    let mut md = SUMMARY_HEADER.to_string();
    for (known, _) in BENCHMARKS {
        let line = if *known == name {
            Some(new_line.clone())
        } else {
            let prefix = format!("| {known} |");
            old.lines()
                .find(|line| line.starts_with(&prefix))
                .map(str::to_string)
        };
        if let Some(line) = line {
            md.push_str(&line);
            md.push('\n');
        }
    }
    fs::write(&path, md).with_context(|| format!("writing {}", path.display()))
}

/// Median, nearest-rank percentiles, min, max and mean of a list of measurements.
#[derive(Clone, Debug)]
struct Stats {
    values: Vec<f64>,
}

impl Stats {
    fn new(values: Vec<f64>) -> Stats {
        Stats { values }
    }
    fn median(&self) -> f64 {
        median(&self.values)
    }
    /// Nearest-rank percentile (p in 0..=100): the smallest value with at least p% at or below it.
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
    fn min(&self) -> f64 {
        self.values.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
    fn mean(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }
    /// `{"runs", "median", "min", "max", "values"}` (plus p50, p99 and mean when asked).
    fn to_json(&self, with_p99: bool) -> Value {
        let mut out = json!({
            "runs": self.values.len() as f64,
            "median": round3(self.median()),
            "min": round3(self.min()),
            "max": round3(self.max()),
            "values": self.values.iter().copied().map(round3).collect::<Vec<_>>(),
        });
        if with_p99 {
            out["p50"] = json!(round3(self.percentile(50.0)));
            out["p99"] = json!(round3(self.percentile(99.0)));
            out["mean"] = json!(round3(self.mean()));
        }
        out
    }
}

/// `x` rounded to 3 decimals for the reports (milliseconds to the microsecond, MiB/s to
/// 0.001). A value that is not finite is written as `null`: serde_json turns NaN and the
/// infinities into `null`, as JSON has no such numbers.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `x` rounded to 6 decimals: the goals' ratios.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// A report as written to `<name>.json`: two-space indentation and a final newline.
fn pretty(report: &Value) -> String {
    format!("{report:#}\n")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `<name>.json` and `<name>.md` under target/bench and prints the markdown.
fn write_files(ctx: &BenchContext, name: &str, json: &Value, md: &str) -> Result<()> {
    let json_path = ctx.out_dir.join(format!("{name}.json"));
    let md_path = ctx.out_dir.join(format!("{name}.md"));
    fs::write(&json_path, pretty(json))?;
    fs::write(&md_path, md)?;
    print!("{md}");
    say(
        "bench",
        format!("wrote {} and {}", json_path.display(), md_path.display()),
    );
    Ok(())
}

/// One measured run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    max_rss_kib: u64,
}

/// All measured runs of one command.
struct Series {
    label: &'static str,
    command: String,
    samples: Vec<Sample>,
}

impl Series {
    fn wall_ms(&self) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| s.wall.as_secs_f64() * 1000.0)
            .collect()
    }
    fn median_ms(&self) -> f64 {
        median(&self.wall_ms())
    }
    fn wall_stats(&self) -> Stats {
        Stats::new(self.wall_ms())
    }
    fn min_ms(&self) -> f64 {
        self.wall_ms().into_iter().fold(f64::INFINITY, f64::min)
    }
    fn max_ms(&self) -> f64 {
        self.wall_ms().into_iter().fold(0.0, f64::max)
    }
    fn max_rss_mib(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.max_rss_kib)
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs `make_command()` WARMUP_RUNS + `runs` times; every run must exit 0 within
/// [`COMMAND_TIMEOUT`]. Returns the measured runs and each measured run's stdout.
fn measure(
    ctx: &BenchContext,
    label: &'static str,
    runs: usize,
    make_command: &dyn Fn() -> Result<Command>,
) -> Result<(Series, Vec<String>)> {
    let stem = label.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
    let stdout_path = ctx.log_path(&format!("{stem}.stdout"));
    let stderr_path = ctx.log_path(&format!("{stem}.stderr"));
    fs::create_dir_all(ctx.out_dir.join("logs"))?;
    let command = describe(&make_command()?);
    say("bench", format!("{label}: $ {command}"));
    let mut samples = Vec::with_capacity(runs);
    let mut stdouts = Vec::with_capacity(runs);
    for run_index in 0..WARMUP_RUNS + runs {
        let mut cmd = make_command()?;
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path)?)
            .stderr(fs::File::create(&stderr_path)?);
        let (sample, exit) = run_measured(&mut cmd, COMMAND_TIMEOUT)?;
        if exit != 0 {
            eprintln!(
                "--- {} ---\n{}",
                stderr_path.display(),
                tail(&stderr_path, 30)
            );
            bail!("{label} exited with {exit} (run {run_index})");
        }
        if run_index >= WARMUP_RUNS {
            samples.push(sample);
            stdouts.push(fs::read_to_string(&stdout_path).unwrap_or_default());
        }
    }
    let series = Series {
        label,
        command,
        samples,
    };
    say(
        "bench",
        format!(
            "{label}: median {:.1} ms, max RSS {:.1} MiB",
            series.median_ms(),
            series.max_rss_mib()
        ),
    );
    Ok((series, stdouts))
}

/// Spawns the command and reaps it with `wait4` (not `Child::wait`) to get its rusage.
/// Returns the sample and the exit code (128+signal when killed by a signal). A child
/// still running after `timeout` is killed (SIGKILL) and reported as exit 137.
fn run_measured(cmd: &mut Command, timeout: Duration) -> Result<(Sample, i32)> {
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("could not run `{}`", describe(cmd)))?;
    let pid = child.id() as libc::pid_t;

    // The watchdog may only signal the pid while it is still ours: we first wait for the
    // exit without reaping (WNOWAIT), mark it done under the lock, and reap afterwards.
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    let watchdog = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let (lock, cvar) = &*done;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = cvar
                .wait_timeout_while(guard, timeout, |finished| !*finished)
                .unwrap_or_else(|e| e.into_inner());
            if !*guard {
                // SAFETY: the child is not reaped before `done` is set, which needs this lock.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        })
    };
    let waited = loop {
        // SAFETY: siginfo_t is plain old data; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a local; pid is our own unreaped child.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            break Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            break Err(err);
        }
    };
    let wall = started.elapsed();
    {
        let (lock, cvar) = &*done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
    }
    let _ = watchdog.join();
    waited.context("waitid")?;

    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our own (exited, unreaped) child.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    // `child` is only dropped here: dropping a std Child neither waits nor kills.
    drop(child);
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    if wall >= timeout && exit == 128 + libc::SIGKILL {
        say(
            "bench",
            format!("`{}` killed after {timeout:?}", describe(cmd)),
        );
    }
    let sample = Sample {
        wall,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    };
    Ok((sample, exit))
}

/// clawlink relative to openclaw, against the goals.
struct Comparison {
    time_ratio: f64,
    memory_ratio: f64,
}

impl Comparison {
    fn new(ours: &Series, theirs: &Series) -> Comparison {
        Comparison {
            time_ratio: ours.median_ms() / theirs.median_ms(),
            memory_ratio: ours.max_rss_mib() / theirs.max_rss_mib(),
        }
    }
    fn time_met(&self) -> bool {
        self.time_ratio <= TIME_GOAL_RATIO
    }
    fn memory_met(&self) -> bool {
        self.memory_ratio <= MEMORY_GOAL_RATIO
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

/// Writes `<name>.json` and `<name>.md` under target/bench and prints the table.
fn write_report(
    ctx: &BenchContext,
    name: &str,
    series: &[&Series],
    cmp: &Comparison,
) -> Result<()> {
    let json_path = ctx.out_dir.join(format!("{name}.json"));
    let md_path = ctx.out_dir.join(format!("{name}.md"));
    fs::write(&json_path, render_json(name, series, cmp))?;
    let table = render_markdown(name, series, cmp);
    fs::write(&md_path, &table)?;
    print!("{table}");
    say(
        "bench",
        format!("wrote {} and {}", json_path.display(), md_path.display()),
    );
    Ok(())
}

fn render_markdown(name: &str, series: &[&Series], cmp: &Comparison) -> String {
    let mut md = format!(
        "# {name}\n\n{RUNS} measured runs each after {WARMUP_RUNS} warm-up, against the real gateway on 127.0.0.1.\n\n\
         | command | median wall ms | min wall ms | max wall ms | max RSS MiB |\n\
         | --- | ---: | ---: | ---: | ---: |\n"
    );
    for s in series {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.label,
            s.median_ms(),
            s.min_ms(),
            s.max_ms(),
            s.max_rss_mib()
        );
    }
    let _ = write!(
        md,
        "\n| goal (clawlink / openclaw) | ratio | target | result |\n\
         | --- | ---: | ---: | --- |\n\
         | median wall time | {:.4} (1/{:.0}) | ≤ 1/20 | {} |\n\
         | max RSS | {:.4} (1/{:.0}) | ≤ 1/10 | {} |\n",
        cmp.time_ratio,
        1.0 / cmp.time_ratio,
        met(cmp.time_met()),
        cmp.memory_ratio,
        1.0 / cmp.memory_ratio,
        met(cmp.memory_met()),
    );
    for s in series {
        let _ = write!(md, "\n`{}`: `{}`\n", s.label, s.command);
    }
    md
}

fn render_json(name: &str, series: &[&Series], cmp: &Comparison) -> String {
    let commands: Map<String, Value> = series
        .iter()
        .map(|s| {
            let report = json!({
                "command": s.command,
                "wall_ms": s.wall_ms().into_iter().map(round3).collect::<Vec<_>>(),
                "max_rss_kib": s.samples.iter().map(|x| x.max_rss_kib).collect::<Vec<_>>(),
                "median_wall_ms": round3(s.median_ms()),
                "min_wall_ms": round3(s.min_ms()),
                "max_wall_ms": round3(s.max_ms()),
                "max_rss_mib": round3(s.max_rss_mib()),
            });
            (s.label.to_owned(), report)
        })
        .collect();
    pretty(&json!({
        "benchmark": name,
        "unix_time": unix_now(),
        "runs": RUNS,
        "warmup_runs": WARMUP_RUNS,
        "commands": commands,
        "goals": {
            "time_ratio": round6(cmp.time_ratio),
            "time_goal": round6(TIME_GOAL_RATIO),
            "time_met": cmp.time_met(),
            "memory_ratio": round6(cmp.memory_ratio),
            "memory_goal": round6(MEMORY_GOAL_RATIO),
            "memory_met": cmp.memory_met(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn wait4_reports_exit_code_and_rss() {
        let (sample, exit) = run_measured(
            Command::new("sh").args(["-c", "exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(exit, 3);
        assert!(sample.max_rss_kib > 0);
    }

    #[test]
    fn run_measured_kills_at_the_timeout() {
        let (sample, exit) =
            run_measured(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap();
        assert_eq!(exit, 128 + libc::SIGKILL);
        assert!(sample.wall < Duration::from_secs(5));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let stats = Stats::new((1..=200).map(f64::from).collect());
        assert_eq!(stats.percentile(50.0), 100.0);
        assert_eq!(stats.percentile(99.0), 198.0);
        assert_eq!(stats.percentile(100.0), 200.0);
        assert_eq!(stats.median(), 100.5);
        assert_eq!(Stats::new(vec![5.0]).percentile(99.0), 5.0);
    }

    #[test]
    fn report_numbers_are_rounded_and_never_nan() {
        let stats = Stats::new(vec![1.23456, 2.0]);
        let back: Value = serde_json::from_str(&pretty(&stats.to_json(true))).unwrap();
        assert_eq!(back["values"][0].as_f64(), Some(1.235));
        assert_eq!(back["runs"].as_f64(), Some(2.0));
        for key in [
            "runs", "median", "min", "max", "values", "p50", "p99", "mean",
        ] {
            assert!(back.get(key).is_some(), "{key}");
        }
        let empty = Stats::new(Vec::new()).to_json(false);
        assert_eq!(empty["median"], Value::Null);
        assert!(pretty(&json!({"a": 1})).ends_with("}\n"));
    }

    #[test]
    fn the_comparison_report_is_json_with_its_keys() {
        let series = |label, ms: &[u64]| Series {
            label,
            command: format!("{label} \"quoted\" \\ arg\n\u{1}"),
            samples: ms
                .iter()
                .map(|&ms| Sample {
                    wall: Duration::from_micros(ms * 1000 + 1234),
                    max_rss_kib: 2048,
                })
                .collect(),
        };
        let (ours, theirs) = (
            series("clawlink", &[1, 2, 3]),
            series("openclaw", &[40, 50]),
        );
        let cmp = Comparison::new(&ours, &theirs);
        let text = render_json("status", &[&ours, &theirs], &cmp);
        let report: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(report["benchmark"], "status");
        assert_eq!(report["runs"], RUNS);
        assert_eq!(report["warmup_runs"], WARMUP_RUNS);
        assert!(report["unix_time"].is_u64());
        let ours = &report["commands"]["clawlink"];
        assert_eq!(ours["command"], "clawlink \"quoted\" \\ arg\n\u{1}");
        assert_eq!(ours["wall_ms"], json!([2.234, 3.234, 4.234]));
        assert_eq!(ours["max_rss_kib"], json!([2048, 2048, 2048]));
        assert_eq!(ours["median_wall_ms"], 3.234);
        assert_eq!(ours["min_wall_ms"], 2.234);
        assert_eq!(ours["max_wall_ms"], 4.234);
        assert_eq!(ours["max_rss_mib"], 2.0);
        let mut keys: Vec<&String> = report["goals"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "memory_goal",
                "memory_met",
                "memory_ratio",
                "time_goal",
                "time_met",
                "time_ratio"
            ]
        );
        assert_eq!(report["goals"]["time_goal"], 0.05);
        assert_eq!(report["goals"]["memory_met"], false);
        assert!(text.ends_with("}\n"));
    }
}
