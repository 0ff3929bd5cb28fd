//! Overload degrades gracefully (SPEC C4, S4): eighty calls speak, then
//! another process takes a core. The render threads, on the real-time
//! scheduler where the system allows, keep their deadlines; what gives is
//! the calls' readers and encoders, whose losses are counted per call; and
//! the server admits no more calls while the machine is short of CPU.
//!
//! Long and heavy, so ignored in `make test` and run by `make soak`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use sotto_integration::far_end;
use sotto_integration::load::{call_server, fill, long_speech, losses, post};

const CALLS: usize = 80;
const HOG: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes the machine's CPU: make soak"]
async fn a_cpu_hog_costs_encoders_frames_never_the_render() {
    let (engine, server) = call_server(CALLS + 8, long_speech()).await;
    let base = format!("http://{}", server.addr());
    let http = reqwest::Client::new();
    let (live, far_ends, _) = fill(&http, &base, CALLS).await;
    let (_spare, _ev, spare_offer, _m) = far_end().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = losses(&http, &base, &live).await;
    let watch = sotto_testkit::host::Watch::start(&engine, Duration::from_millis(5));

    // Another process takes a core.
    let mut hog = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = post(&http, &base, &spare_offer).await;
    tokio::time::sleep(HOG - Duration::from_secs(3)).await;
    let _ = hog.kill();
    let _ = hog.wait();
    let late = watch.stop();
    let after = losses(&http, &base, &live).await;

    let lost: Vec<(u64, u64)> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.0 - b.0, a.1 - b.1))
        .collect();
    let calls_hit = lost.iter().filter(|l| l.0 + l.1 > 0).count();
    let frames: u64 = lost.iter().map(|l| l.0).sum();
    let packets: u64 = lost.iter().map(|l| l.1).sum();
    println!(
        "overload: {CALLS} speaking calls, a CPU hog for {HOG:?}: {calls_hit} calls lost \
         {frames} frames and {packets} encoder packets (worst call {:?}); render {late:?}; \
         a new call meanwhile: {} {}",
        lost.iter().max_by_key(|l| l.0 + l.1),
        during.status,
        during.answer.trim()
    );
    assert_eq!(late.unexplained(), 0, "the render ran late: {late:?}");
    assert_eq!(during.status, 503, "{}", during.answer);
    assert!(during.retry_after.is_some());
    for (far, ..) in far_ends {
        let _ = far.close().await;
    }
    drop(server);
    engine.shutdown().await;
}
