//! Sample-clock time and ids. Shared by both sides; plain `Copy` data.

/// A point on the renderer's sample clock: frames rendered since start.
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

/// A session's slot in the renderer's fixed voice table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u32);

impl SessionId {
    /// The slot index.
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
