//! The local mirror of the gateway's trigger phrases, used while disconnected (the app's `openclaw.swabbleTriggers`).
//!
//! One JSON file in the feature's private state directory, keyed by gateway (profiles share
//! the data directory, and each gateway owns its own list). Written atomically (temporary
//! file, then rename) with mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use clawlink_core::time::unix_millis;

/// The mirror of one gateway's triggers.
#[derive(Debug, Clone)]
pub struct Mirror {
    path: PathBuf,
    gateway: String,
}

/// What the mirror remembers for one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirrored {
    pub triggers: Vec<String>,
    pub saved_at_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MirrorFile {
    #[serde(default)]
    gateways: BTreeMap<String, Mirrored>,
}

impl Mirror {
    /// The mirror in `dir` for the gateway identified by `gateway` (a transport's gateway key).
    pub fn new(dir: &Path, gateway: &str) -> Self {
        Self {
            path: dir.join("triggers.json"),
            gateway: gateway.to_owned(),
        }
    }

    /// The mirrored triggers of this gateway, if any were saved (a damaged file is ignored).
    pub fn load(&self) -> Option<Mirrored> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let file: MirrorFile = match serde_json::from_str(&text) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "ignoring a damaged trigger mirror");
                return None;
            }
        };
        file.gateways
            .get(&self.gateway)
            .filter(|m| !m.triggers.is_empty())
            .cloned()
    }

    /// Saves `triggers` as this gateway's, keeping other gateways' entries.
    pub fn save(&self, triggers: &[String]) -> std::io::Result<()> {
        let mut file: MirrorFile = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        file.gateways.insert(
            self.gateway.clone(),
            Mirrored {
                triggers: triggers.to_vec(),
                saved_at_ms: unix_millis(SystemTime::now()),
            },
        );
        let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            out.write_all(&text)?;
            out.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gateway_keeps_its_own_list() {
        let dir = std::env::temp_dir().join(format!("clawlink-vw-mirror-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = Mirror::new(&dir, "ws://a:1");
        let b = Mirror::new(&dir, "ws://b:2");
        assert_eq!(a.load(), None);
        a.save(&["computer".into(), "jarvis".into()]).unwrap();
        b.save(&["claude".into()]).unwrap();
        assert_eq!(a.load().unwrap().triggers, vec!["computer", "jarvis"]);
        assert_eq!(b.load().unwrap().triggers, vec!["claude"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(a.path(), "{damaged").unwrap();
        assert_eq!(a.load(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
