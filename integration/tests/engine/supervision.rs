//! SPEC R2: a failing session actor is restarted with a fresh voice; the
//! other sessions never hear a glitch.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::time::Duration;

use sotto::{Engine, SessionConfig, SessionEventKind, SessionHandle};
use sotto_actors::Recorder;
use sotto_integration::{dc_s16, drain, mono_engine};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn handles_can_be_shared_across_threads() {
    assert_send_sync::<Engine>();
    assert_send_sync::<SessionHandle>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_session_is_restarted_and_others_play_on() {
    let engine = mono_engine().await;
    let calm = engine
        .create_session(SessionConfig {
            name: "calm".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let faulty = engine
        .create_session(SessionConfig {
            name: "faulty".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ev = faulty.events();
    let _ = calm.push(dc_s16(24_000, 1000));
    let _ = faulty.push(dc_s16(24_000, 2000));
    let before = engine.render(480).await.unwrap();
    assert!(before.iter().all(|&v| v == 3000.0 / 32768.0));
    faulty.inject_fault().unwrap();
    // Let the supervisor notice and restart.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if faulty.push(Vec::<u8>::new()).await.is_ok() {
            break;
        }
    }
    let after = engine.render(2400).await.unwrap();
    assert!(
        after.iter().all(|&v| v == 1000.0 / 32768.0),
        "calm plays on; faulty's old ring is retired"
    );
    let _ = faulty.push(dc_s16(480, 2000));
    let again = engine.render(480).await.unwrap();
    assert!(
        again.iter().all(|&v| v == 3000.0 / 32768.0),
        "the restarted session plays"
    );
    let events = drain(&mut ev);
    assert!(events.iter().any(
        |e| matches!(&e.kind, SessionEventKind::Error { message } if message.contains("restarted"))
    ));
    engine.shutdown().await;
}

/// A restarted session keeps its sinks: a tee goes on receiving what is
/// pushed, and a sink that publishes the voice (an avatar) keeps the direct
/// output silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_session_keeps_its_sinks() {
    let engine = mono_engine().await;
    let s = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let tee = Recorder::new("tee", false);
    let avatar = Recorder::new("avatar", true);
    s.add_sink(Box::new(tee.clone())).unwrap();
    s.add_sink(Box::new(avatar.clone())).unwrap();
    for round in 0..20 {
        let _ = s.push(dc_s16(480, 2000));
        let out = engine.render(480).await.unwrap();
        assert!(out.iter().all(|&v| v == 0.0), "round {round}: muted");
        s.inject_fault().unwrap();
        for _ in 0..1000 {
            if s.push(Vec::<u8>::new()).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _ = s.push(dc_s16(480, 2000));
    let out = engine.render(480).await.unwrap();
    assert!(out.iter().all(|&v| v == 0.0), "still muted after restarts");
    engine.settle().await.unwrap();
    for log in [tee.log(), avatar.log()] {
        assert_eq!(log.frames.len(), 21 * 480, "every push reached the sink");
        assert_eq!(log.finished, 0);
    }
    engine.shutdown().await;
    assert_eq!(tee.log().finished, 1, "finished once, at shutdown");
}
