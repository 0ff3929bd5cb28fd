//! Render cost of the real-time core: speech + background on every voice,
//! an active fade tail on a quarter of them, 10 ms blocks.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use sotto_rt::FromSlot;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sotto_actors::capture::tap::tap;
use sotto_actors::driver::device::render_i16;
use sotto_rt::{
    ClipCommand, Renderer, RendererConfig, Saturation, SessionId, StreamPos, Voice, VoiceCommand,
    VoiceConfig, VoiceControl,
};

struct Fed {
    control: VoiceControl,
    pushed: u64,
    fading: bool,
}

fn setup(sessions: usize, rate: u32) -> (Renderer, Vec<Fed>, usize) {
    let block = rate as usize / 100;
    let (mut control, renderer) = Renderer::new(RendererConfig {
        sample_rate: rate,
        channels: 1,
        max_block_frames: block,
        max_sessions: sessions,
        max_outputs: 1,
        command_capacity: sessions + 16,
        event_capacity: sessions * 16,
        saturation: Saturation::Hard,
    })
    .unwrap();
    let mut fed = Vec::new();
    for i in 0..sessions {
        let (vc, voice) = Voice::new(&VoiceConfig {
            session: SessionId::from_slot(i as u32),
            generation: 0,
            channels: 1,
            speech_capacity_frames: block * 8,
            background_capacity_frames: block * 8,
            command_capacity: 16,
            fade_frames: rate * 10,
            grace_frames: rate / 5,
            pause_ramp_frames: rate / 200,
            duck: None,
            background_gain: 0.5,
            gain_ramp_frames: 480,
            saturation: Saturation::Hard,
            doorbells: Some(control.doorbells.clone()),
            output: None,
        });
        control.add_voice(Box::new(voice)).unwrap();
        fed.push(Fed {
            control: vc,
            pushed: 0,
            fading: i % 4 == 0,
        });
    }
    (renderer, fed, block)
}

fn refill(fed: &mut [Fed], audio: &[f32], round: u64) {
    for f in fed {
        let room = f.control.speech_tx.slots();
        let (done, _) = f
            .control
            .speech_tx
            .push_partial_slice(&audio[..room.min(audio.len())]);
        f.pushed += done.len() as u64;
        let room = f.control.background_tx.slots();
        let _ = f
            .control
            .background_tx
            .push_partial_slice(&audio[..room.min(audio.len())]);
        // Keep a fade tail running on a quarter of the voices.
        if f.fading && round.is_multiple_of(4) {
            let _ = f.control.send(VoiceCommand::Interrupt {
                fence: StreamPos(f.pushed),
            });
        }
    }
}

fn bench_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render_block_10ms");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for rate in [24_000u32, 48_000] {
        for sessions in [1usize, 64, 1024] {
            let (mut renderer, mut fed, block) = setup(sessions, rate);
            let audio: Vec<f32> = (0..block * 8)
                .map(|i| (i as f32 * 0.05).sin() * 0.3)
                .collect();
            let mut out = vec![0.0f32; block];
            let mut round = 0u64;
            group.throughput(Throughput::Elements(sessions as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("{}k", rate / 1000), sessions),
                &sessions,
                |b, _| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            refill(&mut fed, &audio, round);
                            round += 1;
                            let t = Instant::now();
                            renderer.render(&mut out);
                            total += t.elapsed();
                        }
                        total
                    });
                },
            );
        }
    }
    group.finish();
}

/// The memory floor under `render_block_10ms`: the same bytes written into
/// per-voice buffers of the same size between blocks, then read once and
/// mixed (`out += clamp(speech + g * background)`), with nothing else.
/// No renderer can read its voices' queued samples faster than this.
fn bench_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("mix_floor_10ms");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for rate in [24_000u32, 48_000] {
        let sessions = 1024;
        let block = rate as usize / 100;
        let capacity = block * 8;
        let mut speech = vec![vec![0.0f32; capacity]; sessions];
        let mut background = vec![vec![0.0f32; capacity]; sessions];
        let audio: Vec<f32> = (0..block).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let mut out = vec![0.0f32; block];
        let mut at = 0;
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_function(
            BenchmarkId::new(format!("{}k", rate / 1000), sessions),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        for (s, g) in speech.iter_mut().zip(&mut background) {
                            s[at..at + block].copy_from_slice(&audio);
                            g[at..at + block].copy_from_slice(&audio);
                        }
                        let t = Instant::now();
                        out.fill(0.0);
                        for (s, g) in speech.iter().zip(&background) {
                            let (s, g) = (&s[at..at + block], &g[at..at + block]);
                            for ((o, s), g) in out.iter_mut().zip(s).zip(g) {
                                *o += (s + g * 0.5).clamp(-1.0, 1.0);
                            }
                        }
                        std::hint::black_box(&mut out);
                        total += t.elapsed();
                        at = (at + block) % capacity;
                    }
                    total
                });
            },
        );
    }
    group.finish();
}

/// A looping background clip against a plain speech voice, 64 voices at
/// 24 kHz: the clip is played from memory, the speech from its ring.
fn bench_loop(c: &mut Criterion) {
    let mut group = c.benchmark_group("loop_vs_speech_10ms");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let sessions = 64;
    let rate = 24_000u32;
    for looping in [false, true] {
        let (mut renderer, mut control, block) = setup(sessions, rate);
        let audio: Vec<f32> = (0..block * 8)
            .map(|i| (i as f32 * 0.05).sin() * 0.3)
            .collect();
        for f in &mut control {
            f.fading = false;
            if looping {
                // As long as the speech ring, so both read the same amount
                // of memory per pass and the comparison is of the paths.
                let clip: Vec<f32> = (0..block * 8)
                    .map(|i| (i as f32 * 0.01).sin() * 0.2)
                    .collect();
                f.control
                    .send_clip(ClipCommand::Play {
                        id: 1,
                        clip: clip.into(),
                        gain: 1.0,
                        looping: true,
                        after_ring: false,
                    })
                    .unwrap();
            }
        }
        let mut out = vec![0.0f32; block];
        renderer.render(&mut out); // applies the clips
        let name = if looping { "looping_clip" } else { "speech" };
        group.bench_function(BenchmarkId::new(name, sessions), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if !looping {
                        for f in &mut control {
                            let room = f.control.speech_tx.slots();
                            let _ = f
                                .control
                                .speech_tx
                                .push_partial_slice(&audio[..room.min(audio.len())]);
                        }
                    }
                    let t = Instant::now();
                    renderer.render(&mut out);
                    total += t.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

/// The device callback's cost (SPEC D2): the panic boundary, the render,
/// the reverse stream for echo cancellation and the conversion for an i16
/// device, 10 ms at 48 kHz, with every voice speaking over background.
fn bench_callback(c: &mut Criterion) {
    let mut group = c.benchmark_group("device_callback_10ms_48k_i16");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for sessions in [1usize, 64] {
        let (mut renderer, mut fed, block) = setup(sessions, 48_000);
        for f in &mut fed {
            f.fading = false;
        }
        let audio: Vec<f32> = (0..block * 8)
            .map(|i| (i as f32 * 0.05).sin() * 0.3)
            .collect();
        let telemetry = sotto_rt::Telemetry::default();
        let mut scratch = vec![0.0f32; 4096];
        let mut out = vec![0i16; block];
        let (mut reverse, mut reader) = tap(48_000, 1, 48_000);
        group.bench_function(BenchmarkId::from_parameter(sessions), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut consumed = 0;
                for round in 0..iters {
                    refill(&mut fed, &audio, round);
                    let t = Instant::now();
                    render_i16(
                        &mut renderer,
                        &telemetry,
                        &mut scratch,
                        &mut out,
                        Some((&mut reverse, 1)),
                    );
                    total += t.elapsed();
                    // The echo thread's side, off the clock.
                    reader.discard(&mut consumed);
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_render,
    bench_floor,
    bench_loop,
    bench_callback
);
criterion_main!(benches);
