//! SPEC S1, S5: a scenario's audio is made as it is sent and written as it
//! renders, so what a render holds in memory does not grow with its length.
//! A test binary of its own: the readings are of this process's peak
//! resident set, which another test running beside it would move.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::path::Path;

use sotto_testkit::measure::rss;
use sotto_testkit::scenario::{OutFiles, RenderClock, RenderOptions, Scenario};

const MIB: u64 = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_long_renders_or_pushes() {
    let dir = sotto_integration::scratch_dir("scenario-memory");

    // Ten minutes of 48 kHz stereo written to files as it renders: kept in
    // memory the mix and the session's own output would be 440 MiB.
    // A minute of speech every two minutes, the last one ending the file.
    let mut text = String::from(
        "sample_rate = 48000\nchannels = 2\nduration = \"600s\"\n[[session]]\nname = \"agent\"\n",
    );
    for t in [0, 120, 240, 360, 540] {
        text += &format!(
            "[[at]]\nt = {t}\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 60\nchunk_bytes = 96000\n"
        );
    }
    let prepared = Scenario::parse(&text, "long.toml", Path::new(".")).unwrap();
    let before = rss().peak_kib;
    let r = prepared
        .render_with(
            RenderClock::Offline,
            RenderOptions {
                sessions: true,
                files: Some(OutFiles {
                    mix: dir.join("mix.wav"),
                    sessions_dir: Some(dir.join("sessions")),
                    float: false,
                }),
            },
        )
        .await
        .unwrap();
    let grew = rss().peak_kib.saturating_sub(before);
    assert!(r.samples.is_empty() && r.sessions.iter().all(|(_, s)| s.is_empty()));
    assert_eq!(r.frames, 600 * 48_000);
    for path in [dir.join("mix.wav"), dir.join("sessions/agent.wav")] {
        let wav = hound::WavReader::open(&path).unwrap();
        assert_eq!(wav.duration(), 600 * 48_000, "{}", path.display());
    }
    // The tone reached the end of the file, at the tone's level.
    let mut wav = hound::WavReader::open(dir.join("mix.wav")).unwrap();
    wav.seek(600 * 48_000 - 4_800).unwrap();
    let peak = wav
        .samples::<i16>()
        .map(|s| s.unwrap().unsigned_abs())
        .max()
        .unwrap();
    assert!((7_000..=8_300).contains(&peak), "peak {peak}");
    assert!(grew < 96 * MIB, "peak resident set grew {} MiB", grew / MIB);

    // An hour of 48 kHz f32 pushed at once into a two-second scenario: 660
    // MiB as bytes, as much again as the session's frames. Five minutes of
    // it wait in the session's queue (55 MiB), the rest is refused and
    // counted; what the scenario holds besides is a few chunks.
    let text = "sample_rate = 48000\nduration = \"2s\"\n\
                [[session]]\nname = \"agent\"\ninput_rate = 48000\ninput_format = \"f32\"\n\
                [[at]]\nt = 0\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 3600\nchunk_bytes = 192000\n";
    let prepared = Scenario::parse(text, "push.toml", Path::new(".")).unwrap();
    let before = rss().peak_kib;
    let r = prepared.render(RenderClock::Offline).await.unwrap();
    let grew = rss().peak_kib.saturating_sub(before);
    let overflow = r
        .events
        .iter()
        .find(|e| e.event == "queue_overflow")
        .expect("the hour does not fit in the queue");
    assert!(overflow.fields["dropped_frames"].as_u64().unwrap() > 0);
    let peak = r.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!((0.2..0.26).contains(&peak), "peak {peak}");
    assert!(
        grew < 256 * MIB,
        "peak resident set grew {} MiB",
        grew / MIB
    );
    std::fs::remove_dir_all(&dir).ok();
}
