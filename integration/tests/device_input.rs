//! A real cpal input stream (SPEC D3) reading a prepared file through the
//! ALSA file plugin's `infile`: 10 ms frames, in order, none lost while
//! the consumer keeps up, drops counted when it lags. One test per
//! process: the configuration is chosen through the environment first.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use assert_no_alloc::AllocDisabler;
use sotto::{DeviceInput, InputConfig};
use sotto_integration::{scratch_dir, use_alsa_config};

/// Counts allocations on threads that forbid them: the capture callback.
#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

#[test]
fn input_frames_arrive_in_order_and_drops_are_counted() {
    let dir = scratch_dir("alsa-in");
    let infile = dir.join("mic.raw");
    let frames = 40usize;
    let frame_len = 480usize; // 10 ms at 48 kHz mono
    let mic: Vec<f32> = (0..frames * frame_len)
        .map(|i| ((i * 7) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let bytes: Vec<u8> = mic.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&infile, bytes).unwrap();
    // The only thread yet: ALSA reads this when cpal first asks for devices.
    use_alsa_config(
        &dir,
        &format!(
            "pcm.sotto_mic {{\n type file\n slave.pcm \"null\"\n file \"/dev/null\"\n infile \"{}\"\n format \"raw\"\n\
             hint {{ show on description \"reads a file\" }}\n}}",
            infile.display()
        ),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = InputConfig {
            device: Some("sotto_mic".into()),
            sample_rate: 48_000,
            channels: 1,
            queue_chunks: 50,
        };
        // The whole file fits the queue: every frame arrives, in order.
        let mut input = DeviceInput::open(&config).unwrap();
        for k in 0..frames {
            let f = tokio::time::timeout(Duration::from_secs(10), input.next_chunk())
                .await
                .unwrap();
            assert_eq!(f.index, k as u64);
            assert_eq!(
                f.samples,
                &mic[k * frame_len..(k + 1) * frame_len],
                "frame {k}"
            );
        }
        assert_eq!(
            input.alloc_violations(),
            0,
            "the capture callback allocated"
        );
        drop(input);

        // A consumer that lags behind a 5-frame queue: the oldest frames
        // are kept, the newest dropped and counted.
        let mut input = DeviceInput::open(&InputConfig {
            queue_chunks: 5,
            ..config
        })
        .unwrap();
        sotto_integration::wait_until("chunks dropped from the full queue", || {
            input.dropped_chunks() > 0
        })
        .await;
        for k in 0..5 {
            let f = input.try_chunk().unwrap();
            assert_eq!(
                f.samples,
                &mic[k * frame_len..(k + 1) * frame_len],
                "frame {k}"
            );
        }
    });
    std::fs::remove_dir_all(&dir).ok();
}
