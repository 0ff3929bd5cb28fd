//! The output player (SPEC D5): tracks added and removed while playing,
//! mixed sample-exact; duplicates and double starts are errors; close
//! releases everything.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use sotto::{Engine, EngineConfig, EngineError, OutputPlayer};
use tokio::sync::mpsc;

/// Waits until the track's feeder has taken every frame sent, then until
/// the engine has handled what it pushed.
async fn fed(engine: &Engine, senders: &[&mpsc::Sender<Vec<f32>>]) {
    for tx in senders {
        while tx.capacity() < tx.max_capacity() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    // The feeder pushes in the same step as it receives; a moment more
    // covers the step itself.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    engine.settle().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracks_mix_while_added_or_removed() {
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let player = OutputPlayer::new(&engine);
    player.start().await.unwrap();
    assert_eq!(player.start().await, Err(EngineError::AlreadyStarted));

    let (a_tx, a_rx) = mpsc::channel(8);
    let (b_tx, b_rx) = mpsc::channel(8);
    player.add_track("remote", a_rx).await.unwrap();
    player.add_track("music", b_rx).await.unwrap();
    let (_, dup_rx) = mpsc::channel(1);
    assert_eq!(
        player.add_track("remote", dup_rx).await,
        Err(EngineError::DuplicateTrack("remote".into()))
    );
    assert_eq!(player.tracks().await, ["music", "remote"]);

    // 10 ms frames from both, played together.
    for _ in 0..5 {
        a_tx.send(vec![0.25; 240]).await.unwrap();
        b_tx.send(vec![0.125; 240]).await.unwrap();
    }
    fed(&engine, &[&a_tx, &b_tx]).await;
    let out = engine.render(1_200).await.unwrap();
    assert!(out.iter().all(|&v| v == 0.375), "both tracks mixed");

    // One leaves mid-play; the other goes on.
    a_tx.send(vec![0.25; 240]).await.unwrap();
    b_tx.send(vec![0.125; 240]).await.unwrap();
    fed(&engine, &[&a_tx, &b_tx]).await;
    player.remove_track("remote").await.unwrap();
    let out = engine.render(240).await.unwrap();
    assert!(out.iter().all(|&v| v == 0.125), "{}", out[0]);
    assert_eq!(
        player.remove_track("remote").await,
        Err(EngineError::NoSuchTrack("remote".into()))
    );

    player.close().await.unwrap();
    assert!(player.tracks().await.is_empty());
    let (_, late_rx) = mpsc::channel(1);
    assert_eq!(
        player.add_track("late", late_rx).await,
        Err(EngineError::PlayerClosed)
    );
    engine.shutdown().await;
}
