//! Background sources (SPEC B1–B7): a supervised loader actor per source
//! that decodes a file off the async runtime and feeds a session.
//!
//! - `mixing`: decoded in chunks into the session's background input,
//!   never further ahead than its bounded queue (B5). When looping, the
//!   decoded first pass is kept and handed to the audio thread as a clip
//!   shared read-only; it takes over at the sample the first pass ends and
//!   loops with no decoding and no copy per pass.
//! - `playback`: decoded in chunks into the session's speech input, so it
//!   counts as speech and an interrupt fades it; when looping, later passes
//!   are fed from the decoded cache without decoding again.

mod feed;

use feed::Feed;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::oneshot;

use crate::decode::{DecodeError, FileDecoder};
use crate::restart::{contain, restarted};
use crate::session::{Input, SessionEvent, SessionEventKind, SessionMsg, SessionShared};

/// Frames decoded per chunk fed to a session (about 100 ms at 24 kHz).
const CHUNK_FRAMES: usize = 2400;

/// Where a background source plays (SPEC B3): as interruptible speech, or
/// under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackgroundMode {
    /// Into the speech input: counted as speech and interruptible.
    #[default]
    Playback,
    /// Into the background input, under speech; interrupts leave it alone.
    Mixing,
}

/// A background source to pass to `Engine::background`: a file
/// played under or into a session's speech (SPEC B1).
#[derive(Debug, Clone, PartialEq)]
pub struct BackgroundConfig {
    /// The audio file: WAV, FLAC, Ogg/Vorbis, MP3, AAC/M4A.
    pub path: PathBuf,
    /// When false, `start` does nothing.
    pub enabled: bool,
    /// Playback (speech input) or mixing (background input).
    pub mode: BackgroundMode,
    /// Linear volume, 0..=2; above 1 amplifies and saturates.
    pub volume: f32,
    /// Play again from the start at the end, seamlessly.
    pub looping: bool,
}

impl BackgroundConfig {
    /// A source playing `path` once at unity volume in playback mode.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            enabled: true,
            mode: BackgroundMode::Playback,
            volume: 1.0,
            looping: false,
        }
    }
}

/// Checks the values a user chose in `config`.
///
/// # Errors
/// [`BackgroundError::Volume`] or [`BackgroundError::Config`].
pub fn validate(config: &BackgroundConfig) -> Result<(), BackgroundError> {
    check_volume(config.volume)?;
    if config.path.as_os_str().is_empty() {
        return Err(BackgroundError::Config("the path is empty".into()));
    }
    Ok(())
}

fn check_volume(volume: f32) -> Result<(), BackgroundError> {
    if volume.is_finite() && (0.0..=2.0).contains(&volume) {
        Ok(())
    } else {
        Err(BackgroundError::Volume(volume))
    }
}

/// Why a background operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackgroundError {
    /// The file cannot be decoded (SPEC B7).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A volume outside 0..=2 or not a number.
    #[error("volume {0} must be within 0..=2")]
    Volume(f32),
    /// Something else about the configuration is wrong.
    #[error("{0}")]
    Config(String),
    /// The session or the loader is gone.
    #[error("background source is closed")]
    Closed,
}

/// How long a stop waits for the feed before cutting its queue again.
const STOP_RETRY: Duration = Duration::from_millis(20);

/// Messages of a [`BackgroundLoader`].
pub enum LoaderMsg {
    /// Start playing; a no-op when already playing.
    Start(RpcReplyPort<Result<(), BackgroundError>>),
    /// Stop at once and release the decoder, the cache and the queue.
    Stop(RpcReplyPort<()>),
    /// Ramp to a new volume.
    SetVolume(f32, RpcReplyPort<Result<(), BackgroundError>>),
    /// Fault injection for supervision tests.
    #[cfg(feature = "fault-injection")]
    Panic,
}

impl std::fmt::Debug for LoaderMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Start(_) => "Start",
            Self::Stop(_) => "Stop",
            Self::SetVolume(..) => "SetVolume",
            #[cfg(feature = "fault-injection")]
            Self::Panic => "Panic",
        })
    }
}

/// Startup arguments of a loader.
pub struct LoaderArgs {
    /// The source.
    pub config: BackgroundConfig,
    /// Names the source in events.
    pub id: u32,
    /// The session it feeds.
    pub session: Arc<SessionShared>,
    /// Output rate.
    pub sample_rate: u32,
    /// Output channels.
    pub channels: usize,
}

/// The loader actor of one background source.
#[derive(Debug, Clone, Copy)]
pub struct BackgroundLoader;

/// A feed in progress.
struct Running {
    cancel: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    /// The clip is on the audio thread, which reports its end.
    handed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    /// The clip id when the audio thread loops a clip.
    clip: Option<u32>,
}

/// The loader's state.
pub struct LoaderState {
    args: LoaderArgs,
    volume: Arc<AtomicU32>,
    running: Option<Running>,
}

impl Actor for BackgroundLoader {
    type Msg = LoaderMsg;
    type State = LoaderState;
    type Arguments = LoaderArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<LoaderMsg>,
        args: LoaderArgs,
    ) -> Result<LoaderState, ActorProcessingErr> {
        let volume = Arc::new(AtomicU32::new(args.config.volume.to_bits()));
        Ok(LoaderState {
            args,
            volume,
            running: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<LoaderMsg>,
        state: &mut LoaderState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop().await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<LoaderMsg>,
        msg: LoaderMsg,
        state: &mut LoaderState,
    ) -> Result<(), ActorProcessingErr> {
        // The feed runs on its own threads and the config is kept: a fault
        // while handling one message leaves both, so the loader restarts in
        // place and the bed plays on.
        if let Err(why) = contain(state.handle(msg)).await {
            restarted(&state.args.session.renderer, "background loader", &why);
            state.emit(SessionEventKind::BackgroundError {
                source: state.args.id,
                message: format!("background loader restarted after a fault: {why}"),
            });
        }
        Ok(())
    }
}

impl LoaderState {
    async fn handle(&mut self, msg: LoaderMsg) {
        match msg {
            LoaderMsg::Start(reply) => {
                let result = self.start().await;
                if let Err(e) = &result {
                    self.emit(SessionEventKind::BackgroundError {
                        source: self.args.id,
                        message: e.to_string(),
                    });
                }
                let _ = reply.send(result);
            }
            LoaderMsg::Stop(reply) => {
                self.stop().await;
                let _ = reply.send(());
            }
            LoaderMsg::SetVolume(volume, reply) => {
                let _ = reply.send(self.set_volume(volume));
            }
            #[cfg(feature = "fault-injection")]
            LoaderMsg::Panic => panic!("injected background loader fault"),
        }
    }

    fn emit(&self, kind: SessionEventKind) {
        emit(&self.args.session, kind);
    }

    fn send(&self, msg: SessionMsg) -> Result<(), BackgroundError> {
        self.args
            .session
            .send(msg)
            .map_err(|_| BackgroundError::Closed)
    }

    async fn start(&mut self) -> Result<(), BackgroundError> {
        if self
            .running
            .as_ref()
            .is_some_and(|r| !r.done.load(Ordering::Acquire))
        {
            return Ok(());
        }
        self.stop().await;
        let config = self.args.config.clone();
        validate(&config)?;
        if !config.enabled {
            return Ok(());
        }
        let (rate, ch) = (self.args.sample_rate, self.args.channels);
        let path = config.path.clone();
        // Opening reads headers from disk: off the async runtime.
        let decoder = tokio::task::spawn_blocking(move || FileDecoder::open(&path, rate, ch))
            .await
            .map_err(|_| BackgroundError::Closed)??;
        let cancel = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let handed = Arc::new(AtomicBool::new(false));
        if config.mode == BackgroundMode::Mixing {
            self.send(SessionMsg::SetBackgroundGain(config.volume))?;
        }
        // The feed is busy from here until it waits for room: the offline
        // clock does not render past audio it is about to queue.
        self.args.session.quiesce.sent(1);
        let feed = Feed {
            busy: true,
            session: Arc::clone(&self.args.session),
            id: self.args.id,
            channels: ch,
            volume: Arc::clone(&self.volume),
            cancel: Arc::clone(&cancel),
            done: Arc::clone(&done),
            handed: Arc::clone(&handed),
        };
        let clip =
            (config.mode == BackgroundMode::Mixing && config.looping).then_some(self.args.id);
        let task = match (config.mode, config.looping) {
            (BackgroundMode::Mixing, looping) => tokio::task::spawn_blocking(move || {
                feed.stream(decoder, Input::Background, looping)
            }),
            (BackgroundMode::Playback, looping) => {
                tokio::task::spawn_blocking(move || feed.stream(decoder, Input::Speech, looping))
            }
        };
        self.running = Some(Running {
            cancel,
            done,
            handed,
            task,
            clip,
        });
        Ok(())
    }

    async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.cancel.store(true, Ordering::Release);
        let finished = running.done.load(Ordering::Acquire);
        let mut task = running.task;
        loop {
            if !finished {
                // Cut what is queued so a feed waiting for room wakes at once.
                self.silence(running.clip);
            }
            // A push that crossed the cut in flight waits for room again,
            // which the offline clock never makes while its caller waits
            // here: cut again until the feed has seen the cancel.
            if tokio::time::timeout(STOP_RETRY, &mut task).await.is_ok() {
                break;
            }
        }
        if !finished && !running.handed.load(Ordering::Acquire) {
            self.emit(SessionEventKind::BackgroundEnded {
                source: self.args.id,
                stopped: true,
            });
        }
    }

    /// Takes the source's audio out of the session: the clip ramps out, or
    /// its queue is cleared (mixing) or interrupted with a fade (playback).
    fn silence(&self, clip: Option<u32>) {
        // A looping mixed source may still be in its first pass, in the
        // background input, with its clip waiting behind it: both go.
        if let Some(id) = clip {
            let _ = self.send(SessionMsg::StopClip { id });
        }
        let _ = match self.args.config.mode {
            BackgroundMode::Mixing => {
                let (tx, _rx) = oneshot::channel();
                self.send(SessionMsg::ClearBackground(tx.into()))
            }
            BackgroundMode::Playback => self.send(SessionMsg::Interrupt),
        };
    }

    fn set_volume(&mut self, volume: f32) -> Result<(), BackgroundError> {
        check_volume(volume)?;
        self.volume.store(volume.to_bits(), Ordering::Relaxed);
        self.args.config.volume = volume;
        if let Some(Running { clip: Some(id), .. }) = &self.running {
            self.send(SessionMsg::ClipGain {
                id: *id,
                gain: volume,
            })?;
        }
        match self.args.config.mode {
            BackgroundMode::Mixing => self.send(SessionMsg::SetBackgroundGain(volume)),
            // Playback: the feed scales what it decodes from now on.
            BackgroundMode::Playback => Ok(()),
        }
    }
}

impl Drop for LoaderState {
    /// A loader that ends without a stop (it failed) still silences and
    /// releases its source, and says so.
    fn drop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.cancel.store(true, Ordering::Release);
        if running.done.load(Ordering::Acquire) {
            return;
        }
        self.silence(running.clip);
        self.emit(SessionEventKind::BackgroundError {
            source: self.args.id,
            message: "the background loader stopped unexpectedly; its source was stopped".into(),
        });
    }
}

fn emit(session: &SessionShared, kind: SessionEventKind) {
    session.emit(SessionEvent {
        session: session.id,
        at: session.clock(),
        kind,
    });
}
