//! The session handle: every method of a session in SPEC O.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;
use sotto_actors::session::{EventCallback, SessionMsg, SessionShared};
use sotto_actors::{AudioSink, Duck, Input, PushOutcome, SessionEvent};
use sotto_rt::{FrameCount, SessionId};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::frames::{OutputFrames, Owner};

/// Why a session, its frames or its call refused: `Busy` asks the caller
/// to slow down, `Closed` to stop, the rest name a mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session was removed, restarted mid-request, or the engine stopped.
    #[error("session is closed")]
    Closed,
    /// On the offline clock nothing renders unless asked, and nothing was
    /// asked for [`Engine::OFFLINE_STALL`](crate::Engine::OFFLINE_STALL) while this push or playout waited for
    /// the sample clock to move (SPEC C5): it could never end. Render from
    /// another task while awaiting it, or await it after rendering. What
    /// was pushed stays queued.
    #[error("waiting for the offline clock, which renders only when asked and was not")]
    NotRendering,
    /// The session's mailbox already holds
    /// [`SessionHandle::MAILBOX_LIMIT`] messages the
    /// session has not handled yet: the caller sends faster than the
    /// session can take them (SPEC S5). Nothing was sent; await earlier
    /// pushes or yield before sending more.
    #[error("session mailbox full: too many messages not yet handled")]
    Busy,
    /// The session plays into the engine's main output only: give it an
    /// own output in its [`SessionConfig`](crate::SessionConfig) to read
    /// its frames or to call it.
    #[error("the session has no output of its own")]
    NoOutput,
    /// Another reader (a call, or an [`OutputFrames`]) has the session's
    /// frames; release it first.
    #[error("the session's frames are already being read")]
    Taken,
    /// A call's offer is too long, not SDP, or offers no Opus audio: the
    /// far end's fault (a 400 for a server).
    #[error("bad offer: {0}")]
    BadOffer(String),
    /// The engine renders offline: a call needs a real-time clock.
    #[error("calls need a real-time clock (virtual or device)")]
    Offline,
    /// A call's config is out of range.
    #[error("call config: {0}")]
    CallConfig(String),
    /// A call's peer connection could not be set up.
    #[error("webrtc: {0}")]
    Net(String),
    /// A room on an SFU could not be joined: unreachable, no such room,
    /// a wrong PIN, garbage in reply.
    #[error(transparent)]
    Room(#[from] crate::RoomError),
}

/// How long a push or playout on the offline clock may wait while nothing
/// renders before it fails with [`SessionError::NotRendering`].
pub const OFFLINE_STALL: Duration = Duration::from_millis(500);

/// Whether the offline clock is moving: counted by every render call, read
/// by waits that need it to move.
#[derive(Debug, Default)]
pub(crate) struct OfflineProgress {
    /// Bumped as each render call begins and ends.
    activity: AtomicU64,
    /// Render calls under way.
    rendering: AtomicU64,
}

impl OfflineProgress {
    /// Counts a render call until the guard drops.
    pub(crate) fn rendering(self: &Arc<Self>) -> RenderingGuard {
        self.activity.fetch_add(1, Ordering::Relaxed);
        self.rendering.fetch_add(1, Ordering::Relaxed);
        RenderingGuard(Arc::clone(self))
    }

    /// Resolves with [`SessionError::NotRendering`] once nothing has
    /// rendered for [`Engine::OFFLINE_STALL`](crate::Engine::OFFLINE_STALL). Tokio's clock, so a test on a paused
    /// runtime sees the same rule.
    async fn stalled(&self) -> SessionError {
        let mut seen = self.activity.load(Ordering::Relaxed);
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(OFFLINE_STALL / 20).await;
            let now = self.activity.load(Ordering::Relaxed);
            if now != seen || self.rendering.load(Ordering::Relaxed) > 0 {
                seen = now;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() >= OFFLINE_STALL {
                return SessionError::NotRendering;
            }
        }
    }
}

/// A render call under way (see [`OfflineProgress::rendering`]).
pub(crate) struct RenderingGuard(Arc<OfflineProgress>);

impl Drop for RenderingGuard {
    fn drop(&mut self) {
        self.0.rendering.fetch_sub(1, Ordering::Relaxed);
        self.0.activity.fetch_add(1, Ordering::Relaxed);
    }
}

/// `wait`, failing instead of hanging when it needs the offline clock to
/// move and nothing moves it (SPEC C5).
async fn unless_stalled<T>(
    wait: impl Future<Output = Result<T, SessionError>>,
    offline: Option<Arc<OfflineProgress>>,
) -> Result<T, SessionError> {
    let Some(progress) = offline else {
        return wait.await;
    };
    tokio::select! {
        biased;
        done = wait => done,
        stalled = progress.stalled() => Err(stalled),
    }
}

#[doc(hidden)]
impl From<sotto_actors::SessionClosed> for SessionError {
    fn from(_: sotto_actors::SessionClosed) -> Self {
        Self::Closed
    }
}

// The engine's bound is the session actor's.
const _: () = assert!(SessionHandle::MAILBOX_LIMIT == sotto_actors::session::MAILBOX_LIMIT);

#[doc(hidden)]
impl From<sotto_actors::session::SendError> for SessionError {
    fn from(e: sotto_actors::session::SendError) -> Self {
        match e {
            sotto_actors::session::SendError::Full => Self::Busy,
            _ => Self::Closed,
        }
    }
}

/// How much of a turn the user heard ([`SessionHandle::snapshot_playback`],
/// SPEC O9): both counted from the turn's anchor, in output frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackSnapshot {
    /// Frames of the turn the user heard (fade tails included).
    pub played_frames: FrameCount,
    /// Frames of the turn pushed so far.
    pub pushed_frames: FrameCount,
    /// Frames of the turn a phone line's carrier confirmed the caller
    /// heard (SPEC T3: its marks' echoes), at most `played_frames`; `None`
    /// when no phone line serves the session.
    pub confirmed_frames: Option<FrameCount>,
}

/// Controls one session: push the agent's speech, interrupt, pause, and
/// learn what the user heard. Cheap to clone.
///
/// Every method sends its message at once, in call order, so a push issued
/// before an interrupt belongs to the interrupted turn even if its future is
/// awaited later.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<SessionShared>,
    /// Woken after every pump of the renderer's events: frames may wait.
    rendered: Arc<Notify>,
    /// The engine runs on the offline clock (nothing renders by itself):
    /// how its render calls go.
    offline: Option<Arc<OfflineProgress>>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.shared.id)
            .field("name", &self.shared.config.name)
            .finish()
    }
}

impl SessionHandle {
    /// Messages from the application a session's mailbox holds at most
    /// (SPEC S5); past it a message is refused with [`SessionError::Busy`].
    pub const MAILBOX_LIMIT: usize = 4096;

    pub(crate) fn new(
        shared: Arc<SessionShared>,
        rendered: Arc<Notify>,
        offline: Option<Arc<OfflineProgress>>,
    ) -> Self {
        Self {
            shared,
            rendered,
            offline,
        }
    }

    /// The session's own output as frames with their presentation times
    /// (SPEC C1–C3), for a network sender or a recorder: what the user
    /// hears, after fades, pause ramps, ducking, background and limiter.
    /// The session needs [`SessionConfig::output`](crate::SessionConfig);
    /// there is one reader per session.
    ///
    /// # Errors
    /// [`SessionError::NoOutput`] without an own output,
    /// [`SessionError::Taken`] when a reader already has it.
    pub fn frames(&self) -> Result<OutputFrames, SessionError> {
        if self.shared.config.output.own().is_none() {
            return Err(SessionError::NoOutput);
        }
        let framer = self
            .shared
            .frames
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .ok_or(SessionError::Taken)?;
        Ok(OutputFrames::new(
            framer,
            Arc::clone(&self.rendered),
            self.offline.is_some(),
            Owner::Session(Arc::clone(&self.shared)),
        ))
    }

    pub(crate) fn shared(&self) -> &Arc<SessionShared> {
        &self.shared
    }

    /// The session's slot.
    #[must_use]
    pub fn id(&self) -> SessionId {
        self.shared.id
    }

    /// The session's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn send(&self, msg: SessionMsg) -> Result<(), SessionError> {
        Ok(self.shared.send_from_app(msg)?)
    }

    fn request<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> SessionMsg,
    ) -> impl Future<Output = Result<T, SessionError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(msg(tx.into()));
        async move {
            sent?;
            rx.await.map_err(|_| SessionError::Closed)
        }
    }

    fn push_into(
        &self,
        input: Input,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<PushOutcome, SessionError>> + Send + 'static {
        let wait = self.request(move |reply| SessionMsg::Push {
            input,
            bytes,
            reply,
        });
        unless_stalled(wait, self.offline.clone())
    }

    /// Pushes TTS bytes in the session's input format (SPEC O1, O2). The
    /// future resolves when every frame is queued, waiting while the queue
    /// is full; if an interrupt or clear cuts it first, it says how much was
    /// dropped. Dropping the future does not cancel the push.
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound; on the offline clock
    /// [`SessionError::NotRendering`] when it waits for room while nothing
    /// renders (the audio stays queued).
    pub fn push(
        &self,
        bytes: impl Into<Vec<u8>>,
    ) -> impl Future<Output = Result<PushOutcome, SessionError>> + Send + 'static {
        self.push_into(Input::Speech, bytes.into())
    }

    /// Pushes bytes into the background input, mixed under speech (SPEC O11).
    /// The background has a queue of its own: a push waiting here never
    /// holds up speech.
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound; on the offline clock
    /// [`SessionError::NotRendering`] as for [`SessionHandle::push`].
    pub fn push_background(
        &self,
        bytes: impl Into<Vec<u8>>,
    ) -> impl Future<Output = Result<PushOutcome, SessionError>> + Send + 'static {
        self.push_into(Input::Background, bytes.into())
    }

    /// Anchors a new turn: counters and first-audio start here (SPEC O9).
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn mark_synthesis_start(&self) -> Result<(), SessionError> {
        self.send(SessionMsg::BeginSynthesis)
    }

    /// The TTS has sent everything for this turn (SPEC O8).
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn mark_synthesis_complete(&self) -> Result<(), SessionError> {
        self.send(SessionMsg::EndSynthesis)
    }

    /// Barge-in: fade out what is queued and drop the rest (SPEC O5).
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn interrupt(&self) -> Result<(), SessionError> {
        self.send(SessionMsg::Interrupt)
    }

    /// Freezes playback with a short fade-out (SPEC O6).
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn pause(&self) -> Result<(), SessionError> {
        self.send(SessionMsg::Pause)
    }

    /// Continues playback where it paused, with a short fade-in (SPEC O6).
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn resume(&self) -> Result<(), SessionError> {
        self.send(SessionMsg::Resume)
    }

    /// Accepts pushed audio again; with `manual`, every interrupt disables
    /// input until the next call (SPEC O4).
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn enable_audio_input(&self, manual: bool) -> Result<(), SessionError> {
        self.send(SessionMsg::EnableInput { manual })
    }

    /// Drops (and counts) pushed audio until input is enabled again.
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn disable_audio_input(&self) -> Result<(), SessionError> {
        self.send(SessionMsg::DisableInput)
    }

    /// Sets the fade tail limit for later interrupts; zero cuts at once.
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn set_fade(&self, fade: Duration) -> Result<(), SessionError> {
        self.send(SessionMsg::SetFade(fade))
    }

    /// Ducks the background under speech (see [`Duck`]); `None` turns it off.
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn set_duck(&self, duck: Option<Duck>) -> Result<(), SessionError> {
        self.send(SessionMsg::SetDuck(duck))
    }

    /// Discards all queued speech at once and releases waiters (SPEC O2);
    /// resolves to the frames dropped.
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn clear_queue(&self) -> impl Future<Output = Result<u64, SessionError>> + Send + 'static {
        self.request(SessionMsg::Clear)
    }

    /// How much of this turn the user heard, and how much was pushed
    /// (SPEC O9), both since the turn's anchor, in output frames.
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn snapshot_playback(
        &self,
    ) -> impl Future<Output = Result<PlaybackSnapshot, SessionError>> + Send + 'static {
        let reply = self.request(SessionMsg::Snapshot);
        let shared = Arc::clone(&self.shared);
        async move {
            reply.await.map(|(played, pushed)| {
                let confirmed = shared.confirmed_frames.load(Ordering::Relaxed);
                PlaybackSnapshot {
                    played_frames: FrameCount(played),
                    pushed_frames: FrameCount(pushed),
                    confirmed_frames: (confirmed != u64::MAX)
                        .then(|| FrameCount(confirmed.min(played))),
                }
            })
        }
    }

    /// Resolves when everything queued has been played or cleared (SPEC O2).
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound; on the offline clock
    /// [`SessionError::NotRendering`] when audio is queued and nothing
    /// renders it.
    pub fn wait_for_playout(
        &self,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        unless_stalled(self.request(SessionMsg::WaitPlayout), self.offline.clone())
    }

    /// Messages from the application (pushes and control calls) the
    /// session has not handled yet; at [`SessionHandle::MAILBOX_LIMIT`]
    /// further sends fail with [`SessionError::Busy`] (SPEC S5, R4).
    #[must_use]
    pub fn mailbox_len(&self) -> usize {
        self.shared.mailbox_len()
    }

    /// Audio queued but not yet played (SPEC O2).
    #[must_use]
    pub fn queued_duration(&self) -> Duration {
        let pushed = self.shared.pushed_frames.load(Ordering::Relaxed);
        let consumed = self.shared.voice_telemetry().consumed();
        let frames = pushed.saturating_sub(consumed);
        sotto_rt::duration_of(frames, self.shared.sample_rate)
    }

    /// True while audio is queued or playing, and for the grace period after (SPEC O7).
    #[must_use]
    pub fn is_speaking(&self) -> bool {
        let t = self.shared.voice_telemetry();
        self.shared.pending_frames.load(Ordering::Relaxed) > 0
            || self.shared.pushed_frames.load(Ordering::Relaxed) > t.consumed()
            || t.is_speaking()
    }

    /// A stream of this session's events from now on. It holds at most
    /// 4096 unread events; newer ones are dropped and counted in
    /// [`SessionHandle::events_dropped`], so a stream nobody reads costs
    /// nothing more.
    #[must_use]
    pub fn events(&self) -> mpsc::Receiver<SessionEvent> {
        self.shared.subscribe()
    }

    /// Events lost by streams that were not read.
    #[must_use]
    pub fn events_dropped(&self) -> u64 {
        self.shared
            .events_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Calls `callback` with every event (on an actor task; keep it short).
    pub fn on_event(&self, callback: impl Fn(&SessionEvent) + Send + Sync + 'static) {
        let cb: EventCallback = Arc::new(callback);
        self.shared.set_callback(Some(cb));
    }

    /// Attaches a tee sink (SPEC O12).
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    pub fn add_sink(&self, sink: Box<dyn AudioSink>) -> Result<(), SessionError> {
        self.send(SessionMsg::AddSink(sink))
    }

    /// The session's voice now: what it took, played and queued, its
    /// underruns, whether it speaks.
    #[must_use]
    pub fn stats(&self) -> crate::SessionStats {
        crate::SessionStats::read(&self.shared.voice_telemetry())
    }

    /// Makes the session actor fail, to exercise supervision.
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    #[doc(hidden)]
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self) -> Result<(), SessionError> {
        self.send(SessionMsg::Panic)
    }

    /// Makes the session's next push panic while its bytes are converted,
    /// to exercise supervision of the ingest path.
    ///
    /// # Errors
    /// [`SessionError::Closed`]; [`SessionError::Busy`] past the mailbox bound.
    #[doc(hidden)]
    #[cfg(feature = "fault-injection")]
    pub fn inject_ingest_fault(&self) -> Result<(), SessionError> {
        self.send(SessionMsg::PanicInIngest)
    }
}
