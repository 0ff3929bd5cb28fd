//! The live echo path (SPEC D4): the output callback's reverse stream and
//! the input callback's capture meet here, on a processing thread, never
//! in a callback — the processing module takes locks inside.
//!
//! Both callbacks stamp what they deliver with one monotonic clock. The
//! processing thread cuts each stream into 10 ms chunks and hands them to
//! the module in the order they were delivered, as a device module calling
//! it from the callbacks would, with the stream delay set from the two
//! devices' latencies as the callbacks last measured them. When the output
//! moves (a reopened or followed device) the new stream's reverse tap is
//! published in a [`ReverseSlot`] and picked up at the next frame.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rtrb::Producer;

use crate::capture::tap::{now_ns, TapReader};
use crate::ingest::Resample;
use sotto_media::echo::{EchoConfig, EchoError, EchoPath, CHUNK, RATE};

/// How long a frame waits for the other stream to catch up before it is
/// processed anyway (that stream stalled or is gone).
const HOLD_NS: u64 = 50_000_000;

/// How often the thread looks for work when there was none.
const IDLE: Duration = Duration::from_millis(2);

/// Where the current output's reverse stream is published for the echo
/// path to pick up. Shared by the device side and every echo path.
#[derive(Debug, Default)]
pub struct ReverseSlot {
    generation: AtomicU64,
    stream: Mutex<Option<TapReader>>,
}

impl ReverseSlot {
    /// An empty slot.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Publishes the reverse stream of a newly opened output (`None`: no
    /// output plays to a speaker any more).
    pub fn publish(&self, stream: Option<TapReader>) {
        if let Ok(mut slot) = self.stream.lock() {
            *slot = stream;
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The newest stream if it changed since `seen`.
    fn take_newer(&self, seen: &mut u64) -> Option<Option<TapReader>> {
        let now = self.generation.load(Ordering::Acquire);
        if now == *seen {
            return None;
        }
        let mut slot = self.stream.lock().ok()?;
        *seen = self.generation.load(Ordering::Acquire);
        Some(slot.take())
    }
}

/// Counters of one echo path, readable while it runs: how an application
/// checks that echo cancellation sees both streams.
#[derive(Debug, Default)]
pub struct EchoStats {
    render_frames: AtomicU64,
    capture_frames: AtomicU64,
    dropped_chunks: AtomicU64,
    delay_ms: AtomicU64,
    rebinds: AtomicU64,
    errors: AtomicU64,
}

impl EchoStats {
    /// 10 ms chunks of the reverse stream given to the module.
    #[must_use]
    pub fn render_frames(&self) -> u64 {
        self.render_frames.load(Ordering::Relaxed)
    }

    /// 10 ms microphone frames cleaned.
    #[must_use]
    pub fn capture_frames(&self) -> u64 {
        self.capture_frames.load(Ordering::Relaxed)
    }

    /// Cleaned frames dropped because the consumer lagged.
    #[must_use]
    pub fn dropped_chunks(&self) -> u64 {
        self.dropped_chunks.load(Ordering::Relaxed)
    }

    /// The stream delay in use: output plus input latency, in ms.
    #[must_use]
    pub fn delay_ms(&self) -> u64 {
        self.delay_ms.load(Ordering::Relaxed)
    }

    /// Reverse streams bound so far (one per output opened while the path
    /// ran, including the first).
    #[must_use]
    pub fn rebinds(&self) -> u64 {
        self.rebinds.load(Ordering::Relaxed)
    }

    /// Frames the module refused.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// 10 ms of mono audio at [`RATE`] and when it was delivered.
struct Frame {
    at_ns: u64,
    samples: Box<[f32]>,
}

/// One incoming stream, cut into frames.
#[derive(Default)]
struct Side {
    reader: Option<TapReader>,
    consumed: u64,
    /// The newest callback seen on this stream.
    latest_ns: Option<u64>,
    acc: Vec<f32>,
    mono: Vec<f32>,
    frames: VecDeque<Frame>,
    resample: Option<Resample>,
    stale_before: u64,
}

impl Side {
    /// Switches to a new stream. Frames already cut from the old one stay
    /// queued: they were played, so the microphone may still hear them.
    /// Audio delivered before `now_ns` by more than the hold was played
    /// before anyone listened: the microphone does not hear it any more.
    fn bind(&mut self, reader: Option<TapReader>, now_ns: u64) -> Result<(), EchoError> {
        self.pull();
        let frames = std::mem::take(&mut self.frames);
        *self = Self {
            frames,
            stale_before: now_ns.saturating_sub(HOLD_NS),
            ..Self::default()
        };
        if let Some(r) = reader {
            if r.rate() != RATE {
                let resample =
                    Resample::new(r.rate(), RATE, 1).map_err(|e| EchoError::new(e.to_string()))?;
                self.resample = Some(resample);
            }
            self.reader = Some(r);
        }
        Ok(())
    }

    /// Takes in what the callbacks delivered. Returns whether anything came.
    fn pull(&mut self) -> bool {
        let Self {
            reader,
            consumed,
            latest_ns,
            acc,
            mono,
            frames,
            resample,
            stale_before,
        } = self;
        let Some(r) = reader.as_mut() else {
            return false;
        };
        let channels = r.channels().max(1);
        let any = r.drain(consumed, |samples, at| {
            *latest_ns = Some(at);
            if at < *stale_before {
                return;
            }
            mono.clear();
            if channels == 1 {
                mono.extend_from_slice(samples);
            } else {
                let scale = 1.0 / channels as f32;
                mono.extend(
                    samples
                        .chunks_exact(channels)
                        .map(|f| f.iter().sum::<f32>() * scale),
                );
            }
            match resample {
                Some(rs) => rs.push(mono, acc),
                None => acc.extend_from_slice(mono),
            }
            let whole = acc.len() / CHUNK * CHUNK;
            for piece in acc[..whole].chunks_exact(CHUNK) {
                frames.push_back(Frame {
                    at_ns: at,
                    samples: piece.into(),
                });
            }
            acc.drain(..whole);
        });
        if !any && r.closed() {
            // The output stream is gone: nothing more will come.
            *reader = None;
        }
        any
    }

    /// Whether the stream has delivered everything up to `at_ns`, or is
    /// not there to wait for.
    fn caught_up(&self, at_ns: u64, now: u64) -> bool {
        self.reader.is_none()
            || self.latest_ns.is_some_and(|l| l >= at_ns)
            || at_ns.saturating_add(HOLD_NS) <= now
    }
}

/// The pairing of the two streams and the module: the processing thread's
/// whole work, one [`EchoLink::step`] at a time.
pub struct EchoLink {
    path: EchoPath,
    render: Side,
    capture: Side,
    slot: Arc<ReverseSlot>,
    seen: u64,
    out: Producer<f32>,
    stats: Arc<EchoStats>,
}

impl std::fmt::Debug for EchoLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoLink")
            .field("path", &self.path)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl EchoLink {
    /// A link cleaning `capture` (48 kHz, any channels, mixed to mono)
    /// against the reverse stream published in `slot`, writing cleaned
    /// mono frames to `out` (the newest dropped and counted when full).
    ///
    /// # Errors
    /// [`EchoError`] when the capture is not at 48 kHz or the module
    /// cannot be created.
    pub fn new(
        config: EchoConfig,
        capture: TapReader,
        slot: Arc<ReverseSlot>,
        out: Producer<f32>,
    ) -> Result<Self, EchoError> {
        if capture.rate() != RATE {
            return Err(EchoError::new(format!(
                "the capture runs at {} Hz, echo processing at {RATE} Hz",
                capture.rate()
            )));
        }
        let mut link = Self {
            path: EchoPath::new(config)?,
            render: Side::default(),
            capture: Side::default(),
            slot,
            seen: 0,
            out,
            stats: Arc::new(EchoStats::default()),
        };
        link.capture.bind(Some(capture), 0)?;
        Ok(link)
    }

    /// The link's counters.
    #[must_use]
    pub fn stats(&self) -> Arc<EchoStats> {
        Arc::clone(&self.stats)
    }

    /// Takes in what both callbacks delivered and processes every frame
    /// whose turn has come by `now_ns`. Returns whether anything happened.
    pub fn step(&mut self, now_ns: u64) -> bool {
        if let Some(reverse) = self.slot.take_newer(&mut self.seen) {
            let bound = reverse.is_some();
            if self.render.bind(reverse, now_ns).is_err() {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            } else if bound {
                self.stats.rebinds.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut busy = self.render.pull();
        busy |= self.capture.pull();
        loop {
            let r = self.render.frames.front().map(|f| f.at_ns);
            let c = self.capture.frames.front().map(|f| f.at_ns);
            let render_first = match (r, c) {
                (Some(r), Some(c)) => r <= c,
                (Some(r), None) if self.capture.caught_up(r, now_ns) => true,
                (None, Some(c)) if self.render.caught_up(c, now_ns) => false,
                _ => break,
            };
            if render_first {
                self.process_render();
            } else {
                self.process_capture();
            }
            busy = true;
        }
        busy
    }

    fn process_render(&mut self) {
        let Some(frame) = self.render.frames.pop_front() else {
            return;
        };
        match self.path.process_render(&frame.samples) {
            Ok(()) => self.stats.render_frames.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.errors.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn process_capture(&mut self) {
        let Some(mut frame) = self.capture.frames.pop_front() else {
            return;
        };
        if let Some(reverse) = &self.render.reader {
            let input = self.capture.reader.as_ref().map(TapReader::latency);
            let delay = reverse.latency() + input.unwrap_or_default();
            let ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
            self.path.set_delay_ms(ms);
            self.stats
                .delay_ms
                .store(u64::from(self.path.delay_ms()), Ordering::Relaxed);
        }
        if self.path.process_capture(&mut frame.samples).is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.capture_frames.fetch_add(1, Ordering::Relaxed);
        if self.out.slots() >= CHUNK {
            let _ = self.out.push_partial_slice(&frame.samples);
        } else {
            self.stats.dropped_chunks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The processing thread running an [`EchoLink`]; stops when dropped.
#[derive(Debug)]
pub struct EchoThread {
    stop: Arc<AtomicBool>,
    stats: Arc<EchoStats>,
    thread: Option<JoinHandle<()>>,
}

impl EchoThread {
    /// Starts a thread named `sotto-echo` running the link of
    /// [`EchoLink::new`].
    ///
    /// # Errors
    /// As [`EchoLink::new`], or when the thread cannot start.
    pub fn spawn(
        capture: TapReader,
        config: EchoConfig,
        slot: Arc<ReverseSlot>,
        out: Producer<f32>,
    ) -> Result<Self, EchoError> {
        let mut link = EchoLink::new(config, capture, slot, out)?;
        let stats = link.stats();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sotto-echo".into())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    if !link.step(now_ns()) {
                        std::thread::sleep(IDLE);
                    }
                }
            })
            .map_err(|e| EchoError::new(e.to_string()))?;
        Ok(Self {
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The link's counters.
    #[must_use]
    pub fn stats(&self) -> &EchoStats {
        &self.stats
    }
}

impl Drop for EchoThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
