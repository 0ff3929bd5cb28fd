//! Decode + resample of a 60 s 44.1 kHz stereo file to 24 kHz mono, per
//! format, through the same path a background source uses. The files are
//! encoded with ffmpeg at setup.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sotto_actors::decode::FileDecoder;

const SECONDS: u32 = 60;
const RATE: u32 = 44_100;

/// A 16-bit stereo WAV of two detuned tones.
fn write_wav(path: &Path) {
    let frames = SECONDS * RATE;
    let data_len = frames * 4;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&RATE.to_le_bytes());
    b.extend_from_slice(&(RATE * 4).to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..frames {
        let t = f64::from(i) / f64::from(RATE);
        for f in [220.0, 221.5] {
            let v = (std::f64::consts::TAU * f * t).sin() * 0.4 * 32767.0;
            b.extend_from_slice(&(v as i16).to_le_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

fn files() -> Vec<(&'static str, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("sotto-decode-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("music.wav");
    write_wav(&wav);
    let mut out = vec![("wav", wav.clone())];
    let formats: [(&str, &str, &[&str]); 4] = [
        ("flac", "flac", &["-c:a", "flac"]),
        ("vorbis", "ogg", &["-c:a", "libvorbis", "-q:a", "5"]),
        ("mp3", "mp3", &["-c:a", "libmp3lame", "-b:a", "192k"]),
        ("aac", "m4a", &["-c:a", "aac", "-b:a", "160k"]),
    ];
    for (name, ext, args) in formats {
        let path = dir.join(format!("music.{ext}"));
        sotto_testkit::ffmpeg(&wav, &path, args);
        out.push((name, path));
    }
    out
}

fn bench_decode(c: &mut Criterion) {
    let files = files();
    let mut g = c.benchmark_group("decode_60s_44k1_stereo_to_24k_mono");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        // Throughput in seconds of audio: criterion reports "elements/s"
        // = times real time.
        .throughput(Throughput::Elements(u64::from(SECONDS)));
    for (name, path) in &files {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut d = FileDecoder::open(path, 24_000, 1).unwrap();
                let (samples, _) = d.decode_all(|| false).unwrap();
                assert!(samples.len() > 59 * 24_000);
                samples
            });
        });
    }
    g.finish();
    if let Some((_, p)) = files.first() {
        if let Some(dir) = p.parent() {
            std::fs::remove_dir_all(dir).ok();
        }
    }
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
