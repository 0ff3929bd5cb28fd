//! SPEC R4 / shutdown: `Engine::shutdown` stops everything in order within
//! a second, leaves nothing half-written, and every handle afterwards says
//! so with a clear error.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::time::{Duration, Instant};

use sotto::LinkConfig;
use sotto::{
    BackgroundConfig, BackgroundMode, Clock, Engine, EngineConfig, EngineError, SessionConfig,
    SessionError,
};
use sotto_actors::{Recorder, WavSink};
use sotto_integration::{face_avatar_server, quantize, scratch_dir, tone_s16, write_wav_s16};
use sotto_server::token;

const SECRET: &str = "shutdown-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_every_handle_gives_a_clear_error() {
    for clock in [
        Clock::Offline,
        Clock::Virtual {
            capture: None,
            deferred: false,
        },
    ] {
        let engine = Engine::start(EngineConfig {
            clock,
            ..EngineConfig::default()
        })
        .await
        .unwrap();
        let mut sessions = Vec::new();
        for _ in 0..8 {
            let s = engine
                .create_session(SessionConfig::default())
                .await
                .unwrap();
            let _ = s.push(tone_s16(24_000, 220.0, 24_000, 8000.0));
            sessions.push(s);
        }
        let bed = engine
            .background(&sessions[0], BackgroundConfig::new("/nonexistent.wav"))
            .await;
        let t = Instant::now();
        engine.shutdown().await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "shutdown took {:?}",
            t.elapsed()
        );
        // A second shutdown is harmless.
        engine.shutdown().await;

        assert!(matches!(
            engine.create_session(SessionConfig::default()).await,
            Err(EngineError::Stopped)
        ));
        assert!(matches!(
            engine.render(480).await,
            Err(EngineError::Stopped)
        ));
        assert!(matches!(
            engine.settle().await,
            Ok(()) | Err(EngineError::Stopped)
        ));
        for s in &sessions {
            let pushed = tokio::time::timeout(Duration::from_secs(1), s.push(vec![0; 480]))
                .await
                .expect("a push after shutdown must not hang");
            assert!(matches!(pushed, Err(SessionError::Closed)), "{pushed:?}");
            assert!(matches!(s.interrupt(), Err(SessionError::Closed)));
            let snap = tokio::time::timeout(Duration::from_secs(1), s.snapshot_playback())
                .await
                .expect("a snapshot after shutdown must not hang");
            assert!(matches!(snap, Err(SessionError::Closed)));
        }
        if let Ok(bed) = bed {
            let started = tokio::time::timeout(Duration::from_secs(1), bed.start())
                .await
                .expect("a background start after shutdown must not hang");
            assert!(started.is_err());
        }
    }
}

/// Shutdown in the middle of everything: a push waiting for room, a bed
/// playing, a WAV tee and a recorder attached, an avatar link streaming.
/// Within the limit, every sink is finished (the WAV is complete and holds
/// exactly what was tee'd), the waiting push is told the session closed,
/// the avatar's peer sees the link go, and nothing can be started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_in_flight_leaves_nothing_half_written() {
    let dir = scratch_dir("shutdown-in-flight");
    let bed = dir.join("bed.wav");
    let wav = dir.join("tee.wav");
    let samples: Vec<f32> = (0..24_000).map(|i| (i as f32 * 0.02).sin() * 0.1).collect();
    write_wav_s16(&bed, &samples, 24_000, 1);
    let server = face_avatar_server(SECRET).await;
    let engine = Engine::start(EngineConfig {
        channels: 1,
        clock: Clock::Virtual {
            capture: None,
            deferred: false,
        },
        ..EngineConfig::default()
    })
    .await
    .unwrap();

    let speaker = engine
        .create_session(SessionConfig {
            queue: Duration::from_millis(500),
            ..SessionConfig::default()
        })
        .await
        .unwrap();
    speaker
        .add_sink(Box::new(WavSink::create(&wav, 24_000, 1).unwrap()))
        .unwrap();
    let recorder = Recorder::new("recorder", false);
    speaker.add_sink(Box::new(recorder.clone())).unwrap();
    let background = engine
        .background(
            &speaker,
            BackgroundConfig {
                mode: BackgroundMode::Mixing,
                looping: true,
                ..BackgroundConfig::new(&bed)
            },
        )
        .await
        .unwrap();
    background.start().await.unwrap();
    speaker.mark_synthesis_start().unwrap();
    // Three seconds into a half-second queue: most of it waits for room.
    let waiting = speaker.push(tone_s16(72_000, 220.0, 24_000, 8000.0));

    let face = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let token = token::create("key", SECRET, Some("avatar_s"), token::DEFAULT_TTL)
        .unwrap()
        .token;
    let avatar = engine
        .attach_avatar(
            &face,
            LinkConfig::new(&server.join_url(), "room", &token, "avatar_s"),
        )
        .await
        .unwrap();
    assert!(avatar.is_connected());
    face.mark_synthesis_start().unwrap();
    let _ = face.push(tone_s16(48_000, 330.0, 24_000, 3000.0));
    // The sinks see speech as the queue takes it in: its first half
    // second now, the rest as it plays.
    sotto_integration::wait_until("the tee to see what the queue took", || {
        recorder.log().frames.len() >= 12_000
    })
    .await;

    let t = Instant::now();
    engine.shutdown().await;
    assert!(
        t.elapsed() < Engine::SHUTDOWN_LIMIT,
        "shutdown took {:?}",
        t.elapsed()
    );

    // The push that waited for room is answered, not left hanging.
    let answered = tokio::time::timeout(Duration::from_millis(100), waiting)
        .await
        .expect("the waiting push was answered by shutdown");
    assert!(
        matches!(answered, Err(SessionError::Closed)),
        "{answered:?}"
    );

    // Every sink was finished: the WAV is whole, and holds exactly what
    // the session tee'd, bit for bit.
    let log = recorder.log();
    assert_eq!(log.finished, 1);
    let mut reader = hound::WavReader::open(&wav).unwrap();
    assert_eq!(reader.spec().sample_rate, 24_000);
    assert_eq!(reader.spec().channels, 1);
    let on_disk = std::fs::metadata(&wav).unwrap().len();
    assert_eq!(
        on_disk,
        44 + 2 * u64::from(reader.len()),
        "the header counts every sample"
    );
    let written: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let tee: Vec<i16> = log.frames.iter().map(|&s| quantize(s)).collect();
    assert!(written == tee, "the file differs from what was tee'd");
    assert!(
        (12_000..72_000).contains(&written.len()),
        "{} frames written",
        written.len()
    );
    assert!(
        written[..] == tone_as_i16(72_000, 220.0, 8000.0)[..written.len()],
        "the file is the push as far as the queue took it, bit for bit"
    );

    // The link is down, and the avatar's side saw its peer go.
    assert!(!avatar.is_connected());
    assert!(avatar.inject_fault().is_err());
    let stats = || server.stats();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats().ended < stats().peers {
        assert!(
            Instant::now() < deadline,
            "the avatar never saw the link close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Nothing new starts.
    assert!(matches!(
        engine
            .background(&speaker, BackgroundConfig::new(&bed))
            .await,
        Err(EngineError::Stopped)
    ));
    assert!(matches!(
        engine
            .attach_avatar(
                &face,
                LinkConfig::new(&server.join_url(), "room", &token, "avatar_s"),
            )
            .await,
        Err(EngineError::Stopped)
    ));
    assert!(background.start().await.is_err());
    std::fs::remove_dir_all(&dir).ok();
}

fn tone_as_i16(n: usize, freq: f32, amplitude: f32) -> Vec<i16> {
    tone_s16(n, freq, 24_000, amplitude)
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}
