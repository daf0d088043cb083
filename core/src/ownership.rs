//! The one rule for files clawlink trusts with code or with where to connect: owned by the user running clawlink (or root) and writable by nobody else.
//!
//! It is OpenSSH's rule for `~/.ssh/config` (and git's `safe.directory` in spirit). The
//! app applies it to config files; the plugin loader to plugin libraries and every directory
//! above them. Callers check the metadata of what they *opened*, so the file cannot be
//! swapped between the check and the use.

use std::os::unix::fs::MetadataExt;

/// Why a file or directory is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    /// Owned by another user (not by us, not by root).
    Owner { uid: u32 },
    /// Group- or world-writable.
    Writable { mode: u32 },
}

/// Checks the owner and mode in `metadata` for a process running as `euid`.
pub fn check_metadata(metadata: &std::fs::Metadata, euid: u32) -> Result<(), Untrusted> {
    let uid = metadata.uid();
    if uid != euid && uid != 0 {
        return Err(Untrusted::Owner { uid });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable { mode });
    }
    Ok(())
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
