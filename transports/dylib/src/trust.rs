//! Whether a plugin library may be loaded: the file and every directory above it are owned by us or root and writable by nobody else.
//!
//! Loading a library runs its code in clawlink, with the user's keys and tokens at hand. The
//! rule is OpenSSH's for its configuration (`safe_path`): the file must be a regular file
//! owned by the user running clawlink (or root) and not writable by its group or others, and
//! so must every directory on the way to it, because whoever can write a directory can swap
//! the file (a sticky directory such as /tmp is the exception, as for OpenSSH's and sudo's
//! checks: there only an entry's owner can rename it). The checks are done before anything is mapped, on the opened file itself (the
//! loader then maps that same file through `/proc/self/fd` on Linux).

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use clawlink_core::ownership::{check_metadata, effective_uid, Untrusted};
use std::path::{Path, PathBuf};

/// A plugin file that must not be loaded, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Opens `path` for loading after checking it and its directories; returns the opened file
/// and the canonical path.
pub fn open_trusted(path: &Path) -> Result<(File, PathBuf), Refusal> {
    let canonical = path.canonicalize().map_err(|e| {
        Refusal(format!(
            "cannot open plugin {}: {e} (check the path in `plugins.transports` or the plugin directory)",
            path.display()
        ))
    })?;
    let euid = effective_uid();
    let file = File::open(&canonical)
        .map_err(|e| Refusal(format!("cannot open plugin {}: {e}", canonical.display())))?;
    let metadata = file.metadata().map_err(|e| {
        Refusal(format!(
            "cannot inspect plugin {}: {e}",
            canonical.display()
        ))
    })?;
    if !metadata.is_file() {
        return Err(Refusal(format!(
            "plugin {} is not a regular file; list the library file itself",
            canonical.display()
        )));
    }
    check_owner_and_mode(&canonical, "plugin", &metadata, euid)?;
    for dir in canonical.ancestors().skip(1) {
        let metadata = std::fs::metadata(dir).map_err(|e| {
            Refusal(format!(
                "cannot inspect {} (a directory above plugin {}): {e}",
                dir.display(),
                canonical.display()
            ))
        })?;
        // A sticky directory (/tmp) is writable by all, but only an entry's owner may
        // rename or remove it: our own directory inside it cannot be swapped.
        let sticky = metadata.mode() & 0o1000 != 0;
        if sticky && (metadata.uid() == euid || metadata.uid() == 0) {
            continue;
        }
        check_owner_and_mode(dir, "the directory", &metadata, euid).map_err(|Refusal(why)| {
            Refusal(format!("plugin {} not loaded: {why}", canonical.display()))
        })?;
    }
    Ok((file, canonical))
}

/// Core's ownership rule, worded for a plugin file or one of its directories.
fn check_owner_and_mode(
    path: &Path,
    what: &str,
    metadata: &std::fs::Metadata,
    euid: u32,
) -> Result<(), Refusal> {
    match check_metadata(metadata, euid) {
        Ok(()) => Ok(()),
        Err(Untrusted::Owner { uid }) => Err(Refusal(format!(
            "{what} {} is owned by uid {uid}, not by you (uid {euid}) or root: another user \
             could change the code clawlink would run; move it somewhere you own \
             (e.g. ~/.local/share/clawlink/plugins/)",
            path.display()
        ))),
        Err(Untrusted::Writable { mode }) => Err(Refusal(format!(
            "{what} {} is writable by its group or others (mode {mode:04o}): another user could \
             change the code clawlink would run; run `chmod go-w {}`",
            path.display(),
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A scratch directory under the crate (its parents are the checkout's, which the
    /// tests need to be trusted anyway; /tmp's sticky world-writable bit is refused).
    fn scratch(name: &str) -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(".trust-test-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        chmod(&root, 0o755);
        root
    }

    #[test]
    fn a_private_file_in_private_directories_is_trusted() {
        let root = scratch("ok");
        let file = root.join("libok.so");
        std::fs::write(&file, b"x").unwrap();
        chmod(&file, 0o644);
        let (_, canonical) = open_trusted(&file).unwrap();
        assert_eq!(canonical, file.canonicalize().unwrap());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_group_writable_file_or_directory_is_refused_naming_it() {
        let root = scratch("bad");
        let file = root.join("libbad.so");
        std::fs::write(&file, b"x").unwrap();
        chmod(&file, 0o664);
        let Refusal(why) = open_trusted(&file).unwrap_err();
        assert!(
            why.contains("libbad.so") && why.contains("chmod go-w"),
            "{why}"
        );
        chmod(&file, 0o644);
        chmod(&root, 0o777);
        let Refusal(why) = open_trusted(&file).unwrap_err();
        assert!(
            why.contains(".trust-test-bad") && why.contains("0777"),
            "{why}"
        );
        chmod(&root, 0o1777);
        assert!(open_trusted(&file).is_ok(), "a sticky directory is fine");
        chmod(&root, 0o755);
        std::fs::remove_dir_all(&root).unwrap();
        let Refusal(why) = open_trusted(&file).unwrap_err();
        assert!(why.contains("cannot open plugin"), "{why}");
    }
}
