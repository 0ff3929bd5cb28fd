//! Render shards (SPEC C4): calls spread over four `sotto-audio-K`
//! threads on the virtual clock, calls added and removed at random while
//! 200 others play, every shard counting one sample clock.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto::{
    Clock, Engine, EngineConfig, OutputConfig, OutputFrames, SessionConfig, SessionEventKind,
    SessionHandle, SessionOutput,
};
use sotto_integration::tone_s16;

const RATE: usize = 24_000;
const BLOCK: u64 = 480;
const SHARDS: usize = 4;
const OTHERS: usize = 200;

fn call(name: String) -> SessionConfig {
    SessionConfig {
        name,
        queue: Duration::from_secs(15),
        output: SessionOutput::Own(OutputConfig {
            also_main: false,
            ..OutputConfig::default()
        }),
        ..SessionConfig::default()
    }
}

/// What a call's reader saw.
#[derive(Default)]
struct Seen {
    frames: AtomicU64,
    lost: AtomicU64,
    gaps: AtomicU64,
    late: AtomicU64,
}

/// Reads every frame of `frames` as a network sender would, checking
/// that each pts follows the last.
fn read(mut frames: OutputFrames, seen: Arc<Seen>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = None;
        while let Ok(f) = frames.next_frame().await {
            if next.is_some_and(|n| n != f.pts.0) {
                seen.gaps.fetch_add(1, Ordering::Relaxed);
            }
            next = Some(f.pts.0 + f.frames() as u64);
            seen.frames.fetch_add(1, Ordering::Relaxed);
            seen.lost.store(frames.lost_frames(), Ordering::Relaxed);
        }
        seen.late
            .store(frames.shard_late_blocks(), Ordering::Relaxed);
    })
}

/// A tiny deterministic generator for the churn.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_churn_on_four_shards_disturbs_none_of_two_hundred() {
    let _alone = sotto_testkit::alone().await;
    let engine = Engine::start(EngineConfig {
        max_sessions: 256,
        clock: Clock::Virtual {
            capture: None,
            deferred: false,
        },
        render_threads: SHARDS,
        ..EngineConfig::default()
    })
    .await
    .unwrap();
    let speech = tone_s16(RATE * 12, 220.0, RATE as u32, 8_000.0);
    let mut others = Vec::new();
    for i in 0..OTHERS {
        let s = engine
            .create_session(call(format!("call{i}")))
            .await
            .unwrap();
        let seen = Arc::new(Seen::default());
        let reader = read(s.frames().unwrap(), Arc::clone(&seen));
        s.mark_synthesis_start().unwrap();
        let _ = s.push(speech.clone());
        s.mark_synthesis_complete().unwrap();
        others.push((s, seen, reader));
    }
    let loads: Vec<usize> = engine.shards().iter().map(|s| s.sessions).collect();
    assert_eq!(
        loads,
        vec![OTHERS / SHARDS; SHARDS],
        "least loaded placement"
    );

    // One probe call per shard (placement goes round), interrupted
    // together: their fades start at one sample time, give or take the
    // block in which the interrupt reached each shard.
    let fades = Arc::new(Mutex::new(Vec::new()));
    let mut probes = Vec::new();
    for k in 0..SHARDS {
        let s = engine
            .create_session(call(format!("probe{k}")))
            .await
            .unwrap();
        let fades = Arc::clone(&fades);
        s.on_event(move |e| {
            if matches!(e.kind, SessionEventKind::Interrupted { .. }) {
                fades.lock().unwrap().push(e.at.0);
            }
        });
        let _ = s.push(tone_s16(RATE * 4, 440.0, RATE as u32, 8_000.0));
        probes.push(s);
    }

    let watch = sotto_testkit::host::Watch::start(&engine, Duration::from_millis(5));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut churn: Vec<SessionHandle> = Vec::new();
    let mut clock_spread = 0;
    let mut made = 0;
    for step in 0..120 {
        if step == 60 {
            for p in &probes {
                p.interrupt().unwrap();
            }
        }
        if churn.len() < 24 && rng.below(3) > 0 {
            let s = engine
                .create_session(call(format!("churn{made}")))
                .await
                .unwrap();
            made += 1;
            let _ = s.push(tone_s16(RATE / 2, 660.0, RATE as u32, 8_000.0));
            churn.push(s);
        }
        if !churn.is_empty() && rng.below(2) == 0 {
            let s = churn.swap_remove(rng.below(churn.len()));
            engine.remove_session(&s).await.unwrap();
        }
        let clocks: Vec<u64> = engine.shards().iter().map(|s| s.clock_frames).collect();
        let (lo, hi) = (clocks.iter().min().unwrap(), clocks.iter().max().unwrap());
        clock_spread = clock_spread.max(hi - lo);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(made >= 40, "{made} calls came and went");

    let late = watch.stop();
    eprintln!("shards under churn: {late:?}");
    assert_eq!(
        late.unexplained(),
        0,
        "late blocks the host does not explain: {late:?}"
    );
    assert_eq!(engine.alloc_violations(), 0, "allocations on sotto-audio-K");
    // Read one after the other, shards are at most the block some of them
    // are rendering apart: one clock.
    assert!(
        clock_spread <= BLOCK,
        "shard clocks {clock_spread} samples apart"
    );
    let fades = fades.lock().unwrap().clone();
    assert_eq!(fades.len(), SHARDS, "every probe was interrupted");
    let spread = fades.iter().max().unwrap() - fades.iter().min().unwrap();
    assert!(spread <= 2 * BLOCK, "fades at {fades:?}");

    for (s, _, _) in &others {
        engine.remove_session(s).await.unwrap();
    }
    let mut frames = 0;
    for (s, seen, reader) in others {
        reader.await.unwrap();
        assert_eq!(
            seen.lost.load(Ordering::Relaxed),
            0,
            "{} lost frames",
            s.name()
        );
        assert_eq!(
            seen.gaps.load(Ordering::Relaxed),
            0,
            "{} pts gaps",
            s.name()
        );
        assert_eq!(s.stats().underruns, 0);
        frames += seen.frames.load(Ordering::Relaxed);
    }
    // The program's code is locked in memory, so no audio thread can stall
    // on a page of it read back from disk (root may lock; others are told).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    if field("Uid:") == "0" {
        let locked_kib: u64 = field("VmLck:").parse().unwrap();
        assert!(locked_kib > 1024, "{locked_kib} KiB of code locked");
    }
    // Six seconds of 20 ms frames for each of 200 calls, less the start.
    assert!(frames >= (OTHERS * 280) as u64, "{frames} frames read");
    engine.shutdown().await;
}
