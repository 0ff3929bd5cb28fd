//! Both servers as an attacker on the internet finds them (SPEC S1–S7):
//! requests aborted midway, bodies trickled a byte at a time, a crowd of
//! slow connections from one address, strangers on every per-call route,
//! offers aimed at making the server a reflector or that can never
//! connect, and one token trying to take every slot. Each probe is bounded
//! in count and time; the second address is 127.0.0.2 (all of 127/8 is
//! this host's). Memory is read before and after each attack, twice: as
//! resident, and as held once the allocator has given its free pages
//! back (glibc keeps them per thread arena; what it keeps levels off
//! within a few rounds, what the server holds must not grow at all).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sotto::{CallConfig, Engine};
use sotto_integration::{call_engine, far_end};
use sotto_server::accept::ServerLimits;
use sotto_server::calls::{CallServer, ServeConfig};
use sotto_server::token;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "internet-secret";

async fn call_server(engine: &Engine, secret: Option<&str>, limits: ServerLimits) -> CallServer {
    CallServer::start(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        ServeConfig {
            token_secret: secret.map(str::to_owned),
            limits,
            utterances: vec![sotto_testkit::hello()],
            call: CallConfig {
                connect_timeout: Duration::from_secs(2),
                ..CallConfig::default()
            },
            ..ServeConfig::default()
        },
    )
    .await
    .unwrap()
}

/// The process's memory: resident, then held (resident once the
/// allocator has returned its free pages), MiB.
#[derive(Clone, Copy)]
struct Memory {
    resident: f64,
    held: f64,
}

impl Memory {
    fn now() -> Self {
        let mib = || sotto_testkit::measure::rss().current_kib as f64 / 1024.0;
        let resident = mib();
        // SAFETY: malloc_trim only returns free memory to the system.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0)
        };
        Memory {
            resident,
            held: mib(),
        }
    }

    /// Asserts that what is held grew by less than `mib` since `start`,
    /// and says both figures.
    fn within(self, start: Memory, mib: f64, what: &str) {
        println!(
            "{what}: resident {:.1} -> {:.1} MiB, held {:.1} -> {:.1} MiB",
            start.resident, self.resident, start.held, self.held
        );
        assert!(
            self.held - start.held < mib,
            "{what}: held {:.1} -> {:.1} MiB",
            start.held,
            self.held
        );
    }
}

/// A connection to `to` from `from` (any port).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// A whole `POST` of `body` as `content_type`, raw.
fn request(path: &str, content_type: &str, bearer: Option<&str>, body: &[u8]) -> Vec<u8> {
    let auth = bearer.map_or(String::new(), |b| format!("Authorization: Bearer {b}\r\n"));
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{auth}\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Sends `raw` whole and resets the connection `after` later, before the
/// answer can be read (SO_LINGER 0: as a browser navigating away does).
async fn send_and_abort(to: SocketAddr, raw: Vec<u8>, after: Duration) {
    let mut c = TcpStream::connect(to).await.unwrap();
    c.write_all(&raw).await.unwrap();
    tokio::time::sleep(after).await;
    // A zero linger resets at once; it is a non-zero one that blocks.
    #[allow(deprecated)]
    c.set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);
}

/// The status of a whole answer read from `c` within `limit` (0: closed
/// with none).
async fn status_of(c: &mut TcpStream, limit: Duration) -> u16 {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.len() > 12 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limit, read).await;
    std::str::from_utf8(got.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 1: complete `POST /calls` whose client resets the connection at
/// once or a few ms after sending leave no call, no session and no slot
/// behind: with five slots, sixty such aborts, then every slot is free
/// again within a few seconds and a real call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_calls_leave_nothing_behind() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let limits = ServerLimits {
        max_peers: 5,
        ..ServerLimits::default()
    };
    let server = call_server(&engine, None, limits).await;
    let (_far, _events, offer, _mic) = far_end().await;
    let raw = request("/calls", "application/sdp", None, offer.as_bytes());
    // Warm the paths once so the figures compare like with like.
    send_and_abort(server.addr(), raw.clone(), Duration::ZERO).await;
    wait_for("the warm-up call to go", Duration::from_secs(8), || {
        server.live_calls() == 0
    })
    .await;
    let sessions = engine.stats().sessions;
    let before = Memory::now();
    let mut aborts = Vec::new();
    for k in 0..60u64 {
        let to = server.addr();
        let raw = raw.clone();
        // Resets spread over the set-up: at once, and up to 27 ms in.
        aborts.push(tokio::spawn(send_and_abort(
            to,
            raw,
            Duration::from_millis(k % 28),
        )));
        if k % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    for a in aborts {
        a.await.unwrap();
    }
    // A call answered just before its client went waits out its connect
    // timeout (2 s here); the rest go at once.
    wait_for("every aborted call to go", Duration::from_secs(8), || {
        server.live_calls() == 0
    })
    .await;
    wait_for("every session to go", Duration::from_secs(5), || {
        engine.stats().sessions == sessions
    })
    .await;
    let stats = server.stats();
    println!(
        "60 aborted POSTs: {} calls set up, {} abandoned, {} busy",
        stats.calls, stats.abandoned, stats.busy,
    );
    Memory::now().within(before, 2.0, "60 aborted POSTs");
    assert_eq!(stats.ended, stats.calls, "every call set up has ended");
    let mut answered = Vec::new();
    for _ in 0..5 {
        let (far, _ev, offer, _m) = far_end().await;
        let r = reqwest::Client::new()
            .post(format!("http://{}/calls", server.addr()))
            .header("Content-Type", "application/sdp")
            .body(offer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "all five slots are free again");
        answered.push(far);
    }
    drop(server);
    engine.shutdown().await;
}

/// Item 1 on the avatar server: joins aborted right after sending leave no
/// peer behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_joins_leave_nothing_behind() {
    use sotto_net::avatar::{JoinRequest, AUDIO_LABEL, CONTROL_LABEL};
    use sotto_net::peer::{complete_local, loopback_peer};
    let _alone = sotto_testkit::alone().await;
    let server = sotto_integration::published_avatar_server(
        SECRET,
        (64, 48),
        sotto_server::avatar::viewers::ViewersConfig::default(),
    )
    .await;
    let (pc, mut events) = loopback_peer().await.unwrap();
    pc.create_data_channel(AUDIO_LABEL, None).await.unwrap();
    pc.create_data_channel(CONTROL_LABEL, None).await.unwrap();
    let offer = pc.create_offer(None).await.unwrap();
    let offer = complete_local(&pc, &mut events, offer).await.unwrap();
    let join = JoinRequest {
        room_name: "room".into(),
        token: token::create("key", SECRET, Some("avatar"), token::DEFAULT_TTL)
            .unwrap()
            .token,
        participant_id: "avatar".into(),
        signaling_base_url: None,
        offer,
        sample_rate: 24_000,
        channels: 1,
    };
    let body = serde_json::to_vec(&join).unwrap();
    let raw = request("/join", "application/json", None, &body);
    // Three rounds: the first pays for what a first peer sets up once
    // (the runtime's threads, the allocator's arenas); a leak shows as
    // growth after it.
    let start = Memory::now();
    let mut after_first = start;
    for round in 0..3 {
        let mut aborts = Vec::new();
        for k in 0..40u64 {
            let to = server.addr();
            aborts.push(tokio::spawn(send_and_abort(
                to,
                raw.clone(),
                Duration::from_millis(k % 20),
            )));
        }
        for a in aborts {
            a.await.unwrap();
        }
        // Peers answered before their agent went wait out the connect
        // timeout.
        wait_for(
            "every aborted join's peer to go",
            Duration::from_secs(15),
            || {
                let s = server.stats();
                s.peers == s.ended
            },
        )
        .await;
        wait_for(
            "every aborted avatar to be unpublished",
            Duration::from_secs(5),
            || server.published().is_empty(),
        )
        .await;
        if round == 0 {
            after_first = Memory::now();
            after_first.within(start, 16.0, "40 aborted joins");
        }
    }
    let s = server.stats();
    println!(
        "3 x 40 aborted joins: {} peers made, {} abandoned at once",
        s.peers, s.abandoned
    );
    Memory::now().within(after_first, 2.0, "80 more aborted joins");
    let _ = pc.close().await;
}

/// Item 2: eight connections trickling a 32 KiB offer a byte a millisecond
/// (under 1 KiB/s) are each answered 408 soon after the grace; memory
/// barely moves. With a token asked for, a POST without one is answered
/// 401 before any of its body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_are_cut_off_and_hold_little() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let server = call_server(&engine, Some(SECRET), ServerLimits::default()).await;
    let good = token::create("key", SECRET, Some("caller"), Duration::from_secs(60))
        .unwrap()
        .token;
    let before = Memory::now();
    let started = Instant::now();
    let mut trickles = Vec::new();
    for _ in 0..8 {
        let to = server.addr();
        let good = good.clone();
        trickles.push(tokio::spawn(async move {
            let mut c = connect_from("127.0.0.3", to).await;
            let head = request("/calls", "application/sdp", Some(&good), &[]);
            let head = String::from_utf8(head)
                .unwrap()
                .replace("Content-Length: 0", "Content-Length: 32768");
            c.write_all(head.as_bytes()).await.unwrap();
            for _ in 0..32_768 {
                if c.write_all(b"v").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                if started.elapsed() > Duration::from_secs(8) {
                    break;
                }
            }
            status_of(&mut c, Duration::from_secs(2)).await
        }));
    }
    let mut codes = Vec::new();
    for t in trickles {
        codes.push(t.await.unwrap());
    }
    let took = started.elapsed();
    println!("8 trickled bodies: {codes:?} after {took:?}");
    Memory::now().within(before, 2.0, "8 trickled bodies");
    assert!(codes.iter().all(|&c| c == 408), "{codes:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // No token: refused before the body, which is never sent.
    let mut c = TcpStream::connect(server.addr()).await.unwrap();
    let head = "POST /calls HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
                Content-Length: 32768\r\n\r\n";
    c.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(status_of(&mut c, Duration::from_secs(1)).await, 401);
    assert_eq!(server.live_calls(), 0);
    drop(server);
    engine.shutdown().await;
}

/// Item 3: 250 slow connections from 127.0.0.2 (headers never finished)
/// hold that address's share and no more: 127.0.0.1 is served in under a
/// second throughout, on both servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_from_one_address_leaves_another_served() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let calls = call_server(&engine, None, ServerLimits::default()).await;
    let avatar = sotto_integration::published_avatar_server(
        SECRET,
        (64, 48),
        sotto_server::avatar::viewers::ViewersConfig::default(),
    )
    .await;
    let before = Memory::now();
    for (name, addr, path) in [
        ("call server", calls.addr(), "/sotto.js"),
        ("avatar server", avatar.addr(), "/watch"),
    ] {
        let mut crowd = Vec::new();
        for _ in 0..250 {
            let mut c = connect_from("127.0.0.2", addr).await;
            // A header begun, never finished.
            let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
            crowd.push(c);
        }
        let http = reqwest::Client::new();
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            let started = Instant::now();
            let r = http
                .get(format!("http://{addr}{path}"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{name}: 127.0.0.1 is not served: {e}"));
            assert_eq!(r.status(), 200, "{name}");
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "{name}: 250 slow connections from 127.0.0.2; 127.0.0.1 served, slowest {slowest:?}"
        );
        assert!(slowest < Duration::from_secs(1), "{name}: {slowest:?}");
        drop(crowd);
    }
    Memory::now().within(before, 2.0, "250 slow connections on each server");
    assert!(calls.stats().client_refused >= 250 - 16);
    assert!(avatar.stats().client_refused >= 250 - 16);
    drop(calls);
    drop(avatar);
    engine.shutdown().await;
}

/// Item 4: a call's routes answer only to its key or the token that made
/// it. Strangers (no bearer: 401; another call's key or token, a made-up
/// one: 404) cannot read its events or stats nor hang it up; ids are 128
/// random bits and have one spelling only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_touch_anothers_call() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let server = call_server(&engine, Some(SECRET), ServerLimits::default()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr());
    let mut made = Vec::new();
    for who in ["victim", "stranger"] {
        let t = token::create("key", SECRET, Some(who), Duration::from_secs(60))
            .unwrap()
            .token;
        let (far, _ev, offer, _m) = far_end().await;
        let r = http
            .post(format!("{base}/calls"))
            .header("Content-Type", "application/sdp")
            .bearer_auth(&t)
            .body(offer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let key = r.headers()["sotto-key"].to_str().unwrap().to_owned();
        made.push((location, key, t, far));
    }
    let (victim, victim_key, victim_token, _) = &made[0];
    let (_, stranger_key, stranger_token, _) = &made[1];
    let id = &victim["/calls/".len()..];
    assert!(sotto_server::http::canonical_id(id), "{victim}");
    assert_ne!(victim, &made[1].0);
    let spellings = [
        format!("/calls/{}", id.to_uppercase()),
        format!("/calls/+{id}"),
        format!("/calls/%2B{id}"),
        format!("/calls/0{id}"),
        "/calls/1".to_owned(),
        "/calls/2".to_owned(),
    ];
    let made_up = "0".repeat(32);
    for route in ["", "/events", "/stats", "/avatar"] {
        let url = format!("{base}{victim}{route}");
        let get = |bearer: Option<&str>| {
            let r = if route.is_empty() {
                http.delete(&url)
            } else {
                http.get(&url)
            };
            match bearer {
                Some(b) => r.bearer_auth(b),
                None => r,
            }
            .send()
        };
        assert_eq!(get(None).await.unwrap().status(), 401, "{route}");
        for other in [stranger_key, stranger_token, &made_up] {
            assert_eq!(get(Some(other)).await.unwrap().status(), 404, "{route}");
        }
        for spelling in &spellings {
            let r = http
                .get(format!("{base}{spelling}{route}"))
                .bearer_auth(victim_key)
                .send()
                .await
                .unwrap();
            assert!(
                r.status() == 404 || r.status() == 405,
                "{spelling}{route}: {}",
                r.status()
            );
        }
    }
    // The victim's call is still up; its own key and token reach it.
    for bearer in [victim_key, victim_token] {
        let r = http
            .get(format!("{base}{victim}/stats"))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .request(reqwest::Method::OPTIONS, format!("{base}/calls"))
        .send()
        .await
        .unwrap();
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("Sotto-Key"), "{exposed}");
    assert_eq!(server.live_calls(), 2);
    println!(
        "server counted {} unauthorised requests",
        server.stats().unauthorised
    );
    drop(made);
    drop(server);
    engine.shutdown().await;
}

/// The session lines of an offer, its ICE and DTLS lines and `media`.
fn offer_with(media: &str, candidates: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n\
         {media}a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n{candidates}"
    )
}

/// Items 6 and 7: an offer with hundreds of candidates, and offers that
/// can never connect, are refused with 400 before a session is made; the
/// server goes on answering a real call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_that_flood_or_cannot_connect_are_refused() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let server = call_server(&engine, None, ServerLimits::default()).await;
    let http = reqwest::Client::new();
    let audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
    let hosts: String = (0..500)
        .map(|k| {
            format!(
                "a=candidate:{k} 1 udp 2122260223 10.{}.{}.1 {} typ host\r\n",
                k / 250,
                k % 250,
                10_000 + k
            )
        })
        .collect();
    let probes = [
        ("500 candidates", offer_with(audio, &hosts)),
        (
            "unknown fingerprint",
            offer_with(audio, "").replace("sha-256", "md5"),
        ),
        (
            "malformed fingerprint",
            offer_with(audio, "").replace("AB:CD:EF:01:23", "AB:CD:EF:01:2"),
        ),
        (
            "video-only naming Opus",
            offer_with(
                "m=video 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
                "",
            ),
        ),
        (
            "data-only naming Opus",
            offer_with(
                "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=rtpmap:111 opus/48000/2\r\n",
                "",
            ),
        ),
        (
            "audio port 0",
            offer_with(&audio.replace("audio 9", "audio 0"), ""),
        ),
        (
            "payload type 255",
            offer_with(&audio.replace("111", "255"), ""),
        ),
        (
            "30 KB ufrag",
            offer_with(audio, "").replace(
                "ice-ufrag:abcd",
                &format!("ice-ufrag:{}", "u".repeat(30_000)),
            ),
        ),
    ];
    let sessions = engine.stats().sessions;
    for (what, body) in &probes {
        let started = Instant::now();
        let r = http
            .post(format!("http://{}/calls", server.addr()))
            .header("Content-Type", "application/sdp")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let why = r.text().await.unwrap();
        println!("{what}: {status} {why}");
        assert_eq!(status, 400, "{what}: {why}");
        assert!(started.elapsed() < Duration::from_secs(1), "{what}");
    }
    assert_eq!(server.stats().calls, 0);
    assert_eq!(engine.stats().sessions, sessions, "no session was made");
    // A real offer with a candidate at an address no far end has besides
    // its own: the bad one is dropped, the call answered.
    let (_far, _ev, offer, _m) = far_end().await;
    let poisoned = offer.replacen(
        "a=candidate:",
        "a=candidate:9 1 udp 1 224.0.0.1 9 typ host\r\na=candidate:",
        1,
    );
    let r = http
        .post(format!("http://{}/calls", server.addr()))
        .header("Content-Type", "application/sdp")
        .body(poisoned)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    drop(server);
    engine.shutdown().await;
}

/// Item 8: one participant holds at most its share of calls (429 past
/// it), a call's token may not live long, and participant ids are safe
/// names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_cannot_take_every_slot() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let server = call_server(&engine, Some(SECRET), ServerLimits::default()).await;
    let http = reqwest::Client::new();
    let post = |t: String| {
        let http = http.clone();
        let addr = server.addr();
        async move {
            let (far, _ev, offer, _m) = far_end().await;
            let r = http
                .post(format!("http://{addr}/calls"))
                .header("Content-Type", "application/sdp")
                .bearer_auth(t)
                .body(offer)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), far)
        }
    };
    let greedy = token::create("key", SECRET, Some("greedy"), Duration::from_secs(60))
        .unwrap()
        .token;
    let mut held = Vec::new();
    let mut codes = Vec::new();
    for _ in 0..6 {
        let (code, far) = post(greedy.clone()).await;
        codes.push(code);
        held.push(far);
    }
    assert_eq!(codes, [201, 201, 201, 201, 429, 429]);
    let other = token::create("key", SECRET, Some("other"), Duration::from_secs(60))
        .unwrap()
        .token;
    assert_eq!(
        post(other).await.0,
        201,
        "another participant still gets in"
    );
    let long = token::create("key", SECRET, Some("long"), Duration::from_secs(2 * 3600))
        .unwrap()
        .token;
    assert_eq!(post(long).await.0, 401, "a two-hour token");
    let odd = token::create("key", SECRET, Some("a/../b"), Duration::from_secs(60))
        .unwrap()
        .token;
    assert_eq!(
        post(odd).await.0,
        401,
        "a participant id that is no safe name"
    );
    drop(held);
    drop(server);
    engine.shutdown().await;
}
