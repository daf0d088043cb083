//! `cargo xtask build`: builds a variant of the clawlink binary by choosing which plugin crates it links.
//!
//! Every built-in transport and feature plugin is one cargo feature of the `clawlink` crate
//! (`transport-ws`, `transport-ssh`, `feature-health`, …). A variant is a set of them;
//! the binary refuses to start if what registered differs from what it was built with.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{run_command, say, workspace_root};

/// The plugin features the app crate declares, and its default set, read from app/Cargo.toml.
fn plugin_features() -> Result<(Vec<String>, Vec<String>)> {
    let manifest = fs::read_to_string(workspace_root().join("app/Cargo.toml"))
        .context("read app/Cargo.toml")?;
    let section = manifest
        .split("[features]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .context("app/Cargo.toml has no [features] table")?;
    let mut all = Vec::new();
    let mut default = Vec::new();
    for line in section.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name == "default" {
            default = value
                .trim()
                .trim_matches(['[', ']'])
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        } else if !name.starts_with('#') {
            // Plugins (`transport-*`, `feature-*`) and extras such as `sound`.
            all.push(name.to_owned());
        }
    }
    Ok((all, default))
}

/// The named variants and what each is for; [`variant_features`] gives their plugin sets.
pub const VARIANTS: &[(&str, &str)] = &[
    (
        "minimal",
        "direct-ws only: no SSH, no exec, no plugin loader, no feature plugins",
    ),
    ("default", "what ships: the app's default cargo features"),
    (
        "full",
        "every transport, feature and extra, including in-process notification sounds (needs ALSA headers)",
    ),
];

/// The plugin features of variant `name`.
pub fn variant_features(name: &str) -> Result<Vec<String>> {
    let (all, default) = plugin_features()?;
    match name {
        "minimal" => Ok(vec!["transport-ws".to_owned()]),
        "default" => Ok(default),
        "full" => Ok(all),
        other => bail!(
            "unknown variant {other:?}; the variants are: {}",
            VARIANTS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `cargo xtask build [--release] [--variant NAME] [--only A,B] [--with A,B] [--without A,B]
/// [--list]`; `--with sound` adds in-process notification sounds (needs ALSA headers).
pub fn run(args: &[&str]) -> Result<()> {
    let (all, default) = plugin_features()?;
    let mut chosen = default.clone();
    let mut variant = None;
    let mut release = false;
    let mut rest = args.iter();
    let list = |s: &str| -> Vec<String> { s.split(',').map(|p| p.trim().to_owned()).collect() };
    while let Some(arg) = rest.next() {
        match *arg {
            "--release" => release = true,
            "--list" => {
                println!("features:");
                for name in &all {
                    let mark = if default.contains(name) { " (default)" } else { "" };
                    println!("  {name}{mark}");
                }
                println!("variants (--variant NAME):");
                for (name, what) in VARIANTS {
                    println!("  {name}: {what}\n    {}", variant_features(name)?.join(", "));
                }
                return Ok(());
            }
            "--variant" => {
                let name = rest.next().context("--variant needs a name: minimal, default or full")?;
                chosen = variant_features(name)?;
                variant = Some(name.to_string());
            }
            "--only" => {
                chosen = list(rest.next().context("--only needs a list, e.g. transport-ws")?)
            }
            "--with" => chosen.extend(list(rest.next().context("--with needs a list, e.g. sound")?)),
            "--without" => {
                let drop = list(rest.next().context("--without needs a list")?);
                chosen.retain(|f| !drop.contains(f));
            }
            other => bail!("unknown argument {other:?}: usage: cargo xtask build [--release] [--variant minimal|default|full] [--only A,B] [--with A,B] [--without A,B] [--list]"),
        }
    }
    build(&chosen, release, variant.as_deref()).map(|_| ())
}

/// Builds the app with `chosen` plugin features; a named variant's binary is also copied to
/// `target/variants/<profile>/<name>/clawlink`, so that variants can sit side by side (cargo
/// itself keeps one `target/<profile>/clawlink`). Returns the binary's path.
pub fn build(chosen: &[String], release: bool, variant: Option<&str>) -> Result<PathBuf> {
    let (all, _) = plugin_features()?;
    for name in chosen {
        if !all.contains(name) {
            bail!(
                "unknown feature {name:?}; the clawlink crate has: {}",
                all.join(", ")
            );
        }
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root())
        .args(["build", "-p", "clawlink", "--no-default-features"]);
    if !chosen.is_empty() {
        cmd.args(["--features", &chosen.join(",")]);
    }
    if release {
        cmd.arg("--release");
    }
    say("build", format!("plugins: {}", chosen.join(", ")));
    run_command(&mut cmd)?;
    // Cargo resolves a relative CARGO_TARGET_DIR against its working directory, the root.
    let target_dir = workspace_root().join(
        std::env::var_os("CARGO_TARGET_DIR")
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "target".into()),
    );
    let profile = if release { "release" } else { "debug" };
    let mut binary = target_dir.join(profile).join("clawlink");
    if let Some(name) = variant {
        let dir = target_dir.join("variants").join(profile).join(name);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let copy = dir.join("clawlink");
        fs::copy(&binary, &copy)
            .with_context(|| format!("copy {} to {}", binary.display(), copy.display()))?;
        binary = copy;
    }
    let size = fs::metadata(&binary)
        .with_context(|| format!("the build left no binary at {}", binary.display()))?
        .len();
    say(
        "build",
        format!(
            "built {}{} ({})",
            variant
                .map(|v| format!("variant {v}: "))
                .unwrap_or_default(),
            binary.display(),
            human_size(size)
        ),
    );
    Ok(binary)
}

/// `25.3 MiB (26528840 bytes)`: readable, and exact for comparing variants.
fn human_size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    format!("{:.1} MiB ({bytes} bytes)", bytes as f64 / MIB)
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_in_mebibytes_and_stay_exact() {
        assert_eq!(human_size(26_528_840), "25.3 MiB (26528840 bytes)");
        assert_eq!(human_size(0), "0.0 MiB (0 bytes)");
    }
}
