//! Cost of the echo processing module per 10 ms frame at 48 kHz mono: the
//! full chain and echo cancellation alone.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sotto_media::echo::{EchoConfig, EchoPath, CHUNK};

fn bench_echo(c: &mut Criterion) {
    let mut g = c.benchmark_group("echo_frame_10ms_48k");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // Two seconds of far end and its echo, cycled, so the filters stay busy.
    let n = CHUNK * 200;
    let far: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.031).sin() + (i as f32 * 0.0173).sin()) * 0.2)
        .collect();
    let mic: Vec<f32> = (0..n)
        .map(|i| {
            if i >= 1_920 {
                far[i - 1_920] * 0.3
            } else {
                0.0
            }
        })
        .collect();
    let alone = EchoConfig {
        noise_suppression: false,
        gain_control: false,
        high_pass: false,
        delay_ms: 40,
        ..EchoConfig::default()
    };
    let full = EchoConfig {
        delay_ms: 40,
        ..EchoConfig::default()
    };
    for (name, config) in [("full_chain", full), ("echo_cancellation_alone", alone)] {
        let mut path = EchoPath::new(config).unwrap();
        let mut frame = [0.0f32; CHUNK];
        let mut k = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let at = (k % 200) * CHUNK;
                frame.copy_from_slice(&mic[at..at + CHUNK]);
                path.process(&far[at..at + CHUNK], &mut frame).unwrap();
                k += 1;
                frame[0]
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_echo);
criterion_main!(benches);
