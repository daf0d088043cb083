//! `peer install`'s offline speech recognizer for the Voice Wake real-audio test: pocketsphinx from PyPI (its US-English model ships inside the wheel) under `<prefix>/voice`, and the `ocpeer-recognize` launcher.
//!
//! Idempotent: a second run only checks that the package and its model are in place. A
//! failure is an error (the real-audio test must not run without a recognizer, and never
//! skips). The launcher runs `xtask/peer/recognize.py` with the interpreter the package
//! was installed for (wheels are built per Python version).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{script, Layout};
use crate::util::{ensure_file, run_command, say, secs, which};

/// The version measured to work here (shared/reference/voice-recognition.md).
pub const POCKETSPHINX_VERSION: &str = "5.1.1";

/// Where the package is installed (`pip install --target`).
pub fn voice_dir(layout: &Layout) -> PathBuf {
    layout.prefix.join("voice")
}

/// The launcher tests run as the recognizer command.
pub fn recognizer(layout: &Layout) -> PathBuf {
    layout.bin_dir().join("ocpeer-recognize")
}

/// Installs pocketsphinx and the launcher when missing; returns whether anything changed.
pub fn install(layout: &Layout) -> Result<bool> {
    let dir = voice_dir(layout);
    let python = python_with_pip()?;
    let mut changed = false;
    if !installed(&dir) {
        let started = Instant::now();
        say(
            "peer",
            format!(
                "{} -m pip install --target {} pocketsphinx=={POCKETSPHINX_VERSION}",
                python.display(),
                dir.display()
            ),
        );
        let staging = layout.prefix.join("voice.new");
        let _ = std::fs::remove_dir_all(&staging);
        run_command(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--no-input"])
                .args([
                    "--disable-pip-version-check",
                    "--no-warn-script-location",
                    "--root-user-action=ignore",
                ])
                .arg("--target")
                .arg(&staging)
                .arg(format!("pocketsphinx=={POCKETSPHINX_VERSION}"))
                .stdin(Stdio::null())
                // Our stdout is reserved for machine-readable output.
                .stdout(std::io::stderr()),
        )
        .context("installing pocketsphinx from PyPI for the Voice Wake audio test")?;
        if !installed(&staging) {
            bail!(
                "pip installed pocketsphinx into {} but its English model is missing",
                staging.display()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)
            .with_context(|| format!("moving {} into place", staging.display()))?;
        say(
            "peer",
            format!("pocketsphinx installed in {}", secs(started.elapsed())),
        );
        changed = true;
    }
    let launcher = format!(
        "#!/bin/sh\n# Offline recognizer for clawlink's Voice Wake tests, installed by `cargo xtask peer install`.\nPYTHONPATH=\"{dir}\" exec \"{python}\" \"{script}\" \"$@\"\n",
        dir = dir.display(),
        python = python.display(),
        script = script("recognize.py").display(),
    );
    changed |= ensure_file(&recognizer(layout), &launcher, 0o755)?;
    if changed {
        // Proves the interpreter, the package and the model load together.
        run_command(
            Command::new(recognizer(layout))
                .arg("--check")
                .stdin(Stdio::null())
                .stdout(std::io::stderr()),
        )
        .context("the freshly installed recognizer does not start")?;
    }
    Ok(changed)
}

/// Whether pocketsphinx and its bundled model are in `dir`.
fn installed(dir: &Path) -> bool {
    dir.join(format!("pocketsphinx-{POCKETSPHINX_VERSION}.dist-info"))
        .is_dir()
        && dir
            .join("pocketsphinx/model/en-us/cmudict-en-us.dict")
            .is_file()
}

/// The system Python when it has pip, else the first `python3` on PATH that has it; the
/// launcher keeps using the one chosen here.
fn python_with_pip() -> Result<PathBuf> {
    let candidates = [Some(PathBuf::from("/usr/bin/python3")), which("python3")];
    for python in candidates.into_iter().flatten() {
        let has_pip = Command::new(&python)
            .args(["-m", "pip", "--version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if has_pip {
            return Ok(python);
        }
    }
    bail!(
        "no python3 with pip found for installing pocketsphinx; install Debian's python3-pip (`apt-get install python3-pip`)"
    )
}
