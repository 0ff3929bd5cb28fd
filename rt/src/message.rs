//! What crosses between control and the audio thread.

use std::sync::Arc;

use crate::{Output, OutputId, SampleTime, Saturation, SessionId, StreamPos, Voice};

/// Control → renderer, through the renderer's command ring.
#[derive(Debug)]
pub enum Command {
    /// Install a voice in its session's slot, retiring any voice there.
    AddVoice(Box<Voice>),
    /// Take a session's voice out and send it back through the return ring.
    RemoveVoice(SessionId),
    /// Put an output in its slot (replacing and retiring any output there).
    AddOutput(Box<Output>),
    /// Take an output out and send it back through its return ring; its
    /// voices render to nowhere until it returns.
    RemoveOutput(OutputId),
    /// Choose how the master sum is kept inside full scale.
    SetMasterSaturation(Saturation),
    /// Fault injection (feature `fault-injection`, test builds only): the
    /// render call that sees it panics.
    #[cfg(feature = "fault-injection")]
    Panic,
}

/// Control → one voice, through that voice's own command ring.
///
/// Positions (`fence`, `start`, `end`) count speech frames written into the
/// voice's speech ring since it was created.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VoiceCommand {
    /// Fade what is pending before `fence` (SPEC O5) and skip the rest of it.
    Interrupt {
        /// Frames pushed when the interrupt was issued.
        fence: StreamPos,
    },
    /// Drop everything before `fence` at once, including a fade tail.
    Clear {
        /// Frames pushed when the clear was issued.
        fence: StreamPos,
    },
    /// Ramp down and freeze the speech queue.
    Pause,
    /// Ramp up and continue where the pause stopped.
    Resume,
    /// A new turn starts at speech position `start`: counters and first-audio anchor there.
    BeginTurn {
        /// First frame of the turn.
        start: StreamPos,
    },
    /// The turn's input ends at `end`: running dry there is not an underrun.
    SynthesisComplete {
        /// Frames pushed when synthesis completed.
        end: StreamPos,
    },
    /// Fade length for later interrupts, in frames.
    SetFade {
        /// Tail length limit.
        frames: u32,
    },
    /// Silence the voice's direct output (a tee sink publishes it instead).
    SetDirectMuted(bool),
    /// Background ducking under speech; `None` turns it off.
    SetDuck(Option<crate::DuckConfig>),
    /// Drop the background input before `fence` (frames written into the
    /// background ring since the voice was created).
    ClearBackground {
        /// Background frames pushed when the clear was issued.
        fence: StreamPos,
    },
    /// Linear gain of the background input, reached through a ramp.
    SetBackgroundGain(f32),
    /// How this voice's speech + background sum is kept inside full scale.
    SetSaturation(Saturation),
}

/// Control → one voice: a decoded clip played from memory under the speech,
/// through the voice's clip ring. The clip is shared read-only with the
/// audio thread; the voice hands it back through its return ring when it is
/// done, so it is never freed there.
#[derive(Debug)]
pub enum ClipCommand {
    /// Play `clip` (interleaved at the output format) from its start,
    /// replacing any clip playing.
    Play {
        /// Names the clip in events.
        id: u32,
        /// The samples.
        clip: Arc<[f32]>,
        /// Linear gain.
        gain: f32,
        /// Wrap round at the end instead of ending.
        looping: bool,
        /// The clip's first pass is what the background ring still holds:
        /// the clip takes over at the sample the ring runs dry, as its
        /// second pass.
        after_ring: bool,
    },
    /// Ramp the clip `id` to a new gain.
    SetGain {
        /// The clip.
        id: u32,
        /// Linear gain.
        gain: f32,
    },
    /// Ramp the clip `id` down and let it go.
    Stop {
        /// The clip.
        id: u32,
    },
}

/// Renderer → control: something that happened at an exact sample time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The session whose voice produced it.
    pub session: SessionId,
    /// The voice generation (a restarted session gets a new one).
    pub generation: u32,
    /// When it happened on the sample clock.
    pub at: SampleTime,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The first frame of the turn (at or after its start) was played.
    FirstAudio {
        /// Speech position of that frame.
        position: StreamPos,
    },
    /// The speech ring stayed empty for the grace period after the last real frame.
    StoppedSpeaking {
        /// Speech frames consumed at that moment.
        position: StreamPos,
    },
    /// An interrupt was applied.
    Interrupted {
        /// Frames kept as the fade tail.
        tail_frames: u64,
        /// Frames that will be skipped after the tail.
        skipped_frames: u64,
    },
    /// A clear was applied.
    Cleared {
        /// Frames dropped.
        skipped_frames: u64,
    },
    /// The last frame of a fade tail was played.
    FadeDone,
    /// The speech ring ran dry in the middle of a turn.
    Underrun,
    /// A pause was applied (its ramp starts here).
    Paused,
    /// A resume was applied (its ramp starts here).
    Resumed,
    /// The voice left the renderer.
    Retired,
    /// A clip started playing.
    ClipStarted {
        /// The clip.
        id: u32,
    },
    /// A looping clip wrapped round to its start.
    ClipWrapped {
        /// The clip.
        id: u32,
        /// Passes started so far (2 at the first wrap).
        pass: u32,
    },
    /// A clip ended: it ran out, or a stop's ramp finished.
    ClipEnded {
        /// The clip.
        id: u32,
        /// Whether a stop ended it.
        stopped: bool,
    },
}
