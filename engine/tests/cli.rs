//! The `sotto render` program: outputs and exit codes.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

fn sotto() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sotto"))
}

#[test]
fn renders_wav_events_and_picture() {
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
