//! SPEC R4 / shutdown: `Engine::shutdown` stops everything in order within
//! a second, and every handle afterwards says so with a clear error.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::time::{Duration, Instant};

use sotto::{
    BackgroundConfig, Clock, Engine, EngineConfig, EngineError, SessionConfig, SessionError,
};
use sotto_integration::tone_s16;

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
