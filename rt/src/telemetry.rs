//! Atomics the audio thread writes and control reads.
//!
//! Written only by the audio thread (the drivers add `late_blocks` and
//! `alloc_violations` from the driver thread); every access is `Relaxed`
//! because each value is a self-contained counter or level.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use atomic_float::AtomicF32;

/// Renderer-wide counters.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Frames rendered so far: the sample clock.
    pub clock_frames: AtomicU64,
    /// Blocks rendered so far.
    pub blocks: AtomicU64,
    /// Events lost because the event ring was full.
    pub events_dropped: AtomicU64,
    /// Retired voices still waiting for room in the return ring.
    pub retire_backlog: AtomicU64,
    /// Blocks a real-time driver produced after their deadline.
    pub late_blocks: AtomicU64,
    /// Allocations or frees seen inside the render call (feature `rt-audit`).
    pub alloc_violations: AtomicU64,
    /// Set when a render call panicked; the driver outputs silence after it.
    pub poisoned: AtomicBool,
    /// Peak absolute sample of the last block, after saturation.
    pub peak: AtomicF32,
}

impl Telemetry {
    /// The sample clock.
    #[must_use]
    pub fn clock(&self) -> crate::SampleTime {
        crate::SampleTime(self.clock_frames.load(Ordering::Relaxed))
    }
}

/// Per-voice counters, shared between a voice and its session.
#[derive(Debug, Default)]
pub struct VoiceTelemetry {
    /// Speech frames taken out of the speech ring (played or skipped).
    pub consumed_frames: AtomicU64,
    /// Speech frames actually played (including fade tails), ever.
    pub played_frames: AtomicU64,
    /// Speech frames played at or after the current turn's start position.
    pub turn_played_frames: AtomicU64,
    /// The start position of the turn `turn_played_frames` counts.
    pub turn_start: AtomicU64,
    /// Speech frames in the ring, waiting to play (queue depth).
    pub queued_frames: AtomicU64,
    /// Background frames taken out of the background ring.
    pub background_frames: AtomicU64,
    /// Times the speech ring ran dry in the middle of a turn.
    pub underruns: AtomicU64,
    /// True from the first real frame until the grace period after the last.
    pub speaking: AtomicBool,
    /// Current background gain after ducking.
    pub duck_gain: AtomicF32,
}

impl VoiceTelemetry {
    /// Speech frames consumed from the ring so far.
    #[must_use]
    pub fn consumed(&self) -> u64 {
        self.consumed_frames.load(Ordering::Relaxed)
    }

    /// Speech frames played in the current turn.
    #[must_use]
    pub fn turn_played(&self) -> u64 {
        self.turn_played_frames.load(Ordering::Relaxed)
    }

    /// Whether the voice is speaking (including the grace period).
    #[must_use]
    pub fn is_speaking(&self) -> bool {
        self.speaking.load(Ordering::Relaxed)
    }
}
