//! The built socks5 cdylib, loaded with libloading the way clawlink loads plugins, reaching the real gateway through a real SOCKS5 proxy: `ssh -D` against the harness's sshd.
//!
//! Needs the peers of `cargo xtask peer start` (their env file: `CLAWLINK_PEER_ENV`, or
//! `<workspace>/target/peer/run/env`). Like every real-peer test, it fails rather than skips
//! when they are missing, and says how to start them. It never stops or restarts a peer.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clawlink_plugin_sdk::{
    EntryFn, TransportV1, CLAWLINK_ERR_CONNECT, CLAWLINK_OK, CLAWLINK_TRANSPORT_ABI_VERSION,
    CLAWLINK_TRANSPORT_ENTRY_SYMBOL,
};
use serde_json::json;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The peers' KEY=VALUE file.
fn peers() -> HashMap<String, String> {
    let path = std::env::var_os("CLAWLINK_PEER_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/peer/run/env"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the real peers are not running ({}: {e}): run `cargo xtask peer install && cargo xtask peer start`, \
             or point CLAWLINK_PEER_ENV at a running harness's env file",
            path.display()
        )
    });
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn var<'a>(peers: &'a HashMap<String, String>, key: &str) -> &'a str {
    peers
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing from the peer env file"))
}

/// Builds the cdylib once per test binary and returns its path. The test links the rlib;
/// clawlink loads the shared library, so that is what is under test here.
fn built_plugin() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "clawlink-transport-socks5"])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "cargo build -p clawlink-transport-socks5: {status}"
        );
        // CARGO_TARGET_DIR when set (as cargo reads it, relative to the workspace);
        // otherwise the target directory this test was built in.
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => workspace_root().join(dir),
            None => Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
                .to_path_buf(),
        };
        let path = target
            .join("debug")
            .join(libloading::library_filename("clawlink_transport_socks5"));
        assert!(path.is_file(), "no plugin at {}", path.display());
        path
    })
}

/// `ssh -D` on a port of ours; killed (and reaped) on drop, and by the kernel if the test
/// process dies first.
struct SshProxy {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SshProxy {
    fn start(peers: &HashMap<String, String>) -> SshProxy {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ssh.log");
        let mut command = Command::new("ssh");
        command
            .args(["-F", "/dev/null", "-N", "-D"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"])
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                var(peers, "OCPEER_SSH_KNOWN_HOSTS")
            ))
            .arg("-i")
            .arg(var(peers, "OCPEER_SSH_KEY"))
            .arg("-p")
            .arg(var(peers, "OCPEER_SSH_PORT"))
            .arg(format!(
                "{}@{}",
                var(peers, "OCPEER_SSH_USER"),
                var(peers, "OCPEER_SSH_HOST")
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("spawning ssh");
        let mut proxy = SshProxy {
            child,
            port,
            log,
            _dir: dir,
        };
        proxy.wait_until_listening();
        proxy
    }

    fn wait_until_listening(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("ssh -D exited ({status}): {}", self.log_text());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ssh -D did not listen on {addr} within 20 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plugin's table from the shared library, looked up as clawlink does. The library is
/// never unloaded, like clawlink's.
fn load_table() -> &'static TransportV1 {
    // SAFETY: loading our own plugin runs no initialisers with preconditions.
    let library = unsafe { libloading::Library::new(built_plugin()) }.expect("dlopen the plugin");
    let symbol = format!("{CLAWLINK_TRANSPORT_ENTRY_SYMBOL}\0");
    // SAFETY: the symbol has the header's type, which EntryFn mirrors.
    let entry: EntryFn = *unsafe { library.get::<EntryFn>(symbol.as_bytes()) }.expect("dlsym");
    std::mem::forget(library);
    // SAFETY: the entry point returns a pointer to a static table, never NULL.
    unsafe { &*entry() }
}

/// `connect` through the table: the code, the message, the fd on success.
fn connect(table: &TransportV1, settings: &serde_json::Value) -> (i32, String, Option<OwnedFd>) {
    let settings = settings.to_string();
    let mut fd = -1;
    let mut buf = [0u8; 512];
    let mut len = 0usize;
    // SAFETY: every pointer is valid for the call.
    let code = unsafe {
        (table.connect)(
            settings.as_ptr(),
            settings.len(),
            &mut fd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        )
    };
    let message = String::from_utf8(buf[..len].to_vec()).expect("UTF-8 from the plugin");
    // SAFETY: on success the fd is ours.
    let fd = (code == CLAWLINK_OK).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
    (code, message, fd)
}

#[test]
fn a_gateway_port_nothing_listens_on_is_explained_for_ssh_dash_d() {
    let peers = peers();
    let table = load_table();
    let proxy = SshProxy::start(&peers);
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, message, fd) = connect(
        table,
        &json!({
            "proxy": format!("127.0.0.1:{}", proxy.port),
            "target_port": closed_port,
        }),
    );
    assert!(fd.is_none());
    assert_eq!(code, CLAWLINK_ERR_CONNECT, "{message}");
    assert!(
        message.contains(&format!(
            "closed the connection instead of answering CONNECT to 127.0.0.1:{closed_port}"
        )),
        "{message}"
    );
}

#[test]
fn the_built_plugin_reaches_the_real_gateway_through_ssh_dash_d() {
    let peers = peers();
    let table = load_table();
    assert_eq!(table.abi_version, CLAWLINK_TRANSPORT_ABI_VERSION);
    assert_eq!(table.struct_size as usize, size_of::<TransportV1>());
    // SAFETY: a static C string of the table.
    assert_eq!(unsafe { CStr::from_ptr(table.name) }, c"socks5");

    let proxy = SshProxy::start(&peers);
    let gateway_port: u16 = var(&peers, "OCPEER_GATEWAY_PORT").parse().unwrap();
    let (code, message, fd) = connect(
        table,
        &json!({
            "proxy": format!("127.0.0.1:{}", proxy.port),
            "target_host": "127.0.0.1",
            "target_port": gateway_port,
            "connect_timeout_ms": 10000,
        }),
    );
    assert_eq!(code, CLAWLINK_OK, "{message} (ssh: {})", proxy.log_text());
    let mut stream = TcpStream::from(fd.unwrap());
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{gateway_port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "not a 200 from /health: {response}"
    );
    assert!(
        response.contains(r#""status":"live""#),
        "no live status: {response}"
    );
    drop(proxy);
}
