//! Trigger-phrase matching with the macOS app's semantics: words compared without case, punctuation or diacritics; the command is what follows the trigger.
//!
//! A transcript is split into words (letters, digits and apostrophes; everything else
//! separates). Each word is folded for comparison: Unicode NFKD, combining marks dropped,
//! lowercased, apostrophes dropped — so "Computer," matches `computer`, "Réveille-toi"
//! matches `reveille toi` and "What's" compares as `whats`. A trigger matches when its folded
//! words equal consecutive folded words of the transcript: at the start (the app's rule), or
//! anywhere when configured. Scripts without case and without spaces (CJK, Thai…) also match
//! a one-word trigger as a prefix of the first word, as the app does ("莱财在不在" starts with
//! "莱财"). The command keeps the transcript's own spelling: everything after the trigger,
//! with the separators in between removed.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// One word of a transcript: where it is and how it compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    start: usize,
    end: usize,
    folded: String,
}

/// A trigger that fired in a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerMatch {
    /// The trigger as the gateway spells it (what `voiceWakeTrigger` carries).
    pub trigger: String,
    /// What follows the trigger, in the transcript's spelling; empty for "trigger only".
    pub command: String,
}

/// The gateway's trigger list, prepared for matching.
#[derive(Debug, Clone, Default)]
pub struct TriggerSet {
    /// (trigger as given, its folded words); triggers with no word are dropped.
    triggers: Vec<(String, Vec<String>)>,
}

impl TriggerSet {
    pub fn new<S: AsRef<str>>(triggers: &[S]) -> Self {
        let triggers = triggers
            .iter()
            .map(|t| t.as_ref().trim().to_owned())
            .filter_map(|t| {
                let words: Vec<String> = words(&t).into_iter().map(|w| w.folded).collect();
                (!words.is_empty()).then_some((t, words))
            })
            .collect();
        Self { triggers }
    }

    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    /// The trigger that starts `transcript` (or, with `anywhere`, the earliest one in it;
    /// the longest when several start at the same word).
    pub fn find(&self, transcript: &str, anywhere: bool) -> Option<TriggerMatch> {
        let words = words(transcript);
        if words.is_empty() {
            return None;
        }
        let last_start = if anywhere { words.len() } else { 1 };
        for at in 0..last_start {
            let mut best: Option<(&str, usize)> = None;
            for (trigger, trigger_words) in &self.triggers {
                let n = trigger_words.len();
                let matches = words.len() >= at + n
                    && words[at..at + n]
                        .iter()
                        .zip(trigger_words)
                        .all(|(w, t)| &w.folded == t);
                if matches && best.is_none_or(|(_, len)| n > len) {
                    best = Some((trigger, n));
                }
            }
            if let Some((trigger, n)) = best {
                let after = words[at + n - 1].end;
                return Some(TriggerMatch {
                    trigger: trigger.to_owned(),
                    command: command_after(transcript, after),
                });
            }
            if let Some(found) = self.prefix_match(transcript, &words[at]) {
                return Some(found);
            }
        }
        None
    }

    /// A one-word trigger in a script without case or spaces, as a prefix of `word`.
    fn prefix_match(&self, transcript: &str, word: &Word) -> Option<TriggerMatch> {
        self.triggers.iter().find_map(|(trigger, trigger_words)| {
            let [only] = trigger_words.as_slice() else {
                return None;
            };
            if !is_caseless_script(only) || !word.folded.starts_with(only.as_str()) {
                return None;
            }
            // Find where the trigger ends in the original word: fold growing prefixes.
            let original = &transcript[word.start..word.end];
            let split = original
                .char_indices()
                .map(|(i, c)| i + c.len_utf8())
                .find(|&end| fold(&original[..end]) == *only)?;
            Some(TriggerMatch {
                trigger: trigger.clone(),
                command: command_after(transcript, word.start + split),
            })
        })
    }
}

/// Whether every letter of `folded` belongs to a script without case (CJK, Thai, …), whose
/// recognisers write words without spaces.
fn is_caseless_script(folded: &str) -> bool {
    folded
        .chars()
        .all(|c| c.is_alphabetic() && !c.is_lowercase() && !c.is_uppercase())
}

/// The transcript after byte `end`, without the separators that follow the trigger.
fn command_after(transcript: &str, end: usize) -> String {
    transcript[end..]
        .trim_start_matches(|c: char| !is_word_char(c))
        .trim_end()
        .to_owned()
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_apostrophe(c) || is_combining_mark(c)
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{02BC}')
}

/// The words of `text`, with their byte ranges and folded forms (words that fold to
/// nothing, e.g. a lone apostrophe, are skipped).
fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    let mut push = |from: usize, to: usize| {
        let folded = fold(&text[from..to]);
        if !folded.is_empty() {
            out.push(Word {
                start: from,
                end: to,
                folded,
            });
        }
    };
    for (i, c) in text.char_indices() {
        match (is_word_char(c), start) {
            (true, None) => start = Some(i),
            (false, Some(from)) => {
                push(from, i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(from) = start {
        push(from, text.len());
    }
    out
}

/// One word as it compares: NFKD without combining marks, lowercase, no apostrophes.
pub fn fold(word: &str) -> String {
    word.nfkd()
        .filter(|c| !is_combining_mark(*c) && !is_apostrophe(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Two trigger phrases are the same when their folded words are ("Computer" and
/// "computer!" are one trigger).
pub fn same_trigger(a: &str, b: &str) -> bool {
    let fold_all = |s: &str| -> Vec<String> { words(s).into_iter().map(|w| w.folded).collect() };
    fold_all(a) == fold_all(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(triggers: &[&str]) -> TriggerSet {
        TriggerSet::new(triggers)
    }

    fn found(set: &TriggerSet, text: &str, anywhere: bool) -> Option<(String, String)> {
        set.find(text, anywhere).map(|m| (m.trigger, m.command))
    }

    #[test]
    fn a_trigger_at_the_start_ignores_case_and_punctuation() {
        let s = set(&["openclaw", "claude", "computer"]);
        assert_eq!(
            found(&s, "Computer, what's the weather?", false),
            Some(("computer".into(), "what's the weather?".into()))
        );
        assert_eq!(
            found(&s, "  CLAUDE... open the pod bay doors", false),
            Some(("claude".into(), "open the pod bay doors".into()))
        );
        assert_eq!(
            found(&s, "computer", false),
            Some(("computer".into(), "".into()))
        );
        assert_eq!(
            found(&s, "Computer!", false),
            Some(("computer".into(), "".into()))
        );
    }

    #[test]
    fn text_without_a_leading_trigger_does_not_match_unless_anywhere() {
        let s = set(&["computer"]);
        assert_eq!(found(&s, "what's the weather", false), None);
        assert_eq!(found(&s, "hey computer turn the lights off", false), None);
        assert_eq!(
            found(&s, "hey computer turn the lights off", true),
            Some(("computer".into(), "turn the lights off".into()))
        );
        // A word that merely starts like a Latin trigger is another word.
        assert_eq!(found(&s, "computers are everywhere", false), None);
        assert_eq!(found(&s, "", false), None);
        assert_eq!(found(&s, " ,.!? ", true), None);
    }

    #[test]
    fn diacritics_and_multi_word_triggers() {
        let s = set(&["Réveille-toi", "hey claude"]);
        assert_eq!(
            found(&s, "reveille toi: allume la lumière", false),
            Some(("Réveille-toi".into(), "allume la lumière".into()))
        );
        assert_eq!(
            found(&s, "Hey, Claude — what time is it", false),
            Some(("hey claude".into(), "what time is it".into()))
        );
        assert_eq!(found(&s, "hey there", false), None);
        // The longest trigger wins where two start at the same word.
        let s = set(&["hey", "hey claude"]);
        assert_eq!(
            found(&s, "hey claude stop", false),
            Some(("hey claude".into(), "stop".into()))
        );
    }

    #[test]
    fn caseless_scripts_match_a_one_word_trigger_as_a_prefix() {
        let s = set(&["莱财"]);
        assert_eq!(
            found(&s, "莱财在不在", false),
            Some(("莱财".into(), "在不在".into()))
        );
        assert_eq!(found(&s, "在不在", false), None);
    }

    #[test]
    fn folding_and_sameness() {
        assert_eq!(fold("Whát's"), "whats");
        assert_eq!(fold("ＣＯＭＰＵＴＥＲ"), "computer");
        assert!(same_trigger("Computer!", "computer"));
        assert!(same_trigger("Hey  Claude", "hey claude"));
        assert!(!same_trigger("claude", "hey claude"));
        assert!(set(&["", " ... "]).is_empty());
    }
}
