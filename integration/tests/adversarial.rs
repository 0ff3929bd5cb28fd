//! The avatar dispatcher under hostile requests (SPEC S1, S4): every number
//! and name in a join is checked before it sizes or names anything, and a
//! body over the limit is refused before it is read. Each probe is answered
//! at once, no peer connection is made for it, and the server goes on
//! serving.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::AvatarRenderer;
use sotto_avatar::sink::MemorySink;
use sotto_net::avatar::{JoinRequest, MAX_JOIN_BODY};
use sotto_server::accept::ServerLimits;
use sotto_server::avatar::{AvatarServer, ServerConfig};
use sotto_server::token;

const SECRET: &str = "test-secret";

fn config() -> ServerConfig {
    ServerConfig {
        publish: None,
        clock: None,
        secret: SECRET.into(),
        fps: 25,
        cooldown: Duration::from_millis(300),
        stereo: false,
        renderer: Arc::new(|| Box::new(FaceRenderer::new(64, 48)) as Box<dyn AvatarRenderer>),
        sink: Arc::new(|req| Box::new(MemorySink::new(usize::from(req.channels)))),
    }
}

async fn server() -> AvatarServer {
    server_with(ServerLimits::default()).await
}

async fn server_with(limits: ServerLimits) -> AvatarServer {
    AvatarServer::start_with_limits("127.0.0.1:0".parse().unwrap(), config(), limits)
        .await
        .unwrap()
}

fn join() -> JoinRequest {
    JoinRequest {
        room_name: "room".into(),
        token: token::create("key", SECRET, Some("avatar"), token::DEFAULT_TTL)
            .unwrap()
            .token,
        participant_id: "avatar".into(),
        signaling_base_url: None,
        // Never parsed: every probe is refused before the offer is read.
        offer: "v=0".into(),
        sample_rate: 24_000,
        channels: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_joins_are_refused_before_anything_is_made() {
    let server = server().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let probes: Vec<(&str, JoinRequest)> = vec![
        // Pinned a core forever (a zero rate never moves the video on).
        (
            "zero rate",
            JoinRequest {
                sample_rate: 0,
                ..join()
            },
        ),
        // Sized gigabytes of buffers.
        (
            "huge rate",
            JoinRequest {
                sample_rate: u32::MAX,
                ..join()
            },
        ),
        (
            "odd rate",
            JoinRequest {
                sample_rate: 12_345,
                ..join()
            },
        ),
        (
            "zero channels",
            JoinRequest {
                channels: 0,
                ..join()
            },
        ),
        (
            "huge channels",
            JoinRequest {
                channels: u16::MAX,
                ..join()
            },
        ),
        // Named a file outside the output folder.
        (
            "path participant",
            JoinRequest {
                participant_id: "/../../../victim".into(),
                ..join()
            },
        ),
        (
            "dot participant",
            JoinRequest {
                participant_id: "..".into(),
                ..join()
            },
        ),
        (
            "control characters",
            JoinRequest {
                room_name: "room\n\u{1b}[2J".into(),
                ..join()
            },
        ),
        (
            "empty room",
            JoinRequest {
                room_name: String::new(),
                ..join()
            },
        ),
        (
            "long participant",
            JoinRequest {
                participant_id: "a".repeat(65),
                ..join()
            },
        ),
        (
            "long offer",
            JoinRequest {
                offer: "a".repeat(40_000),
                ..join()
            },
        ),
    ];
    // Twenty rounds: what sized gigabytes once must now size nothing. The
    // bound is loose because the binary's other tests share the process.
    const ROUNDS: u64 = 20;
    let before = sotto_testkit::measure::rss().current_kib;
    for _ in 0..ROUNDS {
        for (what, req) in &probes {
            let started = Instant::now();
            let r = http.post(server.join_url()).json(req).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 400, "{what}");
            let text = r.text().await.unwrap();
            assert!(text.len() < 120 && !text.contains('/'), "{what}: {text}");
            assert!(started.elapsed() < Duration::from_secs(1), "{what}");
        }
    }
    let grown = sotto_testkit::measure::rss()
        .current_kib
        .saturating_sub(before);
    assert!(grown < 256 * 1024, "grew {grown} KiB over the probes");
    // Over the body limit: refused before it is read.
    let big = format!("{{\"room_name\":\"{}\"}}", "a".repeat(MAX_JOIN_BODY + 1));
    let r = http
        .post(server.join_url())
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);

    let stats = || server.stats();
    // Every probe, and the body over the limit.
    assert_eq!(stats().refused, ROUNDS * probes.len() as u64 + 1);
    assert_eq!(stats().peers, 0, "no peer was made");
    // Still serving: a well-formed join gets as far as its (bad) offer.
    let r = http
        .post(server.join_url())
        .json(&join())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("offer"));
}

/// Tokens (SPEC S3): issued in the future, not valid yet, living forever,
/// for another participant or room, or unsigned (`alg: none`) are refused
/// with a 401 whose reason is short and our own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_should_not_pass_do_not() {
    let server = server().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let good = token::verify(&join().token, SECRET).unwrap();
    let sign = |c: token::Claims| token::sign(&c, SECRET).unwrap();
    let hour = 3600;
    let payload = join().token.split('.').nth(1).unwrap().to_owned();
    let probes: Vec<(&str, String)> = vec![
        (
            "issued in the future",
            sign(token::Claims {
                iat: good.iat + hour,
                exp: good.exp + hour,
                ..good.clone()
            }),
        ),
        (
            "not valid yet",
            sign(token::Claims {
                nbf: Some(good.iat + hour),
                ..good.clone()
            }),
        ),
        (
            "lives forever",
            sign(token::Claims {
                exp: u64::MAX,
                ..good.clone()
            }),
        ),
        (
            "another participant",
            sign(token::Claims {
                participant_id: "someone-else".into(),
                ..good.clone()
            }),
        ),
        (
            "another room",
            sign(token::Claims {
                room: Some("other-room".into()),
                ..good.clone()
            }),
        ),
        // {"alg":"none","typ":"JWT"}, the good payload, no signature.
        (
            "unsigned",
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
        ),
    ];
    for (what, token) in &probes {
        let req = JoinRequest {
            token: token.clone(),
            ..join()
        };
        let r = http
            .post(server.join_url())
            .json(&req)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{what}");
        let text = r.text().await.unwrap();
        assert!(
            text.len() < 60 && !text.contains("HS") && !text.contains("lgorithm"),
            "{what}: {text}"
        );
    }
    // The same participant and room as the token: through to the offer.
    let r = http
        .post(server.join_url())
        .json(&JoinRequest {
            token: sign(token::Claims {
                room: Some("room".into()),
                ..good.clone()
            }),
            ..join()
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "a good token reaches the offer");
    assert_eq!(server.stats().peers, 0);
}

/// Peers (SPEC S2): past `max_peers` live connections a join is a 503; a
/// peer that never connects is torn down after `connect_timeout`, and its
/// place is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_cannot_pile_up() {
    use sotto_net::avatar::{AUDIO_LABEL, CONTROL_LABEL};
    use sotto_net::peer::{complete_local, loopback_peer};

    let limits = ServerLimits {
        max_peers: 2,
        connect_timeout: Duration::from_millis(800),
        ..ServerLimits::default()
    };
    let server = server_with(limits).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Real offers from agents that take the answer and never use it.
    let mut agents = Vec::new();
    let offer = || async {
        let (pc, mut events) = loopback_peer().await.unwrap();
        pc.create_data_channel(AUDIO_LABEL, None).await.unwrap();
        pc.create_data_channel(CONTROL_LABEL, None).await.unwrap();
        let offer = pc.create_offer(None).await.unwrap();
        let sdp = complete_local(&pc, &mut events, offer).await.unwrap();
        (pc, sdp)
    };
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (pc, sdp) = offer().await;
        let r = http
            .post(server.join_url())
            .json(&JoinRequest {
                offer: sdp,
                ..join()
            })
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
        agents.push(pc);
    }
    assert_eq!(codes, vec![200, 200, 503]);
    let stats = || server.stats();
    assert_eq!(stats().busy, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats().never_connected < 2 {
        assert!(
            Instant::now() < deadline,
            "unconnected peers were not torn down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats().ended < 2 {
        assert!(Instant::now() < deadline, "their connections did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (pc, sdp) = offer().await;
    let r = http
        .post(server.join_url())
        .json(&JoinRequest {
            offer: sdp,
            ..join()
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "a place is free again");
    agents.push(pc);
    for pc in agents {
        let _ = pc.close().await;
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Connections (SPEC S2): past `max_connections` a connection is closed at
/// once; one that sends no headers is closed after `header_timeout`; then
/// the descriptors are back to where they were and the server serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_cannot_pile_up() {
    let limits = ServerLimits {
        max_connections: 8,
        header_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let server = server_with(limits).await;
    let baseline = open_fds();
    // Every connection is closed by the server within a second or two: the
    // first eight by their header timeout, the rest at once.
    let took = sotto_integration::held_connections_closed(server.addr(), 200).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    let stats = || server.stats();
    assert!(stats().connections_refused >= 192 - 8);
    // Other tests of this binary may hold sockets for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds() > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "{} fds, {baseline} before",
            open_fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still serving.
    let r = reqwest::Client::new()
        .post(server.join_url())
        .json(&join())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}
