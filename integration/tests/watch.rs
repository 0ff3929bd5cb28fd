//! SPEC W5, A5, A7, S1–S5: watching an avatar through the avatar server's
//! viewer routes, with a webrtc-rs viewer on loopback. An agent session
//! speaks through the avatar; the viewer hears the interrupt's fade over
//! its configured length and sees the mouth close within a frame of its
//! end; a viewer that leaves stops the encoder and gives its memory back;
//! the routes refuse what they should.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sotto::{Engine, SessionConfig, SessionHandle};
use sotto_integration::call_engine;
use sotto_media::receive::OpusReceiver;
use sotto_media::vp8::{Picture, Vp8Decoder};
use sotto_net::call::opus_track;
use sotto_net::video::{vp8_track, Vp8Receiver};
use sotto_net::{av_peer, complete_local, connected, peer::LOOPBACK, RtpCodecKind};
use sotto_server::avatar::viewers::ViewersConfig;
use sotto_server::avatar::AvatarServer;
use webrtc::peer_connection::RTCSessionDescription;

/// Bytes allocated and not yet freed, by anyone in this process.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call goes to the system allocator unchanged; the counter
// is only arithmetic beside it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SECRET: &str = "watch-secret";
const VIEWER_SECRET: &str = "viewer-secret";
const W: u32 = 320;
const H: u32 = 240;

async fn avatar_server(viewer_secret: Option<&str>, max_viewers: usize) -> AvatarServer {
    let publishing = ViewersConfig {
        max_viewers,
        viewer_secret: viewer_secret.map(str::to_owned),
        ..ViewersConfig::default()
    };
    sotto_integration::published_avatar_server(SECRET, (W, H), publishing).await
}

/// A 48 kHz mono session linked to `server`'s avatar.
async fn agent(engine: &Engine, server: &AvatarServer) -> (SessionHandle, sotto::AvatarHandle) {
    let session = engine
        .create_session(SessionConfig {
            input: sotto::InputFormat {
                sample_rate: 48_000,
                channels: 1,
                sample_format: sotto::SampleFormat::S16,
            },
            ..SessionConfig::default()
        })
        .await
        .unwrap();
    let creds = sotto_server::token::create(
        "key",
        SECRET,
        Some("avatar_w"),
        sotto_server::token::DEFAULT_TTL,
    )
    .unwrap();
    let link = engine
        .attach_avatar(
            &session,
            sotto::LinkConfig::new(
                &server.join_url(),
                "room",
                &creds.token,
                &creds.participant_id,
            ),
        )
        .await
        .unwrap();
    (session, link)
}

/// Streams a 440 Hz tone at half scale into `session` as TTS streams
/// speech: 100 ms pieces at twice real time, `seconds` long.
fn talk(session: &SessionHandle, seconds: usize) -> tokio::task::JoinHandle<()> {
    let session = session.clone();
    tokio::spawn(async move {
        let tone = sotto_integration::tone_s16(48_000 * seconds, 440.0, 48_000, 16_384.0);
        session.mark_synthesis_start().unwrap();
        for piece in tone.chunks(9_600) {
            let _ = session.push(piece.to_vec());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        session.mark_synthesis_complete().unwrap();
    })
}

/// A viewer joined through `POST /avatars/{id}/viewers` (the first avatar
/// published): its peer, its location and key, and the two tracks'
/// receivers.
struct Watching {
    peer: sotto_net::Peer,
    location: String,
    key: String,
    voice: OpusReceiver,
    face: Vp8Receiver,
    origins: (u32, u32),
}

async fn watch(server: &AvatarServer, token: Option<&str>) -> Watching {
    let (peer, mut events) = av_peer(LOOPBACK).await.unwrap();
    // A browser's recvonly offer has no tracks of its own; webrtc-rs
    // offers media sections for the tracks it has.
    let (mic, _) = opus_track();
    let (cam, _) = vp8_track(None);
    peer.add_track(mic).await.unwrap();
    peer.add_track(cam).await.unwrap();
    let offer = peer.create_offer(None).await.unwrap();
    let offer = complete_local(&peer, &mut events, offer).await.unwrap();
    let avatar = server.published()[0].clone();
    let mut post = reqwest::Client::new()
        .post(format!("http://{}/avatars/{avatar}/viewers", server.addr()))
        .header("content-type", "application/sdp")
        .body(offer);
    if let Some(t) = token {
        post = post.bearer_auth(t);
    }
    let r = post.send().await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let key = r.headers()["sotto-key"].to_str().unwrap().to_owned();
    let answer = r.text().await.unwrap();
    peer.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    connected(&mut events, Duration::from_secs(10))
        .await
        .unwrap();
    let info: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}{location}", server.addr()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let origins = (
        info["voice_origin"].as_u64().unwrap() as u32,
        info["face_origin"].as_u64().unwrap() as u32,
    );
    let (mut voice, mut face) = (None, None);
    for _ in 0..2 {
        let t = tokio::time::timeout(Duration::from_secs(5), events.tracks.recv())
            .await
            .unwrap()
            .unwrap();
        match t.kind().await {
            RtpCodecKind::Audio => voice = Some(OpusReceiver::new(t, 1).unwrap()),
            _ => face = Some(Vp8Receiver::new(t)),
        }
    }
    Watching {
        peer,
        location,
        key,
        voice: voice.unwrap(),
        face: face.unwrap(),
        origins,
    }
}

/// How open the built-in face's mouth is in a picture: the share of dark
/// pixels where it draws the mouth.
fn mouth(p: &Picture) -> f64 {
    let (w, h) = (p.width as usize, p.height as usize);
    let (mut dark, mut all) = (0, 0);
    for y in h * 56 / 100..h * 76 / 100 {
        for x in w * 42 / 100..w * 58 / 100 {
            all += 1;
            if p.y[y * w + x] < 90 {
                dark += 1;
            }
        }
    }
    f64::from(dark) / f64::from(all.max(1))
}

/// What a viewer got for `span`: the voice by its pts (48 kHz samples
/// from pts 0) and each picture's pts (90 kHz) and mouth.
async fn receive(
    w: &mut Watching,
    decoder: &mut Vp8Decoder,
    span: Duration,
    voice: &mut Vec<(u64, f32)>,
    faces: &mut Vec<(u64, f64)>,
) {
    let (voice_origin, face_origin) = w.origins;
    let until = tokio::time::Instant::now() + span;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            a = w.voice.next() => {
                let Some(samples) = a else { return };
                let n = samples.len() as u32;
                let samples = samples.to_vec();
                let end = w.voice.end_timestamp().unwrap().wrapping_sub(voice_origin);
                let start = u64::from(end.wrapping_sub(n));
                voice.extend(samples.into_iter().enumerate().map(|(k, s)| (start + k as u64, s)));
            }
            v = w.face.next() => {
                let Some((data, ts)) = v else { return };
                if let Ok(Some(p)) = decoder.decode(&data) {
                    faces.push((u64::from(ts.wrapping_sub(face_origin)), mouth(&p)));
                }
            }
        }
    }
}

/// A5 with the fade of C7, seen by a viewer: the voice fades over the
/// session's fade length (400 ms, −60 dB at its end) and the mouth is
/// closed within one video frame (40 ms) of the fade's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_the_mouth_close_with_the_fade() {
    let server = avatar_server(None, 4).await;
    let engine = call_engine().await;
    let (session, link) = agent(&engine, &server).await;
    let mut viewer = watch(&server, None).await;
    let mut decoder = Vp8Decoder::new().unwrap();
    let (mut voice, mut faces) = (Vec::new(), Vec::new());
    // Closed before anything is said.
    receive(
        &mut viewer,
        &mut decoder,
        Duration::from_millis(600),
        &mut voice,
        &mut faces,
    )
    .await;
    let closed = faces.iter().map(|&(_, m)| m).fold(f64::MAX, f64::min);
    let talking = talk(&session, 8);
    receive(
        &mut viewer,
        &mut decoder,
        Duration::from_secs(3),
        &mut voice,
        &mut faces,
    )
    .await;
    // Barge-in: the agent stops streaming and interrupts.
    talking.abort();
    session.interrupt().unwrap();
    receive(
        &mut viewer,
        &mut decoder,
        Duration::from_millis(1_500),
        &mut voice,
        &mut faces,
    )
    .await;

    // The voice's envelope in 5 ms windows, by pts.
    voice.sort_by_key(|&(t, _)| t);
    let env: Vec<(u64, f64)> = voice
        .chunks(240)
        .map(|c| {
            let p = c
                .iter()
                .map(|&(_, s)| f64::from(s) * f64::from(s))
                .sum::<f64>()
                / c.len() as f64;
            (c[0].0, p.sqrt())
        })
        .collect();
    let steady = {
        let loud: Vec<f64> = env.iter().map(|&(_, r)| r).filter(|&r| r > 0.1).collect();
        loud.iter().sum::<f64>() / loud.len().max(1) as f64
    };
    assert!(steady > 0.3, "the tone is heard: rms {steady:.3}");
    // The fade: from the last loud window to the first at −60 dB of the
    // tone or below, after it.
    let last_loud = env.iter().rposition(|&(_, r)| r >= steady * 0.9).unwrap();
    let gone = last_loud
        + env[last_loud..]
            .iter()
            .position(|&(_, r)| r < steady * 1e-3)
            .unwrap_or_else(|| {
                panic!(
                    "no silence after {last_loud} of {}: {:?}",
                    env.len(),
                    &env[last_loud..]
                )
            });
    let (start, end) = (env[last_loud].0 + 240, env[gone].0);
    let fade_ms = (end - start) as f64 / 48.0;
    // Where the mouth is closed again, after the fade began.
    let start90 = start * 90_000 / 48_000;
    let end90 = end * 90_000 / 48_000;
    faces.sort_by_key(|&(t, _)| t);
    let shut = faces
        .iter()
        .find(|&&(t, m)| t > start90 && m <= closed + 0.02)
        .map(|&(t, _)| t)
        .unwrap();
    let shut_after_ms = (shut as f64 - end90 as f64) / 90.0;
    println!(
        "fade heard over {fade_ms:.0} ms (to -60 dB; configured 400 ms); mouth closed \
         {shut_after_ms:+.0} ms after the fade's end (closed {closed:.3}); {} pictures",
        faces.len()
    );
    // The tail is shaped 0 dB to -60 dB over its length: the envelope
    // window that first reaches -60 dB is within a window or two of it.
    assert!((fade_ms - 400.0).abs() <= 25.0, "fade {fade_ms:.0} ms");
    assert!(
        shut_after_ms <= 40.0,
        "mouth closed {shut_after_ms:.0} ms after the fade"
    );
    // And not before the fade had mostly gone: the mouth follows the voice.
    assert!(
        shut_after_ms >= -200.0,
        "mouth closed {shut_after_ms:.0} ms early"
    );

    viewer.peer.close().await.unwrap();
    link.detach();
    drop(server);
    engine.shutdown().await;
}

/// S5: a viewer that leaves (DELETE) stops the encoder and gives back
/// what it took: live heap bytes after the fourth viewer came and went are
/// where they were after the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_leaves_stops_the_encoder_and_frees_its_memory() {
    let server = avatar_server(None, 4).await;
    let engine = call_engine().await;
    // The avatar plays (silence, the face) and nothing else grows: the
    // agent says nothing.
    let (_session, link) = agent(&engine, &server).await;
    let publisher = server.publisher(&server.published()[0]).unwrap();
    let http = reqwest::Client::new();
    let mut after = Vec::new();
    for round in 0..4 {
        let mut viewer = watch(&server, None).await;
        let mut decoder = Vp8Decoder::new().unwrap();
        let (mut voice, mut faces) = (Vec::new(), Vec::new());
        receive(
            &mut viewer,
            &mut decoder,
            Duration::from_secs(2),
            &mut voice,
            &mut faces,
        )
        .await;
        assert!(faces.len() >= 40, "round {round}: {} pictures", faces.len());
        let r = http
            .delete(format!("http://{}{}", server.addr(), viewer.location))
            .bearer_auth(&viewer.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = http
            .delete(format!("http://{}{}", server.addr(), viewer.location))
            .bearer_auth(&viewer.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "gone already");
        let _ = viewer.peer.close().await;
        drop((viewer, decoder, voice, faces));
        // The server notices the closed peer, the encoder goes idle.
        for _ in 0..50 {
            if publisher.viewers() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = publisher.stats();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let later = publisher.stats();
        assert_eq!(publisher.viewers(), 0);
        assert_eq!(
            later.frames_encoded, idle.frames_encoded,
            "nothing encoded for nobody"
        );
        assert_eq!(later.voice_packets, idle.voice_packets);
        after.push(LIVE.load(Ordering::Relaxed));
    }
    // The first viewer warms what lives as long as the process (the
    // runtime's and the crates' own caches).
    let grown = after[3] - after[1];
    println!(
        "live heap after each viewer left: {:?} KiB; grew {} KiB from the second to the fourth",
        after.iter().map(|b| b / 1024).collect::<Vec<_>>(),
        grown / 1024
    );
    // A peer's worth is several MiB (buffers, SRTP, the decoder here):
    // what stays per viewer must be far less.
    assert!(grown < 512 * 1024, "{} KiB kept", grown / 1024);
    link.detach();
    drop(server);
    engine.shutdown().await;
}

/// S1–S3, S5, S6 on the viewer routes: every refusal is a clear 4xx or
/// 503 before anything is made; a viewer watches only the avatars of the
/// room its token is for, a list is an operator's (or a viewer's, of its
/// own room), and a viewer's location answers only to its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_routes_refuse_what_they_should() {
    use sotto_server::token;
    let server = avatar_server(Some(VIEWER_SECRET), 1).await;
    let engine = call_engine().await;
    let (_session, link) = agent(&engine, &server).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr());
    let id = server.published()[0].clone();
    assert!(sotto_server::http::canonical_id(&id), "{id}");
    let token = token::viewer(VIEWER_SECRET, "room", Duration::from_secs(60)).unwrap();
    let elsewhere = token::viewer(VIEWER_SECRET, "another", Duration::from_secs(60)).unwrap();
    let operator = {
        let mut c = token::verify_granting(&token, VIEWER_SECRET, &[token::ALLOW_VIEW]).unwrap();
        c.permissions = vec![token::OPERATOR.into()];
        c.room = None;
        token::sign(&c, VIEWER_SECRET).unwrap()
    };
    // An agent's token, signed with the viewers' secret: it grants no
    // viewing.
    let joiner = token::create("key", VIEWER_SECRET, Some("avatar_w"), token::DEFAULT_TTL)
        .unwrap()
        .token;
    let post = |path: &str, ct: &str, body: Vec<u8>, bearer: Option<&str>| {
        let mut r = http
            .post(format!("{base}{path}"))
            .header("content-type", ct.to_owned())
            .body(body);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send()
    };
    let (peer, mut events) = av_peer(LOOPBACK).await.unwrap();
    let (mic, _) = opus_track();
    peer.add_track(mic).await.unwrap();
    let offer = peer.create_offer(None).await.unwrap();
    let offer = complete_local(&peer, &mut events, offer)
        .await
        .unwrap()
        .into_bytes();
    let ours = format!("/avatars/{id}/viewers");
    let upper = format!("/avatars/{}/viewers", id.to_uppercase());
    // Path, content type, body, bearer token, the status wanted.
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Option<&'a str>, u16);
    let cases: Vec<Case> = vec![
        (&ours, "text/plain", offer.clone(), Some(&token), 415),
        (
            &ours,
            "application/sdp",
            vec![b'v'; 33 * 1024],
            Some(&token),
            413,
        ),
        (
            &ours,
            "application/sdp",
            vec![b'v'; 64 << 20],
            Some(&token),
            413,
        ),
        (&ours, "application/sdp", offer.clone(), None, 401),
        (
            &ours,
            "application/sdp",
            offer.clone(),
            Some("not.a.token"),
            404,
        ),
        (
            &ours,
            "application/sdp",
            offer.clone(),
            Some(&elsewhere),
            404,
        ),
        (&ours, "application/sdp", offer.clone(), Some(&joiner), 404),
        (
            &ours,
            "application/sdp",
            vec![0xff, 0xfe],
            Some(&token),
            400,
        ),
        (
            &ours,
            "application/sdp",
            b"v=0\r\nnonsense".to_vec(),
            Some(&token),
            400,
        ),
        (
            "/avatars/1/viewers",
            "application/sdp",
            offer.clone(),
            Some(&operator),
            404,
        ),
        (
            &upper,
            "application/sdp",
            offer.clone(),
            Some(&operator),
            404,
        ),
        (
            "/avatars/x/viewers",
            "application/sdp",
            offer.clone(),
            Some(&token),
            404,
        ),
    ];
    for (path, ct, body, bearer, want) in cases {
        let len = body.len();
        let status = match post(path, ct, body, bearer).await {
            Ok(r) => r.status().as_u16(),
            // A body far past the limit may be cut off unread.
            Err(_) if want == 413 => 413,
            Err(e) => panic!("{path}: {e}"),
        };
        assert_eq!(status, want, "{path} {ct} {len} bytes");
    }
    // One viewer fits; the next is a 503 while it watches.
    let first = post(&ours, "application/sdp", offer.clone(), Some(&token))
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let key = first.headers()["sotto-key"].to_str().unwrap().to_owned();
    let viewer_id = location.rsplit('/').next().unwrap().to_owned();
    assert!(sotto_server::http::canonical_id(&viewer_id), "{location}");
    let second = post(&ours, "application/sdp", offer.clone(), Some(&token))
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    assert!(second.headers().contains_key("retry-after"));
    // The viewer's location: its key or its room's token, nobody else.
    let at = |bearer: Option<&str>| {
        let mut r = http.get(format!("{base}{location}"));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send()
    };
    assert_eq!(at(None).await.unwrap().status(), 401);
    assert_eq!(at(Some(&elsewhere)).await.unwrap().status(), 404);
    assert_eq!(at(Some(&"0".repeat(32))).await.unwrap().status(), 404);
    assert_eq!(at(Some(&key)).await.unwrap().status(), 200);
    assert_eq!(at(Some(&token)).await.unwrap().status(), 200);
    for path in [
        format!("/avatars/{id}/viewers/77"),
        format!("/avatars/{id}/viewers/x"),
        format!("/avatars/{}/viewers/{viewer_id}", "0".repeat(32)),
    ] {
        let r = http
            .delete(format!("{base}{path}"))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = http
        .delete(format!("{base}{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a stranger cannot end a viewer");
    // Listing: an operator sees every avatar, a viewer its room's only,
    // a stranger nothing.
    let list = |bearer: Option<&str>| {
        let mut r = http.get(format!("{base}/avatars"));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send()
    };
    assert_eq!(list(None).await.unwrap().status(), 401);
    assert_eq!(list(Some(&key)).await.unwrap().status(), 401);
    let all: serde_json::Value = list(Some(&operator)).await.unwrap().json().await.unwrap();
    assert_eq!(all[0]["id"], id.as_str());
    assert_eq!(all[0]["participant_id"], "avatar_w");
    let theirs: serde_json::Value = list(Some(&token)).await.unwrap().json().await.unwrap();
    assert_eq!(theirs.as_array().unwrap().len(), 1);
    let others: serde_json::Value = list(Some(&elsewhere)).await.unwrap().json().await.unwrap();
    assert_eq!(others.as_array().unwrap().len(), 0);
    // Reports are for tests that keep them: a real server has none.
    let r = post(
        &format!("{location}/report"),
        "application/octet-stream",
        vec![0; 16],
        Some(&key),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .delete(format!("{base}{location}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let page = http.get(format!("{base}/watch")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("RTCPeerConnection"));
    let stats = server.stats();
    println!(
        "viewers taken {}, refused {}",
        stats.viewers, stats.viewers_refused
    );
    assert_eq!(stats.viewers, 1);
    let _ = peer.close().await;
    link.detach();
    drop(server);
    engine.shutdown().await;
}
