//! SPEC O1–O10 and O12 through the `Engine` handle on the offline clock,
//! sample-exact.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::time::Duration;

use proptest::prelude::*;
use sotto::{
    Engine, EngineConfig, FrameCount, PushOutcome, SampleFormat, SessionConfig, SessionError,
    SessionEvent, SessionEventKind as K,
};
use sotto_actors::Recorder;
use sotto_integration::*;
use sotto_rt::fade_gain;

fn cfg() -> SessionConfig {
    SessionConfig::default()
}

fn count(events: &[SessionEvent], want: fn(&K) -> bool) -> usize {
    events.iter().filter(|e| want(&e.kind)).count()
}

/// Mono s16 frames whose values count up, so any shift or repeat shows.
fn counting(n: usize, from: i16) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (from.wrapping_add(i as i16)).to_le_bytes())
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn render_chunked(bytes: &[u8], cuts: &[usize], format: SampleFormat, rate: u32) -> Vec<f32> {
    let mut c = cfg();
    c.input.sample_format = format;
    c.input.sample_rate = rate;
    let (engine, s, _) = setup(c).await;
    let mut at = 0;
    for &cut in cuts {
        let end = (at + cut).min(bytes.len());
        let _ = s.push(bytes[at..end].to_vec());
        at = end;
    }
    let _ = s.push(bytes[at..].to_vec());
    s.mark_synthesis_complete().unwrap();
    let out = engine.render(6000).await.unwrap();
    engine.shutdown().await;
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    // O1: any chunking of the same bytes gives the same output.
    #[test]
    fn o1_any_chunking_gives_the_same_output(
        cuts in proptest::collection::vec(0usize..1500, 0..10),
        f32_input in any::<bool>(),
        rate in prop::sample::select(vec![16_000u32, 24_000, 44_100]),
    ) {
        let rt = rt();
        let (bytes, format) = if f32_input {
            let b: Vec<u8> = (0..2000).flat_map(|i| ((i as f32 * 0.01).sin() * 0.4).to_le_bytes()).collect();
            (b, SampleFormat::F32)
        } else {
            (tone_s16(2000, 440.0, rate, 9000.0), SampleFormat::S16)
        };
        let whole = rt.block_on(render_chunked(&bytes, &[], format, rate));
        let cut = rt.block_on(render_chunked(&bytes, &cuts, format, rate));
        prop_assert_eq!(whole, cut);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o1_an_odd_byte_waits_for_its_pair() {
    let (engine, s, _) = setup(cfg()).await;
    let bytes = counting(1000, 100);
    let _ = s.push(bytes[..3].to_vec());
    let first = engine.render(480).await.unwrap();
    assert_eq!(first[0], 100.0 / 32768.0);
    assert_eq!(
        first[1], 0.0,
        "the odd byte must be held, not padded into a sample"
    );
    let _ = s.push(bytes[3..1001].to_vec());
    let _ = s.push(bytes[1001..].to_vec());
    let rest = engine.render(2000).await.unwrap();
    let played: Vec<f32> = first[..1]
        .iter()
        .chain(rest.iter())
        .copied()
        .take(1000)
        .collect();
    for (i, v) in played.iter().enumerate() {
        assert_eq!(*v, (100 + i as i16) as f32 / 32768.0, "frame {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_backpressure_waits_then_completes_in_order() {
    let mut c = cfg();
    c.queue = Duration::from_millis(100); // 2400 frames
    let (engine, s, _) = setup(c).await;
    let push = tokio::spawn(s.push(counting(12_000, 0)));
    engine.settle().await.unwrap();
    assert_eq!(s.queued_duration(), Duration::from_millis(100));
    assert!(!push.is_finished(), "a push into a full queue must wait");
    let mut out = engine.render(480).await.unwrap();
    let depth = s.stats().queued_frames.get();
    // Read at the end of the block, before the session refilled the freed room.
    assert_eq!(
        depth,
        2400 - 480,
        "renderer-side queue depth after one block"
    );
    out.extend(engine.render(12_000 - 480).await.unwrap());
    let outcome = push.await.unwrap().unwrap();
    assert_eq!(
        outcome,
        PushOutcome {
            accepted_frames: FrameCount(12_000),
            ..Default::default()
        }
    );
    for (i, v) in out.iter().enumerate() {
        assert_eq!(
            *v,
            (i as i16) as f32 / 32768.0,
            "frame {i}: nothing dropped or repeated"
        );
    }
    assert_eq!(s.queued_duration(), Duration::ZERO);
    assert_eq!(engine.stats().events_dropped, 0);
}

/// A caller that never awaits its pushes cannot grow the queue without
/// bound: past `SessionConfig::MAX_WAITING` waiting for room, a push's rest is dropped,
/// counted in its outcome and reported; what was queued plays unharmed,
/// and once the queue drains pushes are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_pushes_never_awaited_are_bounded() {
    let mut c = cfg();
    c.queue = Duration::from_millis(100); // 2400 frames in the ring
    let (engine, s, mut ev) = setup(c).await;
    let second = 24_000;
    let limit = SessionConfig::MAX_WAITING.as_secs() as usize;
    let mut pushes = Vec::new();
    for k in 0..limit + 3 {
        pushes.push(tokio::spawn(s.push(counting(second, k as i16))));
    }
    engine.settle().await.unwrap();
    let events = drain(&mut ev);
    let overflows: Vec<u64> = events
        .iter()
        .filter_map(|e| match e.kind {
            K::QueueOverflow {
                dropped_frames,
                background: false,
            } => Some(dropped_frames.get()),
            _ => None,
        })
        .collect();
    // The ring takes 2400 frames and the first 300 pushes wait (just under
    // 300 s); each push after that would pass the bound, and is refused whole.
    assert_eq!(overflows, vec![second as u64; 3]);
    let refused = 3 * second;
    let refused_pushes = overflows.len();
    let mut dropped = 0;
    for p in pushes.drain(pushes.len() - refused_pushes..) {
        let outcome = p.await.unwrap().unwrap();
        assert_eq!(outcome.accepted_frames.get(), 0);
        dropped += outcome.dropped_frames.get();
    }
    assert_eq!(dropped, refused as u64);
    // The first ten seconds play exactly as pushed.
    let out = engine.render(10 * second as u64).await.unwrap();
    for (k, second_out) in out.chunks(second).enumerate() {
        for (i, v) in second_out.iter().enumerate() {
            let want = (k as i16).wrapping_add(i as i16);
            assert_eq!(*v, f32::from(want) / 32768.0, "second {k}, frame {i}");
        }
    }
    // Ten seconds played: there is room to wait again.
    let _ = s.push(counting(second, 0));
    engine.settle().await.unwrap();
    assert!(
        !drain(&mut ev)
            .iter()
            .any(|e| matches!(e.kind, K::QueueOverflow { .. })),
        "with room again, a push waits instead of being refused"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_waiters_are_released_by_playout_or_clear() {
    let mut c = cfg();
    c.queue = Duration::from_millis(100);
    let (engine, s, _) = setup(c).await;
    let _ = s.push(dc_s16(1000, 1000));
    let wait = tokio::spawn(s.wait_for_playout());
    engine.render(960).await.unwrap();
    assert!(!wait.is_finished());
    engine.render(480).await.unwrap();
    wait.await.unwrap().unwrap();

    let waiting_push = tokio::spawn(s.push(dc_s16(5000, 1000)));
    let wait = tokio::spawn(s.wait_for_playout());
    engine.render(480).await.unwrap();
    let dropped = s.clear_queue().await.unwrap();
    wait.await.unwrap().unwrap();
    let cut = waiting_push.await.unwrap().unwrap();
    assert_eq!(cut.accepted_frames.get() + cut.dropped_frames.get(), 5000);
    assert!(cut.dropped_frames.get() > 0);
    assert_eq!(dropped, 5000 - 480);
    let after = engine.render(480).await.unwrap();
    assert!(
        after.iter().all(|&v| v == 0.0),
        "cleared audio must not play"
    );
    assert_eq!(s.queued_duration(), Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o3_resampling_keeps_the_tone() {
    for rate in [8_000u32, 16_000, 22_050, 44_100, 48_000] {
        let mut c = cfg();
        c.input.sample_rate = rate;
        let (engine, s, _) = setup(c).await;
        let _ = s.push(tone_s16(rate as usize, 300.0, rate, 10_000.0));
        s.mark_synthesis_complete().unwrap();
        let out = engine.render(30_000).await.unwrap();
        let last = out.iter().rposition(|v| v.abs() > 1e-3).unwrap();
        assert!(
            (23_950..=24_000).contains(&last),
            "{rate} Hz: last audible frame {last}"
        );
        let crossings = out[..24_000]
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        assert!(
            (298..=301).contains(&crossings),
            "{rate} Hz: {crossings} cycles"
        );
        let sotto::PlaybackSnapshot {
            played_frames: FrameCount(_),
            pushed_frames: FrameCount(pushed),
            ..
        } = s.snapshot_playback().await.unwrap();
        assert_eq!(pushed, 24_000, "{rate} Hz");
        engine.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_disabled_input_is_dropped_with_a_count() {
    let (engine, s, mut ev) = setup(cfg()).await;
    s.disable_audio_input().unwrap();
    let outcome = s.push(dc_s16(100, 1000)).await.unwrap();
    assert_eq!(outcome.dropped_bytes, 200);
    assert_eq!(outcome.accepted_frames.get(), 0);
    let out = engine.render(480).await.unwrap();
    assert!(out.iter().all(|&v| v == 0.0));
    assert_eq!(
        count(&drain(&mut ev), |k| matches!(
            k,
            K::DroppedInput { bytes: 200 }
        )),
        1
    );
    s.enable_audio_input(false).unwrap();
    assert_eq!(
        s.push(dc_s16(100, 1000))
            .await
            .unwrap()
            .accepted_frames
            .get(),
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_manual_control_disables_intake_at_every_interrupt() {
    let (engine, s, _) = setup(cfg()).await;
    s.enable_audio_input(true).unwrap();
    let _ = s.push(dc_s16(1000, 1000));
    engine.render(480).await.unwrap();
    s.interrupt().unwrap();
    let late = s.push(dc_s16(1000, 1000)).await.unwrap();
    assert_eq!(
        late.dropped_bytes, 2000,
        "an old answer must not bleed into the next"
    );
    s.enable_audio_input(true).unwrap();
    assert_eq!(
        s.push(dc_s16(10, 1000))
            .await
            .unwrap()
            .accepted_frames
            .get(),
        10
    );
    // Without manual control an interrupt leaves intake open.
    s.enable_audio_input(false).unwrap();
    s.interrupt().unwrap();
    assert_eq!(
        s.push(dc_s16(10, 1000))
            .await
            .unwrap()
            .accepted_frames
            .get(),
        10
    );
    engine.render(480).await.unwrap();
}

/// Pushes `pending + played` frames of 0.5, plays `played`, interrupts,
/// and checks the tail against the O5 curve exactly.
async fn interrupt_case(played: usize, pending: usize, fade_frames: u64) {
    let mut c = cfg();
    c.fade = Duration::from_secs_f64(fade_frames as f64 / 24_000.0);
    let (engine, s, mut ev) = setup(c).await;
    let _ = s.push(dc_s16(played + pending, 16384));
    let head = engine.render(played as u64).await.unwrap();
    assert!(head.iter().all(|&v| v == 0.5));
    s.interrupt().unwrap();
    let out = engine.render(20_000).await.unwrap();
    let tail = (pending as u64).min(fade_frames) as usize;
    for (k, v) in out.iter().enumerate() {
        let want = if k < tail {
            0.5 * fade_gain(k as u64, tail as u64)
        } else {
            0.0
        };
        assert!(
            (v - want).abs() < 1e-6,
            "pending {pending} fade {fade_frames}: frame {k}: {v} vs {want}"
        );
    }
    if tail > 0 {
        assert_eq!(out[tail - 1], 0.0, "last tail frame is exactly 0");
    }
    let events = drain(&mut ev);
    let interrupted: Vec<_> = events
        .iter()
        .filter_map(|e| match e.kind {
            K::Interrupted {
                tail_frames,
                dropped_frames,
            } => Some((e.at.0, tail_frames.get(), dropped_frames.get())),
            _ => None,
        })
        .collect();
    assert_eq!(
        interrupted,
        vec![(played as u64, tail as u64, (pending - tail) as u64)]
    );
    let fade_done = times(&events, |k| matches!(k, K::FadeDone));
    if tail > 0 {
        assert_eq!(fade_done, vec![(played + tail) as u64]);
    } else {
        assert!(fade_done.is_empty());
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o5_interrupt_fades_whatever_is_pending() {
    interrupt_case(480, 3000, 9600).await; // pending < fade
    interrupt_case(480, 9600, 9600).await; // pending = fade
    interrupt_case(960, 20_000, 9600).await; // pending > fade
    interrupt_case(480, 100, 9600).await; // a tail shorter than a block
    interrupt_case(480, 1, 9600).await; // a one-frame tail is silent (gain 0)
    interrupt_case(480, 5000, 0).await; // fade 0 cuts at once
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o5_audio_pushed_after_interrupt_plays_after_the_tail() {
    let (engine, s, mut ev) = setup(cfg()).await;
    let _ = s.push(dc_s16(24_000, 16384));
    engine.render(480).await.unwrap();
    s.interrupt().unwrap();
    s.mark_synthesis_start().unwrap();
    let _ = s.push(dc_s16(1000, -8192));
    s.mark_synthesis_complete().unwrap();
    let out = engine.render(20_000).await.unwrap();
    for (k, v) in out[..9600].iter().enumerate() {
        assert!(
            (v - 0.5 * fade_gain(k as u64, 9600)).abs() < 1e-6,
            "tail frame {k}"
        );
    }
    assert!(
        out[9600..10_600].iter().all(|&v| v == -0.25),
        "next turn after the tail, unmixed"
    );
    assert!(out[10_600..].iter().all(|&v| v == 0.0));
    let events = drain(&mut ev);
    assert_eq!(
        times(&events, |k| matches!(k, K::FirstAudio)),
        vec![0, 480 + 9600]
    );
    assert_eq!(
        times(&events, |k| matches!(k, K::LastAudio)),
        vec![480 + 9600 + 1000 + 4800]
    );
    assert_eq!(
        s.snapshot_playback().await.unwrap(),
        sotto::PlaybackSnapshot {
            played_frames: FrameCount(1000),
            pushed_frames: FrameCount(1000),
            confirmed_frames: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o5_a_second_interrupt_keeps_the_running_tail() {
    let (engine, s, mut ev) = setup(cfg()).await;
    let _ = s.push(dc_s16(24_000, 16384));
    engine.render(480).await.unwrap();
    s.interrupt().unwrap();
    engine.render(2400).await.unwrap();
    // Audio queued during the tail, then a second interrupt while the tail plays.
    let _ = s.push(dc_s16(4000, -8192));
    s.interrupt().unwrap();
    let out = engine.render(20_000).await.unwrap();
    for (k, v) in out[..7200].iter().enumerate() {
        let want = 0.5 * fade_gain(2400 + k as u64, 9600);
        assert!(
            (v - want).abs() < 1e-6,
            "tail continues unchanged at frame {k}"
        );
    }
    assert!(
        out[7200..].iter().all(|&v| v == 0.0),
        "what was queued since is cut"
    );
    let events = drain(&mut ev);
    assert_eq!(count(&events, |k| matches!(k, K::FadeDone)), 1);
    assert_eq!(count(&events, |k| matches!(k, K::Interrupted { .. })), 2);
    // After the faded interrupt, another interrupt still cuts newly queued audio.
    let _ = s.push(dc_s16(4000, 8192));
    engine.render(480).await.unwrap();
    s.set_fade(Duration::ZERO).unwrap();
    s.interrupt().unwrap();
    let out = engine.render(4800).await.unwrap();
    assert!(out.iter().all(|&v| v == 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o5_an_interrupt_cuts_a_waiting_push_by_a_known_amount() {
    let mut c = cfg();
    c.queue = Duration::from_millis(100);
    let (engine, s, mut ev) = setup(c).await;
    let push = tokio::spawn(s.push(dc_s16(10_000, 16384)));
    engine.render(480).await.unwrap();
    s.interrupt().unwrap();
    let outcome = push.await.unwrap().unwrap();
    assert_eq!(outcome.accepted_frames.get(), 2400 + 480);
    assert_eq!(outcome.dropped_frames.get(), 10_000 - 2880);
    let out = engine.render(10_000).await.unwrap();
    assert!(out[2400..].iter().all(|&v| v == 0.0));
    let events = drain(&mut ev);
    let dropped: Vec<u64> = events
        .iter()
        .filter_map(|e| match e.kind {
            K::Interrupted { dropped_frames, .. } => Some(dropped_frames.get()),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, vec![10_000 - 2880]);
}

/// SPEC S5: a caller spinning on control calls meets the session's
/// mailbox bound, a typed error, instead of growing memory; once the
/// session has caught up it takes messages again. One thread, so the
/// session cannot run while the caller spins: the bound is met exactly.
#[tokio::test(flavor = "current_thread")]
async fn s5_a_caller_spinning_on_control_meets_the_mailbox_bound() {
    let (engine, s, _) = setup(cfg()).await;
    let mut sent = 0;
    let err = loop {
        match s.interrupt() {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= sotto::SessionHandle::MAILBOX_LIMIT, "no bound");
    };
    assert_eq!(
        (err, sent),
        (SessionError::Busy, sotto::SessionHandle::MAILBOX_LIMIT)
    );
    assert_eq!(s.pause().unwrap_err(), SessionError::Busy);
    // A push is a message too, sent whether or not it is awaited.
    assert_eq!(
        s.push(dc_s16(10, 1000)).await.unwrap_err(),
        SessionError::Busy
    );
    // The session catches up, then takes messages and plays as before.
    engine.render(480).await.unwrap();
    s.push(dc_s16(480, 8192)).await.unwrap();
    let out = engine.render(480).await.unwrap();
    assert!(out.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    engine.shutdown().await;
}

/// SPEC O2: each input has a queue of its own, so a background push
/// waiting for room never holds up speech pushed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_a_stalled_bed_never_delays_speech() {
    let mut c = cfg();
    c.background_queue = Duration::from_millis(100);
    let (engine, s, _) = setup(c).await;
    // A second of bed into a 100 ms queue: it waits for room.
    let bed = tokio::spawn(s.push_background(dc_s16(24_000, 4096)));
    let speech = tokio::time::timeout(Duration::from_millis(400), s.push(dc_s16(12_000, 8192)))
        .await
        .expect("speech waited behind the bed")
        .unwrap();
    assert_eq!(speech.accepted_frames.get(), 12_000);
    assert!(!bed.is_finished(), "the bed is still waiting for room");
    let out = engine.render(480).await.unwrap();
    assert!(
        out.iter().all(|&v| (v - 0.375).abs() < 1e-6),
        "speech and bed together from the first sample"
    );
    for _ in 0..12 {
        engine.render(2400).await.unwrap();
    }
    let bed = bed.await.unwrap().unwrap();
    assert_eq!(bed.accepted_frames.get(), 24_000);
}

/// SPEC O5: what an interrupt drops includes the audio still inside the
/// resampler: pushed, never played, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o5_an_interrupt_counts_what_the_resampler_held() {
    let mut c = cfg();
    c.input.sample_rate = 16_000;
    c.fade = Duration::ZERO;
    let (engine, s, mut ev) = setup(c).await;
    // 1000 frames at 16 kHz are 1500 at 24 kHz; some of them are still
    // in the resampler when the interrupt comes.
    s.push(dc_s16(1000, 8192)).await.unwrap();
    let queued = s.queued_duration().as_secs_f64() * 24_000.0;
    assert!(queued.round() < 1500.0, "{queued} frames queued");
    s.interrupt().unwrap();
    let out = engine.render(4800).await.unwrap();
    assert!(out.iter().all(|&v| v == 0.0), "nothing plays");
    let dropped: Vec<u64> = drain(&mut ev)
        .iter()
        .filter_map(|e| match e.kind {
            K::Interrupted { dropped_frames, .. } => Some(dropped_frames.get()),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, vec![1500]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o6_resume_continues_exactly_where_pause_froze() {
    let (engine, s, mut ev) = setup(cfg()).await;
    let _ = s.push(counting(4800, 1000));
    engine.render(480).await.unwrap();
    s.pause().unwrap();
    let paused = engine.render(4800).await.unwrap();
    // 5 ms ramp (120 frames) down to silence, then nothing.
    for (k, v) in paused[..120].iter().enumerate() {
        let want = (1000 + 480 + k as i16) as f32 / 32768.0 * (1.0 - (k + 1) as f32 / 120.0);
        assert!((v - want).abs() < 1e-6, "ramp frame {k}");
    }
    assert!(paused[120..].iter().all(|&v| v == 0.0));
    // Audio arriving while paused is kept.
    let _ = s.push(counting(100, 7000));
    s.pause().unwrap(); // no-op
    s.resume().unwrap();
    let out = engine.render(9600).await.unwrap();
    for (k, v) in out[..120].iter().enumerate() {
        let want = (1000 + 600 + k as i16) as f32 / 32768.0 * ((k + 1) as f32 / 120.0);
        assert!((v - want).abs() < 1e-6, "resume ramp frame {k}");
    }
    for (k, v) in out[120..4200].iter().enumerate() {
        assert_eq!(
            *v,
            (1000 + 720 + k as i16) as f32 / 32768.0,
            "frame {k} after the ramp"
        );
    }
    for (k, v) in out[4200..4300].iter().enumerate() {
        assert_eq!(*v, (7000 + k as i16) as f32 / 32768.0);
    }
    let events = drain(&mut ev);
    assert_eq!(times(&events, |k| matches!(k, K::Paused)), vec![480]);
    assert_eq!(times(&events, |k| matches!(k, K::Resumed)), vec![5280]);
    assert_eq!(
        engine.clock().0,
        480 + 4800 + 9600,
        "the clock runs while paused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o7_speaking_bridges_gaps_shorter_than_grace() {
    let (engine, s, mut ev) = setup(cfg()).await;
    assert!(!s.is_speaking());
    let _ = s.push(dc_s16(1000, 1000));
    engine.settle().await.unwrap();
    assert!(s.is_speaking());
    engine.render(1000 + 2400).await.unwrap(); // a 100 ms gap
    assert!(s.is_speaking(), "within the grace period");
    let _ = s.push(dc_s16(1000, 1000));
    engine.render(4800).await.unwrap();
    assert!(s.is_speaking());
    engine.render(4800).await.unwrap();
    assert!(!s.is_speaking());
    let events = drain(&mut ev);
    assert_eq!(
        times(&events, |k| matches!(k, K::StoppedSpeaking)),
        vec![3400 + 1000 + 4800]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o8_last_audio_exactly_once_per_turn() {
    let (engine, s, mut ev) = setup(cfg()).await;
    // A turn whose length is not a multiple of the block.
    s.mark_synthesis_start().unwrap();
    let _ = s.push(dc_s16(1234, 1000));
    s.mark_synthesis_complete().unwrap();
    engine.render(24_000).await.unwrap();
    // A turn that produced no audio: fires at once.
    s.mark_synthesis_start().unwrap();
    s.mark_synthesis_complete().unwrap();
    engine.render(480).await.unwrap();
    // A turn whose queue drained before synthesis ended.
    s.mark_synthesis_start().unwrap();
    let _ = s.push(dc_s16(500, 1000));
    engine.render(480 * 20).await.unwrap();
    s.mark_synthesis_complete().unwrap();
    engine.render(480).await.unwrap();
    // Next turn: the empty turn must not leave a stale last-audio to fire early.
    s.mark_synthesis_start().unwrap();
    let _ = s.push(dc_s16(2000, 1000));
    engine.render(4800).await.unwrap();
    s.mark_synthesis_complete().unwrap();
    engine.render(24_000).await.unwrap();
    let events = drain(&mut ev);
    let last = times(&events, |k| matches!(k, K::LastAudio));
    let t0 = 1234 + 4800;
    let t1 = 24_000;
    let t2 = 24_480 + 480 * 20;
    let t3 = t2 + 480 + 2000 + 4800;
    assert_eq!(last, vec![t0, t1, t2, t3]);
    assert_eq!(
        times(&events, |k| matches!(k, K::FirstAudio)),
        vec![0, 24_480, t2 + 480]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o8_interrupted_turn_has_no_last_audio_and_events_reach_callbacks() {
    let (engine, s, mut ev) = setup(cfg()).await;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen2 = seen.clone();
    s.on_event(move |_| {
        seen2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    s.mark_synthesis_start().unwrap();
    let _ = s.push(dc_s16(10_000, 1000));
    engine.render(480).await.unwrap();
    s.interrupt().unwrap();
    s.mark_synthesis_complete().unwrap();
    engine.render(24_000).await.unwrap();
    let events = drain(&mut ev);
    // The completion after the interrupt closes the (empty) next turn once.
    assert_eq!(count(&events, |k| matches!(k, K::LastAudio)), 1);
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o9_counters_count_heard_audio_only() {
    let (engine, s, _) = setup(cfg()).await;
    let _ = s.push(dc_s16(3000, 1000));
    engine.render(480).await.unwrap();
    s.mark_synthesis_start().unwrap();
    assert_eq!(
        s.snapshot_playback().await.unwrap(),
        sotto::PlaybackSnapshot {
            played_frames: FrameCount(0),
            pushed_frames: FrameCount(0),
            confirmed_frames: None
        }
    );
    let _ = s.push(dc_s16(5000, 1000));
    engine.render(2400).await.unwrap(); // 2520 left of the old turn... 120 of it remain
    let sotto::PlaybackSnapshot {
        played_frames: FrameCount(played),
        pushed_frames: FrameCount(pushed),
        ..
    } = s.snapshot_playback().await.unwrap();
    assert_eq!((played, pushed), (0, 5000));
    engine.render(1000).await.unwrap();
    assert_eq!(
        s.snapshot_playback().await.unwrap(),
        sotto::PlaybackSnapshot {
            played_frames: FrameCount(1000 - 120),
            pushed_frames: FrameCount(5000),
            confirmed_frames: None
        }
    );
    s.pause().unwrap();
    engine.render(4800).await.unwrap();
    let sotto::PlaybackSnapshot {
        played_frames: FrameCount(paused_played),
        pushed_frames: FrameCount(_),
        ..
    } = s.snapshot_playback().await.unwrap();
    assert_eq!(
        paused_played,
        880 + 120,
        "only the ramp plays; silence is not counted"
    );
    s.interrupt().unwrap();
    engine.render(24_000).await.unwrap();
    let sotto::PlaybackSnapshot {
        played_frames: FrameCount(p),
        pushed_frames: FrameCount(q),
        ..
    } = s.snapshot_playback().await.unwrap();
    assert_eq!(
        (p, q),
        (1000, 5000),
        "an interrupt while fully paused is silent: the 4000 frames left \
         are dropped, never heard"
    );
    assert!(p <= q);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o10_the_clock_counts_every_frame_rendered() {
    let (engine, _s, _) = setup(cfg()).await;
    let mut total = 0;
    for n in [1u64, 7, 480, 481, 999, 24_000] {
        let out = engine.render(n).await.unwrap();
        assert_eq!(out.len() as u64, n);
        total += n;
        assert_eq!(engine.clock().0, total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o10_silence_fills_the_gaps() {
    let (engine, s, _) = setup(cfg()).await;
    for n in [1u64, 7, 480, 481, 999, 24_000] {
        let out = engine.render(n).await.unwrap();
        assert!(out.iter().all(|&v| v == 0.0));
    }
    let _ = s.push(dc_s16(10, 1000));
    let out = engine.render(20).await.unwrap();
    assert_eq!(out.iter().filter(|&&v| v != 0.0).count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o11_background_mixes_saturates_and_is_not_faded() {
    let (engine, s, _) = setup(cfg()).await;
    let _ = s.push_background(dc_s16(24_000, 24_576)); // 0.75
    let _ = s.push(dc_s16(2400, 24_576));
    let out = engine.render(2400).await.unwrap();
    assert!(
        out.iter().all(|&v| v == 1.0),
        "0.75 + 0.75 saturates at 1.0"
    );
    s.interrupt().unwrap();
    let out = engine.render(12_000).await.unwrap();
    assert!(
        out.iter().all(|&v| v == 0.75),
        "no speech left, background plays on unfaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o11_background_ducks_under_speech() {
    let mut c = cfg();
    c.duck = Some(sotto::Duck::default());
    let (engine, s, _) = setup(c).await;
    let _ = s.push_background(dc_s16(48_000, 8192)); // 0.25
    engine.render(480).await.unwrap();
    let _ = s.push(dc_s16(4800, 0));
    let out = engine.render(4800).await.unwrap();
    let ducked = 0.25 * 10f32.powf(-12.0 / 20.0);
    assert!(
        (out[1200] - ducked).abs() < 1e-4,
        "after the 50 ms ramp: {}",
        out[1200]
    );
    assert!(
        out.windows(2).all(|w| w[1] <= w[0] + 1e-7),
        "the ramp only goes down"
    );
    let out = engine.render(24_000).await.unwrap();
    assert!(
        (out[23_000] - 0.25).abs() < 1e-6,
        "back to unity after speech and grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o12_tee_sinks_receive_every_accepted_chunk() {
    let (engine, s, mut ev) = setup(cfg()).await;
    let recorder = Recorder::new("recorder", false);
    s.add_sink(Box::new(recorder.clone())).unwrap();
    let _ = s.push(counting(700, 0));
    let _ = s.push(counting(300, 700));
    s.interrupt().unwrap();
    s.mark_synthesis_complete().unwrap();
    engine.render(480).await.unwrap();
    let log = recorder.log();
    assert_eq!(log.frames.len(), 1000);
    assert_eq!(log.frames[999], 999.0 / 32768.0);
    assert_eq!((log.interrupts, log.segment_ends), (1, 1));
    assert_eq!(
        count(&drain(&mut ev), |k| matches!(k, K::Interrupted { .. })),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o12_avatar_sink_silences_direct_output_but_counters_work() {
    let (engine, s, mut ev) = setup(cfg()).await;
    let avatar = Recorder::new("avatar", true);
    s.add_sink(Box::new(avatar.clone())).unwrap();
    s.mark_synthesis_start().unwrap();
    let _ = s.push(dc_s16(1000, 16384));
    s.mark_synthesis_complete().unwrap();
    let out = engine.render(24_000).await.unwrap();
    assert!(
        out.iter().all(|&v| v == 0.0),
        "the avatar publishes the voice"
    );
    assert_eq!(avatar.log().frames.len(), 1000);
    assert_eq!(
        s.snapshot_playback().await.unwrap(),
        sotto::PlaybackSnapshot {
            played_frames: FrameCount(1000),
            pushed_frames: FrameCount(1000),
            confirmed_frames: None
        }
    );
    let events = drain(&mut ev);
    assert_eq!(times(&events, |k| matches!(k, K::FirstAudio)), vec![0]);
    assert_eq!(times(&events, |k| matches!(k, K::LastAudio)), vec![5800]);
}

struct Failing;

impl sotto::AudioSink for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn publishes_voice(&self) -> bool {
        true
    }
    fn write(&mut self, _: &[f32], _: u32, _: usize) -> std::io::Result<()> {
        Err(std::io::Error::other("link down"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o12_a_failing_sink_is_detached_without_stopping_playback() {
    let (engine, s, mut ev) = setup(cfg()).await;
    s.add_sink(Box::new(Failing)).unwrap();
    let _ = s.push(dc_s16(1000, 16384));
    let out = engine.render(1000).await.unwrap();
    assert!(
        out.iter().all(|&v| v == 0.5),
        "direct output resumes once the avatar is gone"
    );
    let events = drain(&mut ev);
    assert!(events.iter().any(|e| matches!(&e.kind, K::SinkDetached { sink, reason } if sink == "failing" && reason == "link down")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_typed_errors() {
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let mut c = cfg();
    c.input.sample_rate = 12_345;
    assert!(matches!(
        engine.create_session(c).await,
        Err(sotto::EngineError::Create(_))
    ));
    let mut c = cfg();
    c.queue = Duration::ZERO;
    assert!(engine.create_session(c).await.is_err());
    assert!(Engine::start(EngineConfig {
        sample_rate: 7,
        ..EngineConfig::default()
    })
    .await
    .is_err());
    let small = Engine::start(EngineConfig {
        max_sessions: 1,
        ..EngineConfig::default()
    })
    .await
    .unwrap();
    small.create_session(cfg()).await.unwrap();
    assert!(small.create_session(cfg()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_mix_into_one_output() {
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let s = engine.create_session(cfg()).await.unwrap();
        let _ = s.push(dc_s16(480, 1024));
        handles.push(s);
    }
    let out = engine.render(480).await.unwrap();
    assert!(out.iter().all(|&v| v == 8.0 * 1024.0 / 32768.0));
    engine.remove_session(&handles[0]).await.unwrap();
    assert!(handles[0].interrupt().is_err());
}

/// An application drives the engine from its own tasks on a multi-threaded
/// runtime: every future of the engine and the handle is `Send`.
#[test]
fn handles_work_from_spawned_tasks() {
    let rt = rt();
    let out = rt.block_on(async {
        let engine = Engine::start(EngineConfig::default()).await.unwrap();
        let task = tokio::spawn(async move {
            let s = engine.create_session(cfg()).await.unwrap();
            s.push(dc_s16(480, 16384)).await.unwrap();
            engine.settle().await.unwrap();
            let out = engine.render(960).await.unwrap();
            s.clear_queue().await.unwrap();
            let _ = s.snapshot_playback().await.unwrap();
            s.wait_for_playout().await.unwrap();
            engine.remove_session(&s).await.unwrap();
            engine.shutdown().await;
            out
        });
        task.await.unwrap()
    });
    assert!(out[..480].iter().all(|&v| v == 0.5));
    assert!(out[480..].iter().all(|&v| v == 0.0));
}

/// SPEC R4: an event stream nobody reads holds at most its bound; newer
/// events are dropped and counted, and other streams still get them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_event_stream_stays_bounded() {
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let s = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let unread = s.events();
    let mut read = s.events();
    let mut seen = 0usize;
    for _ in 0..2_200 {
        s.pause().unwrap();
        s.resume().unwrap();
        engine.settle().await.unwrap();
        engine.render(480).await.unwrap();
        engine.settle().await.unwrap();
        seen += drain(&mut read).len();
    }
    assert_eq!(seen, 4_400);
    assert_eq!(unread.len(), sotto_actors::session::EVENT_QUEUE);
    assert_eq!(s.events_dropped(), 4_400 - 4_096);
    engine.shutdown().await;
}
