//! Calls (SPEC C1–C3, C5, C6): sessions with outputs of their own, read as
//! frames with pts, through the engine handle — on the offline clock, and
//! on the virtual clock with every reader its own task, under the
//! allocation audit.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::time::Duration;

use assert_no_alloc::AllocDisabler;
use sotto::{
    Clock, Duck, Engine, EngineConfig, Frame, OutputConfig, OutputFrames, SessionConfig,
    SessionError, SessionHandle, SessionOutput,
};
use sotto_integration::tone_s16;

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

const RATE: usize = 24_000;

fn call(name: &str) -> SessionConfig {
    SessionConfig {
        name: name.into(),
        output: SessionOutput::default(),
        duck: Some(Duck::default()),
        ..SessionConfig::default()
    }
}

async fn engine(clock: Clock) -> Engine {
    Engine::start(EngineConfig {
        channels: 1,
        clock,
        ..EngineConfig::default()
    })
    .await
    .unwrap()
}

/// Every frame waiting, their pts checked to follow each other.
fn drain(frames: &mut OutputFrames, next_pts: &mut u64, out: &mut Vec<f32>) {
    while let Some(Frame { pts, samples, .. }) = frames.try_next_frame() {
        assert_eq!(pts.0, *next_pts, "frames follow each other");
        *next_pts += (samples.len()) as u64;
        out.extend(samples);
    }
}

/// A turn of speech over a bed, with a false interruption (pause, resume).
fn speak(s: &SessionHandle, freq: f32) {
    s.mark_synthesis_start().unwrap();
    let _ = s.push_background(tone_s16(RATE * 2, 70.0, RATE as u32, 6_000.0));
    let _ = s.push(tone_s16(RATE, freq, RATE as u32, 20_000.0));
    s.mark_synthesis_complete().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_output_holds_exactly_what_the_mix_held_for_one_session() {
    let engine = engine(Clock::Offline).await;
    let s = engine.create_session(call("alone")).await.unwrap();
    let mut frames = s.frames().unwrap();
    assert_eq!(s.frames().unwrap_err(), SessionError::Taken);
    assert_eq!(
        frames.next_frame().await.unwrap_err(),
        SessionError::NotRendering,
        "the offline clock never waits for a frame nobody renders"
    );
    speak(&s, 330.0);
    let mut mixed = Vec::new();
    let mut own = Vec::new();
    let mut next_pts = 0;
    for step in 0..60 {
        match step {
            10 => s.pause().unwrap(),
            14 => s.resume().unwrap(),
            30 => s.interrupt().unwrap(),
            _ => {}
        }
        mixed.extend(engine.render(RATE as u64 / 20).await.unwrap());
        drain(&mut frames, &mut next_pts, &mut own);
    }
    assert_eq!(own.len(), mixed.len());
    assert!(
        own == mixed,
        "fade, pause, duck, background and limiter, sample for sample"
    );
    assert_eq!(frames.lost_frames(), 0);
    assert_eq!(frames.rendered_frames(), mixed.len() as u64);
    assert_eq!(frames.delivered_frames(), own.len() as u64);
    engine.shutdown().await;
}

/// Two calls in one engine; the first interrupted mid-answer. Returns both
/// calls' frames (the first's empty when it is not there).
async fn two_calls(clock: Clock, with_first: bool) -> (Vec<f32>, Vec<f32>) {
    let realtime = !matches!(clock, Clock::Offline);
    let engine = engine(clock).await;
    let first = if with_first {
        Some(engine.create_session(call("first")).await.unwrap())
    } else {
        None
    };
    let second = engine.create_session(call("second")).await.unwrap();
    let mut first_frames = first.as_ref().map(|s| s.frames().unwrap());
    let mut second_frames = second.frames().unwrap();
    if let Some(s) = &first {
        speak(s, 440.0);
    }
    speak(&second, 220.0);
    let total = 3 * RATE;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut pa, mut pb) = (0, 0);
    if realtime {
        engine.settle().await.unwrap();
        engine.run_clock().await.unwrap();
        // Each reader its own task, as a network sender would be.
        let reader = |mut frames: OutputFrames| {
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut next = 0;
                while out.len() < total {
                    let f = frames.next_frame().await.unwrap();
                    assert_eq!(f.pts.0, next, "no frame lost, none repeated");
                    next += f.samples.len() as u64;
                    out.extend(f.samples);
                }
                (out, frames.lost_frames())
            })
        };
        let ta = first_frames.take().map(reader);
        let tb = reader(second_frames);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(s) = &first {
            s.interrupt().unwrap();
        }
        if let Some(t) = ta {
            let (out, lost) = t.await.unwrap();
            assert_eq!(lost, 0);
            a = out;
        }
        let (out, lost) = tb.await.unwrap();
        assert_eq!(lost, 0);
        b = out;
        assert_eq!(engine.alloc_violations(), 0, "the audio thread allocated");
    } else {
        while b.len() < total {
            if b.len() == RATE / 2 {
                if let Some(s) = &first {
                    s.interrupt().unwrap();
                }
            }
            engine.render(RATE as u64 / 50).await.unwrap();
            if let Some(f) = first_frames.as_mut() {
                drain(f, &mut pa, &mut a);
            }
            drain(&mut second_frames, &mut pb, &mut b);
        }
    }
    engine.shutdown().await;
    a.truncate(total);
    b.truncate(total);
    (a, b)
}

/// The first call's answer fades out and goes quiet (its bed plays on,
/// ducked no more); the second call never hears a thing of it.
fn check_two_calls(first: &[f32], second: &[f32], alone: &[f32]) {
    assert!(
        second == alone,
        "the second call is bit-identical without the first"
    );
    let loudest =
        |from: usize, to: usize| first[from..to].iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let half = RATE / 2;
    assert!(
        loudest(half - 2_400, half) > 0.5,
        "the first call was speaking"
    );
    // 0.4 s of fade, then only the bed (amplitude 6000/32768 ≈ 0.18).
    assert!(
        loudest(2 * RATE, 3 * RATE) < 0.2,
        "the first call's answer is gone: {}",
        loudest(2 * RATE, 3 * RATE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_interrupted_leaves_the_other_bit_identical_offline() {
    let (first, second) = two_calls(Clock::Offline, true).await;
    let (_, alone) = two_calls(Clock::Offline, false).await;
    check_two_calls(&first, &second, &alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_interrupted_leaves_the_other_bit_identical_in_real_time() {
    let live = || Clock::Virtual {
        capture: None,
        deferred: true,
    };
    let (first, second) = two_calls(live(), true).await;
    // The second call's pushes all land before its clock starts, so the
    // real-time run must equal the offline one, sample for sample.
    let (_, alone) = two_calls(Clock::Offline, false).await;
    check_two_calls(&first, &second, &alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_reader_loses_only_its_own_oldest_frames() {
    let engine = engine(Clock::Virtual {
        capture: None,
        deferred: false,
    })
    .await;
    let slow = engine.create_session(call("slow")).await.unwrap();
    let mut slow_events = slow.events();
    let steady = engine.create_session(call("steady")).await.unwrap();
    let mut slow_frames = slow.frames().unwrap();
    let steady_frames = steady.frames().unwrap();
    let steady_task = tokio::spawn(async move {
        let mut frames = steady_frames;
        let first = frames.next_frame().await.unwrap().pts.0;
        let mut next = first + 480;
        for _ in 0..150 {
            let f = frames.next_frame().await.unwrap();
            assert_eq!(f.pts.0, next, "the steady reader loses nothing");
            next += 480;
        }
        frames.lost_frames()
    });
    let first = slow_frames.next_frame().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = slow_frames.next_frame().await.unwrap();
    let lost = slow_frames.lost_frames();
    assert!(
        lost >= RATE as u64,
        "about 1.8 s of frames were lost, {lost} counted"
    );
    assert_eq!(
        after.pts.0,
        first.pts.0 + 480 + lost,
        "the pts jumps by exactly what was lost"
    );
    let reported: Vec<_> = sotto_integration::drain(&mut slow_events)
        .into_iter()
        .filter_map(|e| match e.kind {
            sotto::SessionEventKind::FramesLost { frames, total } => {
                Some((e.at.0, frames.get(), total.get()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        reported,
        vec![(after.pts.0, lost, lost)],
        "one event, at the frame after the loss"
    );
    assert_eq!(steady_task.await.unwrap(), 0);
    assert_eq!(engine.alloc_violations(), 0, "the audio thread allocated");
    engine.shutdown().await;
}

/// The next item of a stream, without a stream-extension crate.
async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_a_stream() {
    // Real time: the stream waits for each frame, one after the other.
    let live = engine(Clock::Virtual {
        capture: None,
        deferred: false,
    })
    .await;
    let s = live.create_session(call("streamed")).await.unwrap();
    speak(&s, 300.0);
    let mut frames = s.frames().unwrap();
    let first = next(&mut frames).await.unwrap();
    let mut pts = first.pts.0;
    for _ in 0..50 {
        let f = next(&mut frames).await.unwrap();
        assert_eq!(f.pts.0, pts + 480);
        pts = f.pts.0;
    }
    live.remove_session(&s).await.unwrap();
    // Gone: what was rendered is read out, then the stream ends.
    let mut rest = 0;
    while next(&mut frames).await.is_some() {
        rest += 1;
        assert!(rest < 100, "the stream ends once the session is gone");
    }
    live.shutdown().await;

    // Offline: the stream holds what was rendered, then ends; it never waits.
    let engine = engine(Clock::Offline).await;
    let s = engine.create_session(call("offline")).await.unwrap();
    let mut frames = s.frames().unwrap();
    assert!(next(&mut frames).await.is_none());
    engine.render(2_400).await.unwrap();
    let mut n = 0;
    while let Some(f) = next(&mut frames).await {
        assert_eq!(f.pts.0, n * 480);
        n += 1;
    }
    assert_eq!(n, 5);
    engine.shutdown().await;
}

/// A recorder on a call's output (SPEC C7) keeps what the user heard: the
/// fade, not the ingested answer; the WAV is whole once the session goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_on_the_output_keeps_what_the_user_heard() {
    let dir = sotto_integration::scratch_dir("calls-recorder");
    let path = dir.join("heard.wav");
    let engine = engine(Clock::Offline).await;
    // Offline renders outrun any task: the bound covers a whole render.
    let config = SessionConfig {
        output: SessionOutput::Own(OutputConfig {
            bound: Duration::from_secs(2),
            ..OutputConfig::default()
        }),
        ..call("recorded")
    };
    let s = engine.create_session(config).await.unwrap();
    let sink = sotto_actors::WavSink::create(&path, 24_000, 1).unwrap();
    let recorder = s.frames().unwrap().into_sink(Box::new(sink), 24_000);
    // A plain answer, cut 0.5 s in: the user heard half a second and a fade.
    let _ = s.push(tone_s16(RATE, 300.0, RATE as u32, 16_000.0));
    let mut mix = engine.render(RATE as u64 / 2).await.unwrap();
    s.interrupt().unwrap();
    mix.extend(engine.render(RATE as u64).await.unwrap());
    engine.remove_session(&s).await.unwrap();
    let written = recorder.await.unwrap().unwrap();
    assert_eq!(
        written,
        mix.len() as u64,
        "every frame rendered, nothing more"
    );
    let heard: Vec<i16> = hound::WavReader::open(&path)
        .unwrap()
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect();
    let want: Vec<i16> = mix
        .iter()
        .map(|&v| sotto_integration::quantize(v))
        .collect();
    assert!(heard == want, "the recording is the output, fade included");
    let half = RATE / 2;
    assert!(
        heard[half + 9_600..].iter().all(|&v| v == 0),
        "silent after the fade"
    );
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A room mix (SPEC C1): two sessions join a shared output; it holds their
/// sum sample for sample, as two own outputs of the same speech add up; a
/// session cannot join a room that is not there; a removed room's reader
/// gets what was rendered, then `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_output_holds_the_sum_of_the_sessions_in_it() {
    let engine = engine(Clock::Offline).await;
    let room = engine
        .create_output(
            "room",
            OutputConfig {
                also_main: false,
                ..OutputConfig::default()
            },
        )
        .await
        .unwrap();
    let mut room_frames = engine.output_frames(room).unwrap();
    assert_eq!(engine.output_frames(room).unwrap_err(), SessionError::Taken);
    let in_room = |name: &str| SessionConfig {
        name: name.into(),
        output: SessionOutput::Shared(room),
        ..SessionConfig::default()
    };
    let alone = |name: &str| SessionConfig {
        name: name.into(),
        output: SessionOutput::Own(OutputConfig {
            also_main: false,
            ..OutputConfig::default()
        }),
        ..SessionConfig::default()
    };
    let (a, b) = (
        engine.create_session(in_room("a")).await.unwrap(),
        engine.create_session(in_room("b")).await.unwrap(),
    );
    assert_eq!(
        a.frames().unwrap_err(),
        SessionError::NoOutput,
        "a session in a room has no output of its own"
    );
    let (c, d) = (
        engine.create_session(alone("c")).await.unwrap(),
        engine.create_session(alone("d")).await.unwrap(),
    );
    let (mut fc, mut fd) = (c.frames().unwrap(), d.frames().unwrap());
    for (s, freq) in [(&a, 300.0), (&b, 470.0), (&c, 300.0), (&d, 470.0)] {
        let _ = s.push(tone_s16(RATE / 2, freq, RATE as u32, 9_000.0));
    }
    engine.settle().await.unwrap();
    let (mut mix, mut one, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pm, mut p1, mut p2) = (0, 0, 0);
    for step in 0..40 {
        if step == 10 {
            a.interrupt().unwrap();
            c.interrupt().unwrap();
        }
        engine.render(RATE as u64 / 50).await.unwrap();
        drain(&mut room_frames, &mut pm, &mut mix);
        drain(&mut fc, &mut p1, &mut one);
        drain(&mut fd, &mut p2, &mut other);
    }
    assert_eq!(mix.len(), 40 * RATE / 50);
    let sum: Vec<f32> = one.iter().zip(&other).map(|(x, y)| x + y).collect();
    assert!(mix == sum, "the room holds the sum of its sessions");
    assert!(mix.iter().any(|v| v.abs() > 0.3), "the room was speaking");

    engine.render(RATE as u64 / 50).await.unwrap();
    engine.remove_output(room).await.unwrap();
    assert!(
        room_frames.try_next_frame().is_some(),
        "rendered before removal"
    );
    assert_eq!(
        room_frames.next_frame().await.unwrap_err(),
        SessionError::Closed
    );
    // An output gone is gone: its id names nothing (and an id cannot be
    // made up).
    let err = engine
        .create_session(SessionConfig {
            output: SessionOutput::Shared(room),
            ..SessionConfig::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no shared output"), "{err}");
    // Its sessions play on, heard by nobody.
    engine.render(RATE as u64 / 50).await.unwrap();
    engine.shutdown().await;
}

/// SPEC C5: on the offline clock a push bigger than the queue, or a
/// playout, awaited while nothing renders fails with a typed error within
/// a second instead of hanging; the audio stays queued and plays when
/// rendered; awaited while another task renders, both simply complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_waits_that_nothing_renders_fail_instead_of_hanging() {
    let engine = engine(Clock::Offline).await;
    let s = engine.create_session(call("offline")).await.unwrap();
    let three_seconds = tone_s16(3 * RATE, 330.0, RATE as u32, 8_000.0);

    let started = std::time::Instant::now();
    let err = s.push(three_seconds.clone()).await.unwrap_err();
    assert_eq!(err, SessionError::NotRendering);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let err = s.wait_for_playout().await.unwrap_err();
    assert_eq!(err, SessionError::NotRendering);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Nothing was lost: all three seconds play once rendered.
    let out = engine.render(4 * RATE as u64).await.unwrap();
    let first = out.iter().position(|v| v.abs() > 1e-3).unwrap();
    let last = out.iter().rposition(|v| v.abs() > 1e-3).unwrap();
    let span = last - first + 1;
    assert!(
        (3 * RATE - 50..=3 * RATE).contains(&span),
        "{span} samples sounded"
    );

    // The usual way: one task renders while another awaits.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renderer = {
        let (engine, done) = (engine.clone(), std::sync::Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                engine.render(RATE as u64 / 50).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    s.push(three_seconds).await.unwrap();
    s.wait_for_playout().await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    renderer.await.unwrap();
    engine.shutdown().await;
}
