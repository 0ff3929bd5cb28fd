//! The avatar link (SPEC A3–A7) on loopback: what the agent spends to send
//! 100 ms of speech, what the avatar spends per video frame with the
//! built-in face at 640×480, and how long an interrupt takes to silence
//! the avatar.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sotto::LinkConfig;
use sotto::{Engine, EngineConfig, SessionConfig};
use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, AvatarSink, Playout, PlayoutConfig, VideoFrame};
use sotto_avatar::sink::MemorySink;
use sotto_benches::tone_s16;
use sotto_server::avatar::{AvatarServer, ServerConfig};
use sotto_server::token;

const SECRET: &str = "bench";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Records when the last interrupt reached the avatar's voice.
#[derive(Clone, Default)]
struct ResetClock {
    at: Arc<Mutex<Option<Instant>>>,
    voiced: Arc<std::sync::atomic::AtomicU64>,
}

impl AvatarSink for ResetClock {
    fn voice(&mut self, samples: &[i16]) {
        if samples.iter().any(|&v| v != 0) {
            self.voiced.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn video(&mut self, _: &VideoFrame, _: u64) {}
    fn reset(&mut self) {
        *self.at.lock().unwrap() = Some(Instant::now());
    }
}

async fn server(sink: ResetClock) -> AvatarServer {
    let config = ServerConfig {
        publish: None,
        clock: None,
        secret: SECRET.into(),
        fps: 25,
        cooldown: Duration::from_millis(300),
        stereo: false,
        renderer: Arc::new(|| Box::new(FaceRenderer::new(64, 48)) as Box<dyn AvatarRenderer>),
        sink: Arc::new(move |_| Box::new(sink.clone()) as Box<dyn AvatarSink>),
    };
    AvatarServer::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn link(server: &AvatarServer) -> LinkConfig {
    let creds = token::create("key", SECRET, None, token::DEFAULT_TTL).unwrap();
    LinkConfig::new(
        &server.join_url(),
        "bench",
        &creds.token,
        &creds.participant_id,
    )
}

/// Agent side: 100 ms of 24 kHz speech pushed into a session with an
/// avatar attached, until the link has sent it (ingest, tee, the link
/// actor's s16 conversion and chunking, the data channel's send).
fn bench_agent(c: &mut Criterion) {
    let rt = runtime();
    let (engine, session, avatar, _server) = rt.block_on(async {
        let server = server(ResetClock::default()).await;
        let engine = Engine::start(EngineConfig::default()).await.unwrap();
        let s = engine
            .create_session(SessionConfig {
                queue: Duration::from_secs(60),
                ..SessionConfig::default()
            })
            .await
            .unwrap();
        let avatar = engine.attach_avatar(&s, link(&server)).await.unwrap();
        (engine, s, avatar, server)
    });
    let chunk = tone_s16(2400, 220.0, 24_000);
    let mut g = c.benchmark_group("avatar_agent");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("send_100ms", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // 10 s at a time, played out between batches (not
                    // timed) so the session's queue never fills.
                    let n = left.min(100);
                    left -= n;
                    let before = avatar.stats().bytes_sent;
                    let want = before + n * chunk.len() as u64;
                    let t = Instant::now();
                    for _ in 0..n {
                        let _ = session.push(chunk.clone());
                    }
                    while avatar.stats().bytes_sent < want {
                        tokio::task::yield_now().await;
                    }
                    spent += t.elapsed();
                    engine.settle().await.unwrap();
                    let _ = engine.render(n * 2400).await.unwrap();
                }
                spent
            })
        });
    });
    g.finish();
    rt.block_on(engine.shutdown());
}

/// Avatar side: one video frame's worth (40 ms at 25 fps) of playout with
/// the built-in face at 640×480: 40 ms of PCM in, two 20 ms voice frames
/// and one video frame out.
fn bench_avatar_frame(c: &mut Criterion) {
    let mut playout = Playout::new(
        PlayoutConfig::default(),
        Box::new(FaceRenderer::default()),
        Box::new(MemorySink::new(1)),
    );
    let pcm = tone_s16(960, 220.0, 24_000);
    let mut acks = Vec::new();
    let now = Instant::now();
    let mut g = c.benchmark_group("avatar_side");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("video_frame_640x480", |b| {
        b.iter(|| {
            playout.on_pcm(&pcm, now);
            playout.tick(&mut acks);
            playout.tick(&mut acks);
        });
    });
    g.finish();
}

/// Interrupt to silence on loopback: from `interrupt()` on the session to
/// the avatar clearing its voice (the next 20 ms voice frame is silent).
fn bench_interrupt(c: &mut Criterion) {
    let rt = runtime();
    let clock = ResetClock::default();
    let (engine, session, avatar, _server) = rt.block_on(async {
        let server = server(clock.clone()).await;
        let engine = Engine::start(EngineConfig::default()).await.unwrap();
        let s = engine
            .create_session(SessionConfig::default())
            .await
            .unwrap();
        let avatar = engine.attach_avatar(&s, link(&server)).await.unwrap();
        (engine, s, avatar, server)
    });
    let speech = tone_s16(24_000, 220.0, 24_000);
    let mut g = c.benchmark_group("avatar_interrupt");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("to_silence", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let voiced = clock.voiced.load(Ordering::Relaxed);
                    session.mark_synthesis_start().unwrap();
                    let _ = session.push(speech.clone());
                    while clock.voiced.load(Ordering::Relaxed) <= voiced {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    *clock.at.lock().unwrap() = None;
                    let t = Instant::now();
                    session.interrupt().unwrap();
                    let reset = loop {
                        if let Some(at) = *clock.at.lock().unwrap() {
                            break at;
                        }
                        tokio::task::yield_now().await;
                    };
                    total += reset.duration_since(t);
                    // Past the cooldown before the next turn.
                    tokio::time::sleep(Duration::from_millis(320)).await;
                    engine.settle().await.unwrap();
                    let _ = engine.render(24_000).await.unwrap();
                }
                total
            })
        });
    });
    g.finish();
    assert!(avatar.is_connected());
    rt.block_on(engine.shutdown());
}

criterion_group!(benches, bench_agent, bench_avatar_frame, bench_interrupt);
criterion_main!(benches);
