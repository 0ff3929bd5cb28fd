//! The session actor's messages, and the envelope that carries each with
//! its place in the engine's in-flight count.

use ractor::RpcReplyPort;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sotto_rt::Event;

use super::*;
use crate::quiesce::Ticket;
use crate::sink::AudioSink;

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
        reply: RpcReplyPort<PushOutcome>,
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
    Clear(RpcReplyPort<u64>),
    /// New fade limit.
    SetFade(Duration),
    /// `(played, pushed)` frames since the turn anchor.
    Snapshot(RpcReplyPort<(u64, u64)>),
    /// Resolves when the speech queue is empty.
    WaitPlayout(RpcReplyPort<()>),
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
    #[cfg(feature = "fault-injection")]
    Panic,
    /// Fault injection for supervision tests: the next push panics while
    /// its bytes are being converted.
    #[cfg(feature = "fault-injection")]
    PanicInIngest,
    /// Frames already at the output format from a background feed, into
    /// `input`, with backpressure like [`SessionMsg::Push`]. The sender
    /// counts as busy for quiescence once the reply is sent; it must call
    /// [`Quiescence::handled`](crate::quiesce::Quiescence::handled) once per reply it receives, when idle again.
    PushFrames {
        /// Speech or background.
        input: Input,
        /// Interleaved samples at the output rate and channels.
        frames: Vec<f32>,
        /// Resolved when every frame is queued.
        reply: RpcReplyPort<PushOutcome>,
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
    ClearBackground(RpcReplyPort<u64>),
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
            Self::BeginSynthesis => f.write_str("BeginSynthesis"),
            Self::EndSynthesis => f.write_str("EndSynthesis"),
            Self::Interrupt => f.write_str("Interrupt"),
            Self::Pause => f.write_str("Pause"),
            Self::Resume => f.write_str("Resume"),
            Self::EnableInput { .. } => f.write_str("EnableInput"),
            Self::DisableInput => f.write_str("DisableInput"),
            Self::Clear(_) => f.write_str("Clear"),
            Self::SetFade(_) => f.write_str("SetFade"),
            Self::Snapshot(_) => f.write_str("Snapshot"),
            Self::WaitPlayout(_) => f.write_str("WaitPlayout"),
            Self::SetDuck(_) => f.write_str("SetDuck"),
            Self::Tick => f.write_str("Tick"),
            Self::PushFrames { .. } => f.write_str("PushFrames"),
            Self::PlayClip { .. } => f.write_str("PlayClip"),
            Self::ClipGain { .. } => f.write_str("ClipGain"),
            Self::StopClip { .. } => f.write_str("StopClip"),
            Self::ClearBackground(_) => f.write_str("ClearBackground"),
            Self::SetBackgroundGain(_) => f.write_str("SetBackgroundGain"),
            #[cfg(feature = "fault-injection")]
            Self::Panic => f.write_str("Panic"),
            #[cfg(feature = "fault-injection")]
            Self::PanicInIngest => f.write_str("PanicInIngest"),
        }
    }
}

/// A [`SessionMsg`] on its way, with its place in the engine's in-flight
/// count and, for the application's messages, in the session's mailbox
/// bound: both drop when the envelope does, wherever that is.
pub struct Envelope {
    pub(super) msg: SessionMsg,
    pub(super) _ticket: Ticket,
    pub(super) _slot: Option<MailboxSlot>,
}

/// One of the application's messages in a session's mailbox; frees its
/// place in [`MAILBOX_LIMIT`] when dropped.
pub struct MailboxSlot(pub(super) Arc<AtomicUsize>);

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
