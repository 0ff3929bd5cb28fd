//! The session actor: one agent output stream (SPEC O1–O10, O12).
//!
//! It owns the control ends of its voice, converts pushed bytes, keeps the
//! bounded queue's waiting pushes, and turns renderer events into session
//! events. One mailbox keeps pushes, interrupts and turn marks in order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sotto_rt::{
    ClipCommand, DuckConfig, Event, EventKind, SampleTime, Saturation, SessionId, VoiceCommand,
    VoiceControl, VoiceTelemetry,
};
use tokio::sync::{mpsc, oneshot};

use crate::ingest::{Ingest, InputFormat};
use crate::quiesce::{Quiescence, Ticket};
use crate::sink::AudioSink;

/// Background ducking under speech: the background drops by `depth_db`
/// while the session speaks, through ramps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Duck {
    /// Gain change while speaking, in dB (negative; default −12).
    pub depth_db: f32,
    /// Ramp down when speech starts (default 50 ms).
    pub down: Duration,
    /// Ramp back up after speech stops (default 250 ms).
    pub up: Duration,
}

impl Default for Duck {
    fn default() -> Self {
        Self {
            depth_db: -12.0,
            down: Duration::from_millis(50),
            up: Duration::from_millis(250),
        }
    }
}

impl Duck {
    fn validate(&self) -> Result<(), String> {
        if !(-120.0..=0.0).contains(&self.depth_db) {
            return Err(format!(
                "duck depth {} dB must be within -120..=0",
                self.depth_db
            ));
        }
        if self.down > Duration::from_secs(10) || self.up > Duration::from_secs(10) {
            return Err("duck ramps must be at most 10 s".into());
        }
        Ok(())
    }

    /// The voice's form of it at `rate`.
    fn voice(&self, rate: u32) -> DuckConfig {
        let frames = |d: Duration| frames_of(d, rate).clamp(1, u64::from(u32::MAX)) as u32;
        DuckConfig {
            gain: 10f32.powf(self.depth_db / 20.0),
            down_frames: frames(self.down),
            up_frames: frames(self.up),
        }
    }
}

/// How a session is set up. Durations convert to frames at the output rate.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A name for events and traces.
    pub name: String,
    /// Format of pushed speech and background bytes.
    pub input: InputFormat,
    /// Speech queue bound (SPEC O2); default 1 s.
    pub queue: Duration,
    /// Background queue bound; default 1 s.
    pub background_queue: Duration,
    /// Fade tail limit on interrupt (SPEC O5); default 0.4 s.
    pub fade: Duration,
    /// Speaking grace period (SPEC O7); default 0.2 s.
    pub grace: Duration,
    /// Pause and resume ramps (SPEC O6); default 5 ms.
    pub pause_ramp: Duration,
    /// Background ducking under speech; off by default.
    pub duck: Option<Duck>,
    /// Linear background gain.
    pub background_gain: f32,
    /// Ramp of every background volume change; default 20 ms.
    pub gain_ramp: Duration,
    /// How speech + background is kept inside full scale.
    pub saturation: Saturation,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            name: "session".into(),
            input: InputFormat {
                sample_rate: 24_000,
                channels: 1,
                sample_format: crate::SampleFormat::S16,
            },
            queue: Duration::from_millis(1000),
            background_queue: Duration::from_millis(1000),
            fade: Duration::from_millis(400),
            grace: Duration::from_millis(200),
            pause_ramp: Duration::from_millis(5),
            duck: None,
            background_gain: 1.0,
            gain_ramp: Duration::from_millis(20),
            saturation: Saturation::Hard,
        }
    }
}

impl SessionConfig {
    /// Checks every duration and gain is in range; the message names the field.
    ///
    /// # Errors
    /// A message naming the value out of range.
    pub fn validate(&self) -> Result<(), String> {
        let hour = Duration::from_secs(3600);
        let max_queue = Duration::from_secs(600);
        if self.queue.is_zero() || self.queue > max_queue {
            return Err(format!("queue {:?} must be within (0, 600 s]", self.queue));
        }
        if self.background_queue.is_zero() || self.background_queue > max_queue {
            return Err(format!(
                "background queue {:?} must be within (0, 600 s]",
                self.background_queue
            ));
        }
        if self.fade > hour || self.grace > hour || self.pause_ramp > Duration::from_secs(1) {
            return Err("fade, grace or pause ramp is absurdly long".into());
        }
        if !(0.0..=4.0).contains(&self.background_gain) {
            return Err(format!(
                "background gain {} must be within 0..=4",
                self.background_gain
            ));
        }
        if let Some(duck) = &self.duck {
            duck.validate()?;
        }
        if self.gain_ramp > Duration::from_secs(10) {
            return Err("gain ramp must be at most 10 s".into());
        }
        Ok(())
    }
}

/// Frames in `d` at `rate`, rounded to nearest.
#[must_use]
pub fn frames_of(d: Duration, rate: u32) -> u64 {
    (d.as_secs_f64() * f64::from(rate)).round() as u64
}

/// Largest decode buffer a session keeps between pushes (256 KiB).
const MAX_KEPT_DECODE_SAMPLES: usize = 64 * 1024;

/// How much audio may wait for room in a session's queue, per input,
/// beyond the ring. A caller that awaits its pushes never gets near it; one
/// that never awaits cannot grow memory past it.
pub const MAX_WAITING: std::time::Duration = std::time::Duration::from_secs(300);

/// Converts a session's config to its voice's config.
#[must_use]
pub fn voice_config(
    c: &SessionConfig,
    renderer: &sotto_rt::RendererConfig,
    session: SessionId,
    generation: u32,
    doorbells: &sotto_rt::Doorbells,
) -> sotto_rt::VoiceConfig {
    let rate = renderer.sample_rate;
    let frames = |d: Duration| frames_of(d, rate);
    sotto_rt::VoiceConfig {
        session,
        generation,
        channels: renderer.channels,
        speech_capacity_frames: frames(c.queue).max(1) as usize,
        background_capacity_frames: frames(c.background_queue).max(1) as usize,
        command_capacity: 256,
        fade_frames: frames(c.fade).min(u64::from(u32::MAX)) as u32,
        grace_frames: frames(c.grace).min(u64::from(u32::MAX)) as u32,
        pause_ramp_frames: frames(c.pause_ramp).clamp(1, u64::from(u32::MAX)) as u32,
        duck: c.duck.map(|d| d.voice(rate)),
        background_gain: c.background_gain,
        gain_ramp_frames: frames(c.gain_ramp).clamp(1, u64::from(u32::MAX)) as u32,
        saturation: c.saturation,
        doorbells: Some(doorbells.clone()),
    }
}

/// Something that happened to a session, at an exact sample time.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    /// The session.
    pub session: SessionId,
    /// When, on the output sample clock.
    pub at: SampleTime,
    /// What.
    pub kind: SessionEventKind,
}

/// The kinds of [`SessionEvent`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEventKind {
    /// The first frame of the turn was played (SPEC O8).
    FirstAudio,
    /// The turn's synthesis is complete and its audio has drained past the grace period (SPEC O8).
    LastAudio,
    /// The grace period after the last real frame has passed (SPEC O7).
    StoppedSpeaking,
    /// An interrupt was applied (SPEC O5).
    Interrupted {
        /// Frames kept as the fade tail.
        tail_frames: u64,
        /// Frames discarded, including cut waiting pushes.
        dropped_frames: u64,
    },
    /// The fade tail finished.
    FadeDone,
    /// The queue was cleared (SPEC O2).
    Cleared {
        /// Frames discarded, including cut waiting pushes.
        dropped_frames: u64,
    },
    /// Playback paused (SPEC O6).
    Paused,
    /// Playback resumed (SPEC O6).
    Resumed,
    /// Audio pushed while input was disabled was dropped (SPEC O4).
    DroppedInput {
        /// Bytes dropped by that push.
        bytes: u64,
    },
    /// The speech queue ran dry in the middle of a turn.
    Underrun,
    /// A push found [`MAX_WAITING`] of audio already waiting for room (its
    /// caller did not wait for earlier pushes): what did not fit in the
    /// ring was dropped, and the push says so too.
    QueueOverflow {
        /// Output frames dropped.
        dropped_frames: u64,
        /// Whether it was the background input.
        background: bool,
    },
    /// A sink failed and was detached (SPEC O12).
    SinkDetached {
        /// The sink's name.
        sink: String,
        /// Why.
        reason: String,
    },
    /// The avatar link is up (SPEC O12, A2).
    AvatarConnected {
        /// The avatar's participant id.
        participant: String,
    },
    /// The avatar acknowledged a segment (SPEC A4).
    AvatarSegmentEnded {
        /// The segment, numbered from 1 per link.
        segment: u64,
        /// Seconds of it the avatar played, counted in samples.
        playback_position: f64,
        /// Whether an interrupt cut it.
        interrupted: bool,
    },
    /// A segment's acknowledgement did not come in time; its end was sent
    /// again once.
    AvatarAckTimeout {
        /// The segment.
        segment: u64,
    },
    /// The avatar link dropped; the session's own output plays again.
    AvatarDisconnected {
        /// Why.
        reason: String,
    },
    /// Something went wrong; playback of everything else continues.
    Error {
        /// What.
        message: String,
    },
    /// A background source started playing (SPEC B6).
    BackgroundStarted {
        /// The source.
        source: u32,
    },
    /// A looping background source wrapped round to its start (SPEC B4).
    BackgroundLoopWrapped {
        /// The source.
        source: u32,
        /// Passes started so far (2 at the first wrap).
        pass: u32,
    },
    /// A background source ended: it ran out or was stopped.
    BackgroundEnded {
        /// The source.
        source: u32,
        /// Whether a stop ended it.
        stopped: bool,
    },
    /// A background source failed (SPEC B7); everything else plays on.
    BackgroundError {
        /// The source.
        source: u32,
        /// What.
        message: String,
    },
    /// A background source hit a decode error mid-file and ended that pass
    /// with what it had decoded (SPEC B7).
    BackgroundWarning {
        /// The source.
        source: u32,
        /// What.
        message: String,
    },
}

/// Result of a push that completed or was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushOutcome {
    /// Output frames that entered the queue.
    pub accepted_frames: u64,
    /// Output frames discarded: cut by an interrupt or clear, or input disabled.
    pub dropped_frames: u64,
    /// Input bytes dropped because input was disabled (SPEC O4).
    pub dropped_bytes: u64,
}

/// Which input of a session a push feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The speech queue: interruptible and counted.
    Speech,
    /// The background input mixed under speech (SPEC O11).
    Background,
}

/// Messages of the session actor.
pub enum SessionMsg {
    /// Bytes in the input format.
    Push {
        /// Which input.
        input: Input,
        /// The bytes.
        bytes: Vec<u8>,
        /// Resolved once every frame is queued, or cut.
        reply: oneshot::Sender<PushOutcome>,
    },
    /// `mark_synthesis_start`.
    BeginSynthesis,
    /// `mark_synthesis_complete`.
    EndSynthesis,
    /// Barge-in.
    Interrupt,
    /// Freeze playback.
    Pause,
    /// Continue playback.
    Resume,
    /// Accept input again; `manual` makes every interrupt disable it.
    EnableInput {
        /// Manual control.
        manual: bool,
    },
    /// Drop pushed audio until enabled.
    DisableInput,
    /// Drop all queued speech now.
    Clear(oneshot::Sender<u64>),
    /// New fade limit.
    SetFade(Duration),
    /// `(played, pushed)` frames since the turn anchor.
    Snapshot(oneshot::Sender<(u64, u64)>),
    /// Resolves when the speech queue is empty.
    WaitPlayout(oneshot::Sender<()>),
    /// Attach a tee sink.
    AddSink(Box<dyn AudioSink>),
    /// Detach the sinks of this name; with a reason, say so in an event.
    RemoveSink {
        /// The sink's name.
        name: String,
        /// Why, when it failed rather than was taken off.
        reason: Option<String>,
    },
    /// Background ducking; `None` turns it off.
    SetDuck(Option<Duck>),
    /// A renderer event for this session.
    Rendered(Event),
    /// Playback made room: continue waiting pushes and check waiters.
    Tick,
    /// Fault injection for supervision tests.
    Panic,
    /// Fault injection for supervision tests: the next push panics while
    /// its bytes are being converted.
    PanicInIngest,
    /// Frames already at the output format from a background feed, into
    /// `input`, with backpressure like [`SessionMsg::Push`]. The sender
    /// counts as busy for quiescence once the reply is sent; it must call
    /// [`Quiescence::handled`] once per reply it receives, when idle again.
    PushFrames {
        /// Speech or background.
        input: Input,
        /// Interleaved samples at the output rate and channels.
        frames: Vec<f32>,
        /// Resolved when every frame is queued.
        reply: oneshot::Sender<PushOutcome>,
    },
    /// Play a decoded clip from memory under the speech.
    PlayClip {
        /// Names the clip in events.
        id: u32,
        /// Interleaved samples at the output format.
        clip: Arc<[f32]>,
        /// Linear gain.
        gain: f32,
        /// Wrap round at the end.
        looping: bool,
        /// The clip's first pass is what the background input still holds;
        /// it takes over where that runs dry.
        after_ring: bool,
    },
    /// Ramp a clip to a new gain.
    ClipGain {
        /// The clip.
        id: u32,
        /// Linear gain.
        gain: f32,
    },
    /// Ramp a clip down and release it.
    StopClip {
        /// The clip.
        id: u32,
    },
    /// Drop everything queued in the background input; replies with the
    /// frames dropped that were still waiting for room.
    ClearBackground(oneshot::Sender<u64>),
    /// Ramp the background input's gain.
    SetBackgroundGain(f32),
}

impl std::fmt::Debug for SessionMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Push { input, bytes, .. } => write!(f, "Push({input:?}, {} bytes)", bytes.len()),
            Self::Rendered(e) => write!(f, "Rendered({e:?})"),
            Self::AddSink(s) => write!(f, "AddSink({})", s.name()),
            Self::RemoveSink { name, .. } => write!(f, "RemoveSink({name})"),
            other => f.write_str(match other {
                Self::BeginSynthesis => "BeginSynthesis",
                Self::EndSynthesis => "EndSynthesis",
                Self::Interrupt => "Interrupt",
                Self::Pause => "Pause",
                Self::Resume => "Resume",
                Self::EnableInput { .. } => "EnableInput",
                Self::DisableInput => "DisableInput",
                Self::Clear(_) => "Clear",
                Self::SetFade(_) => "SetFade",
                Self::Snapshot(_) => "Snapshot",
                Self::WaitPlayout(_) => "WaitPlayout",
                Self::SetDuck(_) => "SetDuck",
                Self::Tick => "Tick",
                Self::PushFrames { .. } => "PushFrames",
                Self::PlayClip { .. } => "PlayClip",
                Self::ClipGain { .. } => "ClipGain",
                Self::StopClip { .. } => "StopClip",
                Self::ClearBackground(_) => "ClearBackground",
                Self::SetBackgroundGain(_) => "SetBackgroundGain",
                _ => "Panic",
            }),
        }
    }
}

/// A listener callback for session events.
pub type EventCallback = Arc<dyn Fn(&SessionEvent) + Send + Sync>;

/// What the session's handle, actor, supervisor and event pump share.
pub struct SessionShared {
    /// The session's slot.
    pub id: SessionId,
    /// Its config.
    pub config: SessionConfig,
    /// Output rate.
    pub sample_rate: u32,
    /// The live actor (replaced on restart).
    pub actor: Mutex<Option<ActorRef<Envelope>>>,
    /// The live voice's telemetry (replaced on restart).
    pub telemetry: Mutex<Arc<VoiceTelemetry>>,
    /// The live voice's generation.
    pub generation: AtomicU32,
    /// Speech frames written into the ring.
    pub pushed_frames: AtomicU64,
    /// Speech frames waiting for room.
    pub pending_frames: AtomicU64,
    /// The session wants a `Tick` after the next render.
    pub wants_tick: AtomicBool,
    /// The engine-wide in-flight count.
    pub quiesce: Arc<Quiescence>,
    /// Renderer-wide telemetry: the output sample clock.
    pub renderer: Arc<sotto_rt::Telemetry>,
    subscribers: Mutex<Vec<mpsc::Sender<SessionEvent>>>,
    /// Events a subscriber that did not read lost (its queue was full).
    pub events_dropped: AtomicU64,
    callback: Mutex<Option<EventCallback>>,
    closed: AtomicBool,
    /// Sinks of an actor that failed, waiting for its successor.
    orphans: Mutex<Vec<Box<dyn AudioSink>>>,
    has_orphans: AtomicBool,
}

impl std::fmt::Debug for SessionShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionShared")
            .field("id", &self.id)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// The session is gone (removed or the engine stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session is closed")]
pub struct SessionClosed;

impl SessionShared {
    /// Shared state for a new session.
    #[must_use]
    pub fn new(
        id: SessionId,
        config: SessionConfig,
        sample_rate: u32,
        quiesce: Arc<Quiescence>,
        renderer: Arc<sotto_rt::Telemetry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            config,
            sample_rate,
            actor: Mutex::new(None),
            telemetry: Mutex::new(Arc::new(VoiceTelemetry::default())),
            generation: AtomicU32::new(0),
            pushed_frames: AtomicU64::new(0),
            pending_frames: AtomicU64::new(0),
            wants_tick: AtomicBool::new(false),
            quiesce,
            renderer,
            subscribers: Mutex::new(Vec::new()),
            events_dropped: AtomicU64::new(0),
            callback: Mutex::new(None),
            closed: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            has_orphans: AtomicBool::new(false),
        })
    }

    /// Now, on the output sample clock.
    #[must_use]
    pub fn clock(&self) -> SampleTime {
        self.renderer.clock()
    }

    /// Sends a message to the live actor, counted for quiescence.
    ///
    /// # Errors
    /// [`SessionClosed`] if the session has no live actor.
    pub fn send(&self, msg: SessionMsg) -> Result<(), SessionClosed> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SessionClosed);
        }
        let actor = self.actor.lock().map_err(|_| SessionClosed)?.clone();
        let actor = actor.ok_or(SessionClosed)?;
        let ticket = Ticket::new(&self.quiesce);
        // A refused message comes back and is dropped with its ticket.
        actor
            .cast(Envelope {
                msg,
                _ticket: ticket,
            })
            .map_err(|_| SessionClosed)
    }

    /// Marks the session closed; later sends fail.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut s) = self.subscribers.lock() {
            s.clear();
        }
    }

    /// The live voice's telemetry.
    #[must_use]
    pub fn voice_telemetry(&self) -> Arc<VoiceTelemetry> {
        self.telemetry
            .lock()
            .map(|t| Arc::clone(&t))
            .unwrap_or_default()
    }

    /// A new event stream, holding at most [`EVENT_QUEUE`] unread events
    /// (newer ones are dropped and counted in `events_dropped`).
    #[must_use]
    pub fn subscribe(&self) -> mpsc::Receiver<SessionEvent> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        if let Ok(mut s) = self.subscribers.lock() {
            s.push(tx);
        }
        rx
    }

    /// Sets (or clears) the event callback.
    pub fn set_callback(&self, cb: Option<EventCallback>) {
        if let Ok(mut c) = self.callback.lock() {
            *c = cb;
        }
    }

    /// Delivers an event to every subscriber and the callback.
    pub fn emit(&self, event: SessionEvent) {
        tracing::debug!(session = %self.config.name, ?event.kind, at = event.at.0, "session event");
        if let Ok(mut subs) = self.subscribers.lock() {
            // A reader that stopped reading must not grow memory.
            subs.retain(|tx| match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.events_dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        let cb = self.callback.lock().ok().and_then(|c| c.clone());
        if let Some(cb) = cb {
            cb(&event);
        }
    }
}

/// Unread events an event stream holds before newer ones are dropped.
pub const EVENT_QUEUE: usize = 4096;

/// Startup arguments of a session actor.
pub struct SessionArgs {
    /// Shared state.
    pub shared: Arc<SessionShared>,
    /// Control ends of the fresh voice.
    pub voice: VoiceControl,
    /// The voice's generation.
    pub generation: u32,
    /// Output rate.
    pub sample_rate: u32,
    /// Output channels.
    pub channels: usize,
    /// Renderer-wide telemetry (for the sample clock).
    pub clock: Arc<sotto_rt::Telemetry>,
}

/// Where a push's outcome goes. A background feed blocked on it counts as
/// busy for quiescence from the moment it is woken, so the offline clock
/// never renders past audio the feed was about to queue.
struct PushReply {
    tx: oneshot::Sender<PushOutcome>,
    feed: Option<Arc<Quiescence>>,
}

impl PushReply {
    fn send(self, outcome: PushOutcome) {
        if let Some(q) = &self.feed {
            q.sent(1);
        }
        if self.tx.send(outcome).is_err() {
            if let Some(q) = &self.feed {
                q.handled(1);
            }
        }
    }
}

/// A push waiting for room in the queue, or a mark queued behind one.
enum Pending {
    Frames {
        frames: Vec<f32>,
        offset: usize,
        accepted: u64,
        reply: PushReply,
    },
    Begin,
    Complete,
}

/// The session actor.
#[derive(Debug, Clone, Copy)]
pub struct Session;

/// The session actor's state.
pub struct SessionState {
    shared: Arc<SessionShared>,
    voice: VoiceControl,
    generation: u32,
    sample_rate: u32,
    channels: usize,
    clock: Arc<sotto_rt::Telemetry>,
    ingest: Ingest,
    background_ingest: Ingest,
    /// Fault injection: the next conversion panics.
    ingest_fault: bool,
    pending: VecDeque<Pending>,
    background_pending: VecDeque<Pending>,
    /// Samples waiting in `pending` and `background_pending`.
    waiting: [usize; 2],
    /// Decoded frames of the push being handled; kept for its capacity.
    decoded: Vec<f32>,
    command_backlog: VecDeque<VoiceCommand>,
    clip_backlog: VecDeque<ClipCommand>,
    pushed: u64,
    background_pushed: u64,
    turn_start: u64,
    accepting: bool,
    manual: bool,
    paused: bool,
    synthesis_complete: bool,
    cut_by_interrupt: u64,
    waiters: Vec<oneshot::Sender<()>>,
    sinks: Vec<Box<dyn AudioSink>>,
}

impl Drop for SessionState {
    fn drop(&mut self) {
        // Only a failed actor still holds sinks here (a stopped one finished
        // them): they go on with the session's next actor.
        if self.sinks.is_empty() {
            return;
        }
        let sinks = std::mem::take(&mut self.sinks);
        let mut orphans = match self.shared.orphans.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        orphans.extend(sinks);
        self.shared.has_orphans.store(true, Ordering::Release);
    }
}

/// A [`SessionMsg`] on its way, with its place in the engine's in-flight
/// count: the count drops when the envelope does, wherever that is.
pub struct Envelope {
    msg: SessionMsg,
    _ticket: Ticket,
}

impl Actor for Session {
    type Msg = Envelope;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Envelope>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let input = args.shared.config.input;
        let ingest = Ingest::new(input, args.sample_rate, args.channels)?;
        let background_ingest = Ingest::new(input, args.sample_rate, args.channels)?;
        args.shared.pushed_frames.store(0, Ordering::Relaxed);
        args.shared.pending_frames.store(0, Ordering::Relaxed);
        let mut state = SessionState {
            shared: args.shared,
            voice: args.voice,
            generation: args.generation,
            sample_rate: args.sample_rate,
            channels: args.channels,
            clock: args.clock,
            ingest,
            background_ingest,
            ingest_fault: false,
            pending: VecDeque::new(),
            background_pending: VecDeque::new(),
            waiting: [0; 2],
            decoded: Vec::new(),
            command_backlog: VecDeque::new(),
            clip_backlog: VecDeque::new(),
            pushed: 0,
            background_pushed: 0,
            turn_start: 0,
            accepting: true,
            manual: false,
            paused: false,
            synthesis_complete: false,
            cut_by_interrupt: 0,
            waiters: Vec::new(),
            sinks: Vec::new(),
        };
        state.adopt_orphans();
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Envelope>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        // Removed or shut down: every sink is finished, so what it writes
        // is complete.
        for mut sink in std::mem::take(&mut state.sinks) {
            if let Err(e) = sink.finish() {
                tracing::warn!(session = %state.shared.config.name, sink = sink.name(), error = %e, "sink did not finish");
            }
        }
        // The stopped state travels on to the supervisor, which may be busy
        // waiting for this very stop: pushes and waiters still queued are
        // answered (closed) here, not when it gets round to the state.
        state.pending.clear();
        state.background_pending.clear();
        state.waiting = [0; 2];
        state.waiters.clear();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Envelope>,
        envelope: Envelope,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let shared = Arc::clone(&state.shared);
        // The ticket lives to the end of the handler, even through a panic.
        let Envelope { msg, _ticket } = envelope;
        state.adopt_orphans();
        match msg {
            SessionMsg::Push {
                input,
                bytes,
                reply,
            } => state.push(
                input,
                &bytes,
                PushReply {
                    tx: reply,
                    feed: None,
                },
            ),
            SessionMsg::BeginSynthesis => {
                if state.pending.is_empty() {
                    state.begin_turn();
                } else {
                    state.pending.push_back(Pending::Begin);
                }
            }
            SessionMsg::EndSynthesis => state.end_synthesis(),
            SessionMsg::Interrupt => state.interrupt(),
            SessionMsg::Pause => {
                if state.paused {
                    tracing::warn!(session = %shared.config.name, "pause while paused ignored");
                } else {
                    state.paused = true;
                    state.command(VoiceCommand::Pause);
                }
            }
            SessionMsg::Resume => {
                if state.paused {
                    state.paused = false;
                    state.command(VoiceCommand::Resume);
                } else {
                    tracing::warn!(session = %shared.config.name, "resume while playing ignored");
                }
            }
            SessionMsg::EnableInput { manual } => {
                state.accepting = true;
                state.manual = manual;
            }
            SessionMsg::DisableInput => state.accepting = false,
            SessionMsg::Clear(reply) => {
                let dropped = state.clear();
                let _ = reply.send(dropped);
            }
            SessionMsg::SetFade(d) => {
                let frames = frames_of(d, state.sample_rate).min(u64::from(u32::MAX)) as u32;
                state.command(VoiceCommand::SetFade { frames });
            }
            SessionMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
            SessionMsg::WaitPlayout(reply) => {
                if state.queue_empty() {
                    let _ = reply.send(());
                } else {
                    state.waiters.push(reply);
                }
            }
            SessionMsg::AddSink(sink) => {
                if sink.publishes_voice() {
                    state.command(VoiceCommand::SetDirectMuted(true));
                }
                state.sinks.push(sink);
            }
            SessionMsg::RemoveSink { name, reason } => state.remove_sink(&name, reason),
            SessionMsg::SetDuck(duck) => {
                let cfg = duck.map(|d| d.voice(state.sample_rate));
                state.command(VoiceCommand::SetDuck(cfg));
            }
            SessionMsg::Rendered(event) => state.rendered(event),
            SessionMsg::Tick => {}
            SessionMsg::Panic => panic!("injected session fault"),
            SessionMsg::PanicInIngest => state.ingest_fault = true,
            SessionMsg::PushFrames {
                input,
                frames,
                reply,
            } => {
                let reply = PushReply {
                    tx: reply,
                    feed: Some(Arc::clone(&shared.quiesce)),
                };
                if input == Input::Speech && !state.accepting {
                    let dropped = (frames.len() / state.channels) as u64;
                    state.emit(state.now(), SessionEventKind::DroppedInput { bytes: 0 });
                    reply.send(PushOutcome {
                        dropped_frames: dropped,
                        ..PushOutcome::default()
                    });
                } else {
                    state.queue_frames(input, frames, reply);
                }
            }
            SessionMsg::PlayClip {
                id,
                clip,
                gain,
                looping,
                after_ring,
            } => state.clip(ClipCommand::Play {
                id,
                clip,
                gain,
                looping,
                after_ring,
            }),
            SessionMsg::ClipGain { id, gain } => state.clip(ClipCommand::SetGain { id, gain }),
            SessionMsg::StopClip { id } => state.clip(ClipCommand::Stop { id }),
            SessionMsg::ClearBackground(reply) => {
                let _ = reply.send(state.clear_background());
            }
            SessionMsg::SetBackgroundGain(gain) => {
                state.command(VoiceCommand::SetBackgroundGain(gain));
            }
        }
        state.progress();
        Ok(())
    }
}

impl SessionState {
    fn telemetry(&self) -> &VoiceTelemetry {
        &self.voice.telemetry
    }

    fn now(&self) -> SampleTime {
        self.clock.clock()
    }

    fn emit(&self, at: SampleTime, kind: SessionEventKind) {
        self.shared.emit(SessionEvent {
            session: self.shared.id,
            at,
            kind,
        });
    }

    fn command(&mut self, cmd: VoiceCommand) {
        if !self.command_backlog.is_empty() {
            self.command_backlog.push_back(cmd);
            return;
        }
        if self.voice.send(cmd).is_err() {
            // The renderer is not draining (no block rendered yet); keep order.
            self.command_backlog.push_back(cmd);
        }
    }

    fn push(&mut self, input: Input, bytes: &[u8], reply: PushReply) {
        if !self.accepting && input == Input::Speech {
            tracing::debug!(session = %self.shared.config.name, bytes = bytes.len(), "input disabled, push dropped");
            self.emit(
                self.now(),
                SessionEventKind::DroppedInput {
                    bytes: bytes.len() as u64,
                },
            );
            reply.send(PushOutcome {
                dropped_bytes: bytes.len() as u64,
                ..PushOutcome::default()
            });
            return;
        }
        let mut frames = std::mem::take(&mut self.decoded);
        frames.clear();
        assert!(
            !std::mem::take(&mut self.ingest_fault),
            "injected ingest fault"
        );
        match input {
            Input::Speech => self.ingest.push(bytes, &mut frames),
            Input::Background => self.background_ingest.push(bytes, &mut frames),
        }
        self.queue_frames(input, frames, reply);
    }

    /// Queues converted frames: what fits goes straight into the ring (when
    /// nothing waits ahead), the rest waits for room.
    fn queue_frames(&mut self, input: Input, frames: Vec<f32>, reply: PushReply) {
        let ch = self.channels;
        let slot = input as usize;
        let (queue, tx) = match input {
            Input::Speech => (&mut self.pending, &mut self.voice.speech_tx),
            Input::Background => (&mut self.background_pending, &mut self.voice.background_tx),
        };
        // Nothing waiting ahead of it: what fits goes straight into the
        // ring, and only the rest is copied to wait for room.
        let written = if queue.is_empty() {
            write_frames(tx, &frames, ch)
        } else {
            0
        };
        let rest = frames.len() - written * ch;
        let limit = MAX_WAITING.as_secs() as usize * self.sample_rate as usize * ch;
        let overflow = rest > 0 && self.waiting[slot] + rest > limit;
        if overflow {
            reply.send(PushOutcome {
                accepted_frames: written as u64,
                dropped_frames: (rest / ch) as u64,
                ..PushOutcome::default()
            });
        } else if rest == 0 {
            reply.send(PushOutcome {
                accepted_frames: written as u64,
                ..PushOutcome::default()
            });
        } else {
            queue.push_back(Pending::Frames {
                frames: frames[written * ch..].to_vec(),
                offset: 0,
                accepted: written as u64,
                reply,
            });
            self.waiting[slot] += rest;
        }
        match input {
            Input::Speech => {
                self.pushed += written as u64;
                // The tee sees exactly what the queue took.
                let kept = if overflow { written * ch } else { frames.len() };
                self.tee(&frames[..kept]);
            }
            Input::Background => self.background_pushed += written as u64,
        }
        if overflow {
            tracing::warn!(session = %self.shared.config.name, frames = rest / ch, ?input, "queue overflow, push dropped");
            self.emit(
                self.now(),
                SessionEventKind::QueueOverflow {
                    dropped_frames: (rest / ch) as u64,
                    background: input == Input::Background,
                },
            );
        }
        // A one-off huge push does not pin its buffer for the session's life.
        if frames.capacity() <= MAX_KEPT_DECODE_SAMPLES {
            self.decoded = frames;
        }
    }

    /// Takes over the sinks of a failed predecessor. Its state may be
    /// dropped after this actor started (the supervisor hears of the
    /// failure first), so this is checked on every message, not only at
    /// start.
    fn adopt_orphans(&mut self) {
        // A plain load on every message; the swap only when there is work.
        if !self.shared.has_orphans.load(Ordering::Acquire)
            || !self.shared.has_orphans.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let orphans = match self.shared.orphans.lock() {
            Ok(mut o) => std::mem::take(&mut *o),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for sink in orphans {
            if sink.publishes_voice() {
                self.command(VoiceCommand::SetDirectMuted(true));
            }
            self.sinks.push(sink);
        }
    }

    fn tee(&mut self, frames: &[f32]) {
        if self.sinks.is_empty() || frames.is_empty() {
            return;
        }
        let (rate, ch) = (self.sample_rate, self.channels);
        let mut failed = Vec::new();
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if let Err(e) = sink.write(frames, rate, ch) {
                failed.push((i, e));
            }
        }
        for (i, err) in failed.into_iter().rev() {
            let sink = self.sinks.remove(i);
            self.detached(sink, Some(err.0));
        }
    }

    fn remove_sink(&mut self, name: &str, reason: Option<String>) {
        let mut i = 0;
        while i < self.sinks.len() {
            if self.sinks[i].name() == name {
                let sink = self.sinks.remove(i);
                self.detached(sink, reason.clone());
            } else {
                i += 1;
            }
        }
    }

    /// A sink is gone: finish it, say why if it failed, and unmute the
    /// direct output when no other sink publishes the voice.
    fn detached(&mut self, mut sink: Box<dyn AudioSink>, reason: Option<String>) {
        let finished = sink.finish().err().map(|e| e.0);
        if let Some(reason) = reason.or(finished) {
            tracing::warn!(session = %self.shared.config.name, sink = sink.name(), error = %reason, "sink failed, detached");
            self.emit(
                self.now(),
                SessionEventKind::SinkDetached {
                    sink: sink.name().to_owned(),
                    reason,
                },
            );
        }
        if sink.publishes_voice() && !self.sinks.iter().any(|s| s.publishes_voice()) {
            self.command(VoiceCommand::SetDirectMuted(false));
        }
    }

    fn begin_turn(&mut self) {
        self.turn_start = self.pushed;
        self.synthesis_complete = false;
        self.command(VoiceCommand::BeginTurn { start: self.pushed });
    }

    fn end_synthesis(&mut self) {
        let mut tail = Vec::new();
        self.ingest.flush(&mut tail);
        if !tail.is_empty() {
            self.tee(&tail);
            self.waiting[Input::Speech as usize] += tail.len();
            let (tx, _) = oneshot::channel();
            self.pending.push_back(Pending::Frames {
                frames: tail,
                offset: 0,
                accepted: 0,
                reply: PushReply { tx, feed: None },
            });
        }
        for sink in &mut self.sinks {
            sink.segment_end();
        }
        self.pending.push_back(Pending::Complete);
    }

    fn complete(&mut self) {
        self.synthesis_complete = true;
        self.command(VoiceCommand::SynthesisComplete { end: self.pushed });
        let t = self.telemetry();
        let speaking = self.pushed > t.consumed() || t.is_speaking();
        if !speaking {
            self.fire_last_audio(self.now());
        }
    }

    fn fire_last_audio(&mut self, at: SampleTime) {
        self.synthesis_complete = false;
        self.emit(at, SessionEventKind::LastAudio);
    }

    /// Cuts every waiting push; returns frames dropped. Turn marks queued
    /// behind them are applied (`Begin`) or discarded (`Complete`).
    fn cut_pending(&mut self) -> u64 {
        let (dropped, begin) = cut(&mut self.pending, self.channels);
        self.waiting[Input::Speech as usize] = 0;
        self.ingest.reset();
        if begin {
            self.begin_turn();
        }
        dropped
    }

    /// Drops the background input: what waits for room and what is queued.
    fn clear_background(&mut self) -> u64 {
        let (dropped, _) = cut(&mut self.background_pending, self.channels);
        self.waiting[Input::Background as usize] = 0;
        self.background_ingest.reset();
        self.command(VoiceCommand::ClearBackground {
            fence: self.background_pushed,
        });
        dropped
    }

    fn clip(&mut self, cmd: ClipCommand) {
        if !self.clip_backlog.is_empty() {
            self.clip_backlog.push_back(cmd);
            return;
        }
        if let Err(cmd) = self.voice.send_clip(cmd) {
            self.clip_backlog.push_back(cmd);
        }
    }

    fn interrupt(&mut self) {
        let cut = self.cut_pending();
        self.cut_by_interrupt = cut;
        self.command(VoiceCommand::Interrupt { fence: self.pushed });
        self.paused = false;
        self.synthesis_complete = false;
        self.accepting = !self.manual;
        for sink in &mut self.sinks {
            sink.interrupt();
        }
    }

    fn clear(&mut self) -> u64 {
        let cut = self.cut_pending();
        let queued = self.pushed.saturating_sub(self.telemetry().consumed());
        self.cut_by_interrupt = cut;
        self.command(VoiceCommand::Clear { fence: self.pushed });
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
        cut + queued
    }

    fn snapshot(&self) -> (u64, u64) {
        let t = self.telemetry();
        let pushed = self.pushed - self.turn_start;
        let played = if t.turn_start.load(Ordering::Relaxed) == self.turn_start {
            t.turn_played()
        } else {
            // The renderer has not applied the new anchor yet; every frame at
            // or after it that was consumed was played.
            t.consumed().saturating_sub(self.turn_start)
        };
        (played.min(pushed), pushed)
    }

    fn queue_empty(&self) -> bool {
        self.pending.is_empty() && self.telemetry().consumed() >= self.pushed
    }

    fn rendered(&mut self, event: Event) {
        if event.generation != self.generation {
            return;
        }
        let at = event.at;
        let kind = match event.kind {
            EventKind::FirstAudio { .. } => SessionEventKind::FirstAudio,
            EventKind::StoppedSpeaking { position } => {
                self.emit(at, SessionEventKind::StoppedSpeaking);
                if self.synthesis_complete && self.pending.is_empty() && position >= self.pushed {
                    self.fire_last_audio(at);
                }
                return;
            }
            EventKind::Interrupted {
                tail_frames,
                skipped_frames,
            } => SessionEventKind::Interrupted {
                tail_frames,
                dropped_frames: skipped_frames + std::mem::take(&mut self.cut_by_interrupt),
            },
            EventKind::Cleared { skipped_frames } => SessionEventKind::Cleared {
                dropped_frames: skipped_frames + std::mem::take(&mut self.cut_by_interrupt),
            },
            EventKind::FadeDone => SessionEventKind::FadeDone,
            EventKind::Underrun => SessionEventKind::Underrun,
            EventKind::Paused => SessionEventKind::Paused,
            EventKind::Resumed => SessionEventKind::Resumed,
            EventKind::Retired => return,
            EventKind::ClipStarted { id } => SessionEventKind::BackgroundStarted { source: id },
            EventKind::ClipWrapped { id, pass } => {
                SessionEventKind::BackgroundLoopWrapped { source: id, pass }
            }
            EventKind::ClipEnded { id, stopped } => SessionEventKind::BackgroundEnded {
                source: id,
                stopped,
            },
        };
        self.emit(at, kind);
    }

    /// Moves waiting work forward as far as the rings allow.
    fn progress(&mut self) {
        while let Some(cmd) = self.command_backlog.front().copied() {
            if self.voice.send(cmd).is_err() {
                break;
            }
            self.command_backlog.pop_front();
        }
        while let Some(cmd) = self.clip_backlog.pop_front() {
            if let Err(cmd) = self.voice.send_clip(cmd) {
                self.clip_backlog.push_front(cmd);
                break;
            }
        }
        self.voice.collect_clips();
        self.drain_speech();
        let ch = self.channels;
        loop {
            let (written, done) = advance_front(
                &mut self.background_pending,
                &mut self.voice.background_tx,
                ch,
            );
            self.background_pushed += written;
            let left = &mut self.waiting[Input::Background as usize];
            *left = left.saturating_sub(written as usize * ch);
            if !done {
                break;
            }
        }
        if !self.waiters.is_empty() && self.queue_empty() {
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
        // Kept as pushes queue and drain, not summed over the queue here.
        let pending_frames = (self.waiting[Input::Speech as usize] / ch) as u64;
        self.shared
            .pending_frames
            .store(pending_frames, Ordering::Relaxed);
        self.shared
            .pushed_frames
            .store(self.pushed, Ordering::Relaxed);
        let wants = !self.pending.is_empty()
            || !self.background_pending.is_empty()
            || !self.clip_backlog.is_empty()
            || !self.waiters.is_empty()
            || !self.command_backlog.is_empty();
        self.shared.wants_tick.store(wants, Ordering::Relaxed);
    }

    fn drain_speech(&mut self) {
        let ch = self.channels;
        loop {
            match self.pending.front() {
                Some(Pending::Frames { .. }) => {
                    let (written, done) =
                        advance_front(&mut self.pending, &mut self.voice.speech_tx, ch);
                    self.pushed += written;
                    let left = &mut self.waiting[Input::Speech as usize];
                    *left = left.saturating_sub(written as usize * ch);
                    if !done {
                        return;
                    }
                }
                Some(Pending::Begin) => {
                    self.pending.pop_front();
                    self.begin_turn();
                }
                Some(Pending::Complete) => {
                    self.pending.pop_front();
                    self.complete();
                }
                None => return,
            }
        }
    }
}

/// Empties a queue of waiting pushes, telling each how much was dropped;
/// returns the frames dropped and whether a turn start was among them.
fn cut(queue: &mut VecDeque<Pending>, ch: usize) -> (u64, bool) {
    let mut dropped = 0;
    let mut begin = false;
    for item in queue.drain(..) {
        match item {
            Pending::Frames {
                frames,
                offset,
                accepted,
                reply,
            } => {
                let left = ((frames.len() - offset) / ch) as u64;
                dropped += left;
                reply.send(PushOutcome {
                    accepted_frames: accepted,
                    dropped_frames: left,
                    dropped_bytes: 0,
                });
            }
            Pending::Begin => begin = true,
            Pending::Complete => {}
        }
    }
    (dropped, begin)
}

/// Writes as many whole frames as fit; returns frames written.
fn write_frames(tx: &mut rtrb::Producer<f32>, samples: &[f32], ch: usize) -> usize {
    let room = tx.slots() / ch * ch;
    let n = room.min(samples.len() / ch * ch);
    if n == 0 {
        return 0;
    }
    let (written, _) = tx.push_partial_slice(&samples[..n]);
    written.len() / ch
}

/// Moves the front push's frames into the ring as far as they fit; once all
/// of them are in, resolves its reply and pops it. Returns the frames
/// written and whether the push is done.
fn advance_front(
    pending: &mut VecDeque<Pending>,
    tx: &mut rtrb::Producer<f32>,
    ch: usize,
) -> (u64, bool) {
    let Some(Pending::Frames {
        frames,
        offset,
        accepted,
        ..
    }) = pending.front_mut()
    else {
        return (0, false);
    };
    let n = write_frames(tx, &frames[*offset..], ch);
    *offset += n * ch;
    *accepted += n as u64;
    if *offset < frames.len() {
        return (n as u64, false);
    }
    if let Some(Pending::Frames {
        accepted, reply, ..
    }) = pending.pop_front()
    {
        reply.send(PushOutcome {
            accepted_frames: accepted,
            ..PushOutcome::default()
        });
    }
    (n as u64, true)
}
