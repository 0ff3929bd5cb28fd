//! SPEC W3, S1–S5: `sotto serve`'s signalling, as WHIP does it, driven by
//! a webrtc-rs far end and by hostile requests; and (W4) the page in a
//! real browser.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use sotto::{CallConfig, Engine};
use sotto_integration::{call_engine, far_end};
use sotto_net::connected;
use sotto_server::accept::ServerLimits;
use sotto_server::calls::{CallServer, ServeConfig, Utterance};
use webrtc::peer_connection::RTCSessionDescription;

fn say() -> Arc<Utterance> {
    sotto_testkit::hello()
}

async fn server(engine: &Engine, token_secret: Option<String>, max_calls: usize) -> CallServer {
    CallServer::start(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        ServeConfig {
            token_secret,
            limits: ServerLimits {
                max_peers: max_calls,
                ..ServerLimits::default()
            },
            utterances: vec![say()],
            call: CallConfig::default(),
            keep_recordings: true,
            ..ServeConfig::default()
        },
    )
    .await
    .unwrap()
}

/// A far end's offer, every candidate in it.
async fn offer() -> (sotto_net::Peer, sotto_net::PeerEvents, String) {
    let (far, events, sdp, _mic) = far_end().await;
    (far, events, sdp)
}

fn post(
    http: &reqwest::Client,
    server: &CallServer,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    http.post(format!("http://{}/calls", server.addr()))
        .header("Content-Type", "application/sdp")
        .body(body)
}

/// A call is created (201, the answer, a Location), connects, hears the
/// agent, and ends with DELETE (204); what the server refuses it refuses
/// with the right code and no call: 415, 413, 400, 401, 503, 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_signalled_as_whip_does_and_bad_ones_refused() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let secret = "serve-test".to_owned();
    let server = server(&engine, Some(secret.clone()), 1).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token =
        sotto_server::token::create("key", &secret, Some("caller"), Duration::from_secs(60))
            .unwrap()
            .token;
    let (far, mut events, sdp) = offer().await;

    // Refused before anything is made.
    let status = |r: reqwest::Response| r.status().as_u16();
    let r = http
        .post(format!("http://{}/calls", server.addr()))
        .header("Content-Type", "application/json")
        .body(sdp.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 415);
    let r = post(&http, &server, sdp.clone()).send().await.unwrap();
    assert_eq!(status(r), 401, "no token");
    let r = post(&http, &server, sdp.clone())
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 401, "bad token");
    let r = post(&http, &server, "x".repeat(40_000))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 413);
    for garbage in [
        "",
        "garbage",
        "v=0\r\nm=audio 9 RTP/AVP 0\r\n",
        "a=rtpmap:111 opus/48000/2\r\n",
    ] {
        let r = post(&http, &server, garbage)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 400, "{garbage:?}");
    }
    assert_eq!(server.live_calls(), 0);

    // CORS for a page from elsewhere.
    let r = http
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/calls", server.addr()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    // A good call.
    let r = post(&http, &server, sdp.clone())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["content-type"], "application/sdp");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/calls/"));
    let key = r.headers()["sotto-key"].to_str().unwrap().to_owned();
    assert_eq!(key.len(), 32, "{key}");
    assert_ne!(&location["/calls/".len()..], key);
    let answer = r.text().await.unwrap();
    far.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    connected(&mut events, Duration::from_secs(10))
        .await
        .unwrap();
    let track = tokio::time::timeout(Duration::from_secs(5), events.tracks.recv())
        .await
        .unwrap()
        .unwrap();
    let mut heard = sotto_media::receive::OpusReceiver::new(track, 1).unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while got.len() < 48_000 {
            got.extend_from_slice(heard.next().await.unwrap());
        }
    })
    .await
    .unwrap();
    assert!(got.iter().any(|s| s.abs() > 0.05), "the agent speaks");

    // Full: one call at a time here.
    let (_far2, _events2, sdp2) = offer().await;
    let r = post(&http, &server, sdp2)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(server.stats().busy, 1);

    // The page's event feed shows the agent's turn.
    let feed_url = format!("http://{}{location}/events?after=0", server.addr());
    let r = http.get(&feed_url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "a stranger has no key");
    let r = http
        .get(&feed_url)
        .bearer_auth("0".repeat(32))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "nor a made-up one");
    let feed: serde_json::Value = http
        .get(&feed_url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = feed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        names.contains(&"connected") && names.contains(&"first_audio"),
        "{names:?}"
    );

    // Ended by DELETE with the token that made it (as WHIP does); a second
    // DELETE, or any unknown call, is a 404.
    let url = format!("http://{}{location}", server.addr());
    assert_eq!(
        http.delete(&url).send().await.unwrap().status().as_u16(),
        401
    );
    assert_eq!(
        http.delete(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        http.delete(&url)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    let upper = location.to_uppercase().replace("/CALLS/", "/calls/");
    for bad in [
        "/calls/999",
        "/calls/abc",
        "/calls/99999999999999999999999",
        &upper,
    ] {
        let r = http
            .delete(format!("http://{}{bad}", server.addr()))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{bad}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.live_calls() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.live_calls(), 0);
    assert_eq!(server.stats().ended, 1);
    far.close().await.unwrap();
    engine.shutdown().await;
}

/// `sotto serve --avatar` (SPEC O12, W5, S3): a call's agent speaks
/// through an avatar. The avatar is published in the call's room (the
/// call's `…/avatar` says where, with a viewer token for that room only),
/// the agent's speech reaches it paced (none of it dropped for running
/// ahead), and the call's own voice is silent while the avatar speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_speaks_through_the_avatar() {
    let _alone = sotto_testkit::alone().await;
    let secret = "avatar-of-calls";
    let viewer_secret = "viewers-of-calls";
    let avatar = sotto_integration::published_avatar_server(
        secret,
        (64, 48),
        sotto_server::avatar::viewers::ViewersConfig {
            viewer_secret: Some(viewer_secret.into()),
            ..sotto_server::avatar::viewers::ViewersConfig::default()
        },
    )
    .await;
    let engine = call_engine().await;
    let base = format!("http://{}", avatar.addr());
    let server = CallServer::start(
        "127.0.0.1:0".parse().unwrap(),
        engine.clone(),
        ServeConfig {
            utterances: vec![say()],
            keep_recordings: true,
            avatar: Some(sotto_server::calls::AvatarAttach {
                join_url: avatar.join_url(),
                secret: secret.into(),
                watch_base: base.clone(),
                viewer_secret: viewer_secret.into(),
            }),
            ..ServeConfig::default()
        },
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let (far, mut events, sdp, _mic) = far_end().await;
    let r = post(&http, &server, sdp).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let key = r.headers()["sotto-key"].to_str().unwrap().to_owned();
    let answer = r.text().await.unwrap();
    let watching: serde_json::Value = http
        .get(format!("http://{}{location}/avatar", server.addr()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(watching["watch"], base.as_str());
    let room = watching["room"].as_str().unwrap().to_owned();
    let viewer_token = watching["token"].as_str().unwrap().to_owned();
    far.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    connected(&mut events, Duration::from_secs(10))
        .await
        .unwrap();
    let track = tokio::time::timeout(Duration::from_secs(5), events.tracks.recv())
        .await
        .unwrap()
        .unwrap();
    let mut heard = sotto_media::receive::OpusReceiver::new(track, 1).unwrap();
    let mut loudest = 0.0f32;
    let listen = async {
        while let Some(s) = heard.next().await {
            loudest = s.iter().fold(loudest, |m, v| m.max(v.abs()));
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), listen).await;
    let r = http.get(format!("{base}/avatars")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "no list for a stranger");
    let list: serde_json::Value = http
        .get(format!("{base}/avatars"))
        .bearer_auth(&viewer_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stats = avatar.stats();
    let arrived = stats.pcm_arrived;
    println!(
        "avatars {list}; {arrived} samples reached the avatar; the call's loudest {loudest:.4}"
    );
    assert_eq!(list[0]["room_name"], room.as_str());
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Six seconds into a 9.5 s speech pushed at once: the avatar is fed as
    // the session's queue takes the speech in, so it holds what has played
    // and the queue's one second ahead (at 48 kHz), no more, no less.
    assert!(
        (48_000 * 5..=48_000 * 8).contains(&arrived),
        "{arrived} samples"
    );
    assert!(loudest < 0.01, "the call's own voice is silent: {loudest}");
    drop(far);
    drop(server);
    drop(avatar);
    engine.shutdown().await;
}
