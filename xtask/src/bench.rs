//! `cargo xtask bench [NAME]`: clawlink against the real openclaw CLI on the running peers.
//!
//! Each benchmark is one function in [`BENCHMARKS`] that measures commands with
//! [`measure`] and writes `target/bench/<name>.json` and `<name>.md` with
//! [`write_report`]. Wall time and peak RSS come from fork/exec plus `wait4`,
//! whose rusage covers exactly that child (and any children it reaped).

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::peer::{self, EnvFile, Layout};
use crate::util::{describe, run_command, say, tail, workspace_root};

/// Measured runs per command, after [`WARMUP_RUNS`] unmeasured ones.
const RUNS: usize = 10;
const WARMUP_RUNS: usize = 1;

/// Goals from the project brief: clawlink needs at most this fraction of openclaw's
/// median wall time and of its peak RSS.
const TIME_GOAL_RATIO: f64 = 1.0 / 20.0;
const MEMORY_GOAL_RATIO: f64 = 1.0 / 10.0;

type Benchmark = fn(&BenchContext) -> Result<()>;

/// Every benchmark by name; add new ones here.
const BENCHMARKS: &[(&str, Benchmark)] = &[("call-health", call_health)];

/// What every benchmark needs: the running peers and a release clawlink.
struct BenchContext {
    layout: Layout,
    env: EnvFile,
    clawlink: PathBuf,
    token_file: PathBuf,
    out_dir: PathBuf,
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
        bench(&context).with_context(|| format!("benchmark {name}"))?;
    }
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
        let token_file = peer::write_token_file(&layout, &env, "bench-token")?;
        let out_dir = root.join("target/bench");
        fs::create_dir_all(&out_dir)?;
        Ok(BenchContext {
            layout,
            env,
            clawlink,
            token_file,
            out_dir,
        })
    }
}

/// `call health` once over a fresh connection: clawlink vs `openclaw gateway call health`.
fn call_health(ctx: &BenchContext) -> Result<()> {
    let url = ctx.env.require("OCPEER_GATEWAY_URL")?.to_string();
    let port = ctx.env.require("OCPEER_GATEWAY_PORT")?.to_string();
    let token = ctx.env.require("OCPEER_GATEWAY_TOKEN")?.to_string();

    let clawlink = || {
        let mut cmd = Command::new(&ctx.clawlink);
        cmd.arg("--url")
            .arg(&url)
            .arg("--token-file")
            .arg(&ctx.token_file)
            .args(["call", "health"]);
        cmd
    };

    // The openclaw CLI refuses `--url` without an explicit `--token` (argv, which other
    // users can read in /proc). Without `--url` it targets the local gateway, so it gets
    // the port and the token from OPENCLAW_GATEWAY_PORT / OPENCLAW_GATEWAY_TOKEN (env
    // only), with an empty HOME: nothing comes from claw's config, like a remote client.
    // It runs as root under the DNS guard (never any DNS traffic off loopback); the
    // guard costs about 10 ms, well under 1% of the CLI's time.
    let openclaw_home = ctx.out_dir.join("openclaw-home");
    fs::create_dir_all(&openclaw_home)?;
    let openclaw = || {
        let mut cmd = Command::new(ctx.layout.offline_guard());
        cmd.arg(ctx.layout.openclaw_wrapper())
            .args(["gateway", "call", "health", "--json"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &openclaw_home)
            .env("OPENCLAW_GATEWAY_PORT", &port)
            .env("OPENCLAW_GATEWAY_TOKEN", &token)
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .env("DO_NOT_TRACK", "1")
            .current_dir(&openclaw_home);
        cmd
    };

    let ours = measure(ctx, "clawlink", &clawlink)?;
    let theirs = measure(ctx, "openclaw", &openclaw)?;
    let comparison = Comparison::new(&ours, &theirs);
    write_report(ctx, "call-health", &[&ours, &theirs], &comparison)
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

/// Runs `make_command()` WARMUP_RUNS + RUNS times; every run must exit 0.
fn measure(
    ctx: &BenchContext,
    label: &'static str,
    make_command: &dyn Fn() -> Command,
) -> Result<Series> {
    let stdout_path = ctx.out_dir.join(format!("{label}.stdout"));
    let stderr_path = ctx.out_dir.join(format!("{label}.stderr"));
    let command = describe(&make_command());
    say("bench", format!("{label}: $ {command}"));
    let mut samples = Vec::with_capacity(RUNS);
    for run_index in 0..WARMUP_RUNS + RUNS {
        let mut cmd = make_command();
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path)?)
            .stderr(fs::File::create(&stderr_path)?);
        let (sample, exit) = run_measured(&mut cmd)?;
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
    Ok(series)
}

/// Spawns the command and reaps it with `wait4` (not `Child::wait`) to get its rusage.
/// Returns the sample and the exit code (128+signal when killed by a signal).
fn run_measured(cmd: &mut Command) -> Result<(Sample, i32)> {
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("could not run `{}`", describe(cmd)))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our own unreaped child.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    let wall = started.elapsed();
    // `child` is only dropped here: dropping a std Child neither waits nor kills.
    drop(child);
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut json = format!(
        "{{\n  \"benchmark\": {},\n  \"unix_time\": {now},\n  \"runs\": {RUNS},\n  \"warmup_runs\": {WARMUP_RUNS},\n  \"commands\": {{\n",
        json_string(name)
    );
    for (i, s) in series.iter().enumerate() {
        let walls: Vec<String> = s.wall_ms().iter().map(|ms| format!("{ms:.3}")).collect();
        let rss: Vec<String> = s
            .samples
            .iter()
            .map(|x| x.max_rss_kib.to_string())
            .collect();
        let _ = write!(
            json,
            "    {}: {{\n      \"command\": {},\n      \"wall_ms\": [{}],\n      \"max_rss_kib\": [{}],\n      \
             \"median_wall_ms\": {:.3},\n      \"min_wall_ms\": {:.3},\n      \"max_wall_ms\": {:.3},\n      \"max_rss_mib\": {:.3}\n    }}{}\n",
            json_string(s.label),
            json_string(&s.command),
            walls.join(", "),
            rss.join(", "),
            s.median_ms(),
            s.min_ms(),
            s.max_ms(),
            s.max_rss_mib(),
            if i + 1 < series.len() { "," } else { "" }
        );
    }
    let _ = write!(
        json,
        "  }},\n  \"goals\": {{\n    \"time_ratio\": {:.6},\n    \"time_goal\": {TIME_GOAL_RATIO:.6},\n    \"time_met\": {},\n    \
         \"memory_ratio\": {:.6},\n    \"memory_goal\": {MEMORY_GOAL_RATIO:.6},\n    \"memory_met\": {}\n  }}\n}}\n",
        cmp.time_ratio,
        cmp.time_met(),
        cmp.memory_ratio,
        cmp.memory_met(),
    );
    json
}

/// A JSON string literal (commands contain paths, which may hold quotes or backslashes).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
        let (sample, exit) = run_measured(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        assert_eq!(exit, 3);
        assert!(sample.max_rss_kib > 0);
    }

    #[test]
    fn escapes_json_strings() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
