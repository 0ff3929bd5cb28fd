//! VP8 encode cost per frame of the avatar's face (SPEC W5) at 640×480 and
//! 320×240, 25 fps: the built-in face talking (its mouth moving with a
//! speech-like level), encoded by libvpx in real-time mode at two speeds.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, VideoFrame};
use sotto_media::vp8::{Vp8Config, Vp8Encoder};

/// Two seconds of the face talking: 50 frames.
fn talking(width: u32, height: u32) -> Vec<VideoFrame> {
    let mut face = FaceRenderer::new(width, height);
    (0..50u32)
        .map(|k| {
            let level = ((f64::from(k) * 0.9).sin().abs() * 12_000.0) as i16;
            face.push_audio(&vec![level; 960], 1);
            let mut frame = VideoFrame {
                width,
                height,
                y: Vec::new(),
                u: Vec::new(),
                v: Vec::new(),
            };
            face.render(u64::from(k) * 3_600, &mut frame);
            frame
        })
        .collect()
}

fn bench_vp8(c: &mut Criterion) {
    let mut g = c.benchmark_group("vp8_frame_25fps");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (w, h, kbps) in [(640, 480, 600), (320, 240, 250)] {
        let frames = talking(w, h);
        for speed in [-6, -12] {
            let mut enc = Vp8Encoder::new(Vp8Config {
                width: w,
                height: h,
                fps: 25,
                bitrate_kbps: kbps,
                speed,
            })
            .unwrap();
            let mut k = 0u64;
            g.bench_function(format!("{w}x{h}_speed{speed}"), |b| {
                b.iter(|| {
                    let f = &frames[(k % 50) as usize];
                    let out = enc.encode(&f.y, &f.u, &f.v, k * 3_600, false).unwrap();
                    k += 1;
                    out.len()
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_vp8);
criterion_main!(benches);
