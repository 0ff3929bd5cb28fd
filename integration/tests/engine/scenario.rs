//! Scenarios through the whole engine: determinism, the example, bad input.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

use sotto_testkit::scenario::{RenderClock, Scenario, ScenarioError};

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_scenario_same_bytes() {
    let p = Scenario::load(&examples().join("barge-in.toml")).unwrap();
    let a = p.render(RenderClock::Offline).await.unwrap();
    let b = p.render(RenderClock::Offline).await.unwrap();
    assert_eq!(a.samples.len(), 7 * 24_000);
    let bits = |r: &sotto_testkit::scenario::Rendered| {
        r.samples.iter().map(|s| s.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(a.events, b.events);
    let names: Vec<&str> = a.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "background_started",
            "first_audio",
            "paused",
            "resumed",
            "snapshot",
            "interrupted",
            "fade_done",
            "first_audio",
            "background_loop_wrapped",
            "stopped_speaking",
            "last_audio",
            "snapshot",
            "background_ended"
        ]
    );
    let snap = &a.events[4];
    assert_eq!(
        snap.fields["played"], 36_120,
        "0.8 s + 5 ms ramp + 0.7 s heard before the barge-in"
    );
}

fn parse_err(text: &str) -> String {
    match Scenario::parse(text, "test.toml", Path::new(".")) {
        Err(e) => {
            assert!(e.is_bad_input());
            e.to_string()
        }
        Ok(_) => panic!("accepted: {text}"),
    }
}

const HEAD: &str = "sample_rate = 24000\nduration = \"1s\"\n[[session]]\nname = \"agent\"\n";

#[test]
fn bad_scenarios_name_the_place() {
    let e = parse_err("sample_rate = 24000\nduration = ");
    assert!(e.contains("test.toml") && e.contains("line"), "{e}");
    let e = parse_err(&format!(
        "{HEAD}[[at]]\nt = \"0.5s\"\nsession = \"agent\"\nop = \"dance\"\n"
    ));
    assert!(e.contains("at[0]") && e.contains("unknown op"), "{e}");
    let e = parse_err(&format!(
        "{HEAD}[[at]]\nt = \"0.5s\"\nsession = \"bot\"\nop = \"pause\"\n"
    ));
    assert!(e.contains("unknown session 'bot'"), "{e}");
    let e = parse_err(&format!(
        "{HEAD}[[at]]\nt = \"-1s\"\nsession = \"agent\"\nop = \"pause\"\n"
    ));
    assert!(e.contains("negative"), "{e}");
    let e = parse_err(&format!(
        "{HEAD}[[at]]\nt = \"0s\"\nsession = \"agent\"\nop = \"push_wav\"\npath = \"missing.wav\"\n"
    ));
    assert!(e.contains("missing.wav"), "{e}");
    let e = parse_err("sample_rate = 5\nduration = \"1s\"\n");
    assert!(e.contains("sample_rate"), "{e}");
    let e = parse_err(
        "sample_rate = 24000\nduration = \"1s\"\n[[session]]\nname = \"a\"\ninput_rate = 11025\n",
    );
    assert!(e.contains("session[0]") && e.contains("input_rate"), "{e}");
    let e = parse_err("sample_rate = 24000\nduration = \"soon\"\n");
    assert!(e.contains("not a duration"), "{e}");
    let e = parse_err(&format!(
        "{HEAD}[[at]]\nt = \"0s\"\nsession = \"agent\"\nop = \"push_tone\"\n"
    ));
    assert!(e.contains("seconds"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_wav_plays_the_file() {
    let dir = std::env::temp_dir().join(format!("sotto-wav-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 24_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(dir.join("v.wav"), spec).unwrap();
    for i in 0..2400 {
        w.write_sample((i % 100) as i16 * 100).unwrap();
    }
    w.finalize().unwrap();
    let text = format!(
        "{HEAD}[[at]]\nt = \"0s\"\nsession = \"agent\"\nop = \"push_wav\"\npath = \"v.wav\"\nchunk_bytes = 333\n"
    );
    let r = Scenario::parse(&text, "t.toml", &dir)
        .unwrap()
        .render(RenderClock::Offline)
        .await
        .unwrap();
    for i in 0..2400 {
        assert_eq!(r.samples[i], ((i % 100) as i16 * 100) as f32 / 32768.0);
    }
    assert!(r.samples[2400..].iter().all(|&v| v == 0.0));
    std::fs::remove_dir_all(&dir).ok();
}

/// A scenario that cannot fit is refused before anything is made for it,
/// with the reason, and quickly: an output no WAV file holds (192 kHz x 8
/// channels x an hour), an output kept in memory past the budget, a push
/// of 4 GB in one piece, queues holding more than the budget, or a minute
/// cut into 1-byte pushes (2.9 million of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_past_the_memory_budget_are_refused() {
    let started = std::time::Instant::now();
    let e = parse_err("sample_rate = 192000\nchannels = 8\nduration = \"3600s\"\n");
    assert!(
        e.contains("duration") && e.contains("a WAV file holds at most"),
        "{e}"
    );
    // Half an hour of 48 kHz x 8 fits a file but not memory: render() keeps
    // it, so it is refused there; written to files it would render.
    let long = "sample_rate = 48000\nchannels = 8\nduration = \"1800s\"\n";
    let prepared = Scenario::parse(long, "long.toml", Path::new(".")).unwrap();
    let e = prepared.render(RenderClock::Offline).await.unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("budget"), "{e}");
    let e = parse_err(
        "sample_rate = 48000\nchannels = 8\nduration = \"1s\"\n[[session]]\nname = \"a\"\n\
         input_rate = 48000\ninput_channels = 8\ninput_format = \"f32\"\n\
         [[at]]\nt = 0\nsession = \"a\"\nop = \"push_tone\"\nseconds = 3600\nchunk_bytes = 4000000000\n",
    );
    assert!(e.contains("at[0]") && e.contains("budget"), "{e}");
    // Five minutes wait in each session's queue: at 192 kHz x 8 two
    // sessions' queues are past the budget.
    let mut queues = String::from("sample_rate = 192000\nchannels = 8\nduration = \"1s\"\n");
    for name in ["a", "b"] {
        queues += &format!(
            "[[session]]\nname = \"{name}\"\ninput_rate = 48000\n\
             [[at]]\nt = 0\nsession = \"{name}\"\nop = \"push_tone\"\nseconds = 600\nchunk_bytes = 96000\n"
        );
    }
    let e = parse_err(&queues);
    assert!(e.contains("session[1]") && e.contains("budget"), "{e}");
    let e = parse_err(
        "sample_rate = 24000\nduration = \"60s\"\n[[session]]\nname = \"agent\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 60\nchunk_bytes = 1\n",
    );
    assert!(e.contains("2880000 pushes"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // What fits still parses: an hour at 24 kHz with a ten-minute push.
    let ok = "sample_rate = 24000\nduration = \"3600s\"\n[[session]]\nname = \"a\"\n\
              [[at]]\nt = 0\nsession = \"a\"\nop = \"push_tone\"\nseconds = 600\n";
    assert!(Scenario::parse(ok, "ok.toml", Path::new(".")).is_ok());
}

#[test]
fn engine_errors_are_not_bad_input() {
    let e = ScenarioError::Engine(sotto::EngineError::Stopped);
    assert!(!e.is_bad_input());
}

/// Background ops through `sotto render`'s scenario: bad sources are named
/// before anything renders; a good one plays, loops and is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_ops_in_scenarios() {
    let dir = sotto_integration::scratch_dir("scenario-bg");
    let step = |extra: &str| {
        format!("{HEAD}[[at]]\nt = \"0s\"\nsession = \"agent\"\nop = \"background_start\"\n{extra}")
    };
    let e = parse_err(&step("path = \"/nonexistent/bed.ogg\"\n"));
    assert!(e.contains("at[0]") && e.contains("no such file"), "{e}");
    std::fs::write(dir.join("empty.ogg"), b"").unwrap();
    let text = step(&format!("path = \"{}\"\n", dir.join("empty.ogg").display()));
    assert!(parse_err(&text).contains("empty"));
    std::fs::write(dir.join("noise.wav"), [0x5a; 4096]).unwrap();
    let text = step(&format!("path = \"{}\"\n", dir.join("noise.wav").display()));
    assert!(parse_err(&text).contains("unsupported"));
    let bed = dir.join("bed.wav");
    sotto_integration::write_wav_s16(&bed, &[0.25; 4_800], 24_000, 1);
    let path = format!("path = \"{}\"\n", bed.display());
    let e = parse_err(&step(&format!("{path}volume = 7.0\n")));
    assert!(e.contains("volume"), "{e}");
    let e = parse_err(&step(&format!("{path}mode = \"blend\"\n")));
    assert!(e.contains("mode"), "{e}");
    let e = parse_err(&format!("{HEAD}duck_up = \"1s\"\n"));
    assert!(e.contains("duck_db"), "{e}");

    let text = format!(
        "{}{}",
        step(&format!(
            "{path}mode = \"mixing\"\nlooping = true\nvolume = 0.5\n"
        )),
        "[[at]]\nt = \"0.6s\"\nsession = \"agent\"\nop = \"background_volume\"\nvolume = 1.0\n\
         [[at]]\nt = \"0.9s\"\nsession = \"agent\"\nop = \"background_stop\"\n"
    );
    let prepared = Scenario::parse(&text, "bg.toml", Path::new(".")).unwrap();
    let r = prepared.render(RenderClock::Offline).await.unwrap();
    assert_eq!(r.samples[4_800], 0.125, "volume 0.5");
    assert_eq!(r.samples[20_000], 0.25, "volume 1.0 after its ramp");
    assert_eq!(r.samples[23_999], 0.0, "stopped");
    let names: Vec<&str> = r.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "background_started",
            "background_loop_wrapped",
            "background_loop_wrapped",
            "background_loop_wrapped",
            "background_loop_wrapped",
            "background_ended"
        ]
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A streamed background (decoded in chunks on its own thread, paced by the
/// queue) renders the same bytes every time on the offline clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_background_is_deterministic() {
    let dir = sotto_integration::scratch_dir("scenario-stream");
    let bed = dir.join("long.wav");
    let tone = sotto_integration::sine(24_000 * 5, 300.0, 24_000, 1, 0.3);
    sotto_integration::write_wav_s16(&bed, &tone, 24_000, 1);
    let text = format!(
        "sample_rate = 24000\nduration = \"4s\"\n[[session]]\nname = \"agent\"\nqueue = \"200ms\"\n\
         [[at]]\nt = \"0s\"\nsession = \"agent\"\nop = \"background_start\"\npath = \"{}\"\nmode = \"playback\"\n\
         [[at]]\nt = \"2s\"\nsession = \"agent\"\nop = \"interrupt\"\n",
        bed.display()
    );
    let prepared = Scenario::parse(&text, "stream.toml", Path::new(".")).unwrap();
    let a = prepared.render(RenderClock::Offline).await.unwrap();
    let b = prepared.render(RenderClock::Offline).await.unwrap();
    assert_eq!(a.samples, b.samples);
    assert_eq!(a.events, b.events);
    // Played from the first frame without a gap up to the interrupt,
    // through a 200 ms queue.
    for (k, (&got, &t)) in a.samples[..48_000].iter().zip(&tone).enumerate() {
        let want = f32::from(sotto_integration::quantize(t)) / 32768.0;
        assert_eq!(got, want, "frame {k}");
    }
    assert!(a
        .events
        .iter()
        .any(|e| e.event == "background_ended" && e.fields["stopped"] == true));
    std::fs::remove_dir_all(&dir).ok();
}

/// The rest of the bad background inputs through a scenario: an
/// unsupported codec and a file with no audio track are named before
/// rendering; a truncated file plays what it holds and logs a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backgrounds_in_scenarios() {
    let dir = sotto_integration::scratch_dir("scenario-bad-bg");
    let wav = dir.join("tone.wav");
    let tone = sotto_integration::sine(24_000, 300.0, 24_000, 1, 0.3);
    sotto_integration::write_wav_s16(&wav, &tone, 24_000, 1);
    let opus = dir.join("voice.opus");
    sotto_integration::ffmpeg(&wav, &opus, &["-c:a", "libopus"]);
    let video = dir.join("video.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-f", "lavfi", "-i"])
        .args(["color=c=black:s=16x16:d=0.2", "-c:v", "mpeg4", "-an"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(status.success());
    let step = |path: &Path| {
        format!(
            "{HEAD}[[at]]\nt = \"0s\"\nsession = \"agent\"\nop = \"background_start\"\npath = \"{}\"\nmode = \"mixing\"\n",
            path.display()
        )
    };
    let e = parse_err(&step(&opus));
    assert!(e.contains("at[0]") && e.contains("unsupported"), "{e}");
    let e = parse_err(&step(&video));
    assert!(
        e.contains("at[0]") && (e.contains("no audio track") || e.contains("unsupported")),
        "{e}"
    );
    let bytes = std::fs::read(&wav).unwrap();
    let truncated = dir.join("truncated.wav");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let prepared = Scenario::parse(&step(&truncated), "t.toml", Path::new(".")).unwrap();
    let r = prepared.render(RenderClock::Offline).await.unwrap();
    let warning = r
        .events
        .iter()
        .find(|e| e.event == "background_warning")
        .expect("a warning");
    assert!(warning.fields["message"]
        .as_str()
        .unwrap()
        .contains("truncated"));
    let played = r.samples.iter().filter(|&&v| v != 0.0).count();
    assert!((10_000..13_000).contains(&played), "played {played}");
    std::fs::remove_dir_all(&dir).ok();
}

/// An avatar end to end in one process (SPEC O12, A2–A7): the session's
/// own output is silent while the avatar speaks, the avatar writes its
/// voice and video, and its acknowledgements are in the event log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_runs_an_avatar_end_to_end() {
    let dir = sotto_integration::scratch_dir("avatar-scenario");
    let text = format!(
        "sample_rate = 24000\nduration = \"1s\"\n[[session]]\nname = \"agent\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"avatar_attach\"\npath = \"{}\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"begin_synthesis\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 0.5\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"end_synthesis\"\n",
        dir.join("avatar").display()
    );
    let p = Scenario::parse(&text, "avatar.toml", Path::new(".")).unwrap();
    let r = p.render(RenderClock::Offline).await.unwrap();
    assert!(
        r.samples.iter().all(|&v| v == 0.0),
        "direct output while the avatar speaks"
    );
    let names: Vec<&str> = r.events.iter().map(|e| e.event.as_str()).collect();
    assert!(names.contains(&"avatar_connected"), "{names:?}");
    assert!(names.contains(&"first_audio"), "{names:?}");
    let ended = r
        .events
        .iter()
        .find(|e| e.event == "avatar_segment_ended")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(ended.fields["interrupted"], false);
    let pos = ended.fields["playback_position"].as_f64().unwrap();
    assert!((pos - 0.5).abs() <= 0.02, "{pos}");
    let voice = hound::WavReader::open(dir.join("avatar/voice.wav")).unwrap();
    assert!(
        voice.len() >= 12_000,
        "the avatar's voice is {} samples",
        voice.len()
    );
    let video = std::fs::read(dir.join("avatar/video.y4m")).unwrap();
    assert!(video.starts_with(b"YUV4MPEG2 W640 H480 F25:1"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Steps run on the sample clock in every mode: on the virtual clock a
/// step lands where its time says however long the steps before it (an
/// avatar attach) took in wall time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_virtual_clock_steps_land_on_the_sample_clock() {
    let dir = sotto_integration::scratch_dir("avatar-virtual");
    let text = format!(
        "sample_rate = 24000\nduration = \"2.5s\"\n[[session]]\nname = \"agent\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"avatar_attach\"\npath = \"{}\"\n\
         [[at]]\nt = 0.1\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 1\n\
         [[at]]\nt = 1.5\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 1\n\
         [[at]]\nt = 2.1\nsession = \"agent\"\nop = \"interrupt\"\n",
        dir.join("avatar").display()
    );
    let p = Scenario::parse(&text, "virtual.toml", Path::new(".")).unwrap();
    let r = p.render(RenderClock::Virtual).await.unwrap();
    let at = |name: &str| -> Vec<f64> {
        r.events
            .iter()
            .filter(|e| e.event == name)
            .map(|e| e.sample as f64 / 24_000.0)
            .collect()
    };
    // A step applies within a block or two of its time, never before it.
    let near = |got: f64, want: f64| (want..want + 0.05).contains(&got);
    let first = at("first_audio");
    assert!(
        !first.is_empty() && near(first[0], 0.1),
        "first audio at {first:?}"
    );
    let interrupted = at("interrupted");
    assert!(
        interrupted.len() == 1 && near(interrupted[0], 2.1),
        "interrupted at {interrupted:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An offline render is exact and deterministic with an avatar too (SPEC
/// R3, A4, A6): the in-process avatar plays in the render's time, so a
/// first turn played whole is acknowledged whole as it ends, and a second
/// interrupted 0.5 s in is acknowledged as the second segment at the end
/// of its fade tail, at the interrupt, the same in every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_avatar_acknowledgements_repeat_exactly() {
    let text = "sample_rate = 24000\nduration = \"3s\"\n[[session]]\nname = \"agent\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"avatar_attach\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"begin_synthesis\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 1\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"end_synthesis\"\n\
         [[at]]\nt = 1.5\nsession = \"agent\"\nop = \"begin_synthesis\"\n\
         [[at]]\nt = 1.5\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 1\n\
         [[at]]\nt = 1.5\nsession = \"agent\"\nop = \"end_synthesis\"\n\
         [[at]]\nt = 2.0\nsession = \"agent\"\nop = \"interrupt\"\n";
    let p = Scenario::parse(text, "avatar-offline.toml", Path::new(".")).unwrap();
    let acks = |r: &sotto_testkit::scenario::Rendered| -> Vec<(u64, bool, f64, u64)> {
        r.events
            .iter()
            .filter(|e| e.event == "avatar_segment_ended")
            .map(|e| {
                (
                    e.fields["segment"].as_u64().unwrap(),
                    e.fields["interrupted"].as_bool().unwrap(),
                    e.fields["playback_position"].as_f64().unwrap(),
                    e.sample,
                )
            })
            .collect()
    };
    let first = p.render(RenderClock::Offline).await.unwrap();
    let got = acks(&first);
    assert_eq!(got.len(), 2, "{got:?}");
    let (seg, cut, pos, at) = got[0];
    assert_eq!((seg, cut), (1, false), "{got:?}");
    assert!((pos - 1.0).abs() < 1e-9, "the whole first turn: {pos}");
    assert!((24_000..=24_480).contains(&at), "acknowledged at {at}");
    let (seg, cut, pos, at) = got[1];
    assert_eq!((seg, cut), (2, true), "{got:?}");
    // 0.5 s played, then the 0.4 s tail; acknowledged at the interrupt.
    assert!((pos - 0.9).abs() < 1e-9, "the cut turn: {pos}");
    assert_eq!(at, 48_000, "acknowledged at {at}");
    let again = p.render(RenderClock::Offline).await.unwrap();
    assert_eq!(acks(&again), got, "the same acknowledgements every run");
}

/// A minute of speech pushed at once reaches the avatar whole (SPEC O2,
/// O12): the session's queue holds the agent back and the link is fed as
/// the queue takes the audio in, so nothing accepted is dropped, and the
/// avatar, playing in the render's time, acknowledges all 60 s as the
/// call's own clock reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_pushed_at_once_reaches_the_avatar_whole() {
    let text = "sample_rate = 24000\nduration = \"62s\"\n[[session]]\nname = \"agent\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"avatar_attach\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"begin_synthesis\"\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 60\nchunk_bytes = 480000\n\
         [[at]]\nt = 0\nsession = \"agent\"\nop = \"end_synthesis\"\n";
    let p = Scenario::parse(text, "avatar-minute.toml", Path::new(".")).unwrap();
    let r = p.render(RenderClock::Offline).await.unwrap();
    let acks: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.event.starts_with("avatar_"))
        .map(|e| (e.event.clone(), e.fields.clone(), e.sample))
        .collect();
    let ended: Vec<_> = acks
        .iter()
        .filter(|a| a.0 == "avatar_segment_ended")
        .collect();
    assert_eq!(ended.len(), 1, "{acks:?}");
    let (_, fields, at) = ended[0];
    assert_eq!(fields["interrupted"].as_bool(), Some(false), "{acks:?}");
    let pos = fields["playback_position"].as_f64().unwrap();
    assert!((pos - 60.0).abs() < 1e-9, "the avatar played {pos} s of 60");
    // Acknowledged as the call's clock reaches the end: in sync.
    assert!(
        (1_440_000..=1_440_480).contains(at),
        "acknowledged at sample {at}"
    );
    assert!(
        !acks.iter().any(|a| a.0 == "avatar_ack_timeout"),
        "{acks:?}"
    );
    assert!(
        !r.events.iter().any(|e| e.event == "queue_overflow"),
        "nothing dropped on the way in"
    );
}
