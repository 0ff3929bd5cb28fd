//! The virtual real-time clock: a `sotto-audio` thread, audited for
//! allocations, keeping up with many sessions; and the same samples as the
//! offline clock when nothing races.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::time::Duration;

use sotto::{Clock, Engine, EngineConfig, SessionConfig};
use sotto_integration::tone_s16;
use sotto_testkit::scenario::{RenderClock, Scenario};

/// An engine on the virtual clock, running at once, capturing nothing.
async fn live_engine(max_sessions: usize) -> Engine {
    Engine::start(EngineConfig {
        max_sessions,
        clock: Clock::Virtual {
            capture: None,
            deferred: false,
        },
        ..EngineConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_of_64_sessions_in_real_time() {
    let _alone = sotto_testkit::alone().await;
    let engine = live_engine(64).await;
    let watch = sotto_testkit::host::Watch::start(&engine, Duration::from_millis(5));
    let mut sessions = Vec::new();
    for i in 0..64 {
        let s = engine
            .create_session(SessionConfig::default())
            .await
            .unwrap();
        s.mark_synthesis_start().unwrap();
        sessions.push((s, 200.0 + i as f32));
    }
    // Stream 100 ms chunks like a TTS would, staying ahead of playback.
    let started = std::time::Instant::now();
    let mut pushes = Vec::new();
    for k in 0..300u32 {
        for (s, f) in &sessions {
            if k == 0 {
                // A 100 ms lead, as a TTS stream has.
                pushes.push(s.push(tone_s16(2400, *f, 24_000, 3000.0)));
            }
            pushes.push(s.push(tone_s16(2400, *f, 24_000, 3000.0)));
            if k % 5 == 0 {
                let _ = s.push_background(tone_s16(2400, 55.0, 24_000, 1000.0));
            }
        }
        if k == 150 {
            for (s, _) in sessions.iter().step_by(4) {
                s.interrupt().unwrap();
            }
        }
        let due = started + Duration::from_millis(u64::from(k) * 100);
        tokio::time::sleep_until(due.into()).await;
        if pushes.len() > 64 * 20 {
            pushes.drain(..64 * 10);
        }
    }
    for (s, _) in &sessions {
        s.mark_synthesis_complete().unwrap();
    }
    sotto_integration::wait_until("thirty seconds rendered", || {
        engine.stats().clock_frames >= 30 * 24_000
    })
    .await;
    let t = engine.stats();
    let late = watch.stop();
    eprintln!("64 sessions, 30 s: {late:?}");
    assert_eq!(
        late.unexplained(),
        0,
        "late blocks the host does not explain: {late:?}"
    );
    assert_eq!(engine.alloc_violations(), 0, "allocations on sotto-audio");
    assert_eq!(t.events_dropped, 0);
    assert!(!t.poisoned);
    let underruns: u64 = sessions.iter().map(|(s, _)| s.stats().underruns).sum();
    assert_eq!(underruns, 0, "streams ahead of playback never underrun");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_clock_renders_the_same_samples_as_offline() {
    let _alone = sotto_testkit::alone().await;
    let text = r#"
sample_rate = 24000
block = 240
duration = "2s"
[[session]]
name = "agent"
input_rate = 16000
queue = "500ms"
[[session]]
name = "music"
[[at]]
t = "0s"
session = "agent"
op = "begin_synthesis"
[[at]]
t = "0s"
session = "agent"
op = "push_tone"
freq = 300
amplitude = 9000
seconds = 1.2
chunk_bytes = 1601
[[at]]
t = "0s"
session = "agent"
op = "end_synthesis"
[[at]]
t = "0s"
session = "music"
op = "push_background_tone"
freq = 110
amplitude = 3000
seconds = 0.9
"#;
    let p = Scenario::parse(text, "race-free.toml", std::path::Path::new(".")).unwrap();
    let offline = p.render(RenderClock::Offline).await.unwrap();
    let live = p.render(RenderClock::Virtual).await.unwrap();
    // Every step is applied before the clock starts, so a block finished
    // late (this binary's other tests share the two cores) changes when
    // samples are made, not which: lateness is the keep-up test's subject.
    assert_eq!(offline.samples.len(), live.samples.len());
    assert!(offline
        .samples
        .iter()
        .zip(&live.samples)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(offline.events, live.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_consumer_never_blocks_the_clock() {
    let _alone = sotto_testkit::alone().await;
    let engine = live_engine(64).await;
    let s = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let _events = s.events(); // never read
    for _ in 0..50 {
        let _ = s.push(tone_s16(240, 300.0, 24_000, 3000.0));
        s.interrupt().unwrap();
    }
    let before = engine.clock().0;
    sotto_integration::wait_until("the clock to run on past the interrupts", || {
        engine.clock().0 >= before + 4800
    })
    .await;
    engine.shutdown().await;
}

#[test]
fn canary_the_allocation_audit_is_live_in_this_binary() {
    let before = assert_no_alloc::violation_count();
    assert_no_alloc::assert_no_alloc(|| std::hint::black_box(vec![1u8; 8]));
    assert!(assert_no_alloc::violation_count() > before);
}
