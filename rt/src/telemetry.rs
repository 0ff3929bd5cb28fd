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
    /// Faults (panics) the control actors recovered from by restarting.
    pub actor_restarts: AtomicU64,
    /// Peak absolute sample of the last block, after saturation.
    pub peak: AtomicF32,
    /// How long each block took to render, as a real-time driver timed it.
    pub render_times: RenderTimes,
}

/// Buckets of [`RenderTimes`], each this many ns wide.
const BUCKET_NS: u64 = 4_000;
/// Buckets: 0 to 16 ms in 4 µs steps, the last one holding everything
/// above (32 KiB per renderer).
const BUCKETS: usize = 4_096;

/// A histogram of block render times: fixed buckets, filled without a
/// lock or an allocation, read while it fills.
#[derive(Debug)]
pub struct RenderTimes {
    buckets: Box<[AtomicU64]>,
    max_ns: AtomicU64,
    /// The recent render time, smoothed over about the last 16 blocks.
    recent_ns: AtomicU64,
}

impl Default for RenderTimes {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_ns: AtomicU64::new(0),
            recent_ns: AtomicU64::new(0),
        }
    }
}

impl RenderTimes {
    /// Counts one block that took `ns`. Runs on the audio thread.
    pub fn record(&self, ns: u64) {
        let i = usize::try_from(ns / BUCKET_NS).map_or(BUCKETS - 1, |i| i.min(BUCKETS - 1));
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        // One writer (this thread): a load and a store, no read-modify-write.
        let old = self.recent_ns.load(Ordering::Relaxed);
        self.recent_ns
            .store(old - old / 16 + ns / 16, Ordering::Relaxed);
    }

    /// The recent render time of a block in ns, smoothed over about the
    /// last 16 blocks (0 before the first).
    #[must_use]
    pub fn recent_ns(&self) -> u64 {
        self.recent_ns.load(Ordering::Relaxed)
    }

    /// Blocks counted.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in ns, to the bucket's upper edge but never
    /// above the maximum; `None` before the first block.
    #[must_use]
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                // The last bucket is open above; any other bucket's upper
                // edge can lie above every block in it. No quantile passes
                // the longest block seen.
                let edge = if i == BUCKETS - 1 {
                    u64::MAX
                } else {
                    (i as u64 + 1) * BUCKET_NS
                };
                return Some(edge.min(self.max_ns()));
            }
        }
        Some(self.max_ns())
    }

    /// The longest block, in ns.
    #[must_use]
    pub fn max_ns(&self) -> u64 {
        self.max_ns.load(Ordering::Relaxed)
    }
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

#[cfg(test)]
mod tests {
    use super::RenderTimes;

    #[test]
    fn no_quantile_passes_the_maximum() {
        let t = RenderTimes::default();
        assert_eq!(t.quantile_ns(0.5), None);
        // Fast blocks all in the first bucket: its edge (4 µs) lies above
        // every one of them.
        for ns in [900, 1_000, 1_100, 1_200] {
            t.record(ns);
        }
        assert_eq!(t.quantile_ns(0.5), Some(1_200));
        assert_eq!(t.quantile_ns(0.99), Some(1_200));
    }

    #[test]
    fn quantiles_follow_the_buckets() {
        let t = RenderTimes::default();
        for ns in [900, 1_000, 1_100, 1_200] {
            t.record(ns);
        }
        t.record(10_000);
        t.record(40_000_000); // beyond the last bucket
        assert_eq!(t.count(), 6);
        assert_eq!(t.quantile_ns(0.5), Some(4_000));
        assert_eq!(t.quantile_ns(0.8), Some(12_000));
        assert_eq!(t.quantile_ns(1.0), Some(40_000_000));
        assert_eq!(t.max_ns(), 40_000_000);
    }
}
