//! Records the git commit the binary is built from, for `clawlink --version`.
//!
//! Falls back to `CLAWLINK_GIT_COMMIT` from the environment (a packager building from a
//! tarball sets it) and then to "unknown". Reruns only when HEAD or the branch it points to
//! moves, so an ordinary rebuild does not pay for it.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=CLAWLINK_GIT_COMMIT");
    let from_env = std::env::var("CLAWLINK_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty());
    let commit = from_env
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CLAWLINK_GIT_COMMIT={commit}");
    // HEAD lives in the worktree's git directory; branches and packed refs in the common one.
    // Only files that exist are watched: cargo reruns a build script on every build while a
    // watched file is missing.
    let mut watched = Vec::new();
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watched.push(PathBuf::from(git_dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from) {
        let common = if common.is_absolute() {
            common
        } else {
            std::env::current_dir()
                .map(|d| d.join(&common))
                .unwrap_or(common)
        };
        watched.push(common.join("packed-refs"));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common.join(branch));
        }
    }
    for file in watched.iter().filter(|f| f.is_file()) {
        println!("cargo:rerun-if-changed={}", file.display());
    }
}
