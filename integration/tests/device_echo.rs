//! Live echo cancellation wiring and hot-plug on real cpal streams over
//! ALSA file devices (SPEC D4, D6): the output's reverse stream reaches
//! the echo path, follows the output when the default device changes and
//! when a failed stream is reopened, and neither callback allocates. One
//! test per process: the configuration is chosen before ALSA reads it.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::time::Duration;

use assert_no_alloc::AllocDisabler;
use sotto::{Clock, DeviceEvent, EchoConfig, Engine, EngineConfig, InputConfig, SessionConfig};
use sotto_integration::{scratch_dir, tone_s16, use_alsa_config, wait_until};
use tokio::sync::mpsc::Receiver;

/// Counts allocations on threads that forbid them: the audio callbacks.
#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

async fn next_move(moves: &mut Receiver<DeviceEvent>) -> DeviceEvent {
    tokio::time::timeout(Duration::from_secs(20), moves.recv())
        .await
        .expect("a device move")
        .expect("the engine is running")
}

fn nonzero_f32(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(4)
        .filter(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) != 0.0)
        .count()
}

#[test]
fn echo_cancellation_follows_the_output_across_moves() {
    let dir = scratch_dir("alsa-echo");
    let (first, other, mic) = (
        dir.join("default.raw"),
        dir.join("other.raw"),
        dir.join("mic.raw"),
    );
    let tone: Vec<u8> = (0..48_000 * 2)
        .flat_map(|i| ((i as f32 * 0.03).sin() * 0.3).to_le_bytes())
        .collect();
    std::fs::write(&mic, tone).unwrap();
    let file_pcm = |path: &std::path::Path| {
        format!(
            "type file\n slave.pcm \"null\"\n file \"{}\"\n format \"raw\"\n",
            path.display()
        )
    };
    use_alsa_config(
        &dir,
        &format!(
            "pcm.!default {{\n {}}}\n\
             pcm.sotto_other {{\n {} hint {{ show on description \"another file\" }}\n}}\n\
             pcm.sotto_mic {{\n type file\n slave.pcm \"null\"\n file \"/dev/null\"\n infile \"{}\"\n format \"raw\"\n\
             hint {{ show on description \"reads a file\" }}\n}}",
            file_pcm(&first),
            file_pcm(&other),
            mic.display()
        ),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // No name: the engine plays through the default and follows it.
        let engine = Engine::start(EngineConfig {
            clock: Clock::Device {
                name: None,
                deferred: true,
            },
            ..EngineConfig::default()
        })
        .await
        .unwrap();
        // Speech queued well past the moves below, before the clock runs:
        // the device plays as fast as its callback runs.
        let s = engine
            .create_session(SessionConfig {
                queue: Duration::from_secs(600),
                ..SessionConfig::default()
            })
            .await
            .unwrap();
        let total = 480 * 24_000;
        s.mark_synthesis_start().unwrap();
        let _ = s.push(tone_s16(total, 300.0, 24_000, 8000.0));
        s.mark_synthesis_complete().unwrap();
        engine.settle().await.unwrap();
        engine.run_clock().await.unwrap();
        assert_eq!(engine.device_fallback(), None);
        assert_eq!(
            engine.playing_device().await.unwrap().as_deref(),
            Some("default")
        );
        let mut moves = engine.device_events();

        let mut input = engine
            .open_input(
                &InputConfig {
                    device: Some("sotto_mic".into()),
                    ..InputConfig::default()
                },
                Some(EchoConfig::default()),
            )
            .unwrap();
        for k in 0..20u64 {
            let f = tokio::time::timeout(Duration::from_secs(20), input.next_chunk())
                .await
                .unwrap();
            assert_eq!(f.index, k);
            assert_eq!(f.samples.len(), 480, "10 ms mono at 48 kHz");
        }
        let stats = |input: &sotto::DeviceInput| {
            let s = input.echo_stats().unwrap();
            (s.rebinds(), s.render_frames(), s.errors())
        };
        wait_until("the reverse stream", || stats(&input).1 > 0).await;
        assert_eq!(stats(&input).0, 1);

        let played = || s.stats();
        wait_until("speech", || played().played_frames.get() > 0).await;

        // The default output changes: the renderer follows it and the
        // echo path re-binds to the new stream's reverse tap.
        engine
            .inject_default_device(Some("sotto_other".into()))
            .unwrap();
        assert_eq!(
            next_move(&mut moves).await,
            DeviceEvent::Followed {
                from: "default".into(),
                to: "sotto_other".into()
            }
        );
        wait_until("a re-bind after following", || stats(&input).0 == 2).await;
        let before = stats(&input).1;
        wait_until("render frames after following", || stats(&input).1 > before).await;

        // The new stream fails: virtual clock, then the same device again.
        engine.inject_device_fault(false).await.unwrap();
        assert!(matches!(
            next_move(&mut moves).await,
            DeviceEvent::FellBack { reason } if reason.contains("sotto_other")
        ));
        assert_eq!(
            next_move(&mut moves).await,
            DeviceEvent::Opened {
                device: "sotto_other".into()
            }
        );
        wait_until("a re-bind after reopening", || stats(&input).0 == 3).await;
        let before = stats(&input).1;
        wait_until("render frames after reopening", || stats(&input).1 > before).await;
        assert_eq!(stats(&input).2, 0, "the processing module refused frames");
        println!(
            "echo path: {} render frames, {} capture frames, delay {} ms",
            stats(&input).1,
            input.echo_stats().unwrap().capture_frames(),
            input.echo_stats().unwrap().delay_ms()
        );

        // Nothing queued was lost on the way, and both devices played it.
        wait_until("all the speech", || {
            played().played_frames.get() >= total as u64
        })
        .await;
        assert_eq!(played().played_frames.get(), total as u64);
        assert_eq!(played().underruns, 0);
        let t = engine.stats();
        assert_eq!(t.alloc_violations, 0, "the output callback allocated");
        assert_eq!(input.alloc_violations(), 0, "the input callback allocated");
        engine.shutdown().await;
        drop(input);
        assert!(nonzero_f32(&first) > 0, "nothing reached the first device");
        assert!(
            nonzero_f32(&other) > 0,
            "nothing reached the followed device"
        );
    });
    std::fs::remove_dir_all(&dir).ok();
}
