//! Transports loaded at run time from shared libraries: a plugin written in C against the header carries `status` and `call health` to the real gateway, passes the base transport contract, the SOCKS5 plugin carries `status`, `chat` and `tunnel` through `ssh -D`, and every broken plugin is refused with a line naming the file, the cause and the fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawlink_core::prompt::NonInteractive;
use clawlink_core::registry;
use clawlink_core::transport::TransportEnv;
use clawlink_tests::forwards::{
    first_json_line, free_port_pair, http_get, start_sandbox, wait_for_exit, Reaped,
};
use clawlink_tests::plugins::{build_c_plugin, set_mode};
use clawlink_tests::*;
use serde_json::{json, Value};

/// A scratch HOME whose default plugin directory (`~/.local/share/clawlink/plugins`)
/// exists, with a token file and a config file selecting `transport` with `settings`.
struct PluginHome {
    dir: PathBuf,
    plugins: PathBuf,
    config: PathBuf,
    token: PathBuf,
}

impl PluginHome {
    fn new(name: &str, transport: &str, settings: Value) -> Self {
        let dir = scratch_dir(name);
        let plugins = dir.join(".local/share/clawlink/plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for path in [
            dir.join(".local"),
            dir.join(".local/share"),
            dir.join(".local/share/clawlink"),
            plugins.clone(),
        ] {
            set_mode(&path, 0o755);
        }
        let token = secret_file(&dir, "token", Peers::get().var("OCPEER_GATEWAY_TOKEN"));
        let config = dir.join("clawlink.toml");
        write_config(&config, transport, settings, &[]);
        Self {
            dir,
            plugins,
            config,
            token,
        }
    }

    /// clawlink with this home's config and token and the default plugin directory.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = clawlink_command(&self.dir);
        cmd.env_remove("XDG_DATA_HOME")
            .env_remove("CLAWLINK_PLUGIN_DIR")
            .arg("--config")
            .arg(&self.config)
            .arg("--token-file")
            .arg(&self.token)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs clawlink with this home's config and token, the default plugin directory and
    /// `env`; bounded in time (a hung clawlink is killed and fails the test).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_bounded(cmd, Duration::from_secs(60))
    }
}

fn write_config(path: &Path, transport: &str, settings: Value, plugins: &[&Path]) {
    let mut default = json!({
        "mode": "remote",
        "transport": transport,
        "transports": { transport.replace('-', "_"): settings },
    });
    if !plugins.is_empty() {
        default["plugins"] = json!({ "transports": plugins });
    }
    std::fs::write(
        path,
        toml::to_string(&json!({ "default": default })).unwrap(),
    )
    .unwrap();
}

/// Runs `cmd` to completion or kills it after `limit` (then the output says so).
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd.spawn().expect("run clawlink");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait for clawlink"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!(
                "clawlink {:?} did not exit within {limit:?}",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
    }
}

fn gateway_port() -> u16 {
    Peers::get().var("OCPEER_GATEWAY_PORT").parse().unwrap()
}

#[test]
fn a_c_plugin_in_the_plugin_directory_carries_status_and_health_to_the_gateway() {
    let home = PluginHome::new("plugin-c", "ctcp", json!({"port": gateway_port()}));
    let library = build_c_plugin(&home.plugins, "libctcp.so", &[]);

    let out = home.run(&["status"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("ctcp 127.0.0.1:{}", gateway_port())),
        "the plugin's own description: {stdout}"
    );

    let out = home.run(&["--json", "call", "health"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let health: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(health["ok"], true, "{health}");

    // The listing says where the transport came from, its version and ABI.
    let out = home.run(&["--json", "transports"], &[]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ctcp = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ctcp")
        .unwrap_or_else(|| panic!("ctcp listed: {list}"));
    assert_eq!(ctcp["origin"]["kind"], "plugin");
    assert_eq!(ctcp["origin"]["version"], "0.3.0");
    assert_eq!(ctcp["origin"]["abiVersion"], 1);
    assert_eq!(
        ctcp["origin"]["path"].as_str().map(PathBuf::from),
        Some(library.canonicalize().unwrap())
    );
    let builtin = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "direct-ws")
        .unwrap();
    assert_eq!(builtin["origin"]["kind"], "built-in", "{builtin}");

    // `tunnel` needs ports on the gateway host, which this plugin does not offer (its table
    // stops at `describe`): one line naming the capability and who has it.
    let out = home.run(&["tunnel"], &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ports on the gateway host") && stderr.contains("ssh-tunnel"),
        "{stderr}"
    );

    // The same library named in the config instead, with an empty plugin directory.
    let elsewhere = home.dir.join("lib");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let listed = build_c_plugin(&elsewhere, "libctcp-listed.so", &[]);
    write_config(
        &home.config,
        "ctcp",
        json!({"port": gateway_port()}),
        &[&listed],
    );
    let empty = home.dir.join("empty-plugin-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let out = home.run(
        &["status"],
        &[("CLAWLINK_PLUGIN_DIR", empty.to_str().unwrap())],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "plugins.transports: {stdout}{stderr}");
}

#[test]
fn a_profile_with_a_built_in_transport_never_maps_a_plugin() {
    let home = PluginHome::new(
        "plugin-lazy",
        "direct-ws",
        json!({"url": Peers::get().gateway_url()}),
    );
    // A library that would be refused (not a library at all) if anything tried to load it.
    std::fs::write(home.plugins.join("libjunk.so"), b"not an ELF file").unwrap();
    let out = home.run(&["status"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !stderr.contains("libjunk"),
        "loaded although no profile needed it: {stderr}"
    );
    // The listing loads everything and reports the refusal on stderr, the list intact.
    let out = home.run(&["transports"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("direct-ws"), "{stdout}");
    assert!(
        stderr.contains("libjunk.so") && stderr.contains("is not a shared library"),
        "{stderr}"
    );
}

/// One broken plugin and what its refusal must say.
struct Broken {
    file: &'static str,
    /// `-D` switches for ctcp.c; `None`: the file is not a library at all.
    defines: Option<&'static [&'static str]>,
    mode: u32,
    expected: &'static [&'static str],
}

#[test]
fn every_broken_plugin_is_refused_naming_the_file_the_cause_and_the_fix() {
    let cases = [
        Broken {
            file: "libjunk.so",
            defines: None,
            mode: 0o644,
            expected: &["is not a shared library", "docs/transport-plugins.md"],
        },
        Broken {
            file: "libnoentry.so",
            defines: Some(&["NO_ENTRY"]),
            mode: 0o755,
            expected: &["does not export `clawlink_transport_plugin_v1`"],
        },
        Broken {
            file: "libabi2.so",
            defines: Some(&["ABI=2"]),
            mode: 0o755,
            expected: &["ABI version 2", "understands version 1"],
        },
        Broken {
            file: "libsmall.so",
            defines: Some(&["STRUCT_SIZE=16"]),
            mode: 0o755,
            expected: &["table of 16 bytes"],
        },
        Broken {
            file: "libtaken.so",
            defines: Some(&["PLUGIN_NAME=\"ssh-tunnel\""]),
            mode: 0o755,
            expected: &[
                "\"ssh-tunnel\"",
                "already taken by a transport built into clawlink",
            ],
        },
        Broken {
            file: "libbadname.so",
            defines: Some(&["PLUGIN_NAME=\"Ctcp\""]),
            mode: 0o755,
            expected: &["starting with a lowercase letter"],
        },
        Broken {
            file: "libwritable.so",
            defines: Some(&[]),
            mode: 0o775,
            expected: &["writable by its group or others", "chmod go-w"],
        },
    ];
    for case in cases {
        let home = PluginHome::new(
            &format!("plugin-refused-{}", case.file),
            "ctcp",
            json!({"port": gateway_port()}),
        );
        let path = match case.defines {
            Some(defines) => build_c_plugin(&home.plugins, case.file, defines),
            None => {
                let path = home.plugins.join(case.file);
                std::fs::write(&path, b"\x7fELF? no: a text file named like a library").unwrap();
                path
            }
        };
        set_mode(&path, case.mode);
        let out = home.run(&["status"], &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {stdout}{stderr}",
            case.file
        );
        assert!(
            stderr.contains(case.file),
            "{}: names the file: {stderr}",
            case.file
        );
        for expected in case.expected {
            assert!(
                stderr.contains(expected),
                "{}: {expected:?} in {stderr}",
                case.file
            );
        }
        assert!(stderr.contains("fix:"), "{}: {stderr}", case.file);
    }
}

#[test]
fn connect_failures_of_a_plugin_are_bounded_and_explained() {
    // Hangs: the time limit from the profile, then a clear error, and clawlink exits.
    let home = PluginHome::new(
        "plugin-hang",
        "ctcp",
        json!({"port": gateway_port(), "connect_timeout_ms": 300}),
    );
    build_c_plugin(&home.plugins, "libhang.so", &["HANG"]);
    let started = Instant::now();
    let out = home.run(&["status"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("did not return within 300 ms"), "{stderr}");
    assert!(
        stderr.contains("connect_timeout_ms"),
        "the fix names the setting: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a hung plugin held clawlink"
    );

    // A pipe instead of a socket.
    let home = PluginHome::new("plugin-badfd", "ctcp", json!({"port": gateway_port()}));
    build_c_plugin(&home.plugins, "libbadfd.so", &["BAD_FD"]);
    let out = home.run(&["status"], &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not a socket") && stderr.contains("libbadfd.so"),
        "{stderr}"
    );

    // The plugin's own messages: its settings check, and its connect error.
    let home = PluginHome::new("plugin-settings", "ctcp", json!({"portt": 1}));
    build_c_plugin(&home.plugins, "libctcp.so", &[]);
    let out = home.run(&["status"], &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("settings need \"port\""), "{stderr}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_config(&home.config, "ctcp", json!({"port": closed}), &[]);
    let out = home.run(&["status"], &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "nothing accepts connections on 127.0.0.1:{closed}"
        )),
        "{stderr}"
    );

    // Two libraries with one name: the first wins, the second is refused naming both.
    let home = PluginHome::new("plugin-twice", "ctcp", json!({"port": gateway_port()}));
    let first = build_c_plugin(&home.plugins, "liba-ctcp.so", &[]);
    build_c_plugin(&home.plugins, "libb-ctcp.so", &[]);
    let out = home.run(&["transports"], &[]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("libb-ctcp.so")
            && stderr.contains("already taken by the plugin")
            && stderr.contains(first.canonicalize().unwrap().to_str().unwrap()),
        "{stderr}"
    );
}

/// The plugin transport passes the base transport contract, in process, loaded by the
/// same loader the app links.
#[tokio::test(flavor = "multi_thread")]
async fn a_c_plugin_passes_the_base_transport_contract() {
    let dir = scratch_dir("plugin-compliance");
    let library = build_c_plugin(
        &dir,
        "libctcp-compliance.so",
        &["PLUGIN_NAME=\"ctcp-compliance\""],
    );
    let outcomes = clawlink_transport_dylib::load_all(std::slice::from_ref(&library));
    assert_eq!(outcomes[0].result, Ok("ctcp-compliance"), "{outcomes:?}");
    assert!(matches!(
        registry::origin("ctcp-compliance"),
        Some(registry::Origin::Loaded(from)) if from.path == library.canonicalize().unwrap()
    ));
    // Loaded once: asking again gives the first answer, not a duplicate-name refusal.
    assert_eq!(
        clawlink_transport_dylib::load_all(&[library])[0].result,
        Ok("ctcp-compliance")
    );
    let descriptor = registry::transport("ctcp-compliance").unwrap();
    let env = TransportEnv {
        prompter: Arc::new(NonInteractive),
    };
    let transport = (descriptor.factory)(&json!({"port": gateway_port()}), &env).unwrap();
    compliance::connects_and_recovers_from_a_cut("ctcp-compliance (C plugin)", transport).await;
}

/// The SOCKS5 example plugin, built as a cdylib and loaded from the plugin directory,
/// carries `status` and `chat -m` to the real gateway through a real SOCKS5 proxy
/// (OpenSSH's `ssh -D` to the harness sshd); a gateway port nothing listens on is explained.
#[test]
fn the_socks5_plugin_reaches_the_gateway_through_ssh_dash_d() {
    let proxy = clawlink_tests::plugins::SshSocksProxy::start();
    let settings = json!({
        "proxy": format!("127.0.0.1:{}", proxy.port),
        "target_host": "127.0.0.1",
        "target_port": gateway_port(),
    });
    let home = PluginHome::new("plugin-socks5", "socks5", settings);
    let library = home.plugins.join("libclawlink_transport_socks5.so");
    std::fs::copy(clawlink_tests::plugins::socks5_plugin(), &library).unwrap();
    set_mode(&library, 0o755);

    let out = home.run(&["status"], &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("127.0.0.1:{}", proxy.port)),
        "the plugin describes its route: {stdout}"
    );

    let mark = unique_marker("socks5");
    let session = format!("agent:main:{mark}");
    let out = home.run(
        &[
            "chat",
            "--session",
            &session,
            "-m",
            &format!("hello {mark}"),
        ],
        &[],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("stub reply: ") && stdout.contains(&mark),
        "{stdout}"
    );

    let out = home.run(&["--json", "transports"], &[]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let socks5 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "socks5")
        .unwrap_or_else(|| panic!("socks5 listed: {list}"));
    assert_eq!(socks5["origin"]["kind"], "plugin", "{socks5}");
    assert_eq!(socks5["origin"]["abiVersion"], 1, "{socks5}");

    // `tunnel` through the plugin's port functions, on the local port its settings prefer:
    // another program's `call health` through the gateway forward, and the widget sandbox
    // (started on demand) through the forward of the port after it.
    let local_port = free_port_pair();
    write_config(
        &home.config,
        "socks5",
        json!({
            "proxy": format!("127.0.0.1:{}", proxy.port),
            "target_port": gateway_port(),
            "local_port": local_port,
        }),
        &[],
    );
    let mut tunnel = Reaped(
        home.command(&["--json", "tunnel"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let report = first_json_line(&mut tunnel.0, "socks5 tunnel");
    let forwards = report["forwards"].as_array().unwrap();
    assert_eq!(forwards[0]["purpose"], "gateway", "{report}");
    assert_eq!(
        forwards[0]["localPort"], local_port,
        "local_port is honoured: {report}"
    );
    assert_eq!(forwards[1]["purpose"], "widget sandbox", "{report}");
    let through = format!("ws://127.0.0.1:{local_port}");
    let out = clawlink(
        &home.dir,
        &[
            "--url",
            &through,
            "--token-file",
            home.token.to_str().unwrap(),
            "call",
            "health",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "health through the socks5 forward: {stderr}"
    );
    let health: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(health["ok"], true, "{health}");
    let path = start_sandbox(&home.dir, &through).expect("a canvas preview names its path");
    let (code, body) = http_get(local_port + 1, &path);
    assert_eq!(code, 200, "sandbox through the socks5 forward: {body}");
    let pid = tunnel.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        wait_for_exit(&mut tunnel.0, Duration::from_secs(15)),
        Some(0)
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", local_port)).is_err(),
        "the forward is gone with the tunnel"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_config(
        &home.config,
        "socks5",
        json!({"proxy": format!("127.0.0.1:{}", proxy.port), "target_port": closed}),
        &[],
    );
    let out = home.run(&["status"], &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("transport plugin socks5") && stderr.contains(&closed.to_string()),
        "{stderr}"
    );
}
