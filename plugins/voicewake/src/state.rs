//! What the status and the control actions read: the triggers in use and where they came from, the journal of detections, counters, the gateway connection.

use serde_json::Value;

use crate::journal::Journal;
use crate::trigger::TriggerSet;
use crate::DEFAULT_TRIGGERS;

/// Where the triggers in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TriggersFrom {
    Default,
    Mirror,
    Gateway,
}

impl TriggersFrom {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TriggersFrom::Default => "default",
            TriggersFrom::Mirror => "mirror",
            TriggersFrom::Gateway => "gateway",
        }
    }
}

/// Counters for the status.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stats {
    pub(crate) lines: u64,
    pub(crate) partial: u64,
    pub(crate) without_trigger: u64,
    pub(crate) debounced: u64,
    pub(crate) low_confidence: u64,
    pub(crate) bad_lines: u64,
}

/// Everything the status and the control actions read.
pub(crate) struct State {
    pub(crate) triggers: Vec<String>,
    pub(crate) trigger_set: TriggerSet,
    pub(crate) triggers_from: TriggersFrom,
    pub(crate) triggers_at: Option<u64>,
    pub(crate) routing: Option<Value>,
    pub(crate) journal: Journal,
    pub(crate) stats: Stats,
    pub(crate) last_heard: Option<Value>,
    /// The detection whose command is awaited ("trigger only").
    pub(crate) awaiting: Option<u64>,
    pub(crate) connected: bool,
    pub(crate) connection: String,
}

impl State {
    pub(crate) fn new() -> Self {
        let defaults: Vec<String> = DEFAULT_TRIGGERS.iter().map(|t| t.to_string()).collect();
        Self {
            trigger_set: TriggerSet::new(&defaults),
            triggers: defaults,
            triggers_from: TriggersFrom::Default,
            triggers_at: None,
            routing: None,
            journal: Journal::default(),
            stats: Stats::default(),
            last_heard: None,
            awaiting: None,
            connected: false,
            connection: "not started".into(),
        }
    }

    pub(crate) fn set_triggers(
        &mut self,
        triggers: Vec<String>,
        from: TriggersFrom,
        at: Option<u64>,
    ) -> bool {
        let changed = self.triggers != triggers;
        self.trigger_set = TriggerSet::new(&triggers);
        self.triggers = triggers;
        self.triggers_from = from;
        self.triggers_at = at;
        changed
    }
}
