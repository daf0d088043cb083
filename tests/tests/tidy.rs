//! Mechanical repository rules from ARCHITECTURE.md, enforced as a test (the rust-analyzer `tidy` idea).

use std::path::{Path, PathBuf};

use clawlink_tests::workspace_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name == "target" || name.starts_with('.') || name == "node_modules" {
                continue;
            }
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    assert!(files.len() > 10, "found only {} .rs files", files.len());
    files
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let offenders: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(
        offenders.is_empty(),
        "files without a leading `//!` line: {offenders:?}"
    );
}

#[test]
fn no_stubs_and_no_ignored_tests() {
    let needles = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("#[", "ignore"),
    ];
    let mut offenders = Vec::new();
    for file in all_rust_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in needles {
            if text.contains(needle) {
                offenders.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

/// The crates a manifest depends on to build (not its dev- or build-dependencies): its
/// `[dependencies]` and every `[target.'cfg(…)'.dependencies]`, by package name (a renamed
/// dependency counts under the crate it really is).
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let manifest: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not valid TOML: {e}", manifest.display()));
    let targets = manifest
        .get("target")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flat_map(|targets| targets.values())
        .filter_map(|target| target.get("dependencies"));
    manifest
        .get("dependencies")
        .into_iter()
        .chain(targets)
        .filter_map(toml::Value::as_table)
        .flat_map(|table| table.iter())
        .map(|(name, spec)| {
            spec.get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

#[test]
fn dependencies_include_target_specific_tables() {
    let deps = dependencies(&workspace_root().join("plugins/notify/Cargo.toml"));
    assert!(deps.iter().any(|d| d == "clawlink-core"), "{deps:?}");
    // Only under [target.'cfg(not(target_os = "macos"))'.dependencies].
    assert!(deps.iter().any(|d| d == "zbus"), "{deps:?}");
}

#[test]
fn core_knows_nothing_of_ssh_quic_tls_config_files_or_the_terminal() {
    let deps = dependencies(&workspace_root().join("core/Cargo.toml"));
    assert!(
        deps.iter().any(|d| d == "inventory"),
        "parser broken? {deps:?}"
    );
    let forbidden = [
        "russh",
        "ssh2-config",
        "ssh-key",
        "quinn",
        "rustls",
        "tokio-rustls",
        "figment",
        "toml",
        "clap",
        "crossterm",
        "indicatif",
        "libloading",
        "directories",
        "keyring",
    ];
    let found: Vec<_> = deps
        .iter()
        .filter(|d| forbidden.contains(&d.as_str()))
        .collect();
    assert!(
        found.is_empty(),
        "core depends on {found:?}; see ARCHITECTURE.md invariants"
    );
}

#[test]
fn only_the_app_and_xtask_use_anyhow() {
    for manifest in ["core/Cargo.toml", "transports/direct-ws/Cargo.toml"] {
        let deps = dependencies(&workspace_root().join(manifest));
        assert!(
            !deps.iter().any(|d| d == "anyhow"),
            "{manifest} uses anyhow; libraries use typed errors"
        );
    }
}

/// The crate names (as Rust paths) of every package under `transports/`.
fn transport_crates() -> Vec<String> {
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("transports")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let manifest: toml::Table = toml::from_str(&text).unwrap();
        let name = manifest["package"]["name"].as_str().unwrap();
        crates.push(name.replace('-', "_"));
    }
    assert!(crates.len() >= 2, "found only {crates:?}");
    crates
}

/// The plug-in model (ARCHITECTURE.md, "Adding a transport"): the app reaches transports
/// through the registry and their capabilities only. `app/src/plugins.rs` is the one file
/// that names a transport crate or a transport's cargo feature; a command module that did
/// would break for a transport loaded at run time.
#[test]
fn only_plugins_rs_names_a_transport_crate_or_feature() {
    let crates = transport_crates();
    let app = workspace_root().join("app/src");
    let mut files = Vec::new();
    rust_files(&app, &mut files);
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("plugins.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            // Code only: a comment may explain what a transport does.
            let code = line.split("//").next().unwrap_or("");
            let names_crate = crates.iter().any(|c| code.contains(c.as_str()));
            let names_feature =
                code.contains("feature = \"transport-") || code.contains("feature = \"plugin-");
            if names_crate || names_feature {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "outside app/src/plugins.rs, the app names transport crates or features:\n{}",
        offenders.join("\n")
    );
}

/// The app's argument types are a leaf (`cli.rs` uses no other module of the app), and the
/// settings and connection layers take plain data, never the argument types, so that no
/// command module, `cli`, `settings` and `connect` form a cycle.
#[test]
fn the_argument_types_are_a_leaf_and_settings_and_connect_do_not_use_them() {
    let app = workspace_root().join("app/src");
    let code_lines = |file: &str| -> Vec<(usize, String)> {
        let text = std::fs::read_to_string(app.join(file)).unwrap();
        // Unit tests may build arguments the way users type them.
        let body = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
        body.lines()
            .enumerate()
            .map(|(n, line)| (n + 1, line.split("//").next().unwrap_or("").to_owned()))
            .collect()
    };
    let mut offenders = Vec::new();
    for (n, code) in code_lines("cli.rs") {
        if code.contains("crate::") {
            offenders.push(format!("cli.rs:{n}: {}", code.trim()));
        }
    }
    for file in ["settings.rs", "connect.rs"] {
        for (n, code) in code_lines(file) {
            if code.contains("crate::cli") || code.contains("GlobalArgs") {
                offenders.push(format!("{file}:{n}: {}", code.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "module cycle:\n{}",
        offenders.join("\n")
    );
}
