//! Whole-pipeline costs through the Engine on the offline clock: ingest
//! through the session actor, the renderer, the event pump.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sotto::{Engine, EngineConfig, OutputConfig, SessionConfig, SessionOutput};
use sotto_benches::tone_s16;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` streams, each pushed 100 ms of speech and 100 ms of background per
/// 100 ms rendered. Reported per 100 ms of output for all `n` streams.
/// With `calls`, every stream is a call: rendered into an output of its
/// own, whose 20 ms frames are read after each render as a network sender
/// would read them; without, all are summed into the main output.
fn streams(rt: &tokio::runtime::Runtime, g: &mut BenchGroup<'_>, n: usize, calls: bool) {
    let (engine, sessions) = rt.block_on(async {
        let engine = Engine::start(EngineConfig {
            max_sessions: n,
            ..EngineConfig::default()
        })
        .await
        .unwrap();
        let mut s = Vec::new();
        for _ in 0..n {
            let config = SessionConfig {
                output: if calls {
                    SessionOutput::Own(OutputConfig {
                        also_main: false,
                        ..OutputConfig::default()
                    })
                } else {
                    SessionOutput::Main
                },
                ..SessionConfig::default()
            };
            let session = engine.create_session(config).await.unwrap();
            let frames = calls.then(|| session.frames().unwrap());
            s.push((session, frames));
        }
        (engine, s)
    });
    let chunk = tone_s16(2400, 220.0, 24_000);
    let name = format!("{n}_{}_100ms", if calls { "calls" } else { "streams" });
    let shared = std::sync::Arc::new(tokio::sync::Mutex::new(sessions));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            // Timed inside a runtime task, where an application's code runs.
            let (engine, sessions, chunk) = (engine.clone(), shared.clone(), chunk.clone());
            rt.block_on(rt.spawn(async move {
                let mut sessions = sessions.lock().await;
                let t = Instant::now();
                let mut read = 0usize;
                for _ in 0..iters {
                    for (s, _) in sessions.iter() {
                        let _ = s.push(chunk.clone());
                        let _ = s.push_background(chunk.clone());
                    }
                    engine.render(2400).await.unwrap();
                    for (_, frames) in sessions.iter_mut() {
                        if let Some(frames) = frames {
                            while let Some(f) = frames.try_next_frame() {
                                read += std::hint::black_box(f).samples.len();
                            }
                        }
                    }
                }
                let elapsed = t.elapsed();
                assert!(!calls || read >= iters as usize * n * 2_400 - n * 480);
                elapsed
            }))
            .unwrap()
        });
    });
}

/// The memory floor under `pipeline/{n}_calls_100ms`: the same bytes per
/// call moved with nothing else — 100 ms of speech and of background
/// written into rings the size of the session's queues, read once and
/// mixed into a ring the size of the call's output ring, then read once
/// more as 20 ms frames. No pipeline can move a call's audio for less.
fn calls_floor(g: &mut BenchGroup<'_>, n: usize) {
    const CHUNK: usize = 2_400;
    let queue = 24_000; // 1 s, the default speech and background queues
    let output = 2 * 4_800 + 480; // twice the 200 ms bound, and a block
    let mut speech = vec![vec![0.0f32; queue]; n];
    let mut background = vec![vec![0.0f32; queue]; n];
    let mut outputs = vec![vec![0.0f32; output]; n];
    let audio: Vec<f32> = (0..CHUNK).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    let (mut at, mut out_at) = (0, 0);
    g.bench_function(format!("{n}_calls_floor_100ms"), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let mut read = 0.0f32;
            for _ in 0..iters {
                for ((s, bg), o) in speech.iter_mut().zip(&mut background).zip(&mut outputs) {
                    s[at..at + CHUNK].copy_from_slice(&audio);
                    bg[at..at + CHUNK].copy_from_slice(&audio);
                    let mixed = &mut o[out_at..out_at + CHUNK];
                    for ((m, s), b) in mixed
                        .iter_mut()
                        .zip(&s[at..at + CHUNK])
                        .zip(&bg[at..at + CHUNK])
                    {
                        *m = (s + 0.5 * b).clamp(-1.0, 1.0);
                    }
                    for frame in mixed.chunks(480) {
                        read += std::hint::black_box(frame.to_vec())[0];
                    }
                }
                at = (at + CHUNK) % (queue - CHUNK);
                out_at = (out_at + CHUNK) % (output - CHUNK);
            }
            std::hint::black_box(read);
            t.elapsed()
        });
    });
}

type BenchGroup<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The whole path per stream: 64 and 256 streams into the main mix, and
/// the same as calls, each with its own output read frame by frame, and
/// the memory floor of the calls' bytes.
fn bench_pipeline(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("pipeline");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for n in [64, 256] {
        streams(&rt, &mut g, n, false);
        streams(&rt, &mut g, n, true);
        calls_floor(&mut g, n);
    }
    g.finish();
}

/// One 100 ms chunk through the session actor into the ring, with and
/// without resampling; the queue is cleared (untimed) before it fills.
fn bench_ingest(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("ingest_100ms_chunk");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for rate in [24_000u32, 22_050] {
        let (engine, s) = rt.block_on(async {
            let engine = Engine::start(EngineConfig::default()).await.unwrap();
            let mut cfg = SessionConfig::default();
            cfg.input.sample_rate = rate;
            cfg.queue = Duration::from_secs(600);
            let s = engine.create_session(cfg).await.unwrap();
            (engine, s)
        });
        let chunk = tone_s16(rate as usize / 10, 220.0, rate);
        g.bench_function(format!("from_{rate}"), |b| {
            b.iter_custom(|iters| {
                // Timed inside a runtime task, where an application's code runs.
                let (engine, s, chunk) = (engine.clone(), s.clone(), chunk.clone());
                rt.block_on(rt.spawn(async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if s.queued_duration() > Duration::from_secs(500) {
                            s.clear_queue().await.unwrap();
                            engine.render(480).await.unwrap(); // applies the clear
                        }
                        let t = Instant::now();
                        s.push(chunk.clone()).await.unwrap();
                        total += t.elapsed();
                    }
                    total
                }))
                .unwrap()
            });
        });
        rt.block_on(engine.shutdown());
    }
    g.finish();
}

/// Control-side cost of an interrupt with 1 s and 60 s queued: it must not
/// depend on queue depth. The fade is longer than the queue, so each
/// interrupt lands during a tail that keeps the queue deep; it is topped up
/// (untimed) when it falls below 80%. Latency to the first faded sample is
/// the next block by construction (tested sample-exact in the integration
/// tests).
fn bench_interrupt(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("interrupt_control_side");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for queued_s in [1u64, 60] {
        let depth = Duration::from_secs(queued_s);
        let (engine, s) = rt.block_on(async {
            let engine = Engine::start(EngineConfig::default()).await.unwrap();
            let cfg = SessionConfig {
                queue: depth + Duration::from_secs(1),
                fade: depth + Duration::from_secs(1),
                ..Default::default()
            };
            let s = engine.create_session(cfg).await.unwrap();
            (engine, s)
        });
        g.bench_function(format!("{queued_s}s_queued"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let queued = s.queued_duration();
                        if queued < depth.mul_f64(0.8) {
                            let frames = ((depth - queued).as_secs_f64() * 24_000.0) as usize;
                            s.push(tone_s16(frames, 220.0, 24_000)).await.unwrap();
                        }
                        let t = Instant::now();
                        s.interrupt().unwrap();
                        engine.settle().await.unwrap();
                        total += t.elapsed();
                        // Apply it, untimed.
                        engine.render(480).await.unwrap();
                    }
                    total
                })
            });
        });
        rt.block_on(engine.shutdown());
    }
    g.finish();
}

criterion_group!(benches, bench_pipeline, bench_ingest, bench_interrupt);
criterion_main!(benches);
