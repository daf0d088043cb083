//! Builds the tests' transport plugins: the C one (`tests/plugins/ctcp.c`, compiled with `cc` against `include/clawlink_transport.h`, as a third party would) and its broken variants.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workspace_root;

/// Compiles `tests/plugins/ctcp.c` with `defines` (`-D` switches without the `-D`) into
/// `dir/file_name` (a shared library), mode 0755. Panics with the compiler's output when
/// it fails: a machine that runs the tests has gcc (the README's setup installs it).
pub fn build_c_plugin(dir: &Path, file_name: &str, defines: &[&str]) -> PathBuf {
    let root = workspace_root();
    let out = dir.join(file_name);
    let mut cc = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()));
    cc.args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/plugins/ctcp.c"));
    for define in defines {
        cc.arg(format!("-D{define}"));
    }
    let result = cc.output().expect("run cc (install gcc)");
    assert!(
        result.status.success(),
        "cc failed for {file_name} {defines:?}:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    set_mode(&out, 0o755);
    out
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds the SOCKS5 example plugin (`transports/socks5`, a cdylib) once per test binary and
/// returns the shared library's path: cargo does not build another package's cdylib for a
/// test (cargo#8311), so the test asks for it.
pub fn socks5_plugin() -> &'static Path {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "clawlink-transport-socks5"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p clawlink-transport-socks5: {status}"
        );
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => workspace_root().join(dir),
            None => workspace_root().join("target"),
        };
        let file = if cfg!(target_os = "macos") {
            "libclawlink_transport_socks5.dylib"
        } else {
            "libclawlink_transport_socks5.so"
        };
        let path = target.join("debug").join(file);
        assert!(path.is_file(), "no plugin at {}", path.display());
        path
    })
}

/// OpenSSH's SOCKS5 proxy (`ssh -D`) to the harness sshd, on a free loopback port; killed
/// and reaped on drop.
pub struct SshSocksProxy {
    child: std::process::Child,
    pub port: u16,
}

impl SshSocksProxy {
    pub fn start() -> Self {
        let peers = crate::Peers::get();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("ssh")
            .args(["-F", "/dev/null", "-N", "-D", &format!("127.0.0.1:{port}")])
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
                peers.var("OCPEER_SSH_KNOWN_HOSTS")
            ))
            .args([
                "-i",
                peers.var("OCPEER_SSH_KEY"),
                "-p",
                peers.var("OCPEER_SSH_PORT"),
            ])
            .arg(format!(
                "{}@{}",
                peers.var("OCPEER_SSH_USER"),
                peers.var("OCPEER_SSH_HOST")
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run ssh -D");
        let mut proxy = Self { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("ssh -D exited ({status}) before listening");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return proxy;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ssh -D did not listen on {port} within 20 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for SshSocksProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
