//! Admission under load (SPEC S7): calls already running come first.
//! Fifty calls speak to far ends on loopback; then a hundred more arrive
//! within one second. The server admits them as the engine's budget allows
//! (a few set up at once, at a bounded rate, with render and CPU headroom)
//! and refuses the rest with 503 and `Retry-After`; the fifty lose no frame
//! and the ones admitted connect; nothing half set up is left behind.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use sotto_integration::far_end;
use sotto_integration::load::{call_server, drain, fill, long_speech, losses, post, summed};
use webrtc::peer_connection::RTCSessionDescription;

const LIVE: usize = 50;
const ARRIVING: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_arrivals_costs_the_live_calls_nothing() {
    let (engine, server) = call_server(LIVE + ARRIVING, long_speech()).await;
    let base = format!("http://{}", server.addr());
    let http = reqwest::Client::new();

    // Fifty calls, set up as admission allows: a refused one tries again
    // when told.
    let (live, far_ends, refused_while_filling) = fill(&http, &base, LIVE).await;
    // The hundred to come, their offers made now (gathering is the far
    // ends' work, not the server's).
    let mut arriving = Vec::new();
    for _ in 0..ARRIVING {
        arriving.push(far_end().await);
    }
    sotto_testkit::wait_until("every live call connected", || {
        engine.calls_connecting() == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = summed(&losses(&http, &base, &live).await);
    let late_before = engine.late_blocks();

    // A hundred arrive within one second.
    let started = Instant::now();
    let mut posts = Vec::new();
    for (k, (_, _, offer, _)) in arriving.iter().enumerate() {
        let (http, base, offer) = (http.clone(), base.clone(), offer.clone());
        posts.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(k as u64 * 9)).await;
            post(&http, &base, &offer).await
        }));
    }
    let mut admitted = Vec::new();
    let mut refused = 0;
    let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
    for (p, (far, events, _, mic)) in posts.into_iter().zip(arriving) {
        let p = p.await.unwrap();
        match p.status {
            201 => {
                far.set_remote_description(RTCSessionDescription::answer(p.answer).unwrap())
                    .await
                    .unwrap();
                admitted.push((far, events, mic, p.location, p.key));
            }
            503 => {
                assert!(p.retry_after.is_some_and(|s| s >= 1), "{}", p.answer);
                refused += 1;
                let why = ["behind", "set up", "too fast", "CPU", "render", "full"]
                    .into_iter()
                    .find(|w| p.answer.contains(w))
                    .unwrap_or("other");
                *reasons.entry(why).or_default() += 1;
                let _ = far.close().await;
            }
            other => panic!("{other}: {}", p.answer),
        }
    }
    let burst = started.elapsed();
    for (_, events, ..) in &mut admitted {
        sotto_net::connected(events, Duration::from_secs(20))
            .await
            .unwrap();
        drain(events);
    }
    // Long enough for every admitted call to be set up and speaking.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = summed(&losses(&http, &base, &live).await);
    let late = engine.late_blocks() - late_before;
    let stats = server.stats();
    println!(
        "admission: {LIVE} live calls (filled with {refused_while_filling} refusals on the way); \
         {ARRIVING} arriving in {burst:?}: {} admitted, {refused} refused (503: {reasons:?}); \
         the live calls lost {} frames, their encoders dropped {} packets; {late} late blocks",
        admitted.len(),
        after.0 - before.0,
        after.1 - before.1,
    );
    assert_eq!(after.0 - before.0, 0, "frames the live calls lost");
    assert_eq!(
        after.1 - before.1,
        0,
        "packets the live calls' encoders dropped"
    );
    assert_eq!(admitted.len() + refused, ARRIVING);
    assert!(
        refused > 0,
        "a hundred at once cannot all be set up at once"
    );
    assert!(
        !admitted.is_empty(),
        "some are admitted as the budget allows"
    );
    assert_eq!(stats.not_admitted as usize, refused + refused_while_filling);
    // Nothing half set up: every call the server holds is connected and
    // has its session.
    assert_eq!(engine.calls_connecting(), 0);
    assert_eq!(server.live_calls(), LIVE + admitted.len());
    assert_eq!(engine.stats().sessions, LIVE + admitted.len());
    for (far, ..) in admitted {
        let _ = far.close().await;
    }
    for (far, ..) in far_ends {
        let _ = far.close().await;
    }
    drop(server);
    engine.shutdown().await;
}
