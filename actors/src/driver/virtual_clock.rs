//! The virtual clock: threads named `sotto-audio-K`, one per render shard,
//! each rendering one block per block period in real time to absolute
//! deadlines counted from one start instant, so every shard counts the same
//! sample clock (SPEC C4). Shard 0 holds the main mix and hands it to a
//! capture ring. The fallback when there is no sound card, and the driver
//! of a server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtrb::Producer;
use sotto_rt::{Renderer, Telemetry};

use super::guarded_render;

/// One render shard: a renderer and the counters its thread keeps.
#[derive(Debug)]
pub struct Shard {
    /// The shard's renderer.
    pub renderer: Renderer,
    /// The renderer's telemetry (its late blocks and render times).
    pub telemetry: Arc<Telemetry>,
}

/// A running virtual clock.
#[derive(Debug)]
pub struct VirtualClock {
    stop: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Renderer>>,
}

impl VirtualClock {
    /// Starts one `sotto-audio` thread rendering blocks of `block_frames`
    /// in real time; with `deferred`, rendering waits for
    /// [`VirtualClock::run`]. Audio goes into `capture` when given (what
    /// does not fit is counted as late).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(
        renderer: Renderer,
        telemetry: Arc<Telemetry>,
        block_frames: usize,
        capture: Option<Producer<f32>>,
        deferred: bool,
    ) -> std::io::Result<Self> {
        Self::start_shards(
            vec![Shard {
                renderer,
                telemetry,
            }],
            block_frames,
            capture,
            deferred,
        )
    }

    /// Starts one thread per shard, `sotto-audio-0` upwards, all rendering
    /// blocks of `block_frames` to deadlines counted from one start
    /// instant. Shard 0's main mix goes into `capture` when given; the
    /// other shards' main mix is discarded (their outputs do not feed it).
    ///
    /// # Errors
    /// A thread could not be spawned (those already started are stopped).
    pub fn start_shards(
        shards: Vec<Shard>,
        block_frames: usize,
        mut capture: Option<Producer<f32>>,
        deferred: bool,
    ) -> std::io::Result<Self> {
        let mut clock = Self {
            stop: Arc::new(AtomicBool::new(false)),
            go: Arc::new(AtomicBool::new(!deferred)),
            threads: Vec::with_capacity(shards.len()),
        };
        super::lock_code_in_memory();
        // Set once, by whichever thread sees `go` first: the zero of
        // every shard's sample clock.
        let start = Arc::new(OnceLock::<Instant>::new());
        for (k, shard) in shards.into_iter().enumerate() {
            let capture = if k == 0 { capture.take() } else { None };
            let run = ShardRun {
                shard,
                block_frames,
                capture,
                stop: Arc::clone(&clock.stop),
                go: Arc::clone(&clock.go),
                start: Arc::clone(&start),
            };
            let thread = std::thread::Builder::new()
                .name(format!("sotto-audio-{k}"))
                .spawn(move || run.run())?;
            clock.threads.push(thread);
        }
        Ok(clock)
    }

    /// Starts a deferred clock; the sample clock's zero is now.
    pub fn run(&self) {
        self.go.store(true, Ordering::Release);
    }

    /// Stops the clock and gives shard 0's renderer back.
    #[must_use]
    pub fn stop(mut self) -> Option<Renderer> {
        self.stop.store(true, Ordering::Relaxed);
        let mut first = None;
        for (k, t) in std::mem::take(&mut self.threads).into_iter().enumerate() {
            let renderer = t.join().ok();
            if k == 0 {
                first = renderer;
            }
        }
        first
    }
}

impl Drop for VirtualClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What one shard's thread owns.
struct ShardRun {
    shard: Shard,
    block_frames: usize,
    capture: Option<Producer<f32>>,
    stop: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
    start: Arc<OnceLock<Instant>>,
}

impl ShardRun {
    fn run(self) -> Renderer {
        let Self {
            shard: Shard {
                mut renderer,
                telemetry,
            },
            block_frames,
            mut capture,
            stop,
            go,
            start,
        } = self;
        super::promote_to_realtime();
        let rate = renderer.config().sample_rate;
        let channels = renderer.config().channels;
        let block_frames = block_frames.clamp(1, renderer.config().max_block_frames);
        let period = sotto_rt::duration_of(block_frames as u64, rate);
        let mut block = vec![0.0f32; block_frames * channels];
        while !go.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_micros(200));
        }
        let start = *start.get_or_init(Instant::now);
        let mut k: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            let began = Instant::now();
            guarded_render(&mut renderer, &mut block, &telemetry);
            let took = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
            telemetry.render_times.record(took);
            if let Some(tx) = capture.as_mut() {
                let (_, rest) = tx.push_partial_slice(&block);
                if !rest.is_empty() {
                    telemetry.late_blocks.fetch_add(1, Ordering::Relaxed);
                }
            }
            k = k.wrapping_add(1);
            let deadline = start + period * k;
            let now = Instant::now();
            if now > deadline {
                telemetry.late_blocks.fetch_add(1, Ordering::Relaxed);
            } else {
                std::thread::sleep(deadline - now);
            }
        }
        renderer
    }
}
