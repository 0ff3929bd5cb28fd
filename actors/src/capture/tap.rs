//! Timestamped audio out of a device callback: the samples go through one
//! SPSC ring, and each callback adds a mark (how many samples so far, and
//! when) to a second ring, so a reader off the audio thread can line up
//! two streams by time (SPEC D4). Writing takes no lock and allocates
//! nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer, RingBuffer};

/// Marks kept: far more callbacks than one second of samples ever needs.
const MARKS: usize = 1024;

/// One callback's delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Samples pushed through the ring up to the end of this callback.
    pub end: u64,
    /// When the callback ran, on [`now_ns`]'s clock.
    pub at_ns: u64,
}

/// Nanoseconds on one monotonic clock shared by every callback of the
/// process (cpal's own timestamps are per stream).
#[must_use]
pub fn now_ns() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// What the callback holds: the writing ends.
pub struct TapWriter {
    samples: Producer<f32>,
    marks: Producer<Mark>,
    pushed: u64,
    shared: Arc<TapShared>,
    clock: fn() -> u64,
}

/// What the reader holds.
pub struct TapReader {
    /// The samples, interleaved as written.
    pub samples: Consumer<f32>,
    /// One mark per callback.
    pub marks: Consumer<Mark>,
    shared: Arc<TapShared>,
    rate: u32,
    channels: usize,
}

#[derive(Debug, Default)]
struct TapShared {
    /// Samples the ring had no room for.
    dropped: AtomicU64,
    /// The device's latency as the last callback measured it, in µs.
    latency_us: AtomicU64,
}

impl std::fmt::Debug for TapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapReader")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .field("queued", &self.samples.slots())
            .finish_non_exhaustive()
    }
}

/// A tap holding `capacity` samples of `channels`-channel audio at `rate`.
#[must_use]
pub fn tap(rate: u32, channels: usize, capacity: usize) -> (TapWriter, TapReader) {
    // Start the shared clock here, not on the audio thread.
    let _ = now_ns();
    tap_with_clock(rate, channels, capacity, now_ns)
}

/// A tap whose marks read `clock` instead of [`now_ns`]: simulations of
/// device timing.
#[must_use]
pub fn tap_with_clock(
    rate: u32,
    channels: usize,
    capacity: usize,
    clock: fn() -> u64,
) -> (TapWriter, TapReader) {
    let (samples_tx, samples) = RingBuffer::new(capacity.max(1));
    let (marks_tx, marks) = RingBuffer::new(MARKS);
    let shared = Arc::new(TapShared::default());
    (
        TapWriter {
            samples: samples_tx,
            marks: marks_tx,
            pushed: 0,
            shared: Arc::clone(&shared),
            clock,
        },
        TapReader {
            samples,
            marks,
            shared,
            rate,
            channels,
        },
    )
}

impl TapWriter {
    /// Pushes interleaved samples as they are. Runs on the audio thread.
    pub fn push(&mut self, data: &[f32]) {
        let (_, rest) = self.samples.push_partial_slice(data);
        self.account(data.len(), rest.len());
    }

    /// Pushes 16-bit samples as f32. Runs on the audio thread.
    pub fn push_i16(&mut self, data: &[i16]) {
        let n = data.len().min(self.samples.slots());
        if let Ok(chunk) = self.samples.write_chunk_uninit(n) {
            chunk.fill_from_iter(data.iter().map(|&s| f32::from(s) / 32768.0));
        }
        self.account(data.len(), data.len() - n);
    }

    /// Pushes `n` samples of silence. Runs on the audio thread.
    pub fn push_silence(&mut self, n: usize) {
        let fit = n.min(self.samples.slots());
        if let Ok(chunk) = self.samples.write_chunk_uninit(fit) {
            chunk.fill_from_iter(std::iter::repeat(0.0));
        }
        self.account(n, n - fit);
    }

    /// Pushes the mono mix of `channels`-channel frames. Runs on the audio
    /// thread.
    pub fn push_mono(&mut self, data: &[f32], channels: usize) {
        if channels <= 1 {
            return self.push(data);
        }
        let frames = data.len() / channels;
        let n = frames.min(self.samples.slots());
        let scale = 1.0 / channels as f32;
        if let Ok(chunk) = self.samples.write_chunk_uninit(n) {
            chunk.fill_from_iter(
                data.chunks_exact(channels)
                    .map(|f| f.iter().sum::<f32>() * scale),
            );
        }
        self.account(frames, frames - n);
    }

    fn account(&mut self, offered: usize, dropped: usize) {
        self.pushed += (offered - dropped) as u64;
        if dropped > 0 {
            self.shared
                .dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        // A lost mark only makes the next one cover two callbacks.
        let _ = self.marks.push(Mark {
            end: self.pushed,
            at_ns: (self.clock)(),
        });
    }

    /// Records the device latency the callback reported.
    pub fn set_latency(&self, latency: Option<Duration>) {
        if let Some(d) = latency {
            let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            self.shared.latency_us.store(us, Ordering::Relaxed);
        }
    }
}

impl TapReader {
    /// Samples per second.
    #[must_use]
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Interleaved channels.
    #[must_use]
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Samples dropped because the reader lagged.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The device's latency as last measured.
    #[must_use]
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.shared.latency_us.load(Ordering::Relaxed))
    }

    /// Whether the writer is gone (its stream was closed).
    #[must_use]
    pub fn closed(&self) -> bool {
        self.samples.is_abandoned()
    }

    /// Hands each delivered callback's samples to `sink` with the
    /// callback's time, in order. Returns whether anything came.
    pub fn drain(&mut self, consumed: &mut u64, mut sink: impl FnMut(&[f32], u64)) -> bool {
        let mut any = false;
        while let Ok(mark) = self.marks.pop() {
            any = true;
            let want = usize::try_from(mark.end.saturating_sub(*consumed)).unwrap_or(usize::MAX);
            let n = want.min(self.samples.slots());
            if let Ok(chunk) = self.samples.read_chunk(n) {
                let (a, b) = chunk.as_slices();
                sink(a, mark.at_ns);
                if !b.is_empty() {
                    sink(b, mark.at_ns);
                }
                chunk.commit_all();
            }
            *consumed = mark.end;
        }
        any
    }

    /// Throws away everything queued: audio from before a reader cared.
    /// `consumed` is kept as [`TapReader::drain`] keeps it.
    pub fn discard(&mut self, consumed: &mut u64) {
        self.drain(consumed, |_, _| ());
    }
}

#[cfg(test)]
mod tests {
    use super::tap;

    #[test]
    fn marks_line_up_with_samples_and_drops_are_counted() {
        let (mut w, mut r) = tap(48_000, 2, 8);
        w.push_mono(&[1.0, 3.0, -1.0, -1.0], 2);
        w.push_i16(&[16384]);
        w.push(&[0.5; 10]); // 5 fit, 5 dropped
        let mut got = Vec::new();
        let mut consumed = 0;
        assert!(r.drain(&mut consumed, |s, _| got.push(s.to_vec())));
        assert_eq!(got, vec![vec![2.0, -1.0], vec![0.5], vec![0.5; 5]]);
        assert_eq!(consumed, 8);
        assert_eq!(r.dropped(), 5);
        w.push(&[0.25; 3]);
        r.discard(&mut consumed);
        assert_eq!(consumed, 11);
        assert!(!r.drain(&mut consumed, |_, _| panic!("discarded")));
    }
}
