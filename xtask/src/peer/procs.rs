//! The pids file (`name pid starttime` lines) and stopping exactly those processes.
//!
//! The start time (field 22 of /proc/PID/stat) guards against PID reuse: a PID
//! whose start time no longer matches belongs to someone else and is left alone.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::util::{say, write_file_mode};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidEntry {
    pub name: String,
    pub pid: i32,
    /// Clock ticks after boot; 0 means unknown (then only the PID is checked).
    pub start_time: u64,
}

impl PidEntry {
    pub fn for_pid(name: &str, pid: u32) -> PidEntry {
        let pid = pid as i32;
        PidEntry {
            name: name.to_string(),
            pid,
            start_time: proc_stat(pid).map_or(0, |s| s.start_time),
        }
    }

    /// True if this exact process still runs (not a zombie, not a reused PID).
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some(stat) => {
                stat.state != 'Z' && (self.start_time == 0 || stat.start_time == self.start_time)
            }
            None => false,
        }
    }
}

/// Order in which `start` launches things; `stop` goes the other way.
const LAUNCH_ORDER: [&str; 5] = ["stub", "gateway-main", "gateway-pw", "sshd", "fake-node"];

fn launch_rank(name: &str) -> usize {
    LAUNCH_ORDER
        .iter()
        .position(|n| *n == name)
        .unwrap_or(LAUNCH_ORDER.len())
}

pub fn read_pids(path: &Path) -> Vec<PidEntry> {
    fs::read_to_string(path)
        .map(|text| parse_pids(&text))
        .unwrap_or_default()
}

fn parse_pids(text: &str) -> Vec<PidEntry> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?.to_string();
            let pid = words.next()?.parse().ok()?;
            let start_time = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            Some(PidEntry {
                name,
                pid,
                start_time,
            })
        })
        .collect()
}

/// Writes the entries in launch order, atomically (tests may restart a gateway
/// while something else reads the file).
pub fn write_pids(path: &Path, entries: &[PidEntry]) -> Result<()> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| launch_rank(&e.name));
    let text: String = sorted
        .iter()
        .map(|e| format!("{} {} {}\n", e.name, e.pid, e.start_time))
        .collect();
    write_file_mode(path, text.as_bytes(), 0o644)
}

/// Adds or replaces the entry with the same name.
pub fn record(path: &Path, entry: PidEntry) -> Result<()> {
    let mut entries = read_pids(path);
    entries.retain(|e| e.name != entry.name);
    entries.push(entry);
    write_pids(path, &entries)
}

pub fn forget(path: &Path, name: &str) -> Result<()> {
    let mut entries = read_pids(path);
    entries.retain(|e| e.name != name);
    write_pids(path, &entries)
}

struct ProcStat {
    state: char,
    start_time: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// The command name in field 2 may contain spaces and ')', so split after the last ')'.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state); start time is field 22.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Direct children of every thread of `pid` (for sshd: open sessions and tunnels).
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

fn signal(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill has no memory-safety preconditions; the PID was checked just before.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// TERM in reverse launch order (sshd's children first), wait up to 30 s, then KILL.
pub fn stop_entries(entries: &[PidEntry], tag: &str) {
    let mut ordered = entries.to_vec();
    ordered.sort_by_key(|e| std::cmp::Reverse(launch_rank(&e.name)));
    let mut targets = Vec::new();
    for entry in ordered {
        if !entry.alive() {
            continue;
        }
        if entry.name == "sshd" {
            for child in children(entry.pid) {
                signal(child, libc::SIGTERM);
            }
        }
        if signal(entry.pid, libc::SIGTERM) {
            say(tag, format!("TERM {} ({})", entry.name, entry.pid));
            targets.push(entry);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for entry in targets {
        while entry.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if entry.alive() && signal(entry.pid, libc::SIGKILL) {
            say(tag, format!("KILL {} ({})", entry.name, entry.pid));
            while entry.alive() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 847296 1000 10";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(parsed.state, 'S');
        assert_eq!(parsed.start_time, 847296);
    }

    #[test]
    fn own_process_is_alive_and_reused_pid_is_not() {
        let me = PidEntry::for_pid("stub", std::process::id());
        assert!(me.start_time > 0);
        assert!(me.alive());
        let reused = PidEntry {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!reused.alive());
    }

    #[test]
    fn pids_file_keeps_launch_order() {
        let dir = std::env::temp_dir().join(format!("xtask-pids-test-{}", std::process::id()));
        let path = dir.join("pids");
        record(
            &path,
            PidEntry {
                name: "sshd".into(),
                pid: 3,
                start_time: 30,
            },
        )
        .unwrap();
        record(
            &path,
            PidEntry {
                name: "stub".into(),
                pid: 1,
                start_time: 10,
            },
        )
        .unwrap();
        record(
            &path,
            PidEntry {
                name: "gateway-main".into(),
                pid: 2,
                start_time: 20,
            },
        )
        .unwrap();
        record(
            &path,
            PidEntry {
                name: "gateway-main".into(),
                pid: 5,
                start_time: 50,
            },
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "stub 1 10\ngateway-main 5 50\nsshd 3 30\n"
        );
        forget(&path, "gateway-main").unwrap();
        assert_eq!(read_pids(&path).len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}
