//! The local users `claw` and `noclaw`: created or moved so their homes live under the prefix.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::Layout;
use crate::util::{run_command, say, set_mode};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Reads /etc/passwd directly: cheap, and keeps the fast path of `install` free of subprocesses.
pub fn lookup(name: &str) -> Option<UserInfo> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    parse_passwd_line(&passwd, name)
}

fn parse_passwd_line(passwd: &str, name: &str) -> Option<UserInfo> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || fields[0] != name {
            return None;
        }
        Some(UserInfo {
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: PathBuf::from(fields[5]),
        })
    })
}

/// The password field from /etc/shadow, if readable.
fn shadow_password(name: &str) -> Option<String> {
    let shadow = fs::read_to_string("/etc/shadow").ok()?;
    shadow.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then(|| fields.next().unwrap_or("").to_string())
    })
}

/// Makes sure `name` exists with its home at `<prefix>/home/<name>`, owned by it,
/// and with a password field sshd accepts for key logins. Returns true if anything changed.
pub fn ensure_user(layout: &Layout, name: &str) -> Result<bool> {
    let home = layout.home(name);
    let mut changed = false;
    match lookup(name) {
        None => {
            say("peer", format!("useradd {name} (home {})", home.display()));
            run_command(
                Command::new("useradd")
                    .args(["--create-home", "--home-dir"])
                    .arg(&home)
                    .args(["--shell", "/bin/bash", name]),
            )?;
            changed = true;
        }
        Some(info) if info.home != home => {
            say(
                "peer",
                format!(
                    "usermod -d {} {name} (was {})",
                    home.display(),
                    info.home.display()
                ),
            );
            move_home(name, &home)?;
            changed = true;
        }
        Some(_) => {}
    }
    let info = lookup(name).with_context(|| format!("user {name} missing after useradd"))?;
    changed |= ensure_home(&home, &info)?;
    // '*' = no usable password but not "locked" ('!'): sshd with UsePAM=no refuses locked accounts.
    if shadow_password(name).as_deref() != Some("*") {
        run_command(Command::new("usermod").args(["-p", "*", name]))?;
        changed = true;
    }
    Ok(changed)
}

/// `usermod -d`, retried for a few seconds: it refuses while the user still has
/// processes, and peers we just stopped may need a moment to be reaped.
fn move_home(name: &str, home: &Path) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let result = run_command(Command::new("usermod").arg("-d").arg(home).arg(name));
        if result.is_ok() || std::time::Instant::now() > deadline {
            return result.with_context(|| {
                format!("user {name} still has running processes? (see `ps -u {name}`)")
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// (Re)creates the home if the prefix was wiped (or moved) while the user stayed.
fn ensure_home(home: &Path, info: &UserInfo) -> Result<bool> {
    match fs::metadata(home) {
        Ok(meta) if meta.is_dir() && meta.uid() == info.uid => return Ok(false),
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => anyhow::bail!("{} exists but is not a directory", home.display()),
        Err(_) => {
            fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
            // Like useradd --create-home: start from /etc/skel (missing skel is fine).
            let _ = Command::new("cp")
                .arg("-rT")
                .arg("/etc/skel")
                .arg(home)
                .status();
        }
    }
    set_mode(home, 0o755)?;
    run_command(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", info.uid, info.gid))
            .arg(home),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nclaw:x:1001:1002::/t/peer/home/claw:/bin/bash\n";
        assert_eq!(
            parse_passwd_line(passwd, "claw"),
            Some(UserInfo {
                uid: 1001,
                gid: 1002,
                home: PathBuf::from("/t/peer/home/claw")
            })
        );
        assert_eq!(parse_passwd_line(passwd, "cla"), None);
    }
}
