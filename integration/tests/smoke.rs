use sotto::{Engine, EngineConfig, SessionConfig, SessionEventKind};
use sotto_integration::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_pushed_audio_sample_exact() {
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let s = engine.create_session(SessionConfig::default()).await.unwrap();
    let mut ev = s.events();
    s.mark_synthesis_start().unwrap();
    let p = s.push(dc_s16(1000, 16384));
    s.mark_synthesis_complete().unwrap();
    let out = engine.render(24_000).await.unwrap();
    assert_eq!(p.await.unwrap().accepted_frames, 1000);
    assert!(out[..1000].iter().all(|&x| x == 0.5));
    assert!(out[1000..].iter().all(|&x| x == 0.0));
    let events = drain(&mut ev);
    println!("{events:?}");
    assert_eq!(times(&events, |k| matches!(k, SessionEventKind::FirstAudio)), vec![0]);
    assert_eq!(times(&events, |k| matches!(k, SessionEventKind::LastAudio)), vec![1000 + 4800]);
    assert_eq!(s.snapshot_playback().await.unwrap(), (1000, 1000));
    engine.shutdown().await;
}
