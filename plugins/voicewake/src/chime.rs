//! Chimes on trigger and on send, behind a small trait so any player can be plugged in (the default runs a configured command).

use std::process::Stdio;
use std::time::Duration;

/// Which moment a chime marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChimeKind {
    /// A trigger was heard and the command is awaited.
    Trigger,
    /// A command is being sent.
    Send,
}

/// Plays chimes; must return at once (sound plays in the background).
pub trait Chime: Send + Sync {
    fn play(&self, kind: ChimeKind);
}

/// Runs a configured argv per chime (e.g. `paplay /usr/share/sounds/…`); an empty argv is silent.
#[derive(Debug, Clone, Default)]
pub struct CommandChime {
    pub trigger: Vec<String>,
    pub send: Vec<String>,
}

/// A player that runs longer than this is stopped (a chime is short).
const CHIME_LIMIT: Duration = Duration::from_secs(10);

impl Chime for CommandChime {
    fn play(&self, kind: ChimeKind) {
        let argv = match kind {
            ChimeKind::Trigger => &self.trigger,
            ChimeKind::Send => &self.send,
        };
        let Some((program, args)) = argv.split_first() else {
            return;
        };
        let spawned = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            // Reaped in the background, and killed if it hangs or the runtime ends.
            Ok(mut child) => {
                tokio::spawn(async move {
                    if tokio::time::timeout(CHIME_LIMIT, child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                });
            }
            Err(error) => tracing::warn!(%program, %error, "voicewake chime could not be played"),
        }
    }
}
