//! The last detections and what became of them, for the status, the `recent` control action and `clawlink voicewake listen`.
//!
//! Every change bumps one version counter and stamps the changed detection with it, so a
//! reader that remembers the last version it saw asks only for what changed since.

use clawlink_core::time::unix_millis;
use std::collections::VecDeque;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// How many detections are kept.
const KEEP: usize = 50;

/// Where a detection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Only the trigger was heard; the next final transcript within the window is the command.
    AwaitingCommand,
    /// The `agent` call is on its way.
    Sending,
    /// The gateway started the run.
    Accepted,
    /// The run finished.
    Ok,
    /// The call or the run failed.
    Error,
    /// The trigger was heard but no command followed.
    NoCommand,
}

impl Stage {
    pub fn is_final(self) -> bool {
        matches!(self, Stage::Ok | Stage::Error | Stage::NoCommand)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::AwaitingCommand => "awaiting-command",
            Stage::Sending => "sending",
            Stage::Accepted => "accepted",
            Stage::Ok => "ok",
            Stage::Error => "error",
            Stage::NoCommand => "no-command",
        }
    }
}

/// One detection (or one `send`), as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detection {
    pub id: u64,
    /// The journal version of its last change.
    pub version: u64,
    /// Unix ms it was heard.
    pub at: u64,
    /// Unix ms of its last change.
    pub updated_at: u64,
    /// `stdin`, `fifo`, `command` or `send`.
    pub origin: String,
    /// What the recognizer said (both lines for "trigger only" + command).
    pub heard: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub stage: Stage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_dropped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// From the trigger to the final answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// The kept detections.
#[derive(Debug, Default)]
pub struct Journal {
    next_id: u64,
    version: u64,
    entries: VecDeque<Detection>,
}

impl Journal {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Records a new detection; returns its id.
    pub fn add(
        &mut self,
        origin: &str,
        heard: &str,
        trigger: Option<&str>,
        command: Option<&str>,
        stage: Stage,
    ) -> u64 {
        self.next_id += 1;
        self.version += 1;
        let now = unix_millis(SystemTime::now());
        self.entries.push_back(Detection {
            id: self.next_id,
            version: self.version,
            at: now,
            updated_at: now,
            origin: origin.to_owned(),
            heard: heard.to_owned(),
            trigger: trigger.map(str::to_owned),
            command: command.map(str::to_owned),
            stage,
            run_id: None,
            session_key: None,
            thinking: None,
            thinking_dropped: None,
            summary: None,
            error: None,
            error_code: None,
            duration_ms: None,
        });
        while self.entries.len() > KEEP {
            self.entries.pop_front();
        }
        self.next_id
    }

    /// Changes detection `id` (if still kept) and stamps it.
    pub fn update(&mut self, id: u64, change: impl FnOnce(&mut Detection)) {
        let Some(entry) = self.entries.iter_mut().find(|d| d.id == id) else {
            return;
        };
        change(entry);
        self.version += 1;
        entry.version = self.version;
        entry.updated_at = unix_millis(SystemTime::now());
        if entry.stage.is_final() && entry.duration_ms.is_none() {
            entry.duration_ms = Some(entry.updated_at.saturating_sub(entry.at));
        }
    }

    pub fn get(&self, id: u64) -> Option<&Detection> {
        self.entries.iter().find(|d| d.id == id)
    }

    /// Detections changed after `version`, oldest change first.
    pub fn since(&self, version: u64) -> Vec<Detection> {
        let mut changed: Vec<Detection> = self
            .entries
            .iter()
            .filter(|d| d.version > version)
            .cloned()
            .collect();
        changed.sort_by_key(|d| d.version);
        changed
    }

    /// The last `n` detections, oldest first.
    pub fn last(&self, n: usize) -> Vec<Detection> {
        let skip = self.entries.len().saturating_sub(n);
        self.entries.iter().skip(skip).cloned().collect()
    }

    /// How many detections are still on their way (sending or accepted).
    pub fn in_flight(&self) -> usize {
        self.entries
            .iter()
            .filter(|d| matches!(d.stage, Stage::Sending | Stage::Accepted))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_versioned_and_bounded() {
        let mut j = Journal::default();
        let a = j.add(
            "stdin",
            "computer",
            Some("computer"),
            None,
            Stage::AwaitingCommand,
        );
        let seen = j.version();
        j.update(a, |d| {
            d.command = Some("lights".into());
            d.stage = Stage::Sending;
        });
        assert_eq!(j.in_flight(), 1);
        let changed = j.since(seen);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].stage, Stage::Sending);
        j.update(a, |d| d.stage = Stage::Ok);
        assert!(j.get(a).unwrap().duration_ms.is_some());
        assert_eq!(j.in_flight(), 0);
        for i in 0..60 {
            j.add("send", &format!("t{i}"), None, Some("x"), Stage::Sending);
        }
        assert_eq!(j.last(100).len(), KEEP);
        assert!(j.get(a).is_none());
        assert_eq!(j.last(2).last().unwrap().heard, "t59");
        // Updating a forgotten detection is harmless.
        j.update(a, |d| d.stage = Stage::Error);
    }

    #[test]
    fn detections_serialise_in_camel_case_without_nulls() {
        let mut j = Journal::default();
        j.add("send", "hello", None, Some("hello"), Stage::Sending);
        let json = serde_json::to_value(j.last(1)).unwrap();
        assert_eq!(json[0]["stage"], "sending");
        assert_eq!(json[0]["origin"], "send");
        assert!(!json.to_string().contains("null"));
    }
}
