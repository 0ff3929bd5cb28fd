//! The output player (SPEC D5): tracks of audio frames — a remote
//! participant, a recording — mixed into the engine's output, added and
//! removed while it plays.

use std::collections::HashMap;
use std::sync::Arc;

use sotto_actors::{InputFormat, SampleFormat, SessionConfig};
use tokio::sync::{mpsc, Mutex};

use crate::{Engine, EngineError, SessionHandle};

struct Track {
    session: SessionHandle,
    feeder: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    tracks: HashMap<String, Track>,
    started: bool,
    closed: bool,
}

/// Plays remote audio tracks (another participant, a file) into the
/// engine's output beside the agent's voice. Cheap to clone.
#[derive(Clone)]
pub struct OutputPlayer {
    engine: Engine,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for OutputPlayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputPlayer").finish_non_exhaustive()
    }
}

impl OutputPlayer {
    /// A player on `engine`'s output.
    #[must_use]
    pub fn new(engine: &Engine) -> Self {
        Self {
            engine: engine.clone(),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Starts the output: runs a deferred clock (device or virtual); on the
    /// offline clock the application renders as before.
    ///
    /// # Errors
    /// [`EngineError::AlreadyStarted`], [`EngineError::PlayerClosed`].
    pub async fn start(&self) -> Result<(), EngineError> {
        let mut state = self.state.lock().await;
        if state.closed {
            return Err(EngineError::PlayerClosed);
        }
        if state.started {
            return Err(EngineError::AlreadyStarted);
        }
        state.started = true;
        match self.engine.run_clock().await {
            Ok(()) | Err(EngineError::WrongClock(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds a track: every frame received (interleaved f32 at the engine's
    /// rate and channels) plays in order, with backpressure from the
    /// track's 1 s queue.
    ///
    /// # Errors
    /// [`EngineError::DuplicateTrack`], [`EngineError::PlayerClosed`], or the
    /// engine's refusal (no free session slot).
    pub async fn add_track(
        &self,
        name: &str,
        mut frames: mpsc::Receiver<Vec<f32>>,
    ) -> Result<(), EngineError> {
        let mut state = self.state.lock().await;
        if state.closed {
            return Err(EngineError::PlayerClosed);
        }
        if state.tracks.contains_key(name) {
            return Err(EngineError::DuplicateTrack(name.to_owned()));
        }
        let config = self.engine.config();
        let session = self
            .engine
            .create_session(SessionConfig {
                name: name.to_owned(),
                input: InputFormat {
                    sample_rate: config.sample_rate,
                    channels: config.channels,
                    sample_format: SampleFormat::F32,
                },
                ..SessionConfig::default()
            })
            .await?;
        let feed = session.clone();
        let feeder = tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                let bytes: Vec<u8> = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
                if feed.push(bytes).await.is_err() {
                    break;
                }
            }
        });
        state
            .tracks
            .insert(name.to_owned(), Track { session, feeder });
        Ok(())
    }

    /// Removes a track at once; what it had queued is dropped.
    ///
    /// # Errors
    /// [`EngineError::NoSuchTrack`].
    pub async fn remove_track(&self, name: &str) -> Result<(), EngineError> {
        let track = self
            .state
            .lock()
            .await
            .tracks
            .remove(name)
            .ok_or_else(|| EngineError::NoSuchTrack(name.to_owned()))?;
        self.release(track).await
    }

    async fn release(&self, track: Track) -> Result<(), EngineError> {
        track.feeder.abort();
        self.engine.remove_session(&track.session).await?;
        Ok(())
    }

    /// Names of the tracks playing.
    pub async fn tracks(&self) -> Vec<String> {
        let mut names: Vec<String> = self.state.lock().await.tracks.keys().cloned().collect();
        names.sort();
        names
    }

    /// Removes every track and releases their sessions; the player cannot
    /// be used afterwards.
    ///
    /// # Errors
    /// The engine's refusal.
    pub async fn close(&self) -> Result<(), EngineError> {
        let tracks: Vec<Track> = {
            let mut state = self.state.lock().await;
            state.closed = true;
            state.tracks.drain().map(|(_, t)| t).collect()
        };
        for t in tracks {
            self.release(t).await?;
        }
        Ok(())
    }
}
