//! Background audio (SPEC B1–B7, O11): real files in every format, decoded
//! and resampled, looped, ducked and mixed through the engine on the offline
//! clock; bad files as typed errors and events.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::path::{Path, PathBuf};

use sotto::{
    BackgroundConfig, BackgroundMode, Duck, Engine, EngineConfig, EngineError, SessionConfig,
    SessionEvent, SessionEventKind as K,
};
use sotto_actors::decode::{FileDecoder, PassEnd};
use sotto_integration::*;

fn decode(path: &Path, rate: u32, channels: usize) -> (Vec<f32>, PassEnd) {
    FileDecoder::open(path, rate, channels)
        .unwrap()
        .decode_all(|| false)
        .unwrap()
}

fn mixing(path: &Path, looping: bool) -> BackgroundConfig {
    BackgroundConfig {
        path: path.to_owned(),
        enabled: true,
        mode: BackgroundMode::Mixing,
        volume: 1.0,
        looping,
    }
}

/// A clip with no repeating structure, so any shift, gap or repeat shows.
fn sawtooth(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % len) as f32 / len as f32 * 0.8 - 0.4)
        .collect()
}

fn quantized(samples: &[f32]) -> Vec<f32> {
    samples
        .iter()
        .map(|&s| f32::from(quantize(s)) / 32768.0)
        .collect()
}

fn first(events: &[SessionEvent], want: fn(&K) -> bool) -> usize {
    times(events, want)[0] as usize
}

/// The default gain ramp a clip starts with (20 ms at 24 kHz).
const RAMP_IN: usize = 480;

#[test]
fn every_format_decodes_to_its_tone_at_the_output_rate() {
    let dir = scratch_dir("formats");
    // 1 s of 441 Hz at 44.1 kHz stereo, decoded to 24 kHz mono.
    let wav = dir.join("tone.wav");
    write_wav_s16(&wav, &sine(44_100, 441.0, 44_100, 2, 0.5), 44_100, 2);
    let mut files = vec![("wav", wav.clone())];
    let encodings: [(&str, &[&str]); 4] = [
        ("flac", &["-c:a", "flac"]),
        ("ogg", &["-c:a", "libvorbis", "-q:a", "6"]),
        ("mp3", &["-c:a", "libmp3lame", "-b:a", "160k"]),
        ("m4a", &["-c:a", "aac", "-b:a", "160k"]),
    ];
    for (ext, args) in encodings {
        let out = dir.join(format!("tone.{ext}"));
        ffmpeg(&wav, &out, args);
        files.push((ext, out));
    }
    for (ext, path) in files {
        let (s, end) = decode(&path, 24_000, 1);
        assert_eq!(end, PassEnd::Complete, "{ext}");
        assert!(
            (23_500..=25_500).contains(&s.len()),
            "{ext}: {} frames for 1 s",
            s.len()
        );
        let middle = &s[4_000..20_000];
        let f = frequency(middle, 24_000);
        assert!((f - 441.0).abs() < 0.5, "{ext}: {f} Hz");
        let level = rms(middle);
        let want = 0.5 / 2f32.sqrt();
        assert!((level - want).abs() < 0.02, "{ext}: rms {level} vs {want}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn lossless_files_decode_exactly_in_any_layout() {
    let dir = scratch_dir("lossless");
    let mono = sawtooth(10_000);
    let wav = dir.join("mono.wav");
    write_wav_s16(&wav, &mono, 24_000, 1);
    let flac = dir.join("mono.flac");
    ffmpeg(&wav, &flac, &["-c:a", "flac"]);
    let want = quantized(&mono);
    for path in [&wav, &flac] {
        assert_eq!(decode(path, 24_000, 1).0, want, "{}", path.display());
        // Mono to stereo copies each sample to both channels.
        let stereo = decode(path, 24_000, 2).0;
        let doubled: Vec<f32> = want.iter().flat_map(|&s| [s, s]).collect();
        assert_eq!(stereo, doubled);
    }
    // Stereo to mono averages the channels.
    let left = sawtooth(2_000);
    let interleaved: Vec<f32> = left.iter().flat_map(|&l| [l, 0.25]).collect();
    let wav2 = dir.join("stereo.wav");
    write_wav_s16(&wav2, &interleaved, 24_000, 2);
    let got = decode(&wav2, 24_000, 1).0;
    for (g, l) in got.iter().zip(quantized(&left)) {
        assert!((g - (l + 0.25) / 2.0).abs() < 1e-6);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The looped output equals the clip repeated, for clips shorter and longer
/// than a block, and for a clip resampled from 44.1 kHz; each wrap is
/// reported at its exact sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_is_seamless_across_wraps() {
    let dir = scratch_dir("loop");
    for (len, rate) in [(100usize, 24_000u32), (7_001, 24_000), (1_000, 44_100)] {
        let path = dir.join(format!("clip-{len}-{rate}.wav"));
        write_wav_s16(&path, &sawtooth(len), rate, 1);
        let clip = decode(&path, 24_000, 1).0;
        let (engine, s, mut ev) = setup(SessionConfig::default()).await;
        let bg = engine.background(&s, mixing(&path, true)).await.unwrap();
        bg.start().await.unwrap();
        bg.start().await.unwrap(); // starting a started source is a no-op
        let out = engine.render(48_000).await.unwrap();
        let events = drain(&mut ev);
        let start = first(&events, |k| matches!(k, K::BackgroundStarted { .. }));
        for k in RAMP_IN..out.len() - start {
            assert_eq!(
                out[start + k],
                clip[k % clip.len()],
                "clip {len} @ {rate}: frame {k} after the start"
            );
        }
        let wraps = times(&events, |k| matches!(k, K::BackgroundLoopWrapped { .. }));
        let want: Vec<u64> = (1..=wraps.len())
            .map(|n| (start + n * clip.len()) as u64)
            .collect();
        assert_eq!(wraps, want);
        assert!(wraps.len() >= 2);
        engine.shutdown().await;
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Ducking measured on the output: depth, the 50 ms ramp down when speech
/// starts and the 250 ms ramp up after it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_ducks_under_speech_with_its_ramps() {
    let dir = scratch_dir("duck");
    let path = dir.join("dc.wav");
    write_wav_s16(&path, &vec![0.25; 2_400], 24_000, 1);
    let c = SessionConfig {
        duck: Some(Duck::default()),
        ..SessionConfig::default()
    };
    let (engine, s, mut ev) = setup(c).await;
    let bg = engine.background(&s, mixing(&path, true)).await.unwrap();
    bg.start().await.unwrap();
    let head = engine.render(4_800).await.unwrap();
    assert_eq!(head[4_799], 0.25);
    let speech_start = engine.clock().0 as usize;
    let _ = s.push(dc_s16(12_000, 0)); // 0.5 s of silent speech
    let out = engine.render(36_000).await.unwrap();
    let g = 10f32.powf(-12.0 / 20.0);
    let down = 1_200; // 50 ms
    for (k, v) in out[..down].iter().enumerate() {
        let want = 0.25 * (1.0 - (k + 1) as f32 * (1.0 - g) / down as f32);
        assert!((v - want).abs() < 1e-5, "down ramp frame {k}: {v}");
    }
    assert!((out[down + 100] - 0.25 * g).abs() < 1e-6, "ducked depth");
    let events = drain(&mut ev);
    let stopped = first(&events, |k| matches!(k, K::StoppedSpeaking)) - speech_start;
    assert_eq!(stopped, 12_000 + 4_800, "speech plus the grace period");
    assert!(
        (out[stopped - 1] - 0.25 * g).abs() < 1e-6,
        "ducked until then"
    );
    let up = 6_000; // 250 ms
    let mid = out[stopped + up / 2 - 1];
    assert!(
        (mid - 0.25 * (g + (1.0 - g) / 2.0)).abs() < 1e-4,
        "half way up: {mid}"
    );
    assert_eq!(out[stopped + up + 10], 0.25, "back to unity");
    assert!(out[stopped..stopped + up].windows(2).all(|w| w[1] >= w[0]));
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// In mixing mode the background goes on across any number of interrupts
/// without a gap or a jump: the output is the clip, sample for sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupts_leave_the_mixed_background_alone() {
    let dir = scratch_dir("continuity");
    let path = dir.join("clip.wav");
    write_wav_s16(&path, &sawtooth(5_000), 24_000, 1);
    let clip = decode(&path, 24_000, 1).0;
    let (engine, s, mut ev) = setup(SessionConfig::default()).await;
    let bg = engine.background(&s, mixing(&path, true)).await.unwrap();
    bg.start().await.unwrap();
    let mut out = engine.render(2_400).await.unwrap();
    for _ in 0..6 {
        let _ = s.push(dc_s16(4_800, 0));
        engine.render_into(1_200, &mut out).await.unwrap();
        s.interrupt().unwrap();
        engine.render_into(2_400, &mut out).await.unwrap();
    }
    let events = drain(&mut ev);
    assert_eq!(
        times(&events, |k| matches!(k, K::Interrupted { .. })).len(),
        6
    );
    let start = first(&events, |k| matches!(k, K::BackgroundStarted { .. }));
    for k in RAMP_IN..out.len() - start {
        assert_eq!(out[start + k], clip[k % clip.len()], "frame {k}");
    }
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Playback mode counts as speech: it is played and counted, and an
/// interrupt fades it like speech and ends the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_mode_is_speech() {
    let dir = scratch_dir("playback");
    let path = dir.join("hold.wav");
    write_wav_s16(&path, &vec![0.5; 24_000 * 3], 24_000, 1);
    let (engine, s, mut ev) = setup(SessionConfig::default()).await;
    let mut config = BackgroundConfig::new(&path);
    config.volume = 0.5;
    let bg = engine.background(&s, config).await.unwrap();
    bg.start().await.unwrap();
    let out = engine.render(12_000).await.unwrap();
    assert_eq!(out[11_999], 0.25, "volume applied");
    assert!(s.is_speaking());
    s.interrupt().unwrap();
    let tail = engine.render(24_000).await.unwrap();
    assert!(
        tail[0] > 0.2 && tail[9_599] == 0.0,
        "faded like speech (0.4 s)"
    );
    let events = drain(&mut ev);
    assert!(events
        .iter()
        .any(|e| matches!(e.kind, K::Interrupted { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e.kind, K::BackgroundEnded { stopped: true, .. })));
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Stop is immediate and ramps out, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ramps_out_at_once() {
    let dir = scratch_dir("stop");
    let path = dir.join("bed.wav");
    write_wav_s16(&path, &vec![0.25; 24_000], 24_000, 1);
    let (engine, s, mut ev) = setup(SessionConfig::default()).await;
    let looped = engine.background(&s, mixing(&path, true)).await.unwrap();
    looped.start().await.unwrap();
    engine.render(4_800).await.unwrap();
    looped.stop().await.unwrap();
    let out = engine.render(4_800).await.unwrap();
    assert!(out[..480].windows(2).all(|w| w[1] <= w[0]), "ramps out");
    assert!(
        out[0] > 0.24 && (0.1..0.15).contains(&out[240]),
        "a ramp, not a cut"
    );
    assert!(out[480..].iter().all(|&v| v == 0.0), "then silent");
    assert_eq!(ended(&mut ev), vec![(looped.id(), true)]);
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A stream that does not loop plays once, whole, and ends by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_by_itself() {
    let dir = scratch_dir("end");
    let path = dir.join("bed.wav");
    write_wav_s16(&path, &vec![0.25; 24_000], 24_000, 1);
    let (engine, s, mut ev) = setup(SessionConfig::default()).await;
    let once = engine.background(&s, mixing(&path, false)).await.unwrap();
    once.start().await.unwrap();
    let out = engine.render(48_000).await.unwrap();
    let played = out.iter().filter(|&&v| v == 0.25).count();
    assert_eq!(played, 24_000, "a stream plays once, whole");
    assert_eq!(ended(&mut ev), vec![(once.id(), false)]);
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// The sources that ended, and whether each was stopped.
fn ended(ev: &mut tokio::sync::mpsc::Receiver<SessionEvent>) -> Vec<(u32, bool)> {
    drain(ev)
        .iter()
        .filter_map(|e| match e.kind {
            K::BackgroundEnded { source, stopped } => Some((source, stopped)),
            _ => None,
        })
        .collect()
}

fn make(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Every bad input is a typed error from `start` and a `BackgroundError`
/// event; the engine keeps playing another session's speech untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_a_typed_error_that_disturbs_nobody() {
    let dir = scratch_dir("bad");
    let wav = dir.join("ok.wav");
    write_wav_s16(&wav, &sine(24_000, 300.0, 24_000, 1, 0.5), 24_000, 1);
    let opus = dir.join("voice.opus");
    ffmpeg(&wav, &opus, &["-c:a", "libopus"]);
    let video = dir.join("video.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-f", "lavfi", "-i"])
        .args(["color=c=black:s=16x16:d=0.2", "-c:v", "mpeg4", "-an"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(status.success());
    type Expect = fn(&EngineError) -> bool;
    let cases: Vec<(PathBuf, Expect)> = vec![
        (dir.join("missing.wav"), |e| {
            matches!(e, EngineError::NoSuchFile(_))
        }),
        (make(&dir, "empty.wav", b""), |e| {
            matches!(e, EngineError::EmptyFile(_))
        }),
        (make(&dir, "noise.wav", &[0x5a; 4096]), |e| {
            matches!(e, EngineError::Unsupported { .. })
        }),
        (opus, |e| matches!(e, EngineError::Unsupported { .. })),
        (video, |e| {
            matches!(
                e,
                EngineError::NoAudioTrack(_) | EngineError::Unsupported { .. }
            )
        }),
    ];
    let engine = Engine::start(EngineConfig {
        max_sessions: 2,
        ..EngineConfig::default()
    })
    .await
    .unwrap();
    let other = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let s = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let mut ev = s.events();
    let speech = tone_s16(24_000, 300.0, 24_000, 8000.0);
    let _ = other.push(speech.clone());
    let mut out = Vec::new();
    for (path, want) in &cases {
        let bg = engine.background(&s, mixing(path, false)).await.unwrap();
        match bg.start().await {
            Err(e) => assert!(want(&e), "{}: {e}", path.display()),
            other => panic!("{}: {other:?}", path.display()),
        }
        engine.render_into(2_400, &mut out).await.unwrap();
    }
    let errors = drain(&mut ev)
        .into_iter()
        .filter(|e| matches!(e.kind, K::BackgroundError { .. }))
        .count();
    assert_eq!(errors, cases.len());
    let want: Vec<f32> = speech
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .take(out.len())
        .collect();
    assert_eq!(out, want, "the other session played on untouched");
    // An absurd volume is refused up front and on change.
    let mut loud = mixing(&wav, false);
    loud.volume = 5.0;
    assert!(matches!(
        engine.background(&s, loud).await,
        Err(EngineError::Volume(_))
    ));
    let bg = engine.background(&s, mixing(&wav, false)).await.unwrap();
    assert!(matches!(
        bg.set_volume(f32::NAN).await,
        Err(EngineError::Volume(_))
    ));
    assert!(bg.set_volume(2.0).await.is_ok());
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A decode error mid-file or a truncated file ends the pass with a
/// warning and keeps what was decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_keep_what_decoded() {
    let dir = scratch_dir("damaged");
    let wav = dir.join("tone.wav");
    write_wav_s16(&wav, &sine(48_000, 300.0, 24_000, 1, 0.5), 24_000, 1);
    // A FLAC reader resynchronises past damage: short of the frame count.
    // An AAC decoder fails on it. A WAV ends early.
    let mut damaged = Vec::new();
    for (ext, codec) in [("flac", "flac"), ("m4a", "aac")] {
        let encoded = dir.join(format!("tone.{ext}"));
        ffmpeg(&wav, &encoded, &["-c:a", codec]);
        let mut bytes = std::fs::read(&encoded).unwrap();
        let n = bytes.len();
        bytes[n / 2..n / 2 + 500].fill(0x55);
        damaged.push(make(&dir, &format!("corrupt.{ext}"), &bytes));
    }
    let wav_bytes = std::fs::read(&wav).unwrap();
    damaged.push(make(
        &dir,
        "truncated.wav",
        &wav_bytes[..wav_bytes.len() / 2],
    ));
    for path in &damaged {
        let (samples, end) = decode(path, 24_000, 1);
        assert!(
            matches!(end, PassEnd::Damaged(_)),
            "{}: {end:?}",
            path.display()
        );
        assert!(
            (10_000..48_000).contains(&samples.len()),
            "{}: kept {} frames",
            path.display(),
            samples.len()
        );
        let (engine, s, mut ev) = setup(SessionConfig::default()).await;
        let bg = engine.background(&s, mixing(path, false)).await.unwrap();
        bg.start().await.unwrap();
        let out = engine.render(60_000).await.unwrap();
        let played = out.iter().rposition(|&v| v != 0.0).unwrap_or(0);
        assert!(played + 1 >= samples.len() - 1, "played what decoded");
        let events = drain(&mut ev);
        assert!(events
            .iter()
            .any(|e| matches!(e.kind, K::BackgroundWarning { .. })));
        engine.shutdown().await;
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A loader that fails restarts in place (SPEC R2): an error event says
/// so, the bed plays on untouched, and the handle still controls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_loader_restarts_with_its_bed() {
    let dir = scratch_dir("loader-fault");
    let path = dir.join("bed.wav");
    write_wav_s16(&path, &vec![0.25; 24_000], 24_000, 1);
    let (engine, s, mut ev) = setup(SessionConfig::default()).await;
    let bg = engine.background(&s, mixing(&path, true)).await.unwrap();
    bg.start().await.unwrap();
    engine.render(4_800).await.unwrap();
    bg.inject_fault().unwrap();
    let error = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match ev.recv().await.map(|e| e.kind) {
                Some(K::BackgroundError { message, .. }) => return message,
                Some(_) => {}
                None => panic!("event stream closed"),
            }
        }
    })
    .await
    .unwrap();
    assert!(error.contains("restarted after a fault"), "{error}");
    let out = engine.render(4_800).await.unwrap();
    assert!(out.iter().all(|&v| v == 0.25), "the bed plays on");
    bg.set_volume(0.5).await.unwrap();
    bg.stop().await.unwrap();
    let out = engine.render(4_800).await.unwrap();
    assert!(
        out[2_000..].iter().all(|&v| v == 0.0),
        "the handle still stops it"
    );
    let _ = s.push(dc_s16(480, 16384));
    let out = engine.render(480).await.unwrap();
    assert!(out.iter().all(|&v| v == 0.5), "the session plays on");
    engine.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}
