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
