//! SPEC F2: WHIP (RFC 9725) both ways. A session publishes over WHIP to
//! Debian's `simple-whip-server`, which puts it into a real Janus's room
//! (both started by the test in a network namespace of its own); and a
//! WHIP client no one here wrote publishes into the call server's
//! `POST /calls`.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::time::Duration;

use sotto::{CallConfig, Engine, RoomError, RoomEvent, SessionError, SessionHandle};
use sotto_integration::browser::{in_own_network_with_sfu, SFU_ADDRESS};
use sotto_integration::compare::align;
use sotto_integration::janus::{hear, until, Janus};
use sotto_integration::{call_engine, scratch_dir};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn session(engine: &Engine, say: &sotto_server::calls::Utterance) -> SessionHandle {
    engine
        .create_session(sotto::SessionConfig {
            input: say.input,
            ..sotto::SessionConfig::default()
        })
        .await
        .unwrap()
}

/// F2: a session publishes over WHIP (RFC 9725) to Debian's
/// `simple-whip-server`, which puts it in a Janus room; a session in that
/// room hears it (correlation ≥ 0.9). A wrong token is refused with a
/// typed error; hanging up deletes the resource and the room sees the
/// publisher leave.
#[test]
fn a_session_publishes_over_whip_into_janus() {
    if !in_own_network_with_sfu("a_session_publishes_over_whip_into_janus") {
        return;
    }
    runtime().block_on(async {
        let dir = scratch_dir("room-whip");
        let janus = Janus::start(&dir);
        let whip = sotto_integration::janus::WhipServer::start(&dir, &janus);
        let endpoint = whip.endpoint("sotto", 1234, Some("whip-token")).await;
        let engine = call_engine().await;
        let say = sotto_testkit::hello();
        let speech = sotto_testkit::utterance_at(&say, 48_000);
        let publisher = session(&engine, &say).await;
        let listener = session(&engine, &say).await;
        let media = CallConfig {
            bind: SFU_ADDRESS,
            ..CallConfig::default()
        };
        // A wrong token: refused, the output free again.
        let e = engine
            .publish_whip(&publisher, &endpoint, Some("nope"), media.clone())
            .await
            .unwrap_err();
        eprintln!("wrong token: {e}");
        assert!(
            matches!(e, SessionError::Room(RoomError::Unauthorized(_))),
            "{e:?}"
        );
        let mut l = engine
            .join_room(&listener, janus.room(1234, "listener"))
            .await
            .unwrap();
        let mut w = engine
            .publish_whip(&publisher, &endpoint, Some("whip-token"), media)
            .await
            .unwrap();
        eprintln!("published at {}", w.resource());
        let connected = tokio::time::timeout(Duration::from_secs(10), w.next_event())
            .await
            .unwrap();
        assert_eq!(connected, Some(sotto::CallEvent::Connected));
        let RoomEvent::ParticipantJoined { id: whip_id, .. } =
            until(&mut l, Duration::from_secs(10), |e| {
                matches!(e, RoomEvent::ParticipantJoined { .. })
            })
            .await
        else {
            unreachable!()
        };
        until(&mut l, Duration::from_secs(10), |e| {
            matches!(e, RoomEvent::Hearing { .. })
        })
        .await;
        let mut mic = l.take_mic().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        while mic.try_recv().is_ok() {}
        drop(publisher.push(say.bytes.clone()));
        let got = hear(&mut mic, 4.0).await;
        let found = align(&speech, 24_000, &got, 96_000);
        eprintln!(
            "the room heard the WHIP publisher: correlation {:.3}, level {:+.2} dB",
            found.correlation, found.level_db
        );
        assert!(
            found.correlation >= 0.9,
            "correlation {:.3}",
            found.correlation
        );
        // Hanging up deletes the resource: the room sees the publisher go.
        tokio::time::timeout(Duration::from_secs(10), w.hang_up())
            .await
            .unwrap();
        until(
            &mut l,
            Duration::from_secs(10),
            |e| matches!(e, RoomEvent::ParticipantLeft { id } if *id == whip_id),
        )
        .await;
        publisher.frames().unwrap().release();
        l.leave().await;
        engine.shutdown().await;
    });
}

/// F2 the other way: a WHIP client no one here wrote (Debian's
/// `whip-client`, GStreamer's webrtcbin and libnice) publishes a speech
/// file into the call server's `POST /calls`; the call's session hears it
/// (correlation ≥ 0.9 with what it sent). `whip-client` runs with a UPnP
/// library that maps nothing first on its library path
/// (`testkit/whip/no-upnp.c`, built by `make test-deps`): otherwise it
/// aborts at start-up, holding libsoup2 and, through GStreamer's ICE,
/// libsoup3. libnice keeps a connected pair alive with STUN only every
/// 25 s: the call stays up on its media (see `FarEnd` in the engine's
/// calls). Its log is `whip-client.log` in the test's scratch directory.
#[test]
fn a_gstreamer_whip_client_calls_the_server() {
    if !in_own_network_with_sfu("a_gstreamer_whip_client_calls_the_server") {
        return;
    }
    runtime().block_on(async {
        let dir = scratch_dir("whip-client");
        let env =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/whip-client-env");
        assert!(
            env.join("libgupnp-igd-1.0.so.4").exists(),
            "make test-deps builds target/whip-client-env"
        );
        let engine = call_engine().await;
        let say = sotto_testkit::hello();
        let speech = sotto_testkit::utterance_at(&say, 48_000);
        let server = sotto_server::calls::CallServer::start(
            "127.0.0.1:0".parse().unwrap(),
            engine.clone(),
            sotto_server::calls::ServeConfig {
                utterances: vec![say],
                keep_recordings: true,
                call: CallConfig {
                    bind: SFU_ADDRESS,
                    ..CallConfig::default()
                },
                ..sotto_server::calls::ServeConfig::default()
            },
        )
        .await
        .unwrap();
        let wav = dir.join("speech.wav");
        sotto_integration::write_wav_s16(&wav, &speech, 48_000, 1);
        let pipeline = format!(
            "filesrc location={} ! wavparse ! identity sync=true ! audioconvert ! audioresample \
             ! audio/x-raw,rate=48000,channels=1 ! opusenc ! rtpopuspay pt=111 ! queue \
             ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111",
            wav.display()
        );
        let mut client = std::process::Command::new("whip-client")
            .args([
                "-u",
                &format!("http://{}/calls", server.addr()),
                "-n",
                "-o",
                "-l",
                "4",
            ])
            .args(["-A", &pipeline])
            .env("LD_LIBRARY_PATH", &env)
            .stdout(std::fs::File::create(dir.join("whip-client.log")).unwrap())
            .spawn()
            .expect("whip-client must be installed (make test-deps)");
        // The speech is 9.5 s; the microphone as the session got it.
        let http = reqwest::Client::new();
        let mic_url = format!("http://{}/test/calls/1/mic", server.addr());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let (mut got, mut log) = (Vec::new(), String::new());
        while got.len() < 48_000 * 9 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(r) = http.get(&mic_url).send().await {
                if r.status().is_success() {
                    got = sotto_integration::browser::f32s(&r.bytes().await.unwrap());
                }
            }
            // The call's events while it lasts (it is gone from the
            // table once over).
            if let Ok(r) = http.get(mic_url.replace("/mic", "/events")).send().await {
                if r.status().is_success() {
                    log = r.text().await.unwrap();
                }
            }
        }
        let _ = client.kill();
        let _ = client.wait();
        let stats = server.stats();
        eprintln!("the call: {log}\n{stats:?}");
        assert!(
            got.len() >= 48_000 * 6,
            "{} samples of microphone",
            got.len()
        );
        let found = align(&speech, 48_000, &got, 48_000 * 4);
        eprintln!(
            "the session heard whip-client: correlation {:.3}, level {:+.2} dB",
            found.correlation, found.level_db
        );
        assert!(
            found.correlation >= 0.9,
            "correlation {:.3}",
            found.correlation
        );
        drop(server);
        engine.shutdown().await;
        std::fs::remove_dir_all(&dir).ok();
    });
}
