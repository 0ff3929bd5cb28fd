//! SPEC R4 over hours: calls coming and going must leave memory flat. One
//! call a second arrives at the call server from a far end on loopback,
//! each lives `LIVE` seconds (so `LIVE` are up at once), speaks, and goes;
//! the resident set is read every minute and its slope over the second
//! half of the run must be near zero.
//!
//! An hour by default, so it is ignored in `make test` and run by
//! `make soak` (`SOTTO_CHURN_MINUTES` and `SOTTO_CHURN_LIVE` shorten it).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sotto_integration::load::call_server;
use sotto_integration::{far_end, rss_kib};
use webrtc::peer_connection::RTCSessionDescription;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The resident set once the allocator has returned its free pages: what
/// the process holds, apart from what glibc keeps for reuse.
fn held_kib() -> u64 {
    // SAFETY: malloc_trim only returns free memory to the system.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0)
    };
    rss_kib()
}

/// Least-squares slope of `ys` (one a minute), per minute.
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in ys.iter().enumerate() {
        let dx = x as f64 - mx;
        num += dx * (y - my);
        den += dx * dx;
    }
    num / den.max(1e-9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "an hour long: make soak"]
async fn an_hour_of_calls_coming_and_going_keeps_memory_flat() {
    let minutes = setting("SOTTO_CHURN_MINUTES", 60).max(4);
    let live = setting("SOTTO_CHURN_LIVE", 100).max(1) as usize;
    let (engine, server) = call_server(live + 8, sotto_testkit::hello()).await;
    let base = format!("http://{}", server.addr());
    let http = reqwest::Client::new();
    let mut up = VecDeque::new();
    let mut rss = Vec::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut second = 0u64;
    while second < minutes * 60 {
        tick.tick().await;
        second += 1;
        if up.len() >= live {
            let (far, _events, _mic): (sotto_net::Peer, sotto_net::PeerEvents, _) =
                up.pop_front().unwrap();
            let _ = far.close().await;
        }
        let (far, events, offer, mic) = far_end().await;
        let r = http
            .post(format!("{base}/calls"))
            .header("Content-Type", "application/sdp")
            .body(offer)
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            let answer = r.text().await.unwrap();
            far.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
                .await
                .unwrap();
            up.push_back((far, events, mic));
        } else {
            assert_eq!(r.status(), 503, "{:?}", r.text().await);
            // A far end dropped unclosed keeps its tasks and sockets: it
            // would count here as the server's memory.
            let _ = far.close().await;
        }
        if second.is_multiple_of(60) {
            let kib = rss_kib();
            let s = server.stats();
            eprintln!(
                "minute {}: RSS {kib} KiB (held {} KiB), {} calls live, {} taken, {} ended, {} not admitted",
                second / 60,
                held_kib(),
                server.live_calls(),
                s.calls,
                s.ended,
                s.not_admitted
            );
            rss.push(kib as f64);
        }
    }
    let half = &rss[rss.len() / 2..];
    let per_minute = slope(half);
    let per_hour_mib = per_minute * 60.0 / 1024.0;
    println!(
        "churn: {minutes} min, {live} live, one a second: RSS {:.1} -> {:.1} MiB; \
         second-half slope {per_minute:.1} KiB/min ({per_hour_mib:.2} MiB/hour) in {:?}",
        rss[0] / 1024.0,
        rss[rss.len() - 1] / 1024.0,
        started.elapsed()
    );
    assert!(
        per_hour_mib.abs() < 8.0,
        "RSS creeps {per_hour_mib:.2} MiB an hour: {rss:?}"
    );
    for (far, ..) in up {
        let _ = far.close().await;
    }
    drop(server);
    engine.shutdown().await;
}

/// The same churn with WebRTC alone: pairs of webrtc-rs peers on loopback
/// (a far end and an answer as a call makes it), one pair a second, `LIVE`
/// pairs up, no engine and no server. Tells what the peers keep from what
/// Sotto keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: a diagnostic"]
async fn peers_alone_coming_and_going() {
    let minutes = setting("SOTTO_CHURN_MINUTES", 60).max(4);
    let live = setting("SOTTO_CHURN_LIVE", 100).max(1) as usize;
    let mut up = VecDeque::new();
    let mut held = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for second in 1..=minutes * 60 {
        tick.tick().await;
        if up.len() >= live {
            let (far, ours): (sotto_net::Peer, sotto_net::call::CallPeer) = up.pop_front().unwrap();
            let _ = far.close().await;
            let _ = ours.peer.close().await;
        }
        let (far, mut events, offer, _mic) = far_end().await;
        let (answer, ours) = sotto_net::call::answer_call(&offer, sotto_net::peer::LOOPBACK)
            .await
            .unwrap();
        far.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();
        sotto_net::connected(&mut events, Duration::from_secs(10))
            .await
            .unwrap();
        up.push_back((far, ours));
        if second.is_multiple_of(60) {
            let kib = held_kib();
            eprintln!("minute {}: held {kib} KiB", second / 60);
            held.push(kib as f64);
        }
    }
    println!(
        "peers alone: held {:.1} -> {:.1} MiB; second-half slope {:.1} KiB/min",
        held[0] / 1024.0,
        held[held.len() - 1] / 1024.0,
        slope(&held[held.len() / 2..])
    );
}
