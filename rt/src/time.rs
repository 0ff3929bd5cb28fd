//! Sample-clock time and ids. Shared by both sides; plain `Copy` data.
//!
//! [`frames_of`] and [`duration_of`] are the engine's one conversion
//! between durations and frames: everything given as a `Duration` at the
//! control edge becomes frames here, rounded the same way everywhere.

use std::time::Duration;

/// Frames in `d` at `rate`, rounded to the nearest frame.
#[must_use]
pub fn frames_of(d: Duration, rate: u32) -> u64 {
    (d.as_secs_f64() * f64::from(rate)).round() as u64
}

/// How long `frames` last at `rate` (zero for a zero rate).
#[must_use]
pub fn duration_of(frames: u64, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(frames as f64 / f64::from(rate))
}

/// A point on the renderer's sample clock (frames rendered since start):
/// when an event happened and a frame's pts, to line audio up with text.
///
/// Every timing in the engine (grace periods, fades, event times) is counted
/// on this clock, never in wall time, so offline renders are deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SampleTime(pub u64);

impl SampleTime {
    /// The time `frames` later.
    #[must_use]
    pub fn plus(self, frames: u64) -> Self {
        Self(self.0.saturating_add(frames))
    }

    /// Seconds since the clock started, at `sample_rate`.
    #[must_use]
    pub fn seconds(self, sample_rate: u32) -> f64 {
        self.0 as f64 / f64::from(sample_rate.max(1))
    }
}

/// A position in one of a voice's input streams (speech or background):
/// frames written into it since the voice was built. Not a time: a queue
/// that waits or a pause moves the clock but not the position.
///
/// Interrupt fences, turn starts and ends, and the positions events report
/// are counted here; the control side keeps the writing end's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamPos(pub u64);

impl StreamPos {
    /// The position `frames` further on.
    #[must_use]
    pub fn plus(self, frames: u64) -> Self {
        Self(self.0.saturating_add(frames))
    }

    /// Frames from `earlier` to here, 0 if `earlier` is ahead.
    #[must_use]
    pub fn since(self, earlier: StreamPos) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A count of sample frames (one sample per channel): how much audio, not
/// when. A point on the clock is a [`SampleTime`]; how far apart two
/// points are, or how much was played, pushed or dropped, is a
/// `FrameCount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FrameCount(pub u64);

impl FrameCount {
    /// No frames.
    pub const ZERO: Self = Self(0);

    /// The count as a number.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }

    /// How long these frames last at `rate`.
    #[must_use]
    pub fn duration(self, rate: u32) -> Duration {
        duration_of(self.0, rate)
    }

    /// The same in seconds.
    #[must_use]
    pub fn seconds(self, rate: u32) -> f64 {
        self.0 as f64 / f64::from(rate.max(1))
    }

    /// The frames in `self` not in `other`, 0 when `other` is more.
    #[must_use]
    pub fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

impl std::ops::Add for FrameCount {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }
}

impl std::ops::AddAssign for FrameCount {
    fn add_assign(&mut self, other: Self) {
        *self = *self + other;
    }
}

impl std::iter::Sum for FrameCount {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, |a, b| a + b)
    }
}

impl std::fmt::Display for FrameCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} frames", self.0)
    }
}

/// A session's slot in the renderer's fixed voice table. Only the crates
/// that own the table make one; an application gets its ids from the
/// sessions the engine made (`SessionHandle::id`, every event's
/// `session`), and cannot forge another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u32);

/// Makes an id from a slot number. `sotto` does not export it: ids come
/// from the engine, never from an application.
pub trait FromSlot {
    /// The id of slot `slot`.
    fn from_slot(slot: u32) -> Self;
}

#[doc(hidden)]
impl FromSlot for SessionId {
    fn from_slot(slot: u32) -> Self {
        Self(slot)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl SessionId {
    /// The slot number.
    #[must_use]
    pub fn slot(self) -> u32 {
        self.0
    }

    /// The slot index.
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How long an output frame or a packet is: what a call's output frames
/// and its Opus packets are cut to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameLength {
    /// 10 ms.
    Ms10,
    /// 20 ms, the usual packet of a voice call.
    #[default]
    Ms20,
    /// 40 ms.
    Ms40,
}

impl FrameLength {
    /// The length as a duration.
    #[must_use]
    pub fn duration(self) -> Duration {
        Duration::from_millis(match self {
            Self::Ms10 => 10,
            Self::Ms20 => 20,
            Self::Ms40 => 40,
        })
    }

    /// Frames (samples per channel) in one frame of this length at `rate`.
    #[must_use]
    pub fn frames_at(self, rate: u32) -> usize {
        frames_of(self.duration(), rate) as usize
    }
}
