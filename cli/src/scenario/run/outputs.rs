//! What a render's outputs need before it starts, and where they go: the
//! options, the checks, and the virtual clock's capture drained to its
//! track.

use std::path::PathBuf;
use std::time::Duration;

use sotto::Engine;

use super::{Prepared, RenderClock};
use crate::scenario::out::Track;
use crate::scenario::ScenarioError;

impl Prepared {
    /// Refuses, before anything is made, outputs that would not fit: kept
    /// in memory past the budget, or session files whose names would leave
    /// their folder.
    pub(super) fn check_outputs(
        &self,
        clock: &RenderClock,
        options: &RenderOptions,
        total: u64,
    ) -> Result<(), ScenarioError> {
        let sc = &self.scenario;
        let bad = |place: String, message: String| ScenarioError::Invalid {
            path: self.path.clone(),
            place,
            message,
        };
        if options.sessions && options.files.is_some() {
            if let Some(s) = sc.sessions.iter().find(|s| !file_name_ok(&s.name)) {
                return Err(bad(
                    format!("session \"{}\"", crate::scenario::printable(&s.name)),
                    "cannot name a file (use letters, digits, '-', '_', '.')".into(),
                ));
            }
        }
        let kept = match (clock, &options.files) {
            (RenderClock::Device(_), _) | (_, Some(_)) => 0,
            // The mix and each session's output, f32, and on the virtual
            // clock the capture ring beside them.
            (_, None) => {
                let outputs = 1 + if options.sessions {
                    sc.sessions.len()
                } else {
                    0
                };
                total.saturating_mul(sc.channels as u64 * 4 * outputs as u64)
            }
        };
        if self.needs.saturating_add(kept) > crate::scenario::MEMORY_BUDGET {
            return Err(bad(
                "duration".into(),
                format!(
                    "kept in memory the output needs {} MiB; with the rest the render needs over the {} MiB budget (write it to files instead)",
                    kept >> 20,
                    crate::scenario::MEMORY_BUDGET >> 20
                ),
            ));
        }
        Ok(())
    }
}

/// Whether a session's name can name its file: letters, digits, `-`, `_`
/// and `.`, not starting with a dot, so it never leaves the folder.
#[must_use]
pub fn file_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The virtual clock's capture ring: drained every few milliseconds, so it
/// only needs to ride out a busy moment.
pub(super) const CAPTURE_RING: Duration = Duration::from_secs(10);

/// The mix drained from the virtual clock's capture ring into its track
/// by a task of its own while the clock runs.
pub(super) struct Drain {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Track>,
}

impl Drain {
    pub(super) fn start(engine: &Engine, mut track: Track) -> Self {
        let engine = engine.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                let last = tokio::select! {
                    _ = &mut stopped => true,
                    () = tokio::time::sleep(Duration::from_millis(20)) => false,
                };
                // The device clock captures nothing: the call fails there.
                if let Ok(samples) = engine.take_captured().await {
                    track.write(&samples);
                }
                if last {
                    return track;
                }
            }
        });
        Self { stop, task }
    }

    pub(super) async fn finish(self) -> Track {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_else(|_| Track::nowhere())
    }
}

/// What a render gives besides the main mix, and where its audio goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Each session's own output too (SPEC C1), in
    /// [`Rendered::sessions`](crate::scenario::Rendered::sessions): exactly what that session's user would hear.
    pub sessions: bool,
    /// Writes the audio to WAV files as it renders instead of keeping it
    /// ([`Rendered::samples`](crate::scenario::Rendered::samples) and the sessions' samples are then empty).
    pub files: Option<OutFiles>,
}

/// Where a render written to files goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFiles {
    /// The main mix.
    pub mix: PathBuf,
    /// The folder of the sessions' own outputs (with
    /// [`RenderOptions::sessions`]), a `NAME.wav` each; the working folder
    /// when `None`.
    pub sessions_dir: Option<PathBuf>,
    /// 32-bit float samples instead of 16-bit.
    pub float: bool,
}
