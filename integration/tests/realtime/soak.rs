//! A short soak (SPEC R3): sessions speaking in bursts with beds,
//! interrupts, pauses and snapshots on the virtual clock; the report holds.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use sotto_testkit::scenario::RenderClock;
use sotto_testkit::soak::{run, SoakConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_keeps_time() {
    let _alone = sotto_testkit::alone().await;
    let config = SoakConfig {
        sessions: 24,
        seconds: 4.0,
        background: true,
        interrupt_every: Some(2.0),
        clock: RenderClock::Virtual,
        seed: 7,
        calls: false,
        render_threads: 1,
    };
    let mut ticks = 0;
    let r = run(&config, |_, _| ticks += 1).await.unwrap();
    assert!(ticks >= 3, "progress was reported {ticks} times");
    assert_eq!(r.sessions, 24);
    assert!(r.blocks >= 150, "{r:?}");
    assert!(r.turns > 0 && r.interrupts > 0, "{r:?}");
    assert_eq!(r.underruns, 0, "{r:?}");
    assert_eq!(r.events_dropped, 0, "{r:?}");
    assert_eq!(r.dropped_input_bytes, 0, "{r:?}");
    // An interrupt's fade starts within a block of it being sent.
    assert!(r.interrupt_to_fade_samples.max <= 480.0, "{r:?}");
    assert!(r.block_render_us.p50 > 0.0 && r.block_render_us.max >= r.block_render_us.p99);
    assert!(r.rss_peak_kib >= r.rss_final_kib && r.rss_final_kib > 0);
    assert!(r.cpu_percent > 0.0);

    let no_device = SoakConfig {
        clock: RenderClock::Device(None),
        ..config.clone()
    };
    assert!(
        run(&no_device, |_, _| ()).await.is_err(),
        "a soak plays to no device"
    );
    let bad = SoakConfig {
        sessions: 0,
        ..config
    };
    assert!(run(&bad, |_, _| ()).await.is_err());
}

/// The same with every session a call: each output read frame by frame by
/// a task of its own, every frame following the last, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_of_calls_reads_every_frame() {
    let _alone = sotto_testkit::alone().await;
    let config = SoakConfig {
        sessions: 24,
        seconds: 4.0,
        background: true,
        interrupt_every: Some(2.0),
        clock: RenderClock::Virtual,
        seed: 7,
        calls: true,
        render_threads: 2,
    };
    let r = run(&config, |_, _| ()).await.unwrap();
    assert!(r.turns > 0 && r.interrupts > 0, "{r:?}");
    // The calls are spread evenly over both shards.
    assert_eq!(r.shards.len(), 2, "{r:?}");
    assert!(r.shards.iter().all(|s| s.sessions == 12), "{r:?}");
    assert!(r.shards.iter().all(|s| s.blocks >= 150), "{r:?}");
    // Four seconds of 20 ms frames for each of 24 calls, less the start.
    assert!(r.frames_read >= 24 * 150, "{r:?}");
    assert_eq!(r.frames_lost, 0, "{r:?}");
    assert_eq!(r.pts_gaps, 0, "{r:?}");
    assert_eq!(r.underruns, 0, "{r:?}");

    let offline = run(
        &SoakConfig {
            clock: RenderClock::Offline,
            seconds: 1.0,
            ..config
        },
        |_, _| (),
    )
    .await
    .unwrap();
    assert!(offline.frames_read > 0, "{offline:?}");
    assert_eq!(
        (offline.frames_lost, offline.pts_gaps),
        (0, 0),
        "{offline:?}"
    );
}
