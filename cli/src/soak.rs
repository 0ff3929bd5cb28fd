//! Soak runs (`sotto soak`): many sessions speaking generated TTS in
//! realistic bursts — chunks faster than real time, then pauses — with
//! background beds, random interrupts, pause/resume and snapshots, on the
//! virtual clock in real time (or offline), ending in a report of what
//! held: late blocks, underruns, dropped input, block render times,
//! interrupt-to-fade latency, CPU and memory. With calls, every session
//! has an output of its own read frame by frame by a task of its own, and
//! the report adds the frames read, lost and the pts gaps seen.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::scenario::RenderClock;

use sotto::{
    Clock, Engine, EngineConfig, EngineError, Frame, OutputConfig, OutputFrames, SessionConfig,
    SessionEventKind, SessionHandle, SessionOutput,
};

/// Output rate of a soak.
const RATE: u32 = 24_000;
/// 100 ms of speech per pushed chunk.
const CHUNK_FRAMES: usize = 2_400;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakConfig {
    /// Concurrent sessions.
    pub sessions: usize,
    /// Length of the run.
    pub seconds: f64,
    /// A background bed under every session.
    pub background: bool,
    /// Mean seconds between a session's interrupts; `None`: never.
    pub interrupt_every: Option<f64>,
    /// The clock: virtual (real time) or offline (as fast as possible,
    /// nothing can be late); a soak plays to no device.
    pub clock: RenderClock,
    /// Seed of the sessions' random choices.
    pub seed: u64,
    /// Every session is a call (SPEC C1–C3): an output of its own, read
    /// frame by frame by a task of its own as a network sender would.
    pub calls: bool,
    /// Render shards on the virtual clock (SPEC C4).
    pub render_threads: usize,
}

/// What one render shard did over a soak.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ShardReport {
    /// Sessions on the shard at the end.
    pub sessions: usize,
    /// Blocks it rendered.
    pub blocks: u64,
    /// Of them, rendered after their deadline.
    pub late_blocks: u64,
    /// Its block render time in µs.
    pub block_render_us: Spread,
}

/// Percentiles of a distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// What a soak measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SoakReport {
    /// Sessions run.
    pub sessions: usize,
    /// Seconds run (wall time).
    pub seconds: f64,
    /// Blocks rendered.
    pub blocks: u64,
    /// Blocks rendered after their deadline, every shard.
    pub late_blocks: u64,
    /// Each render shard, shard 0 (the main mix) first.
    pub shards: Vec<ShardReport>,
    /// Times a speech queue ran dry in the middle of a turn.
    pub underruns: u64,
    /// Bytes of input dropped (pushed while input was off).
    pub dropped_input_bytes: u64,
    /// Events lost because the event ring was full.
    pub events_dropped: u64,
    /// Block render time in µs, of the shard with the slowest p99.
    pub block_render_us: Spread,
    /// Samples from an interrupt being sent to its fade starting.
    pub interrupt_to_fade_samples: Spread,
    /// Interrupts measured.
    pub interrupts: u64,
    /// Turns completed.
    pub turns: u64,
    /// CPU used, in percent of one core, over the run.
    pub cpu_percent: f64,
    /// Largest resident set, KiB.
    pub rss_peak_kib: u64,
    /// Resident set at the end, KiB.
    pub rss_final_kib: u64,
    /// Resident set growth after the first tenth of the run, KiB per
    /// minute (least squares).
    pub rss_slope_kib_per_min: f64,
    /// Time the host (hypervisor) ran something else while this machine's
    /// CPUs wanted to run, in percent of all CPUs over the run: the
    /// machine's own steal counter. No scheduling inside the guest can
    /// keep a deadline through it.
    pub host_steal_percent: f64,
    /// Seconds of the run in which the host took more than 5% of a CPU.
    pub stolen_seconds: u64,
    /// Of `late_blocks`, those in a second in which the host took more
    /// than 5% of a CPU.
    pub late_blocks_while_stolen: u64,
    /// Page faults that waited for the disk during the run (after start).
    pub major_faults: u64,
    /// Moments the whole machine ran nothing for over 50 ms (a real-time
    /// watch thread woke that late): no deadline can be kept through one.
    pub machine_pauses: u64,
    /// The longest of them, ms.
    pub machine_pause_max_ms: f64,
    /// Of `late_blocks`, those in a second with a machine pause.
    pub late_blocks_while_paused: u64,
    /// The seconds with late blocks: when (seconds into the run) and how
    /// many, to find them in a trace of the same run.
    pub late_seconds: Vec<(f64, u64)>,
    /// When the run started, in seconds since the Unix epoch (a trace
    /// taken with a real-time clock lines up with `late_seconds`).
    pub started_unix_s: f64,
    /// With calls: 20 ms frames the calls' readers took.
    pub frames_read: u64,
    /// With calls: frames lost to a reader that fell behind its bound.
    pub frames_lost: u64,
    /// With calls: times a frame's pts did not follow the previous one's.
    pub pts_gaps: u64,
}

/// A small deterministic generator for the sessions' choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

/// What the session tasks share with the run.
#[derive(Default)]
struct SoakState {
    stop: AtomicBool,
    turns: AtomicU64,
    dropped_input: AtomicU64,
    latencies: Mutex<Vec<u64>>,
    frames_read: AtomicU64,
    frames_lost: AtomicU64,
    pts_gaps: AtomicU64,
}

/// Runs a soak; `progress` is called about once a second with the seconds
/// elapsed and the report so far.
///
/// # Errors
/// [`EngineError`] when the engine or a session cannot start.
pub async fn run(
    config: &SoakConfig,
    mut progress: impl FnMut(f64, &SoakReport),
) -> Result<SoakReport, EngineError> {
    if config.sessions == 0
        || config.sessions > 65_536
        || config.seconds.is_nan()
        || config.seconds <= 0.0
    {
        return Err(EngineError::Config(
            "a soak needs 1..=65536 sessions and a positive length".into(),
        ));
    }
    if matches!(config.clock, RenderClock::Device(_)) {
        return Err(EngineError::Config(
            "a soak runs on the virtual or the offline clock".into(),
        ));
    }
    let engine = Engine::start(EngineConfig {
        sample_rate: RATE,
        max_sessions: config.sessions,
        clock: match config.clock {
            RenderClock::Virtual | RenderClock::Device(_) => Clock::Virtual {
                capture: None,
                deferred: false,
            },
            RenderClock::Offline => Clock::Offline,
        },
        render_threads: config.render_threads,
        ..EngineConfig::default()
    })
    .await?;
    let shared = Arc::new(SoakState::default());
    let speech = speech_chunk(220.0);
    let bed = speech_chunk(90.0);
    let mut tasks = Vec::new();
    let mut handles = Vec::new();
    let mut readers = Vec::new();
    let mut offline_calls: Vec<CallReader> = Vec::new();
    for i in 0..config.sessions {
        let s = engine
            .create_session(SessionConfig {
                name: format!("s{i}"),
                queue: Duration::from_secs(5),
                output: if config.calls {
                    SessionOutput::Own(OutputConfig {
                        // A call plays to its own user only; offline, the
                        // run reads a second at a time.
                        also_main: false,
                        bound: match config.clock {
                            RenderClock::Virtual | RenderClock::Device(_) => {
                                OutputConfig::default().bound
                            }
                            RenderClock::Offline => Duration::from_secs(2),
                        },
                        ..OutputConfig::default()
                    })
                } else {
                    SessionOutput::Main
                },
                ..SessionConfig::default()
            })
            .await?;
        handles.push(s.clone());
        if config.calls {
            let frames = s.frames().map_err(|e| EngineError::Config(e.to_string()))?;
            match config.clock {
                RenderClock::Virtual | RenderClock::Device(_) => {
                    readers.push(tokio::spawn(read_call(frames, Arc::clone(&shared))));
                }
                RenderClock::Offline => offline_calls.push(CallReader::new(frames)),
            }
        }
        let rng = Rng(config.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)) | 1);
        tasks.push(tokio::spawn(session_loop(
            s,
            engine.clone(),
            Arc::clone(&shared),
            rng,
            config.clone(),
            Arc::clone(&speech),
            config.background.then(|| Arc::clone(&bed)),
        )));
    }
    let started = Instant::now();
    let cpu0 = crate::measure::cpu_seconds();
    let faults0 = crate::measure::major_faults();
    let steal0 = crate::measure::steal_ticks();
    let (mut steal_then, mut late_then) = (steal0, 0);
    let watch = crate::measure::PauseWatch::start().ok();
    let mut pauses_then = 0;
    let mut rss = Vec::new();
    let mut report = SoakReport {
        sessions: config.sessions,
        started_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        ..SoakReport::default()
    };
    let mut offline_out = Vec::new();
    loop {
        let elapsed = started.elapsed().as_secs_f64();
        if elapsed >= config.seconds {
            break;
        }
        match config.clock {
            RenderClock::Virtual | RenderClock::Device(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            RenderClock::Offline => {
                // One second of audio per step, as fast as it renders.
                offline_out.clear();
                engine
                    .render_into(u64::from(RATE), &mut offline_out)
                    .await?;
                for call in &mut offline_calls {
                    call.drain(&shared);
                }
            }
        }
        rss.push((
            started.elapsed().as_secs_f64(),
            crate::measure::rss().current_kib,
        ));
        fill(
            &mut report,
            (&engine, &handles),
            &shared,
            (started, cpu0, faults0),
            &rss,
        );
        let steal = crate::measure::steal_ticks();
        // Ticks are hundredths of a second: over 5 in a second is over 5%
        // of a CPU.
        if steal.saturating_sub(steal_then) > 5 {
            report.stolen_seconds += 1;
            report.late_blocks_while_stolen += report.late_blocks - late_then;
        }
        if let Some(w) = &watch {
            let p = w.pauses();
            report.machine_pauses = p.count.load(Ordering::Relaxed);
            report.machine_pause_max_ms = p.longest_us.load(Ordering::Relaxed) as f64 / 1e3;
            if report.machine_pauses > pauses_then {
                report.late_blocks_while_paused += report.late_blocks - late_then;
            }
            pauses_then = report.machine_pauses;
        }
        if report.late_blocks > late_then {
            let at = started.elapsed().as_secs_f64();
            report
                .late_seconds
                .push((at, report.late_blocks - late_then));
        }
        (steal_then, late_then) = (steal, report.late_blocks);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        report.host_steal_percent =
            steal.saturating_sub(steal0) as f64 / (report.seconds * cpus).max(1e-9);
        progress(started.elapsed().as_secs_f64(), &report);
    }
    shared.stop.store(true, Ordering::Release);
    // The tasks only make input; what they were waiting for no longer matters.
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    for r in &readers {
        r.abort();
    }
    for r in readers {
        let _ = r.await;
    }
    fill(
        &mut report,
        (&engine, &handles),
        &shared,
        (started, cpu0, faults0),
        &rss,
    );
    engine.shutdown().await;
    Ok(report)
}

/// 100 ms of a voice-like tone (a fundamental and a partial) as s16 bytes.
fn speech_chunk(f0: f32) -> Arc<Vec<u8>> {
    let f0 = f64::from(f0);
    let low = crate::signal::sine(CHUNK_FRAMES, f0, RATE, 1, 5000.0 / 32768.0);
    let high = crate::signal::sine(CHUNK_FRAMES, f0 * 3.1, RATE, 1, 1500.0 / 32768.0);
    let voice: Vec<f32> = low.iter().zip(&high).map(|(a, b)| a + b).collect();
    Arc::new(crate::signal::s16_bytes(&voice))
}

/// One session: turns of 1–4 s of speech pushed at five times real time,
/// 0.5–3 s apart, with interrupts, pauses and snapshots.
async fn session_loop(
    s: SessionHandle,
    engine: Engine,
    shared: Arc<SoakState>,
    mut rng: Rng,
    config: SoakConfig,
    speech: Arc<Vec<u8>>,
    bed: Option<Arc<Vec<u8>>>,
) {
    let mut events = s.events();
    let mut sent_at: Vec<u64> = Vec::new();
    let drain = |events: &mut tokio::sync::mpsc::Receiver<sotto::SessionEvent>,
                 sent_at: &mut Vec<u64>| {
        while let Ok(e) = events.try_recv() {
            match e.kind {
                SessionEventKind::Interrupted { .. } if !sent_at.is_empty() => {
                    let sent = sent_at.remove(0);
                    if let Ok(mut l) = shared.latencies.lock() {
                        l.push(e.at.0.saturating_sub(sent));
                    }
                }
                SessionEventKind::DroppedInput { bytes } => {
                    shared.dropped_input.fetch_add(bytes, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    };
    // Stagger the starts over the first second.
    tokio::time::sleep(Duration::from_secs_f64(rng.between(0.0, 1.0))).await;
    if let Some(bed) = bed {
        tokio::spawn(bed_loop(s.clone(), Arc::clone(&shared), bed));
    }
    while !shared.stop.load(Ordering::Acquire) {
        let chunks = rng.between(10.0, 40.0) as usize;
        let interrupt_at = config
            .interrupt_every
            .filter(|&every| rng.next() < 2.5 / every.max(0.1))
            .map(|_| rng.between(2.0, chunks as f64 - 1.0).max(1.0) as usize);
        let pause_at = (rng.next() < 0.1).then(|| rng.between(1.0, chunks as f64) as usize);
        if s.mark_synthesis_start().is_err() {
            return;
        }
        for k in 0..chunks {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            // Sent at once; the outcome is not needed.
            drop(s.push(speech.to_vec()));
            if Some(k) == pause_at {
                let _ = s.pause();
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = s.resume();
            }
            if Some(k) == interrupt_at {
                sent_at.push(engine.clock().0);
                let _ = s.interrupt();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            drain(&mut events, &mut sent_at);
        }
        let _ = s.mark_synthesis_complete();
        if rng.next() < 0.3 {
            let _ = s.snapshot_playback().await;
        }
        shared.turns.fetch_add(1, Ordering::Relaxed);
        let gap = rng.between(0.5, 3.0) + chunks as f64 * 0.1;
        tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        drain(&mut events, &mut sent_at);
    }
}

/// A bed streamed like a live source: kept half a second ahead of what
/// the background input has played, so it never holds up speech behind
/// backpressure.
async fn bed_loop(s: SessionHandle, shared: Arc<SoakState>, bed: Arc<Vec<u8>>) {
    let mut pushed = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !shared.stop.load(Ordering::Acquire) {
        tick.tick().await;
        let played = s.stats().background_frames.get();
        if pushed.saturating_sub(played) < (RATE / 2).into() {
            drop(s.push_background(bed.to_vec()));
            pushed += CHUNK_FRAMES as u64;
        }
    }
}

/// One call's frames as its reader sees them: pts continuity and losses.
struct CallReader {
    frames: OutputFrames,
    next_pts: Option<u64>,
    lost: u64,
}

impl CallReader {
    fn new(frames: OutputFrames) -> Self {
        Self {
            frames,
            next_pts: None,
            lost: 0,
        }
    }

    fn take(&mut self, frame: &Frame, shared: &SoakState) {
        if self.next_pts.is_some_and(|p| p != frame.pts.0) {
            shared.pts_gaps.fetch_add(1, Ordering::Relaxed);
        }
        self.next_pts = Some(frame.pts.0 + frame.frames() as u64);
        shared.frames_read.fetch_add(1, Ordering::Relaxed);
        let lost = self.frames.lost_frames();
        shared
            .frames_lost
            .fetch_add(lost - self.lost, Ordering::Relaxed);
        self.lost = lost;
    }

    fn drain(&mut self, shared: &SoakState) {
        while let Some(frame) = self.frames.try_next_frame() {
            self.take(&frame, shared);
        }
    }
}

/// A call's reader on a real-time clock: every frame as it comes, as a
/// network sender would take them.
async fn read_call(frames: OutputFrames, shared: Arc<SoakState>) {
    let mut call = CallReader::new(frames);
    while let Ok(frame) = call.frames.next_frame().await {
        call.take(&frame, &shared);
    }
}

fn fill(
    report: &mut SoakReport,
    (engine, handles): (&Engine, &[SessionHandle]),
    shared: &SoakState,
    (started, cpu0, faults0): (Instant, f64, u64),
    rss: &[(f64, u64)],
) {
    let t = engine.stats();
    let secs = started.elapsed().as_secs_f64();
    report.seconds = secs;
    report.blocks = t.blocks;
    report.late_blocks = t.late_blocks;
    report.events_dropped = t.events_dropped;
    let us = |ns: Option<u64>| ns.map_or(0.0, |n| n as f64 / 1e3);
    report.shards = engine
        .shards()
        .iter()
        .map(|s| ShardReport {
            sessions: s.sessions,
            blocks: s.blocks,
            late_blocks: s.late_blocks,
            block_render_us: Spread {
                p50: us(s.render_p50_ns),
                p99: us(s.render_p99_ns),
                max: s.render_max_ns as f64 / 1e3,
            },
        })
        .collect();
    report.block_render_us = report
        .shards
        .iter()
        .map(|s| s.block_render_us)
        .max_by(|a, b| a.p99.total_cmp(&b.p99))
        .unwrap_or_default();
    report.underruns = handles.iter().map(|h| h.stats().underruns).sum();
    report.dropped_input_bytes = shared.dropped_input.load(Ordering::Relaxed);
    report.frames_read = shared.frames_read.load(Ordering::Relaxed);
    report.frames_lost = shared.frames_lost.load(Ordering::Relaxed);
    report.pts_gaps = shared.pts_gaps.load(Ordering::Relaxed);
    report.turns = shared.turns.load(Ordering::Relaxed);
    if let Ok(l) = shared.latencies.lock() {
        let mut v: Vec<f64> = l.iter().map(|&x| x as f64).collect();
        v.sort_by(f64::total_cmp);
        report.interrupts = v.len() as u64;
        report.interrupt_to_fade_samples = spread(&v);
    }
    report.cpu_percent = (crate::measure::cpu_seconds() - cpu0) / secs.max(1e-9) * 100.0;
    report.major_faults = crate::measure::major_faults().saturating_sub(faults0);
    let crate::measure::Rss {
        current_kib: now,
        peak_kib: peak,
    } = crate::measure::rss();
    report.rss_final_kib = now;
    report.rss_peak_kib = peak;
    report.rss_slope_kib_per_min = slope(rss, secs / 10.0) * 60.0;
}

fn spread(sorted: &[f64]) -> Spread {
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    Spread {
        p50: at(0.5),
        p99: at(0.99),
        max: sorted.last().copied().unwrap_or(0.0),
    }
}

/// Least-squares slope of `(t, kib)` after `skip` seconds, in KiB/s.
fn slope(points: &[(f64, u64)], skip: f64) -> f64 {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.0 >= skip)
        .map(|&(t, k)| (t, k as f64))
        .collect();
    if pts.len() < 2 {
        return 0.0;
    }
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let num: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}
