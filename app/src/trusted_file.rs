//! Reads a file clawlink trusts with where to connect or what to run, only when another local user cannot have written it.
//!
//! The rule is OpenSSH's for `~/.ssh/config` (and git's `safe.directory` in spirit): the file
//! must be owned by the user running clawlink (or by root) and must not be writable by its
//! group or by others. A `./clawlink.toml` planted in a shared directory by someone else would
//! otherwise choose the gateway that receives the token, or the command Voice Wake runs.
//! The checks are made on the opened file (`fstat`), and the contents returned are read from
//! that same descriptor, so the file cannot be swapped between the check and the read.

use std::io::Read;
use std::path::Path;

use crate::failure::Failure;

/// The rule itself is core's, shared with the plugin loader.
pub use clawlink_core::ownership::{check_metadata, effective_uid, Untrusted};

/// Reads `path` as text when it passes [`check_metadata`]; `what` names the file for the
/// user ("config file"). The failure names the reason and the fix (exit 2).
pub fn read_trusted(path: &Path, what: &str) -> Result<String, Failure> {
    let mut file = std::fs::File::open(path).map_err(|e| {
        Failure::config(
            format!("cannot read the {what} {}: {e}", path.display()),
            Some("check the path and its permissions".into()),
        )
    })?;
    let metadata = file.metadata().map_err(|e| {
        Failure::config(
            format!("cannot inspect the {what} {}: {e}", path.display()),
            None,
        )
    })?;
    check_metadata(&metadata, effective_uid()).map_err(|why| refusal(path, what, &why))?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| {
        Failure::config(
            format!("cannot read the {what} {}: {e}", path.display()),
            None,
        )
    })?;
    Ok(text)
}

/// The refusal of an untrusted file, with the fix.
pub fn refusal(path: &Path, what: &str, why: &Untrusted) -> Failure {
    let shown = path.display();
    match why {
        Untrusted::Owner { uid } => Failure::config(
            format!(
                "refusing to read the {what} {shown}: it is owned by another user (uid {uid}{}), \
                 who could use it to choose where your credentials go",
                user_name(*uid)
                    .map(|n| format!(", {n}"))
                    .unwrap_or_default()
            ),
            Some(format!(
                "if you trust its contents, copy it to a file of your own and pass \
                 `--config YOUR_COPY`; otherwise remove it or run clawlink from another directory \
                 (you are uid {})",
                effective_uid()
            )),
        ),
        Untrusted::Writable { mode } => Failure::config(
            format!(
                "refusing to read the {what} {shown}: its mode {mode:04o} lets other users \
                 change it (bad permissions, as ssh would say)"
            ),
            Some(format!("chmod go-w {shown}")),
        ),
    }
}

/// The login name of `uid` from the password database, when there is one.
fn user_name(uid: u32) -> Option<String> {
    let mut buffer = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill in.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized memory owned by this frame;
    // getpwuid_r is the thread-safe variant.
    let status = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
    if status != 0 || result.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string in `buffer`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("clawlink-trusted-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("clawlink.toml")
    }

    #[test]
    fn own_files_are_read_unless_others_can_write_them() {
        let file = scratch("mode");
        std::fs::write(&file, "[default]\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_trusted(&file, "config file").unwrap(), "[default]\n");

        for mode in [0o664, 0o646, 0o666] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_trusted(&file, "config file").unwrap_err();
            assert_eq!(err.exit_code, 2);
            assert!(
                err.message.contains(&format!("{mode:04o}")),
                "{}",
                err.message
            );
            assert_eq!(err.fix, Some(format!("chmod go-w {}", file.display())));
        }
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
    }

    #[test]
    fn another_users_file_is_refused_but_root_and_own_are_not() {
        let file = scratch("owner");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let metadata = std::fs::metadata(&file).unwrap();
        let owner = metadata.uid();
        assert_eq!(check_metadata(&metadata, owner), Ok(()));
        if owner != 0 {
            // As another, unprivileged user: not ours, not root's.
            assert_eq!(
                check_metadata(&metadata, owner + 1),
                Err(Untrusted::Owner { uid: owner })
            );
        } else {
            // Root-owned files are trusted by everyone, as OpenSSH trusts them.
            assert_eq!(check_metadata(&metadata, 4242), Ok(()));
        }
        let refusal = refusal(&file, "config file", &Untrusted::Owner { uid: 4242 });
        assert!(refusal.message.contains("uid 4242"), "{}", refusal.message);
        assert!(refusal.fix.unwrap().contains("--config"));
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
    }
}
