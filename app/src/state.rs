//! Files clawlink keeps between runs: the device key and the device tokens, 0600 under the user's data directory.
//!
//! Both are credentials: the key proves the device's identity, a device token logs it in
//! without the shared secret. So they are written with mode 0600 in a 0700 directory, and a
//! file that others can read is refused rather than used (someone may have copied it). As in
//! OpenSSH, files and the data directory must belong to the user (or root), and the
//! directory must not be writable by others: whoever can write there can swap the key or
//! read what we write next.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clawlink_core::gateway::{DeviceIdentity, DeviceTokenStore};
use secrecy::{ExposeSecret, SecretString};

use crate::failure::Failure;

/// The data directory: `CLAWLINK_DATA_DIR`, else `$XDG_DATA_HOME/clawlink` (Linux) or the
/// platform data directory (macOS).
pub fn data_dir() -> Result<PathBuf, Failure> {
    if let Some(dir) = std::env::var_os("CLAWLINK_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "clawlink")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| {
            Failure::config(
                "cannot find a home directory for clawlink's data",
                Some("set HOME or CLAWLINK_DATA_DIR".into()),
            )
        })
}

/// The effective user ID, whose files and sockets we trust (with root's).
use clawlink_core::ownership::effective_uid as my_uid;

/// Refuses a credential file that another user owns or that group or others can read.
pub fn check_private(path: &Path, what: &str) -> Result<(), Failure> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = fs::metadata(path).map_err(|e| {
            Failure::config(
                format!("cannot read {what} {}: {e}", path.display()),
                Some(format!(
                    "check that {} exists and is readable by you",
                    path.display()
                )),
            )
        })?;
        if meta.uid() != my_uid() && meta.uid() != 0 {
            return Err(Failure::config(
                format!(
                    "{what} {} belongs to another user (uid {}); refusing to use it",
                    path.display(),
                    meta.uid()
                ),
                Some(format!(
                    "use a file of your own: copy its content into a new file you create (mode 600), or `chown {} {}` if it really is yours",
                    my_uid(),
                    path.display()
                )),
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Failure::config(
                format!(
                    "{what} {} is readable by other users (mode {mode:03o}); refusing to use it",
                    path.display()
                ),
                Some(format!("chmod 600 {}", path.display())),
            ));
        }
    }
    Ok(())
}

/// Refuses a data directory that another user owns or that group or others can write.
pub fn check_private_dir(dir: &Path) -> Result<(), Failure> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(dir).map_err(|e| {
            Failure::config(
                format!(
                    "cannot use clawlink's data directory {}: {e}",
                    dir.display()
                ),
                Some(
                    "check its permissions, or set CLAWLINK_DATA_DIR to a directory of your own"
                        .into(),
                ),
            )
        })?;
        if meta.uid() != my_uid() && meta.uid() != 0 {
            return Err(Failure::config(
                format!(
                    "clawlink's data directory {} belongs to another user (uid {}); its owner could read or replace the device key and tokens",
                    dir.display(),
                    meta.uid()
                ),
                Some("set CLAWLINK_DATA_DIR to a directory of your own (clawlink creates it with mode 700)".into()),
            ));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(Failure::config(
                format!(
                    "clawlink's data directory {} is writable by other users (mode {mode:03o}); they could replace the device key and tokens",
                    dir.display()
                ),
                Some(format!("chmod 700 {}", dir.display())),
            ));
        }
    }
    Ok(())
}

/// Creates `dir` (0700) when missing and checks that it is ours and private.
pub fn open_data_dir(dir: &Path) -> Result<(), Failure> {
    create_private_dir(dir).map_err(|e| {
        Failure::config(
            format!(
                "cannot create clawlink's data directory {}: {e}",
                dir.display()
            ),
            Some("make its parent writable, or set CLAWLINK_DATA_DIR".into()),
        )
    })?;
    check_private_dir(dir)
}

/// Writes `bytes` to `path` with mode 0600, atomically: a new temp file with an
/// unpredictable name (O_CREAT|O_EXCL, so never a file or symlink someone planted),
/// synced, then renamed over `path`. Creates the parent directory with mode 0700.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    // tempfile creates it with mode 0600.
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir)
    }
}

const KEY_HEADER: &str = "clawlink device key v1 (ed25519 seed, hex)";

/// Loads the device identity for `role` from the data dir, creating it on first use.
pub fn load_or_create_identity(dir: &Path, role: &str) -> Result<DeviceIdentity, Failure> {
    open_data_dir(dir)?;
    let path = dir.join(format!("device-{role}.key"));
    if path.exists() {
        check_private(&path, "the device key")?;
        let text = fs::read_to_string(&path).map_err(|e| {
            Failure::config(
                format!("cannot read the device key {}: {e}", path.display()),
                None,
            )
        })?;
        let seed = text
            .lines()
            .nth(1)
            .and_then(|line| hex::decode(line.trim()).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                Failure::config(
                    format!("the device key {} is damaged", path.display()),
                    Some(format!(
                        "move it away to get a new device identity (the gateway will see a new device): mv {0} {0}.bad",
                        path.display()
                    )),
                )
            })?;
        return Ok(DeviceIdentity::from_seed(seed));
    }
    let identity = DeviceIdentity::generate()
        .map_err(|e| Failure::config(format!("no randomness for a device key: {e}"), None))?;
    let text = format!("{KEY_HEADER}\n{}\n", hex::encode(identity.seed()));
    write_private(&path, text.as_bytes()).map_err(|e| {
        Failure::config(
            format!("cannot store the device key in {}: {e}", path.display()),
            Some("make the data directory writable, or set CLAWLINK_DATA_DIR".into()),
        )
    })?;
    tracing::info!(device = identity.id(), path = %path.display(), "created a new device identity");
    Ok(identity)
}

/// Device tokens in one 0600 JSON file, written through on every change.
pub struct FileTokenStore {
    path: PathBuf,
    tokens: Mutex<BTreeMap<String, String>>,
}

impl FileTokenStore {
    pub fn open(dir: &Path) -> Result<Self, Failure> {
        open_data_dir(dir)?;
        let path = dir.join("device-tokens.json");
        let tokens = if path.exists() {
            check_private(&path, "the device token file")?;
            let text = fs::read_to_string(&path).map_err(|e| {
                Failure::config(format!("cannot read {}: {e}", path.display()), None)
            })?;
            serde_json::from_str(&text).map_err(|e| {
                Failure::config(
                    format!("{} is not valid JSON: {e}", path.display()),
                    Some(format!(
                        "delete it (clawlink re-pairs with the shared secret): rm {}",
                        path.display()
                    )),
                )
            })?
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            path,
            tokens: Mutex::new(tokens),
        })
    }

    fn persist(&self, tokens: &BTreeMap<String, String>) -> Result<(), String> {
        let text = serde_json::to_string_pretty(tokens).map_err(|e| e.to_string())?;
        write_private(&self.path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

impl DeviceTokenStore for FileTokenStore {
    fn load(&self, key: &str) -> Option<SecretString> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(key).cloned().map(SecretString::from)
    }

    fn save(&self, key: &str, token: &SecretString) -> Result<(), String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert(key.to_owned(), token.expose_secret().to_owned());
        self.persist(&tokens)
    }

    fn forget(&self, key: &str) -> Result<(), String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.remove(key).is_some() {
            self.persist(&tokens)?;
        }
        Ok(())
    }
}

/// Reads a secret file: private, non-empty, trailing newline trimmed.
pub fn read_secret_file(path: &Path, what: &str) -> Result<SecretString, Failure> {
    check_private(path, what)?;
    let text = fs::read_to_string(path).map_err(|e| {
        Failure::config(format!("cannot read {what} {}: {e}", path.display()), None)
    })?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.trim().is_empty() {
        return Err(Failure::config(
            format!("{what} {} is empty", path.display()),
            Some(format!("write the secret into {}", path.display())),
        ));
    }
    Ok(SecretString::from(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("clawlink-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn identity_is_created_once_private_and_reused() {
        let dir = scratch("identity");
        let first = load_or_create_identity(&dir, "operator").unwrap();
        let again = load_or_create_identity(&dir, "operator").unwrap();
        assert_eq!(first.id(), again.id());
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir.join("device-operator.key")), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        let node = load_or_create_identity(&dir, "node").unwrap();
        assert_ne!(node.id(), first.id());
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn readable_credentials_are_refused_with_the_chmod_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("perm");
        load_or_create_identity(&dir, "operator").unwrap();
        let key = dir.join("device-operator.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_identity(&dir, "operator").err().unwrap();
        assert_eq!(
            err.fix.as_deref(),
            Some(format!("chmod 600 {}", key.display()).as_str())
        );

        let secret = dir.join("token");
        fs::write(&secret, "abc\n").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_secret_file(&secret, "the token file").err().unwrap();
        assert!(err.message.contains("readable by other users"));
        assert!(!err.message.contains("abc"));
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_secret_file(&secret, "the token file")
                .unwrap()
                .expose_secret(),
            "abc"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_temp_file_or_symlink_is_never_written_through() {
        let dir = scratch("planted");
        create_private_dir(&dir).unwrap();
        let victim = dir.join("elsewhere");
        fs::write(&victim, "untouched").unwrap();
        // The names the old code would have used (predictable from the PID).
        let path = dir.join("device-tokens.json");
        for planted in [
            format!(".device-tokens.json.tmp{}", std::process::id()),
            ".device-tokens.json.tmp".to_owned(),
        ] {
            std::os::unix::fs::symlink(&victim, dir.join(planted)).unwrap();
        }
        write_private(&path, b"{}").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}");
        assert_eq!(mode(&path), 0o600);
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn files_and_data_directories_of_another_user_or_open_to_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(my_uid(), 0, "this test plays another user: run it as root");
        let nobody = 65534;
        let dir = scratch("owner");
        load_or_create_identity(&dir, "operator").unwrap();
        let key = dir.join("device-operator.key");
        std::os::unix::fs::chown(&key, Some(nobody), None).unwrap();
        let err = load_or_create_identity(&dir, "operator").err().unwrap();
        assert!(err.message.contains("belongs to another user"), "{err}");
        // Root's own files are trusted, as OpenSSH does.
        std::os::unix::fs::chown(&key, Some(0), None).unwrap();
        load_or_create_identity(&dir, "operator").unwrap();

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = FileTokenStore::open(&dir).err().unwrap();
        assert!(err.message.contains("writable by other users"), "{err}");
        assert_eq!(err.fix.unwrap(), format!("chmod 700 {}", dir.display()));
        let err = load_or_create_identity(&dir, "operator").err().unwrap();
        assert!(err.message.contains("writable by other users"), "{err}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(nobody), None).unwrap();
        let err = FileTokenStore::open(&dir).err().unwrap();
        assert!(err.message.contains("belongs to another user"), "{err}");
        assert!(err.fix.unwrap().contains("CLAWLINK_DATA_DIR"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn token_store_persists_across_opens() {
        let dir = scratch("tokens");
        let store = FileTokenStore::open(&dir).unwrap();
        store
            .save("k", &SecretString::from("t1".to_owned()))
            .unwrap();
        let reopened = FileTokenStore::open(&dir).unwrap();
        assert_eq!(reopened.load("k").unwrap().expose_secret(), "t1");
        reopened.forget("k").unwrap();
        assert!(FileTokenStore::open(&dir).unwrap().load("k").is_none());
        #[cfg(unix)]
        assert_eq!(mode(&dir.join("device-tokens.json")), 0o600);
        let _ = fs::remove_dir_all(&dir);
    }
}
