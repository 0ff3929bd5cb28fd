//! `sotto serve`'s call endpoint under hostile requests (SPEC S1, S2, S4),
//! the probes the avatar dispatcher passes: every offer that cannot be a
//! call is refused at once with a 4xx, makes no call and no session and
//! grows nothing; bodies past the limit are refused before they are read;
//! an offer whose peer never connects is torn down; held connections are
//! capped and timed out; the server goes on serving.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use sotto::{CallConfig, Engine};
use sotto_integration::{call_engine, far_end};
use sotto_server::accept::ServerLimits;
use sotto_server::calls::{CallServer, ServeConfig, MAX_OFFER_BYTES};

async fn server(engine: &Engine, limits: ServerLimits, keep: bool) -> CallServer {
    let say = sotto_testkit::hello();
    CallServer::start(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        ServeConfig {
            token_secret: None,
            limits,
            utterances: vec![say],
            call: CallConfig {
                connect_timeout: Duration::from_secs(1),
                ..CallConfig::default()
            },
            keep_recordings: keep,
            ..ServeConfig::default()
        },
    )
    .await
    .unwrap()
}

/// Posts `body` as an offer.
async fn post_offer(
    http: &reqwest::Client,
    server: &CallServer,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    http.post(format!("http://{}/calls", server.addr()))
        .header("Content-Type", "application/sdp")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A browser-like offer's session lines with `media` after them.
fn sdp(media: &str) -> String {
    format!("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{media}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_offers_are_refused_before_anything_is_made() {
    let engine = call_engine().await;
    let server = server(&engine, ServerLimits::default(), false).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let opus =
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
    let probes: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"\x00\xff\xfe garbage \x01".to_vec()),
        ("not text", vec![0xc3, 0x28, 0xa0, 0xa1]),
        ("json", br#"{"sdp":"v=0"}"#.to_vec()),
        (
            "no opus",
            sdp("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n").into_bytes(),
        ),
        ("opus, nothing else", opus.as_bytes().to_vec()),
        // No ICE credentials, no fingerprint: nothing to connect with.
        ("no ice, no dtls", sdp(opus).into_bytes()),
        (
            "payload type past 127",
            sdp("m=audio 9 RTP/AVP 300\r\na=rtpmap:300 opus/48000/2\r\n").into_bytes(),
        ),
        // Hundreds of transceivers to build, each within the size limit.
        ("many sections", sdp(&opus.repeat(300)).into_bytes()),
        (
            "lines without end",
            format!(
                "v=0\r\na=rtpmap:111 opus/48000/2\r\na={}",
                "x".repeat(30_000)
            )
            .into_bytes(),
        ),
    ];
    const ROUNDS: u64 = 10;
    let before = sotto_testkit::measure::rss().current_kib;
    for _ in 0..ROUNDS {
        for (what, body) in &probes {
            let started = Instant::now();
            let r = post_offer(&http, &server, body.clone()).await;
            assert_eq!(r.status().as_u16(), 400, "{what}");
            let text = r.text().await.unwrap();
            assert!(text.len() < 160, "{what}: {text}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{what}: {:?}",
                started.elapsed()
            );
        }
    }
    let grown = sotto_testkit::measure::rss()
        .current_kib
        .saturating_sub(before);
    assert!(grown < 128 * 1024, "grew {grown} KiB over the probes");
    let stats = || server.stats();
    assert_eq!(stats().refused, ROUNDS * probes.len() as u64);
    assert_eq!(stats().calls, 0, "no call was made");
    assert_eq!(server.live_calls(), 0);

    // Bodies past the limit, announced or not: 413, not read.
    for size in [MAX_OFFER_BYTES + 1, 64 << 20] {
        let r = http
            .post(format!("http://{}/calls", server.addr()))
            .header("Content-Type", "application/sdp")
            .body(vec![b'v'; size])
            .send()
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status().as_u16(), 413, "{size} bytes");
        }
    }
    // Wrong types, methods, paths.
    let r = http
        .post(format!("http://{}/calls", server.addr()))
        .header("Content-Type", "text/plain")
        .body(sdp(opus))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    for path in ["/calls/1/events", "/calls/-1/events", "/calls/%00/events"] {
        let r = http
            .get(format!("http://{}{path}", server.addr()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = http
            .get(format!("http://{}{path}", server.addr()))
            .bearer_auth("k")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    // Recordings are a test server's: a real one has none to give or take.
    let r = http
        .post(format!("http://{}/calls/1/recording", server.addr()))
        .body(vec![0u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = http
        .get(format!("http://{}/calls/1/mic", server.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let big = http
        .post(format!("http://{}/calls/1/recording", server.addr()))
        .body(vec![0u8; 16 << 20])
        .send()
        .await;
    if let Ok(r) = big {
        assert!(r.status().is_client_error(), "{}", r.status());
    }

    // Still serving: a real offer is answered.
    let (_far, _events, offer, _mic) = far_end().await;
    let r = post_offer(&http, &server, offer).await;
    assert_eq!(r.status().as_u16(), 201);
    drop(server);
    engine.shutdown().await;
}

/// An answered offer whose peer never connects is torn down after the
/// connect timeout: its place under the cap is free again and its session
/// gone. Past the cap a call is a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_never_connect_cannot_pile_up() {
    let engine = call_engine().await;
    let limits = ServerLimits {
        max_peers: 3,
        ..ServerLimits::default()
    };
    let server = server(&engine, limits, false).await;
    let http = reqwest::Client::new();
    let mut far_ends = Vec::new();
    for _ in 0..3 {
        let (far, events, offer, mic) = far_end().await;
        let r = post_offer(&http, &server, offer).await;
        assert_eq!(r.status().as_u16(), 201);
        // The answer is never set: these far ends never connect.
        far_ends.push((far, events, mic));
    }
    let (_far, _events, offer, _mic) = far_end().await;
    let r = post_offer(&http, &server, offer.clone()).await;
    assert_eq!(r.status().as_u16(), 503);
    let started = Instant::now();
    while server.live_calls() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} calls left",
            server.live_calls()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.stats().ended, 3);
    let r = post_offer(&http, &server, offer).await;
    assert_eq!(r.status().as_u16(), 201, "a place is free again");
    drop(server);
    engine.shutdown().await;
}

/// Connections past the cap are closed at once, silent ones after the
/// header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_to_the_call_server_cannot_pile_up() {
    let engine = call_engine().await;
    let limits = ServerLimits {
        max_connections: 8,
        header_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let server = server(&engine, limits, false).await;
    let took = sotto_integration::held_connections_closed(server.addr(), 100).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(server.stats().connections_refused >= 92);
    let r = reqwest::get(format!("http://{}/", server.addr()))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "still serving");
    drop(server);
    engine.shutdown().await;
}
