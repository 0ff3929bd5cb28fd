//! What a session reports: its events (each at an exact sample time) and
//! the outcome of a push.

use sotto_rt::{FrameCount, SampleTime, SessionId};

/// Something that happened to a session, at an exact sample time, read
/// from `SessionHandle::events` to drive the agent's turn-taking.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    /// The session.
    pub session: SessionId,
    /// When, on the output sample clock.
    pub at: SampleTime,
    /// What.
    pub kind: SessionEventKind,
}

/// What a [`SessionEvent`] says happened: match on it.
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
        tail_frames: FrameCount,
        /// Frames discarded, including cut waiting pushes.
        dropped_frames: FrameCount,
    },
    /// The fade tail finished.
    FadeDone,
    /// The queue was cleared (SPEC O2).
    Cleared {
        /// Frames discarded, including cut waiting pushes.
        dropped_frames: FrameCount,
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
    /// A push found [`SessionConfig::MAX_WAITING`](crate::SessionConfig::MAX_WAITING) of audio already waiting for room (its
    /// caller did not wait for earlier pushes): what did not fit in the
    /// ring was dropped, and the push says so too.
    QueueOverflow {
        /// Output frames dropped.
        dropped_frames: FrameCount,
        /// Whether it was the background input.
        background: bool,
    },
    /// The reader of the session's own output fell behind and lost
    /// frames (SPEC C3): reported with the first frame after the loss, at
    /// its pts, which jumped by exactly `frames`.
    FramesLost {
        /// Frames (samples per channel) lost this time.
        frames: FrameCount,
        /// Frames lost so far.
        total: FrameCount,
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
    /// The user pressed a key on a phone line (SPEC T4).
    Dtmf {
        /// The key: `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
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

/// What a push resolved to: how much of it entered the queue and how much
/// an interrupt, a clear or disabled input dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushOutcome {
    /// Output frames that entered the queue.
    pub accepted_frames: FrameCount,
    /// Output frames discarded: cut by an interrupt or clear, or input disabled.
    pub dropped_frames: FrameCount,
    /// Input bytes dropped because input was disabled (SPEC O4).
    pub dropped_bytes: u64,
}
