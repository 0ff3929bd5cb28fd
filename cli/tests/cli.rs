//! The `sotto render` program: outputs and exit codes.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

fn sotto() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sotto"))
}

#[test]
fn render_writes_every_output_asked_for() {
    let dir = std::env::temp_dir().join(format!("sotto-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/barge-in.toml");
    let status = sotto()
        .args(["render", example, "--out"])
        .arg(dir.join("o.wav"))
        .arg("--events")
        .arg(dir.join("o.jsonl"))
        .arg("--plot")
        .arg(dir.join("o.png"))
        .status()
        .unwrap();
    assert!(status.success());
    let wav = hound::WavReader::open(dir.join("o.wav")).unwrap();
    assert_eq!(wav.spec().sample_rate, 24_000);
    assert_eq!(wav.len(), 7 * 24_000);
    let events = std::fs::read_to_string(dir.join("o.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = lines.iter().find(|e| e["event"] == "first_audio").unwrap();
    assert_eq!(first["session"], "agent");
    assert_eq!(first["sample"], 2400);
    let bed = &lines[0];
    assert_eq!(bed["event"], "background_started");
    assert_eq!(bed["sample"], 0);
    assert!(lines
        .iter()
        .any(|e| e["event"] == "background_loop_wrapped"));
    assert!(lines
        .iter()
        .any(|e| e["event"] == "background_ended" && e["stopped"] == true));
    assert!(events.contains("\"event\":\"snapshot\"") && events.contains("\"played\""));
    assert!(std::fs::metadata(dir.join("o.png")).unwrap().len() > 1000);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_scenario_exits_with_code_2() {
    let dir = std::env::temp_dir().join(format!("sotto-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "sample_rate = 24000\nduration = \"1s\"\n[[at]]\nt = \"0s\"\nsession = \"x\"\nop = \"pause\"\n").unwrap();
    let out = sotto()
        .args(["render"])
        .arg(&bad)
        .arg("--out")
        .arg(dir.join("o.wav"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at[0]") && err.contains("unknown session 'x'"),
        "{err}"
    );
    let missing = sotto()
        .args(["render", "/nonexistent.toml", "--out", "/tmp/x.wav"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

/// `sotto echo-cancel` runs a recorded pair through the live processing
/// path and reports the echo return loss enhancement.
#[test]
fn echo_cancel_reports_its_erle() {
    let dir = std::env::temp_dir().join(format!("sotto-cli-aec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let n = 48_000 * 4;
    let mut seed = 1u32;
    let far: Vec<f32> = (0..n)
        .map(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (seed >> 8) as f32 / (1 << 24) as f32 - 0.5;
            let t = i as f32 / 48_000.0;
            ((std::f32::consts::TAU * 180.0 * t).sin() * 0.3 + noise * 0.2)
                * if (i / 9_600) % 3 == 2 { 0.1 } else { 1.0 }
        })
        .collect();
    let delay = 1_920; // 40 ms
    let mic: Vec<f32> = (0..n)
        .map(|i| {
            if i >= delay {
                far[i - delay] * 0.4
            } else {
                0.0
            }
        })
        .collect();
    for (name, s) in [("far.wav", &far), ("mic.wav", &mic)] {
        let mut w = hound::WavWriter::create(dir.join(name), spec).unwrap();
        for &v in s {
            w.write_sample((v * 32767.0) as i16).unwrap();
        }
        w.finalize().unwrap();
    }
    let out = sotto()
        .args([
            "echo-cancel",
            "--delay-ms",
            "40",
            "--no-ns",
            "--no-agc",
            "--far",
        ])
        .arg(dir.join("far.wav"))
        .arg("--mic")
        .arg(dir.join("mic.wav"))
        .arg("--out")
        .arg(dir.join("clean.wav"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let erle: f64 = text
        .split("enhancement: ")
        .nth(1)
        .and_then(|r| r.split(" dB").next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ERLE in {text}"));
    assert!(erle > 15.0, "{text}");
    assert_eq!(
        hound::WavReader::open(dir.join("clean.wav")).unwrap().len(),
        n as u32
    );
    let missing = sotto()
        .args(["echo-cancel", "--far", "/nonexistent.wav", "--mic"])
        .arg(dir.join("mic.wav"))
        .arg("--out")
        .arg(dir.join("x.wav"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    // A delay the module cannot take, and inputs shorter than its 10 ms
    // chunk, are refused with the reason; a silent microphone says so.
    let run = |args: &[&str], far: &str, mic: &str| {
        sotto()
            .arg("echo-cancel")
            .args(args)
            .arg("--far")
            .arg(dir.join(far))
            .arg("--mic")
            .arg(dir.join(mic))
            .arg("--out")
            .arg(dir.join("x.wav"))
            .output()
            .unwrap()
    };
    let r = run(&["--delay-ms", "4294967295"], "far.wav", "mic.wav");
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("delay-ms"));
    for (name, len) in [("empty.wav", 0), ("short.wav", 10), ("silent.wav", 4_800)] {
        let mut w = hound::WavWriter::create(dir.join(name), spec).unwrap();
        for _ in 0..len {
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
    }
    for short in ["empty.wav", "short.wav"] {
        let r = run(&[], "far.wav", short);
        assert_eq!(r.status.code(), Some(2), "{short}");
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("at least 10 ms"),
            "{short}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    let r = run(&[], "far.wav", "silent.wav");
    assert!(r.status.success());
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("silent") && !text.contains("inf"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

fn samples(path: &std::path::Path) -> Vec<i16> {
    hound::WavReader::open(path)
        .unwrap()
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect()
}

/// `--sessions-dir`: each session's own output beside the main mix; the
/// main mix is the same bytes with or without it, and a single session's
/// own output is the main mix itself.
#[test]
fn sessions_dir_writes_each_sessions_own_output() {
    let dir = std::env::temp_dir().join(format!("sotto-cli-calls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/barge-in.toml");
    let render = |out: &str, sessions: Option<&str>| {
        let mut cmd = sotto();
        cmd.args(["render", example, "--out"]).arg(dir.join(out));
        if let Some(s) = sessions {
            cmd.arg("--sessions-dir").arg(dir.join(s));
        }
        assert!(cmd.status().unwrap().success());
    };
    render("plain.wav", None);
    render("with.wav", Some("calls"));
    assert_eq!(
        std::fs::read(dir.join("plain.wav")).unwrap(),
        std::fs::read(dir.join("with.wav")).unwrap(),
        "the main mix is the same bytes"
    );
    assert_eq!(
        samples(&dir.join("calls/agent.wav")),
        samples(&dir.join("plain.wav")),
        "one session: its own output is the whole mix"
    );

    // Two sessions: each file holds its own; together they make the mix.
    let two = dir.join("two.toml");
    std::fs::write(
        &two,
        "sample_rate = 16000\nduration = \"1s\"\n\
         [[session]]\nname = \"a\"\n[[session]]\nname = \"b\"\n\
         [[at]]\nt = \"0s\"\nsession = \"a\"\nop = \"push_tone\"\nseconds = 0.5\nfreq = 300\nchunk_bytes = 333\n\
         [[at]]\nt = \"0.25s\"\nsession = \"b\"\nop = \"push_tone\"\nseconds = 0.5\nfreq = 500\n\
         [[at]]\nt = \"0.4s\"\nsession = \"a\"\nop = \"interrupt\"\n",
    )
    .unwrap();
    let status = sotto()
        .args(["render", "--out"])
        .arg(dir.join("two.wav"))
        .arg(&two)
        .arg("--sessions-dir")
        .arg(dir.join("two"))
        .arg("--format")
        .arg("f32")
        .status()
        .unwrap();
    assert!(status.success());
    let read_f32 = |p: &std::path::Path| -> Vec<f32> {
        hound::WavReader::open(p)
            .unwrap()
            .into_samples::<f32>()
            .map(Result::unwrap)
            .collect()
    };
    let (mix, a, b) = (
        read_f32(&dir.join("two.wav")),
        read_f32(&dir.join("two/a.wav")),
        read_f32(&dir.join("two/b.wav")),
    );
    assert_eq!((mix.len(), a.len(), b.len()), (16_000, 16_000, 16_000));
    assert!(a[..4_000].iter().any(|&v| v != 0.0) && b[..4_000].iter().all(|&v| v == 0.0));
    assert!(
        a[12_000..].iter().all(|&v| v == 0.0),
        "a faded out by 0.8 s"
    );
    assert!(b[4_000..12_000].iter().any(|&v| v != 0.0));
    for k in 0..mix.len() {
        assert!((mix[k] - (a[k] + b[k])).abs() < 1e-6, "sample {k}");
    }

    // A session name that is not a file name is refused before anything renders.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "sample_rate = 16000\nduration = \"0.1s\"\n[[session]]\nname = \"../up\"\n",
    )
    .unwrap();
    let out = sotto()
        .args(["render", "--out"])
        .arg(dir.join("bad.wav"))
        .arg(&bad)
        .arg("--sessions-dir")
        .arg(dir.join("bad"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot name a file"));
    assert!(!dir.join("up.wav").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// A scenario that pushes far more than it plays ends at once, with one
/// line per session saying how many pushes were still waiting (before, each
/// waited 100 ms: 2,000 of them took minutes and as many lines).
#[test]
fn unfinished_pushes_end_the_scenario_at_once_with_one_line() {
    let dir = std::env::temp_dir().join(format!("sotto-cli-unf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::from(
        "sample_rate = 24000\nchannels = 1\nblock = 480\nduration = \"0.2s\"\n\n[[session]]\nname = \"agent\"\nqueue = \"0.1s\"\n",
    );
    for _ in 0..2_000 {
        text.push_str(
            "\n[[at]]\nt = \"0s\"\nsession = \"agent\"\nop = \"push_tone\"\nseconds = 0.05\n",
        );
    }
    let scenario = dir.join("many.toml");
    std::fs::write(&scenario, text).unwrap();
    let started = std::time::Instant::now();
    let out = sotto()
        .arg("render")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.join("o.wav"))
        .arg("--events")
        .arg(dir.join("e.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let events = std::fs::read_to_string(dir.join("e.jsonl")).unwrap();
    let unfinished: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("push_unfinished"))
        .collect();
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    assert!(
        unfinished[0].contains("push(es) still waiting"),
        "{}",
        unfinished[0]
    );
    std::fs::remove_dir_all(&dir).ok();
}
