//! The wake-word state machine: which final transcripts become commands, the "trigger only" window and the debounce after a send.
//!
//! Pure (time is passed in), so the app's timing rules are unit-tested:
//! - a final transcript that starts with a trigger (or contains one, with `anywhere`) and
//!   has words after it is a command;
//! - a transcript that is only the trigger opens a window (5 s by default) in which the next
//!   final transcript is the command; a transcript that starts with a trigger again restarts
//!   the match instead;
//! - for `debounce` (350 ms) after a send every transcript is dropped, so one utterance
//!   reported twice does not fire twice;
//! - partial transcripts never send anything (the caller does not pass them here).

use std::time::{Duration, Instant};

use crate::trigger::TriggerSet;

/// What a final transcript leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward `command`, fired by `trigger`; `after_trigger_only` when the trigger came in
    /// an earlier transcript (the "trigger only" window).
    Forward {
        trigger: String,
        command: String,
        after_trigger_only: bool,
    },
    /// Only the trigger was heard: wait for the command until the window closes.
    AwaitCommand { trigger: String },
    /// Nothing to do (no trigger, or within the debounce after a send).
    Ignore(Ignored),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    NoTrigger,
    Debounced,
}

/// The detector's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long "trigger only" waits for the command.
    pub command_window: Duration,
    /// How long after a send transcripts are dropped.
    pub debounce: Duration,
    /// Triggers count anywhere in the utterance, not only at its start.
    pub anywhere: bool,
}

/// The detector's state between transcripts.
#[derive(Debug)]
pub struct Detector {
    timing: Timing,
    /// Trigger heard alone, and until when its command may come.
    awaiting: Option<(String, Instant)>,
    quiet_until: Option<Instant>,
}

impl Detector {
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            awaiting: None,
            quiet_until: None,
        }
    }

    /// When the open "trigger only" window closes, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.awaiting.as_ref().map(|(_, until)| *until)
    }

    /// The trigger whose command is awaited.
    pub fn awaiting(&self) -> Option<&str> {
        self.awaiting.as_ref().map(|(t, _)| t.as_str())
    }

    /// A final transcript arrived at `now`.
    pub fn on_final(&mut self, triggers: &TriggerSet, text: &str, now: Instant) -> Decision {
        if self.quiet_until.is_some_and(|until| now < until) {
            return Decision::Ignore(Ignored::Debounced);
        }
        self.expire(now);
        match triggers.find(text, self.timing.anywhere) {
            Some(found) if found.command.is_empty() => {
                self.awaiting = Some((found.trigger.clone(), now + self.timing.command_window));
                Decision::AwaitCommand {
                    trigger: found.trigger,
                }
            }
            Some(found) => {
                self.awaiting = None;
                Decision::Forward {
                    trigger: found.trigger,
                    command: found.command,
                    after_trigger_only: false,
                }
            }
            None => match self.awaiting.take() {
                Some((trigger, _)) => Decision::Forward {
                    trigger,
                    command: text.trim().to_owned(),
                    after_trigger_only: true,
                },
                None => Decision::Ignore(Ignored::NoTrigger),
            },
        }
    }

    /// Closes the window if it has passed; returns the trigger that waited in vain.
    pub fn expire(&mut self, now: Instant) -> Option<String> {
        match &self.awaiting {
            Some((_, until)) if now >= *until => self.awaiting.take().map(|(t, _)| t),
            _ => None,
        }
    }

    /// Ends the window now (the input ended); returns the trigger that waited.
    pub fn abandon(&mut self) -> Option<String> {
        self.awaiting.take().map(|(t, _)| t)
    }

    /// A command was sent at `now`: start the debounce.
    pub fn note_sent(&mut self, now: Instant) {
        self.quiet_until = Some(now + self.timing.debounce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> (Detector, TriggerSet) {
        (
            Detector::new(Timing {
                command_window: Duration::from_secs(5),
                debounce: Duration::from_millis(350),
                anywhere: false,
            }),
            TriggerSet::new(&["openclaw", "claude", "computer"]),
        )
    }

    fn forward(trigger: &str, command: &str) -> Decision {
        Decision::Forward {
            trigger: trigger.into(),
            command: command.into(),
            after_trigger_only: false,
        }
    }

    #[test]
    fn a_trigger_with_a_command_forwards_it() {
        let (mut d, t) = detector();
        let now = Instant::now();
        assert_eq!(
            d.on_final(&t, "Computer, what's the weather?", now),
            forward("computer", "what's the weather?")
        );
        assert_eq!(
            d.on_final(&t, "what's the weather?", now),
            Decision::Ignore(Ignored::NoTrigger)
        );
    }

    #[test]
    fn trigger_only_takes_the_next_final_transcript_within_the_window() {
        let (mut d, t) = detector();
        let start = Instant::now();
        assert_eq!(
            d.on_final(&t, "Claude.", start),
            Decision::AwaitCommand {
                trigger: "claude".into()
            }
        );
        assert_eq!(d.deadline(), Some(start + Duration::from_secs(5)));
        assert_eq!(
            d.on_final(&t, "turn off the lights", start + Duration::from_secs(4)),
            Decision::Forward {
                trigger: "claude".into(),
                command: "turn off the lights".into(),
                after_trigger_only: true,
            }
        );
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn the_window_closes_after_five_seconds() {
        let (mut d, t) = detector();
        let start = Instant::now();
        d.on_final(&t, "computer", start);
        assert_eq!(d.expire(start + Duration::from_millis(4999)), None);
        assert_eq!(
            d.on_final(&t, "too late", start + Duration::from_secs(6)),
            Decision::Ignore(Ignored::NoTrigger)
        );
        d.on_final(&t, "computer", start);
        assert_eq!(
            d.expire(start + Duration::from_secs(5)),
            Some("computer".into())
        );
        d.on_final(&t, "computer", start);
        assert_eq!(d.abandon(), Some("computer".into()));
        assert_eq!(d.abandon(), None);
    }

    #[test]
    fn a_new_trigger_inside_the_window_restarts_the_match() {
        let (mut d, t) = detector();
        let start = Instant::now();
        d.on_final(&t, "computer", start);
        assert_eq!(
            d.on_final(&t, "claude, stop", start + Duration::from_secs(1)),
            forward("claude", "stop")
        );
    }

    #[test]
    fn transcripts_right_after_a_send_are_dropped() {
        let (mut d, t) = detector();
        let start = Instant::now();
        d.note_sent(start);
        assert_eq!(
            d.on_final(&t, "computer, again", start + Duration::from_millis(349)),
            Decision::Ignore(Ignored::Debounced)
        );
        assert_eq!(
            d.on_final(&t, "computer, again", start + Duration::from_millis(350)),
            forward("computer", "again")
        );
    }
}
