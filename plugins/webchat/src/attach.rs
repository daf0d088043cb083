//! Chat attachments: a file read from disk, checked against the limits the gateway announced in hello-ok's `policy`, sent base64-encoded.

use std::path::Path;

use base64::Engine;
use clawlink_core::gateway::protocol::Policy;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ChatError;

/// Room left in a frame for everything but the attachments (the message, the keys, JSON).
const FRAME_OVERHEAD: u64 = 64 * 1024;

/// One attachment as `chat.send` takes it: `{type, mimeType, fileName, origin, content,
/// sizeBytes}`, the content base64 of the file's bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `image` for image/* files, `file` for anything else.
    #[serde(rename = "type")]
    pub kind: String,
    pub mime_type: String,
    pub file_name: String,
    /// Always `file`: picked from disk, not pasted.
    pub origin: String,
    /// Base64 (standard alphabet, padded) of the file.
    pub content: String,
    pub size_bytes: u64,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The content can be megabytes: never dump it into a log line.
        f.debug_struct("Attachment")
            .field("file_name", &self.file_name)
            .field("mime_type", &self.mime_type)
            .field("size_bytes", &self.size_bytes)
            .finish_non_exhaustive()
    }
}

/// The decoded-size ceilings of hello-ok's `policy.attachments` and the frame limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentLimits {
    /// `policy.attachments.maxBytes`: any attachment, decoded.
    pub max_bytes: Option<u64>,
    /// `policy.attachments.maxImageBytes`: images, decoded.
    pub max_image_bytes: Option<u64>,
    /// `policy.maxPayload`: one WebSocket frame, the base64 included.
    pub max_payload: u64,
}

impl AttachmentLimits {
    pub fn from_policy(policy: &Policy) -> Self {
        let limit = |key: &str| policy.attachments.get(key).and_then(Value::as_u64);
        Self {
            max_bytes: limit("maxBytes"),
            max_image_bytes: limit("maxImageBytes"),
            max_payload: policy.max_payload,
        }
    }

    /// The largest decoded size a file of this MIME type may have.
    pub fn ceiling(&self, mime_type: &str) -> u64 {
        let by_frame = self.max_payload.saturating_sub(FRAME_OVERHEAD) / 4 * 3;
        let by_kind = if mime_type.starts_with("image/") {
            self.max_image_bytes.or(self.max_bytes)
        } else {
            self.max_bytes
        };
        by_kind.map_or(by_frame, |limit| limit.min(by_frame))
    }
}

/// The MIME type for a file name, from its extension (what browsers would send).
pub fn mime_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "m4a" => "audio/mp4",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Reads `path` into an attachment, refusing it (before reading it) when it is larger than
/// the gateway accepts.
pub fn load(path: &Path, limits: &AttachmentLimits) -> Result<Attachment, ChatError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ChatError::Attachment {
        message: format!("cannot attach {shown}: {e}"),
        fix: "give the path of a readable file".into(),
    })?;
    if !meta.is_file() {
        return Err(ChatError::Attachment {
            message: format!("cannot attach {shown}: not a regular file"),
            fix: "attach one file at a time (a directory can be zipped first)".into(),
        });
    }
    let mime_type = mime_type_for(path);
    check_size(&shown, meta.len(), mime_type, limits)?;
    let bytes = std::fs::read(path).map_err(|e| ChatError::Attachment {
        message: format!("cannot read {shown}: {e}"),
        fix: "give the path of a readable file".into(),
    })?;
    // The file may have grown between the check and the read.
    check_size(&shown, bytes.len() as u64, mime_type, limits)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "attachment".into());
    Ok(Attachment {
        kind: if mime_type.starts_with("image/") {
            "image".into()
        } else {
            "file".into()
        },
        mime_type: mime_type.into(),
        file_name,
        origin: "file".into(),
        size_bytes: bytes.len() as u64,
        content: base64::engine::general_purpose::STANDARD.encode(&bytes),
    })
}

fn check_size(
    shown: &str,
    size: u64,
    mime_type: &str,
    limits: &AttachmentLimits,
) -> Result<(), ChatError> {
    let ceiling = limits.ceiling(mime_type);
    if size <= ceiling {
        return Ok(());
    }
    let which = if mime_type.starts_with("image/") && limits.max_image_bytes.is_some() {
        "policy.attachments.maxImageBytes"
    } else if limits.max_bytes.is_some() {
        "policy.attachments.maxBytes"
    } else {
        "policy.maxPayload"
    };
    Err(ChatError::Attachment {
        message: format!(
            "{shown} is {} but the gateway accepts at most {} for {mime_type} ({which})",
            human_bytes(size),
            human_bytes(ceiling)
        ),
        fix: "send a smaller file (compress or resize it), or raise agents.defaults.mediaMaxMb \
              on the gateway"
            .into(),
    })
}

/// Refuses a message whose frame would exceed `policy.maxPayload` with all its attachments
/// (each fits alone, several together may not).
pub fn check_total(
    message: &str,
    attachments: &[Attachment],
    limits: &AttachmentLimits,
) -> Result<(), ChatError> {
    let encoded: u64 = attachments.iter().map(|a| a.content.len() as u64).sum();
    let total = encoded + message.len() as u64 + FRAME_OVERHEAD;
    if total <= limits.max_payload {
        return Ok(());
    }
    Err(ChatError::Attachment {
        message: format!(
            "the message with its {} attachment(s) would be a {} frame; the gateway takes at most {} (policy.maxPayload)",
            attachments.len(),
            human_bytes(total),
            human_bytes(limits.max_payload)
        ),
        fix: "send the attachments in separate messages".into(),
    })
}

/// `19.5 MB`-style sizes for messages.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live_limits() -> AttachmentLimits {
        let policy: Policy = serde_json::from_value(json!({
            "maxPayload": 26214400, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000,
            "attachments": {"maxBytes": 19464192, "maxImageBytes": 6291456}
        }))
        .unwrap();
        AttachmentLimits::from_policy(&policy)
    }

    fn scratch(name: &str, bytes: usize) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("webchat-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, vec![b'a'; bytes]).unwrap();
        path
    }

    #[test]
    fn limits_come_from_the_policy_and_images_have_their_own() {
        let limits = live_limits();
        assert_eq!(limits.ceiling("image/png"), 6_291_456);
        assert_eq!(limits.ceiling("application/pdf"), 19_464_192);
        let no_attachments = AttachmentLimits {
            max_bytes: None,
            max_image_bytes: None,
            max_payload: 1024 * 1024,
        };
        // Without announced limits the frame decides: base64 grows by a third.
        assert_eq!(
            no_attachments.ceiling("text/plain"),
            (1024 * 1024 - FRAME_OVERHEAD) / 4 * 3
        );
    }

    #[test]
    fn a_small_file_becomes_a_base64_attachment() {
        let path = scratch("note.txt", 5);
        let a = load(&path, &live_limits()).unwrap();
        assert_eq!(a.kind, "file");
        assert_eq!(a.mime_type, "text/plain");
        assert_eq!(a.file_name, "note.txt");
        assert_eq!(a.content, "YWFhYWE=");
        assert_eq!(a.size_bytes, 5);
        let wire = serde_json::to_value(&a).unwrap();
        assert_eq!(wire["type"], "file");
        assert_eq!(wire["mimeType"], "text/plain");
        assert_eq!(wire["origin"], "file");
        assert!(
            !format!("{a:?}").contains("YWFh"),
            "Debug must not dump content"
        );
    }

    #[test]
    fn an_image_over_max_image_bytes_is_refused_before_it_is_read() {
        let limits = AttachmentLimits {
            max_bytes: Some(100),
            max_image_bytes: Some(10),
            max_payload: 26_214_400,
        };
        let path = scratch("big.png", 11);
        let err = load(&path, &limits).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("big.png"), "{text}");
        assert!(text.contains("maxImageBytes"), "{text}");
        assert!(err.fix().unwrap().contains("smaller"));
        // The same size is fine for a non-image.
        let ok = scratch("big.bin", 11);
        assert_eq!(load(&ok, &limits).unwrap().kind, "file");
        let missing = load(Path::new("/nonexistent/file"), &limits).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/file"));
    }

    #[test]
    fn several_attachments_must_fit_one_frame_together() {
        let limits = AttachmentLimits {
            max_bytes: None,
            max_image_bytes: None,
            max_payload: FRAME_OVERHEAD + 100,
        };
        let one = Attachment {
            kind: "file".into(),
            mime_type: "text/plain".into(),
            file_name: "a".into(),
            origin: "file".into(),
            content: "x".repeat(60),
            size_bytes: 45,
        };
        assert!(check_total("hi", std::slice::from_ref(&one), &limits).is_ok());
        let err = check_total("hi", &[one.clone(), one], &limits).unwrap_err();
        assert!(err.to_string().contains("maxPayload"), "{err}");
    }

    #[test]
    fn sizes_read_like_a_person_wrote_them() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(6_291_456), "6.0 MiB");
        assert_eq!(human_bytes(19_464_192), "18.6 MiB");
    }
}
