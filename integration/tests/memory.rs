//! SPEC R4: nothing grows. Eight sessions in quick turns with interrupts,
//! pauses and snapshots, looping beds and an avatar link, on the offline
//! clock, while two event streams per session are held and never read.
//! Once the streams have filled to their bound (about nine simulated
//! minutes), ten more minutes of audio must leave memory flat: the streams
//! drop and count what nobody reads.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::sync::Arc;
use std::time::Duration;

use sotto::LinkConfig;
use sotto::{BackgroundConfig, BackgroundMode, Engine, EngineConfig, SessionConfig};
use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, AvatarSink, VideoFrame};
use sotto_integration::{rss_kib, scratch_dir, tone_s16, write_wav_s16};
use sotto_server::avatar::{AvatarServer, ServerConfig};
use sotto_server::token;

const SESSIONS: usize = 8;
const MINUTES: u64 = 10;
/// Simulated minutes between the streams filling and the measurement.
const SETTLE_MINUTES: u64 = 10;
const RATE: u64 = 24_000;

/// An avatar sink that keeps nothing: the memory under test is Sotto's.
struct Discard;

impl AvatarSink for Discard {
    fn voice(&mut self, _: &[i16]) {}
    fn video(&mut self, _: &VideoFrame, _: u64) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_minutes_with_nothing_read_keeps_memory_flat() {
    let dir = scratch_dir("memory");
    let bed = dir.join("bed.wav");
    let samples: Vec<f32> = (0..RATE as usize)
        .map(|i| (i as f32 * 0.02).sin() * 0.1)
        .collect();
    write_wav_s16(&bed, &samples, RATE as u32, 1);
    let server = AvatarServer::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig {
            publish: None,
            clock: None,
            secret: "memory".into(),
            fps: 25,
            cooldown: Duration::from_millis(300),
            stereo: false,
            renderer: Arc::new(|| Box::new(FaceRenderer::new(32, 24)) as Box<dyn AvatarRenderer>),
            sink: Arc::new(|_| Box::new(Discard) as Box<dyn AvatarSink>),
        },
    )
    .await
    .unwrap();

    let engine = Engine::start(EngineConfig {
        channels: 1,
        max_sessions: SESSIONS,
        ..EngineConfig::default()
    })
    .await
    .unwrap();
    let mut sessions = Vec::new();
    // Held for the whole run and never read.
    let mut unread = Vec::new();
    for i in 0..SESSIONS {
        let s = engine
            .create_session(SessionConfig {
                name: format!("s{i}"),
                ..SessionConfig::default()
            })
            .await
            .unwrap();
        unread.push(s.events());
        unread.push(s.events());
        let bg = engine
            .background(
                &s,
                BackgroundConfig {
                    path: bed.clone(),
                    enabled: true,
                    mode: BackgroundMode::Mixing,
                    volume: 0.3,
                    looping: true,
                },
            )
            .await
            .unwrap();
        bg.start().await.unwrap();
        sessions.push((s, bg));
    }
    let token = token::create("key", "memory", Some("avatar_m"), token::DEFAULT_TTL)
        .unwrap()
        .token;
    let avatar = engine
        .attach_avatar(
            &sessions[0].0,
            LinkConfig::new(&server.join_url(), "room", &token, "avatar_m"),
        )
        .await
        .unwrap();

    // Quarter-second turns: 0.4 s of speech each, every other one cut by
    // an interrupt, every third paused and resumed.
    let speech = tone_s16(9_600, 300.0, RATE as u32, 6000.0);
    let minute = |n: u64| {
        let sessions = &sessions;
        let engine = &engine;
        let speech = &speech;
        async move {
            for turn in 0..240 {
                for (i, (s, _)) in sessions.iter().enumerate() {
                    if (turn + i) % 2 == 0 {
                        s.interrupt().unwrap();
                    }
                    s.mark_synthesis_start().unwrap();
                    let _ = s.push(speech.clone());
                    s.mark_synthesis_complete().unwrap();
                    if (turn + i) % 3 == 0 {
                        s.pause().unwrap();
                        s.resume().unwrap();
                    }
                    if turn % 20 == 0 {
                        let _ = s.snapshot_playback();
                    }
                }
                engine.render(RATE / 4).await.unwrap();
            }
            let rss = rss_kib();
            eprintln!("minute {n}: RSS {rss} KiB");
            rss
        }
    };
    // First until every unread stream is full: up to then they grow, by
    // design, to their bound (4096 events each).
    let mut n = 0;
    while sessions.iter().any(|(s, _)| s.events_dropped() == 0) {
        n += 1;
        assert!(n <= 30, "the unread streams never filled");
        minute(n).await;
    }
    // Then as long again, for the allocator: the heap is at its bound by
    // now (a heap profile of this test is flat from here on), but the
    // worker threads' malloc arenas still settle their free lists for a
    // while, which the resident set shows as a few hundred KiB of creep.
    for k in 1..=SETTLE_MINUTES {
        minute(n + k).await;
    }
    let n = n + SETTLE_MINUTES;
    // Then ten minutes more: an unbounded stream, backlog or buffer here
    // would grow by megabytes.
    let full = minute(n + 1).await;
    let mut rss = vec![full];
    for k in 0..MINUTES {
        rss.push(minute(n + 2 + k).await);
    }
    let stats = || avatar.stats();
    eprintln!(
        "avatar link: {} samples sent, {} dropped behind",
        stats().bytes_sent / 2,
        stats().backlog_dropped + stats().chunks_dropped
    );
    let last = rss[rss.len() - 1];
    assert!(
        last <= full + 1024,
        "RSS grew from {full} KiB to {last} KiB over {MINUTES} minutes: {rss:?}"
    );
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}
