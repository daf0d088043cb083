//! `tunnel-throughput`: bulk TCP through `clawlink tunnel` vs `ssh -N -L`.
//!
//! A thread here serves 512 MiB of zeros (1 MiB writes) per accepted connection on a
//! loopback port, then closes. Both forwarders point their remote side at it (sshd
//! connects to 127.0.0.1:SRC); we read everything from the local port and time it. The
//! direct rate (no tunnel) is the ceiling. Rounds interleave direct / clawlink / OpenSSH
//! so background load hits all three alike. Goal: clawlink / OpenSSH ≥ 1.0.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::procs::{self, ChildGuard};
use super::{forward, met, round3, unix_now, write_files, BenchContext, Stats, SummaryRow};
use crate::util::say;

pub(super) const MIB: u64 = 1 << 20;
pub(super) const CHUNK: usize = 1 << 20;
const TRANSFER_MIB: u64 = 512;
const ROUNDS: usize = 3;
const GOAL_RATIO: f64 = 1.0;
/// One 512 MiB transfer must finish (and every single read return) within this.
pub(super) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// The source serves at most this many connections (3 rounds × 3 paths, plus slack).
const MAX_CONNECTIONS: usize = 32;

pub fn tunnel_throughput(ctx: &BenchContext) -> Result<SummaryRow> {
    let source = BulkSource::start(TRANSFER_MIB * MIB)?;
    say(
        "bench",
        format!(
            "bulk source on 127.0.0.1:{} ({TRANSFER_MIB} MiB per connection)",
            source.port
        ),
    );
    let source_port = source.port;
    let clawlink = forward::clawlink_tunnel(ctx, source.port, "clawlink-tunnel-bulk")?;
    let openssh = forward::ssh_forward(ctx, source.port, "ssh-forward-bulk")?;

    let paths: [(&str, u16, Option<&ChildGuard>); 3] = [
        ("direct", source.port, None),
        (
            "clawlink tunnel",
            clawlink.local_port,
            Some(&clawlink.guard),
        ),
        ("ssh -N -L", openssh.local_port, Some(&openssh.guard)),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut buf = vec![0u8; CHUNK];
    for round in 0..ROUNDS {
        for (i, (label, port, guard)) in paths.iter().enumerate() {
            let cpu_before = guard.map(|g| cpu_seconds(g.pid()));
            let secs =
                transfer(*port, &mut buf).with_context(|| format!("{label}, round {round}"))?;
            let rate = TRANSFER_MIB as f64 / secs;
            if let (Some(before), Some(g)) = (cpu_before, guard) {
                // Forwarder (client side) CPU seconds per GiB moved.
                let used = cpu_seconds(g.pid()) - before;
                cpu[i].push(used * 1024.0 / TRANSFER_MIB as f64);
            }
            say(
                "bench",
                format!("{label}: {TRANSFER_MIB} MiB in {secs:.3} s = {rate:.0} MiB/s"),
            );
            rates[i].push(rate);
        }
    }
    let clawlink_status = clawlink.guard.stop()?;
    openssh.guard.stop()?;
    drop(source);
    if !clawlink_status.success() {
        say(
            "bench",
            format!("note: clawlink tunnel ended with {clawlink_status} on SIGTERM"),
        );
    }

    let stats: Vec<Stats> = rates.into_iter().map(Stats::new).collect();
    let cpu: Vec<Stats> = cpu.into_iter().map(Stats::new).collect();
    let ratio = stats[1].median() / stats[2].median();
    let goal_met = ratio >= GOAL_RATIO;

    let series = |i: usize, command: &str| {
        let mut series = json!({"command": command, "mib_per_s": stats[i].to_json(false)});
        if !cpu[i].values.is_empty() {
            series["client_cpu_s_per_gib"] = cpu[i].to_json(false);
        }
        series
    };
    // Counts as floats (`512.0`), as these reports have always had them.
    let json = json!({
        "benchmark": "tunnel-throughput",
        "unix_time": unix_now() as f64,
        "transfer_mib": TRANSFER_MIB as f64,
        "chunk_bytes": CHUNK as f64,
        "rounds": ROUNDS as f64,
        "warmup_runs": 0.0,
        "direct": series(
            0,
            &format!("read 127.0.0.1:{source_port} (the bulk source, no tunnel)"),
        ),
        "clawlink": series(1, &clawlink.command),
        "openssh": series(2, &openssh.command),
        "clawlink_tunnel_exit_on_sigterm": clawlink_status.to_string(),
        "goals": {
            "throughput_ratio": round3(ratio),
            "throughput_goal": GOAL_RATIO,
            "throughput_met": goal_met,
        },
    });

    let mut md = format!(
        "# tunnel-throughput\n\n{TRANSFER_MIB} MiB of zeros from a loopback TCP source (1 MiB writes), read to EOF \
         through each path; {ROUNDS} interleaved rounds, no warm-up. The forwarders' SSH server is the real sshd on \
         127.0.0.1. CPU is the forwarder client process only (user+sys), not sshd.\n\n\
         | path | median MiB/s | min MiB/s | max MiB/s | client CPU s/GiB (median) |\n\
         | --- | ---: | ---: | ---: | ---: |\n"
    );
    for (i, label) in ["direct (ceiling)", "clawlink tunnel", "ssh -N -L"]
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            md,
            "| {label} | {:.0} | {:.0} | {:.0} | {} |",
            stats[i].median(),
            stats[i].min(),
            stats[i].max(),
            if cpu[i].values.is_empty() {
                "—".to_string()
            } else {
                format!("{:.2}", cpu[i].median())
            }
        );
    }
    let _ = write!(
        md,
        "\n| goal | ratio | target | result |\n| --- | ---: | ---: | --- |\n\
         | clawlink / OpenSSH (median MiB/s) | {ratio:.3} | ≥ 1.0 | {} |\n\
         \n`clawlink`: `{}`\n\n`openssh`: `{}`\n",
        met(goal_met),
        clawlink.command,
        openssh.command
    );
    write_files(ctx, "tunnel-throughput", &json, &md)?;

    Ok(SummaryRow {
        result: format!(
            "clawlink {:.0} MiB/s vs ssh -N -L {:.0} MiB/s (direct {:.0} MiB/s), medians of {ROUNDS} × {TRANSFER_MIB} MiB",
            stats[1].median(),
            stats[2].median(),
            stats[0].median()
        ),
        goal: format!("clawlink / OpenSSH ≥ 1.0: {ratio:.2}"),
        met: Some(goal_met),
    })
}

/// Connects, reads to EOF, checks the byte count; returns seconds from connect to EOF.
fn transfer(port: u16, buf: &mut [u8]) -> Result<f64> {
    let started = Instant::now();
    let mut stream = procs::connect(port, TRANSFER_TIMEOUT)?;
    let got = procs::drain(&mut stream, buf)?;
    let secs = started.elapsed().as_secs_f64();
    if got != TRANSFER_MIB * MIB {
        bail!("got {got} bytes, expected {}", TRANSFER_MIB * MIB);
    }
    if secs > TRANSFER_TIMEOUT.as_secs_f64() {
        bail!("the transfer took {secs:.1} s");
    }
    Ok(secs)
}

/// User+system CPU seconds of a live process, from /proc/PID/stat (0 if unreadable).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / if hz > 0 { hz as f64 } else { 100.0 }
}

/// Serves `bytes` zeros to every accepted connection, from its own threads.
pub(super) struct BulkSource {
    pub(super) port: u16,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl BulkSource {
    pub(super) fn start(bytes: u64) -> Result<BulkSource> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the bulk source")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut writers = Vec::new();
                for conn in listener.incoming().take(MAX_CONNECTIONS) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let stop = Arc::clone(&stop);
                    writers.push(std::thread::spawn(move || serve(conn, bytes, &stop)));
                }
                // The listener closes here; then wait for the writers (each bounded in time).
                drop(listener);
                for writer in writers {
                    let _ = writer.join();
                }
            })
        };
        Ok(BulkSource {
            port,
            stop,
            acceptor: Some(acceptor),
        })
    }
}

fn serve(mut conn: TcpStream, bytes: u64, stop: &AtomicBool) {
    if conn.set_write_timeout(Some(TRANSFER_TIMEOUT)).is_err() {
        return;
    }
    let chunk = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 && !stop.load(Ordering::SeqCst) {
        let n = left.min(CHUNK as u64) as usize;
        if conn.write_all(&chunk[..n]).is_err() {
            return;
        }
        left -= n as u64;
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

impl Drop for BulkSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees `stop` and closes the listener.
        let _ = TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, self.port).into(),
            Duration::from_secs(1),
        );
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_source_sends_exactly_the_bytes_and_closes() {
        let source = BulkSource::start(3 * MIB + 5).unwrap();
        let mut stream = procs::connect(source.port, Duration::from_secs(10)).unwrap();
        let mut buf = vec![0u8; CHUNK];
        assert_eq!(procs::drain(&mut stream, &mut buf).unwrap(), 3 * MIB + 5);
        let port = source.port;
        drop(source);
        assert!(!procs::listening(port));
    }

    #[test]
    fn reads_own_cpu_time() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {}
        assert!(cpu_seconds(std::process::id()) > 0.0);
    }
}
