//! The on-disk outbox: every message is written (and fsync'd) here before it is sent, and removed only once the gateway's transcript shows it (an acknowledgement alone does not survive a gateway restart).
//!
//! One JSON file per message, named `<created ms>-<idempotency key>.json`, so a listing is in
//! typing order. A write goes to a temporary file that is fsync'd and renamed over the
//! final name, and the directory is fsync'd: after a crash either the whole entry exists or
//! none does. The idempotency key is chosen when the message is typed and never changes, so
//! re-sending an entry (after a reconnect, by another process, after a crash) is safe: the
//! gateway dedupes `chat.send` by key for about five minutes and answers `in_flight` or the
//! cached result.
//!
//! A process working on an entry holds an advisory lock on `locks/<key>`; others skip
//! locked entries (an optimisation only: two senders of one key are still deduplicated).

use clawlink_core::time::now_unix_millis;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::attach::Attachment;
use crate::error::ChatError;

/// The entry format written by this version.
pub const ENTRY_VERSION: u32 = 1;

/// One message waiting for the gateway's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    pub version: u32,
    /// `chat.send`'s `idempotencyKey`, which the gateway also uses as the run id.
    pub idempotency_key: String,
    /// The transport's gateway key: an agent drains only its own gateway's messages.
    pub gateway: String,
    /// As the user asked (`None`: the main session); canonicalised at send time, when the
    /// gateway's session defaults are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    pub created_at_ms: u64,
    /// How many times `chat.send` was written for it.
    #[serde(default)]
    pub attempts: u32,
    /// Why the last attempt did not get an acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Set when the gateway acknowledged it but the message is not yet seen in the session's
    /// transcript: the gateway queues a message that arrives while a reply runs, in memory,
    /// and a restart loses its queue. Kept until the transcript shows it (see
    /// `ChatClient::settle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledged>,
}

/// When and where the gateway acknowledged an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Acknowledged {
    pub at_ms: u64,
    /// The canonical session key it went to (where its transcript is read).
    pub session_key: String,
    /// The gateway process that acknowledged it (`hello-ok.server.bootId`): another one
    /// means a restart in between, and an unrecorded message was lost with its queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

impl OutboxEntry {
    /// A new message with a fresh idempotency key.
    pub fn new(
        gateway: impl Into<String>,
        session_key: Option<String>,
        message: impl Into<String>,
        attachments: Vec<Attachment>,
    ) -> Self {
        Self {
            version: ENTRY_VERSION,
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            gateway: gateway.into(),
            session_key,
            message: message.into(),
            attachments,
            created_at_ms: now_unix_millis(),
            attempts: 0,
            last_error: None,
            acknowledged: None,
        }
    }

    fn file_name(&self) -> String {
        format!("{:013}-{}.json", self.created_at_ms, self.idempotency_key)
    }

    /// A one-line preview for listings.
    pub fn preview(&self, width: usize) -> String {
        let flat: String = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut preview: String = flat.chars().take(width).collect();
        if flat.chars().count() > width {
            preview.push('…');
        }
        if !self.attachments.is_empty() {
            preview.push_str(&format!(" [+{} attachment(s)]", self.attachments.len()));
        }
        preview
    }
}

/// The outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// An entry this process is working on; dropping it releases the lock.
#[derive(Debug)]
pub struct Claim {
    _lock: File,
}

impl Outbox {
    /// Opens (creating, mode 0700) the outbox in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ChatError> {
        let dir = dir.into();
        create_private_dir(&dir.join("locks"))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `entry` durably (new or updated): temporary file, fsync, rename, fsync of the
    /// directory.
    pub fn put(&self, entry: &OutboxEntry) -> Result<(), ChatError> {
        let final_path = self.dir.join(entry.file_name());
        let tmp_path = self.dir.join(format!(
            ".{}.{}.tmp",
            entry.idempotency_key,
            std::process::id()
        ));
        let bytes = serde_json::to_vec(entry).expect("an outbox entry always serializes");
        let write = || -> std::io::Result<()> {
            let mut file = private_file(&tmp_path)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp_path, &final_path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp_path);
            ChatError::outbox(&final_path, e)
        })
    }

    /// Every readable entry, oldest first; `gateway` keeps only that gateway's. A file that
    /// cannot be parsed is skipped with a warning (and left for a person to look at).
    pub fn list(&self, gateway: Option<&str>) -> Result<Vec<OutboxEntry>, ChatError> {
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(|e| ChatError::outbox(&self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        names.sort();
        let mut entries = Vec::new();
        for path in names {
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<OutboxEntry>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(entry) if gateway.is_none_or(|g| g == entry.gateway) => entries.push(entry),
                Ok(_) => {}
                // Vanished between listing and reading: delivered by another process.
                Err(_) if !path.exists() => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable outbox entry skipped")
                }
            }
        }
        Ok(entries)
    }

    /// The entry with this idempotency key, if it is still waiting.
    pub fn get(&self, key: &str) -> Result<Option<OutboxEntry>, ChatError> {
        Ok(self
            .list(None)?
            .into_iter()
            .find(|e| e.idempotency_key == key))
    }

    /// Removes the entry (acknowledged, or refused for good). Removing one that is already
    /// gone is fine: another process delivered it.
    pub fn remove(&self, entry: &OutboxEntry) -> Result<(), ChatError> {
        let path = self.dir.join(entry.file_name());
        match fs::remove_file(&path) {
            Ok(()) => {
                let _ = fs::remove_file(self.lock_path(&entry.idempotency_key));
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| ChatError::outbox(&self.dir, e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ChatError::outbox(&path, e)),
        }
    }

    /// Takes the advisory lock of `key`; `None` when another process holds it.
    pub fn try_claim(&self, key: &str) -> Result<Option<Claim>, ChatError> {
        let path = self.lock_path(key);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ChatError::outbox(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Claim { _lock: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(ChatError::outbox(&path, e)),
        }
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.dir.join("locks").join(key)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ChatError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| ChatError::outbox(dir, e))
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir).map_err(|e| ChatError::outbox(dir, e))
    }
}

fn private_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Messages are private: owner only, like the rest of the data directory.
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> Outbox {
        let dir =
            std::env::temp_dir().join(format!("webchat-outbox-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Outbox::open(&dir).unwrap()
    }

    #[test]
    fn entries_survive_reopening_in_typing_order_and_go_on_remove() {
        let outbox = scratch("order");
        let mut first = OutboxEntry::new("gw-a", None, "first", Vec::new());
        first.created_at_ms = 1_000;
        let mut second =
            OutboxEntry::new("gw-a", Some("agent:main:x".into()), "second", Vec::new());
        second.created_at_ms = 2_000;
        let other = OutboxEntry::new("gw-b", None, "elsewhere", Vec::new());
        outbox.put(&second).unwrap();
        outbox.put(&first).unwrap();
        outbox.put(&other).unwrap();

        let reopened = Outbox::open(outbox.dir()).unwrap();
        let mine = reopened.list(Some("gw-a")).unwrap();
        assert_eq!(mine, vec![first.clone(), second.clone()]);
        assert_eq!(reopened.list(None).unwrap().len(), 3);

        // An update keeps one file per key.
        let mut retried = first.clone();
        retried.attempts = 2;
        retried.last_error = Some("connection lost".into());
        reopened.put(&retried).unwrap();
        assert_eq!(
            reopened.get(&first.idempotency_key).unwrap(),
            Some(retried.clone())
        );
        assert_eq!(reopened.list(Some("gw-a")).unwrap().len(), 2);

        reopened.remove(&retried).unwrap();
        reopened.remove(&retried).unwrap(); // twice is fine
        assert_eq!(reopened.list(Some("gw-a")).unwrap(), vec![second]);
    }

    #[test]
    fn files_are_private_and_leftovers_are_ignored() {
        let outbox = scratch("private");
        let entry = OutboxEntry::new("gw", None, "secret plans", Vec::new());
        outbox.put(&entry).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = outbox.dir().join(entry.file_name());
            assert_eq!(
                fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                fs::metadata(outbox.dir()).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        // A temporary file of a crashed write and a corrupt entry are not entries.
        fs::write(outbox.dir().join(".x.1.tmp"), b"{").unwrap();
        fs::write(outbox.dir().join("0000000000001-bad.json"), b"not json").unwrap();
        assert_eq!(outbox.list(None).unwrap(), vec![entry]);
    }

    #[test]
    fn a_claimed_entry_is_skipped_by_others_until_released() {
        let outbox = scratch("claim");
        let claim = outbox.try_claim("key-1").unwrap().expect("free");
        assert!(outbox.try_claim("key-1").unwrap().is_none());
        assert!(outbox.try_claim("key-2").unwrap().is_some());
        drop(claim);
        assert!(outbox.try_claim("key-1").unwrap().is_some());
    }

    #[test]
    fn previews_are_one_short_line() {
        let entry = OutboxEntry::new("gw", None, "hello\n  there   world", Vec::new());
        assert_eq!(entry.preview(40), "hello there world");
        assert_eq!(entry.preview(5), "hello…");
        assert!(!entry.idempotency_key.is_empty());
    }
}
