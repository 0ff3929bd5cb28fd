//! A real cpal output stream (SPEC D1, D2) on an ALSA `file` PCM over
//! `null`, selected by a test ALSA configuration: no sound card needed.
//! One test per process: the configuration is chosen through the
//! environment before ALSA first reads it.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::time::{Duration, Instant};

use assert_no_alloc::AllocDisabler;
use sotto::{Clock, Engine, EngineConfig, SessionConfig};
use sotto_integration::{scratch_dir, tone_s16, use_alsa_config};

/// Counts allocations on threads that forbid them: the audio callbacks.
#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

async fn wait_for_clock(engine: &Engine, frames: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.clock().0 < frames {
        assert!(Instant::now() < deadline, "the device clock stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// An engine on the file device, its clock not yet running.
async fn file_engine() -> Engine {
    Engine::start(EngineConfig {
        clock: Clock::Device {
            name: Some("sotto_file".into()),
            deferred: true,
        },
        ..EngineConfig::default()
    })
    .await
    .unwrap()
}

/// Whether the file device's output holds `reference` exactly, after the
/// stream's start-up silence.
fn plays_the_reference(raw: &std::path::Path, reference: &[f32]) -> bool {
    let bytes = std::fs::read(raw).unwrap();
    let played: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let start = played.iter().position(|&v| v != 0.0).unwrap();
    let ref_start = reference.iter().position(|&v| v != 0.0).unwrap();
    let n = reference.len() - ref_start;
    played.len() >= start + n && played[start..start + n] == reference[ref_start..]
}

#[test]
fn a_file_device_plays_exactly_what_offline_renders() {
    let dir = scratch_dir("alsa-file");
    let raw = dir.join("out.raw");
    // The only thread yet: ALSA reads this when cpal first asks for devices.
    use_alsa_config(
        &dir,
        &format!(
            "pcm.sotto_file {{\n type file\n slave.pcm \"null\"\n file \"{}\"\n format \"raw\"\n\
             hint {{ show on description \"writes to a file\" }}\n}}",
            raw.display()
        ),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let speech = tone_s16(12_000, 440.0, 24_000, 8000.0);
    let reference = runtime.block_on(async {
        let engine = Engine::start(EngineConfig::default()).await.unwrap();
        let s = engine
            .create_session(SessionConfig::default())
            .await
            .unwrap();
        let _ = s.push(speech.clone());
        let out = engine.render(24_000).await.unwrap();
        engine.shutdown().await;
        out
    });
    runtime.block_on(async {
        let list = sotto::Engine::devices().unwrap();
        assert!(list.iter().any(|d| d.name == "sotto_file"), "{list:?}");

        let engine = file_engine().await;
        assert_eq!(engine.device_fallback(), None);
        let s = engine
            .create_session(SessionConfig::default())
            .await
            .unwrap();
        let _ = s.push(speech.clone());
        engine.settle().await.unwrap();
        engine.run_clock().await.unwrap();
        wait_for_clock(&engine, 24_000).await;
        let t = engine.stats();
        assert_eq!(
            t.alloc_violations,
            0,
            "the callback allocated"
        );
        assert!(!t.poisoned);
        engine.shutdown().await;
        assert!(
            plays_the_reference(&raw, &reference),
            "the device output differs from the offline render"
        );

        // The device manager fails 100 times while the device plays (SPEC
        // R2): it restarts in place each time, the audio thread never stops
        // and the file is again exactly the offline render.
        let engine = file_engine().await;
        let s = engine
            .create_session(SessionConfig::default())
            .await
            .unwrap();
        let _ = s.push(speech.clone());
        engine.settle().await.unwrap();
        engine.run_clock().await.unwrap();
        for i in 0..100 {
            engine.inject_device_manager_fault().unwrap();
            // It answers again once restarted; the stream is the same one.
            let playing = engine.playing_device().await.unwrap();
            assert_eq!(playing.as_deref(), Some("sotto_file"), "after fault {i}");
        }
        wait_for_clock(&engine, 24_000).await;
        let t = engine.stats();
        assert_eq!(t.actor_restarts, 100);
        assert!(!t.poisoned);
        assert_eq!(t.alloc_violations, 0);
        engine.shutdown().await;
        assert!(
            plays_the_reference(&raw, &reference),
            "faults in the device manager changed what the device played"
        );

        // A failing stream (SPEC D6): the renderer moves to the virtual
        // clock and back to the device, and no frame of queued speech is
        // lost on the way. An underrun only counts.
        let engine = file_engine().await;
        let mut moves = engine.device_events();
        let s = engine
            .create_session(SessionConfig {
                queue: Duration::from_secs(120),
                ..SessionConfig::default()
            })
            .await
            .unwrap();
        let minute = 60 * 24_000;
        s.mark_synthesis_start().unwrap();
        let _ = s.push(tone_s16(minute, 300.0, 24_000, 8000.0));
        s.mark_synthesis_complete().unwrap();
        engine.settle().await.unwrap();
        engine.run_clock().await.unwrap();
        engine.inject_device_fault(true).await.unwrap();
        engine.inject_device_fault(false).await.unwrap();
        let next = |moves: &mut tokio::sync::mpsc::Receiver<sotto::DeviceEvent>| {
            let got = moves.try_recv();
            got.ok()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            assert!(Instant::now() < deadline, "moves so far: {seen:?}");
            match next(&mut moves) {
                Some(e) => seen.push(e),
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        assert!(
            matches!(&seen[0], sotto::DeviceEvent::FellBack { reason } if reason.contains("sotto_file")),
            "{seen:?}"
        );
        assert_eq!(
            seen[1],
            sotto::DeviceEvent::Opened {
                device: "sotto_file".into()
            }
        );
        let telemetry = || s.stats();
        while telemetry().played_frames.get() < minute as u64 {
            assert!(Instant::now() < deadline, "speech stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(telemetry().played_frames.get(), minute as u64);
        assert_eq!(telemetry().underruns, 0);
        engine.shutdown().await;

        // A device that is not there: the virtual clock runs instead, and
        // the engine says why.
        let engine = Engine::start(EngineConfig {
            clock: Clock::Device {
                name: Some("no-such-device".into()),
                deferred: false,
            },
            ..EngineConfig::default()
        })
        .await
        .unwrap();
        let why = engine.device_fallback().unwrap().to_owned();
        assert!(why.contains("no-such-device"), "{why}");
        wait_for_clock(&engine, 2_400).await;
        engine.shutdown().await;
    });
    std::fs::remove_dir_all(&dir).ok();
}
