//! The virtual clock: a thread named `sotto-audio` renders one block per
//! block period in real time, sleeping to an absolute deadline, and hands
//! the audio to a capture ring. The fallback when there is no sound card.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtrb::Producer;
use sotto_rt::{Renderer, Telemetry};

use super::guarded_render;

/// A running virtual clock.
#[derive(Debug)]
pub struct VirtualClock {
    stop: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
    thread: Option<JoinHandle<Renderer>>,
}

impl VirtualClock {
    /// Starts the `sotto-audio` thread rendering blocks of `block_frames` in
    /// real time; with `deferred`, rendering waits for [`VirtualClock::run`].
    /// Audio goes into `capture` when given (what does not fit is counted as late).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(
        mut renderer: Renderer,
        telemetry: Arc<Telemetry>,
        block_frames: usize,
        mut capture: Option<Producer<f32>>,
        deferred: bool,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let go = Arc::new(AtomicBool::new(!deferred));
        let go_flag = Arc::clone(&go);
        let rate = renderer.config().sample_rate;
        let channels = renderer.config().channels;
        let block_frames = block_frames.clamp(1, renderer.config().max_block_frames);
        let thread = std::thread::Builder::new()
            .name("sotto-audio".into())
            .spawn(move || {
                super::promote_to_realtime();
                let period = sotto_rt::duration_of(block_frames as u64, rate);
                let mut block = vec![0.0f32; block_frames * channels];
                while !go_flag.load(Ordering::Acquire) && !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_micros(200));
                }
                let start = Instant::now();
                let mut k: u32 = 0;
                while !stop_flag.load(Ordering::Relaxed) {
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
            })?;
        Ok(Self {
            stop,
            go,
            thread: Some(thread),
        })
    }

    /// Starts a deferred clock; the sample clock's zero is now.
    pub fn run(&self) {
        self.go.store(true, Ordering::Release);
    }

    /// Stops the clock and gives the renderer back.
    #[must_use]
    pub fn stop(mut self) -> Option<Renderer> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for VirtualClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
