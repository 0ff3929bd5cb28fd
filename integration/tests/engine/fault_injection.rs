//! SPEC R2, fault injection: every supervised actor panics 100 times while
//! three other sessions speak (one over a background bed) on the offline
//! clock. Each fault is followed by a restart, the failed session says so
//! in an event and recovers, and the engine's output and the other
//! sessions' events are bit-identical to a run without the faults. (The
//! device manager's 100 faults are in `device.rs`, on a real stream; the
//! renderer's own panic in `sotto-actors`' `renderer_panic.rs`.)
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto::LinkConfig;
use sotto::{
    AvatarHandle, BackgroundConfig, BackgroundHandle, BackgroundMode, SessionConfig, SessionEvent,
    SessionEventKind, SessionHandle,
};
use sotto_integration::{
    dc_s16, drain, face_avatar_server, mono_engine, scratch_dir, tone_s16, write_wav_s16,
};
use sotto_server::avatar::AvatarServer;
use sotto_server::token;

const FAULTS: usize = 100;
const BLOCK: u64 = 480;
const SECRET: &str = "fault-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Session,
    Ingest,
    Loader,
    Pump,
    Avatar,
}

/// What a run leaves to compare.
struct Run {
    mix: Vec<f32>,
    /// The three calm sessions' events, as text.
    calm: Vec<String>,
    /// The faulty session's events.
    faulty: Vec<SessionEvent>,
    restarts: u64,
}

async fn settle_restart(faulty: &SessionHandle) {
    // A restarted session accepts pushes again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while faulty.push(Vec::<u8>::new()).await.is_err() {
        assert!(Instant::now() < deadline, "the session was not restarted");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One run: the calm sessions speak in 20 ms pieces, one block rendered
/// per round; with `inject`, `actor` fails once per round.
async fn run(actor: Actor, inject: bool, bed: &Path, server: Option<&AvatarServer>) -> Run {
    let engine = mono_engine().await;
    let mut calm = Vec::new();
    for name in ["a", "b", "c"] {
        let s = engine
            .create_session(SessionConfig {
                name: name.into(),
                ..SessionConfig::default()
            })
            .await
            .unwrap();
        let events = s.events();
        calm.push((s, events));
    }
    let calm_bed = engine
        .background(&calm[0].0, bed_config(bed, 0.5))
        .await
        .unwrap();
    calm_bed.start().await.unwrap();
    let faulty = engine
        .create_session(SessionConfig {
            name: "faulty".into(),
            ..SessionConfig::default()
        })
        .await
        .unwrap();
    let mut faulty_events = faulty.events();
    // The loader's own bed plays in both runs: its faults must not touch it.
    let faulty_bed: Option<BackgroundHandle> = if actor == Actor::Loader {
        let bg = engine
            .background(&faulty, bed_config(bed, 0.25))
            .await
            .unwrap();
        bg.start().await.unwrap();
        Some(bg)
    } else {
        None
    };
    let avatar: Option<AvatarHandle> = match server {
        Some(server) => {
            let token = token::create("key", SECRET, Some("avatar_f"), token::DEFAULT_TTL)
                .unwrap()
                .token;
            let config = LinkConfig::new(&server.join_url(), "room", &token, "avatar_f");
            Some(engine.attach_avatar(&faulty, config).await.unwrap())
        }
        None => None,
    };

    let mut mix = Vec::new();
    for round in 0..FAULTS {
        for (i, (s, _)) in calm.iter().enumerate() {
            let freq = 200.0 + 150.0 * i as f32 + round as f32;
            let _ = s.push(tone_s16(BLOCK as usize, freq, 24_000, 3000.0));
        }
        if actor == Actor::Avatar {
            // The link has audio to carry while it fails.
            let _ = faulty.push(tone_s16(BLOCK as usize, 330.0, 24_000, 3000.0));
        }
        engine.render_into(BLOCK, &mut mix).await.unwrap();
        if !inject {
            continue;
        }
        match actor {
            Actor::Session => {
                faulty.inject_fault().unwrap();
                settle_restart(&faulty).await;
            }
            Actor::Ingest => {
                faulty.inject_ingest_fault().unwrap();
                // The push that meets the fault is lost with the actor;
                // its caller hears so.
                assert!(faulty.push(dc_s16(480, 100)).await.is_err());
                settle_restart(&faulty).await;
            }
            Actor::Loader => faulty_bed.as_ref().unwrap().inject_fault().unwrap(),
            Actor::Pump => engine.inject_pump_fault().unwrap(),
            Actor::Avatar => avatar.as_ref().unwrap().inject_fault().unwrap(),
        }
    }
    engine.settle().await.unwrap();
    // Everything the faulty session reports arrives before the count.
    let want = if inject { FAULTS } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut faulty_seen = Vec::new();
    loop {
        faulty_seen.extend(drain(&mut faulty_events));
        if restart_events(&faulty_seen) >= want || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let calm_text = calm
        .iter_mut()
        .flat_map(|(_, rx)| drain(rx))
        .map(|e| format!("{e:?}"))
        .collect();
    // Recovery: the faulty session plays (its own output or its avatar).
    match &avatar {
        Some(link) => {
            assert!(link.is_connected(), "the link stayed connected");
            faulty.mark_synthesis_start().unwrap();
            let _ = faulty.push(tone_s16(4_800, 330.0, 24_000, 3000.0));
            faulty.mark_synthesis_complete().unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            'ack: loop {
                for e in drain(&mut faulty_events) {
                    if matches!(e.kind, SessionEventKind::AvatarSegmentEnded { .. }) {
                        break 'ack;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "no acknowledgement after the faults"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        None if actor != Actor::Loader => {
            for (s, _) in &calm {
                s.clear_queue().await.unwrap();
            }
            calm_bed.stop().await.unwrap();
            let _ = faulty.push(dc_s16(4_800, 8192));
            engine.render(960).await.unwrap();
            let out = engine.render(960).await.unwrap();
            assert!(
                out.iter().all(|&v| v == 0.25),
                "the faulty session plays after its faults"
            );
        }
        None => {}
    }
    let restarts = engine.stats().actor_restarts;
    engine.shutdown().await;
    Run {
        mix,
        calm: calm_text,
        faulty: faulty_seen,
        restarts,
    }
}

fn bed_config(path: &Path, volume: f32) -> BackgroundConfig {
    BackgroundConfig {
        path: path.to_owned(),
        enabled: true,
        mode: BackgroundMode::Mixing,
        volume,
        looping: true,
    }
}

fn restart_events(events: &[SessionEvent]) -> usize {
    events
        .iter()
        .filter(|e| match &e.kind {
            SessionEventKind::Error { message }
            | SessionEventKind::BackgroundError { message, .. } => message.contains("restarted"),
            _ => false,
        })
        .count()
}

async fn check(actor: Actor) {
    let dir = scratch_dir(&format!("faults-{actor:?}"));
    let bed = dir.join("bed.wav");
    let frames = 24_000 / 3;
    let samples: Vec<f32> = (0..frames)
        .map(|i| (i as f32 * 0.031).sin() * 0.2)
        .collect();
    write_wav_s16(&bed, &samples, 24_000, 1);
    let server = match actor {
        Actor::Avatar => Some(face_avatar_server(SECRET).await),
        _ => None,
    };
    let reference = run(actor, false, &bed, server.as_ref()).await;
    let faulted = run(actor, true, &bed, server.as_ref()).await;
    assert!(
        reference.mix.iter().any(|&v| v != 0.0),
        "the reference run is silent"
    );
    let same = reference.mix.len() == faulted.mix.len()
        && reference
            .mix
            .iter()
            .zip(&faulted.mix)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{actor:?}: faults changed the output");
    assert_eq!(
        reference.calm, faulted.calm,
        "{actor:?}: the other sessions' events changed"
    );
    assert_eq!(restart_events(&reference.faulty), 0);
    match actor {
        Actor::Pump => assert_eq!(faulted.restarts, FAULTS as u64),
        _ => assert_eq!(
            restart_events(&faulted.faulty),
            FAULTS,
            "{actor:?}: one event per fault"
        ),
    }
    if matches!(actor, Actor::Loader | Actor::Avatar) {
        assert_eq!(faulted.restarts, FAULTS as u64);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_actor_fails_100_times() {
    check(Actor::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_path_fails_100_times() {
    check(Actor::Ingest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_loader_fails_100_times() {
    check(Actor::Loader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_pump_fails_100_times() {
    check(Actor::Pump).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avatar_link_fails_100_times() {
    check(Actor::Avatar).await;
}

/// How a busy session ends in [`racing_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Nothing happens to it.
    None,
    /// It panics and is restarted.
    Restart,
    /// It is removed.
    Remove,
}

/// One run of the races below: each round a fresh busy session ends while
/// a task keeps sending to it; then the calm session pushes and a block
/// renders.
async fn racing_run(ending: Ending) -> Vec<f32> {
    let engine = mono_engine().await;
    let calm = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let mut mix = Vec::new();
    for round in 0..FAULTS {
        let busy = Arc::new(
            engine
                .create_session(SessionConfig::default())
                .await
                .unwrap(),
        );
        let sender = Arc::clone(&busy);
        let spam = tokio::spawn(async move {
            for i in 0..400 {
                let _ = sender.set_fade(Duration::from_millis(10));
                if i % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        tokio::task::yield_now().await;
        match ending {
            Ending::None => {}
            Ending::Restart => {
                busy.inject_fault().unwrap();
                settle_restart(&busy).await;
            }
            Ending::Remove => engine.remove_session(&busy).await.unwrap(),
        }
        spam.await.unwrap();
        if ending != Ending::Remove {
            engine.remove_session(&busy).await.unwrap();
            engine.settle().await.unwrap();
        }
        let _ = calm.push(tone_s16(
            BLOCK as usize,
            300.0 + round as f32,
            24_000,
            3000.0,
        ));
        engine.render_into(BLOCK, &mut mix).await.unwrap();
    }
    engine.settle().await.unwrap();
    engine.shutdown().await;
    mix
}

/// Messages sent to a session while it dies or is removed are counted out
/// exactly once, however they end (handled, lost with the actor, refused):
/// the offline clock never renders before another session's push lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_racing_a_restart_or_removal_leave_other_sessions_exact() {
    let reference = racing_run(Ending::None).await;
    assert!(reference.iter().any(|&v| v != 0.0));
    for ending in [
        Ending::Restart,
        Ending::Remove,
        Ending::Restart,
        Ending::Remove,
    ] {
        let out = racing_run(ending).await;
        let same = out.len() == reference.len()
            && out
                .iter()
                .zip(&reference)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{ending:?} changed another session's output");
    }
}
