//! The avatar link over real WebRTC peers on loopback (SPEC A1–A7, O12):
//! speech in, the avatar's voice out, acknowledgements with positions,
//! interrupts, bad tokens and bad messages, and A/V staying locked.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test
// Session methods send at once; dropping the returned future only skips its outcome.
#![allow(clippy::let_underscore_future)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sotto::LinkConfig;
use sotto::{Engine, EngineConfig, EngineError, SessionConfig, SessionEvent, SessionEventKind};
use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, Playout, PlayoutConfig, PTS_RATE};
use sotto_avatar::sink::MemorySink;
use sotto_integration::wait_until;
use sotto_server::avatar::{AvatarServer, ServerConfig};
use sotto_server::token::{self, Claims};
use tokio::sync::mpsc::Receiver;

const SECRET: &str = "test-secret";
const RATE: usize = 24_000;

/// A server whose sinks the test can read.
async fn server() -> (AvatarServer, Arc<Mutex<Vec<MemorySink>>>) {
    let sinks: Arc<Mutex<Vec<MemorySink>>> = Arc::default();
    let made = Arc::clone(&sinks);
    let config = ServerConfig {
        publish: None,
        clock: None,
        secret: SECRET.into(),
        fps: 25,
        cooldown: Duration::from_millis(300),
        stereo: false,
        // Small pictures: the tests look at timing, not faces.
        renderer: Arc::new(|| Box::new(FaceRenderer::new(64, 48)) as Box<dyn AvatarRenderer>),
        sink: Arc::new(move |req| {
            let sink = MemorySink::new(usize::from(req.channels));
            made.lock().unwrap().push(sink.clone());
            Box::new(sink)
        }),
    };
    let server = AvatarServer::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    (server, sinks)
}

fn link_config(server: &AvatarServer, token: &str) -> LinkConfig {
    LinkConfig::new(&server.join_url(), "room-1", token, "avatar_test")
}

/// An engine with one default session linked to `server`'s avatar.
async fn attached(server: &AvatarServer) -> (Engine, sotto::SessionHandle, sotto::AvatarHandle) {
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let s = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let avatar = engine
        .attach_avatar(&s, link_config(server, &good_token()))
        .await
        .unwrap();
    (engine, s, avatar)
}

fn good_token() -> String {
    token::create("key", SECRET, Some("avatar_test"), token::DEFAULT_TTL)
        .unwrap()
        .token
}

/// Speech that is never exactly zero at its start, as s16 bytes.
fn speech(frames: usize, seed: f32) -> (Vec<u8>, Vec<i16>) {
    let samples: Vec<i16> = (0..frames)
        .map(|i| {
            let t = i as f32 / RATE as f32;
            let v = (std::f32::consts::TAU * (180.0 + seed) * t).sin() * 6000.0
                + (std::f32::consts::TAU * 710.0 * t).sin() * 2000.0
                + 300.0;
            v.round() as i16
        })
        .collect();
    let bytes = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    (bytes, samples)
}

async fn next_avatar_event(
    events: &mut Receiver<SessionEvent>,
    limit: Duration,
) -> SessionEventKind {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, events.recv())
            .await
            .expect("an avatar event in time")
            .expect("the session is open");
        if let k @ (SessionEventKind::AvatarSegmentEnded { .. }
        | SessionEventKind::AvatarAckTimeout { .. }
        | SessionEventKind::AvatarDisconnected { .. }) = e.kind
        {
            return k;
        }
    }
}

fn first_voice(log: &sotto_avatar::sink::MemoryLog, from: usize) -> Option<usize> {
    log.voice[from..]
        .iter()
        .position(|&v| v != 0)
        .map(|p| p + from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_reaches_the_avatar_whole_and_each_segment_is_acknowledged() {
    let _alone = sotto_testkit::alone().await;
    let (server, sinks) = server().await;
    let (engine, s, avatar) = attached(&server).await;
    let mut events = s.events();
    assert!(avatar.is_connected());
    assert_eq!(server.stats().peers, 1);

    // One second of speech as one turn, pushed in uneven chunks.
    let (bytes, samples) = speech(RATE, 0.0);
    s.mark_synthesis_start().unwrap();
    for piece in bytes.chunks(7_001) {
        let _ = s.push(piece.to_vec());
    }
    s.mark_synthesis_complete().unwrap();
    let ack = next_avatar_event(&mut events, Duration::from_secs(10)).await;
    let SessionEventKind::AvatarSegmentEnded {
        segment,
        playback_position,
        interrupted,
    } = ack
    else {
        panic!("{ack:?}");
    };
    assert_eq!(segment, 1);
    assert!(!interrupted);
    assert!(
        (playback_position - 1.0).abs() <= 0.020,
        "position {playback_position}"
    );
    // The avatar's voice is the session's audio, sample for sample: no
    // chunk lost or reordered on loopback.
    let log = sinks.lock().unwrap()[0].log();
    let start = first_voice(&log, 0).unwrap();
    assert!(log.voice.len() >= start + samples.len());
    assert!(
        log.voice[start..start + samples.len()] == samples[..],
        "the avatar's voice differs from the session's audio"
    );
    // The session's own output is silent while the avatar speaks, and its
    // counters still run.
    let out = engine.render(RATE as u64 * 2).await.unwrap();
    assert!(
        out.iter().all(|&v| v == 0.0),
        "direct output while attached"
    );
    assert_eq!(s.stats().played_frames.get(), RATE as u64);

    // Detached, the session speaks for itself again; a new link works.
    avatar.detach();
    engine.settle().await.unwrap();
    let _ = s.push(bytes.clone());
    engine.settle().await.unwrap();
    let out = engine.render(RATE as u64).await.unwrap();
    assert!(
        out.iter().any(|&v| v != 0.0),
        "no direct output after detach"
    );
    let again = engine
        .attach_avatar(&s, link_config(&server, &good_token()))
        .await
        .unwrap();
    s.mark_synthesis_start().unwrap();
    let _ = s.push(bytes.clone());
    s.mark_synthesis_complete().unwrap();
    let ack = next_avatar_event(&mut events, Duration::from_secs(10)).await;
    assert!(
        matches!(
            ack,
            SessionEventKind::AvatarSegmentEnded {
                segment: 1,
                interrupted: false,
                ..
            }
        ),
        "{ack:?}"
    );
    again.detach();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupts_silence_the_avatar_and_ten_in_a_row_leave_the_link_working() {
    let _alone = sotto_testkit::alone().await;
    let (server, sinks) = server().await;
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let s = engine
        .create_session(SessionConfig {
            queue: Duration::from_secs(30),
            ..SessionConfig::default()
        })
        .await
        .unwrap();
    let mut events = s.events();
    let avatar = engine
        .attach_avatar(&s, link_config(&server, &good_token()))
        .await
        .unwrap();
    let log = || sinks.lock().unwrap()[0].log();
    let (long, long_samples) = speech(RATE * 5, 0.0);
    for round in 0..10 {
        let before = log().voice.len();
        s.mark_synthesis_start().unwrap();
        let _ = s.push(long.clone());
        wait_until("the avatar speaking", || {
            first_voice(&log(), before).is_some()
        })
        .await;
        let start = first_voice(&log(), before).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.interrupt().unwrap();
        // The offline clock moves only when rendered: a second of it plays
        // the session's own tail and drops the rest, so the queue has room
        // for the next round (the sinks are fed as it takes speech in).
        engine.render(RATE as u64).await.unwrap();
        let ack = next_avatar_event(&mut events, Duration::from_secs(5)).await;
        let SessionEventKind::AvatarSegmentEnded {
            interrupted,
            playback_position,
            ..
        } = ack
        else {
            panic!("round {round}: {ack:?}");
        };
        assert!(interrupted, "round {round}");
        assert!(playback_position > 0.0 && playback_position < 5.0);
        // Audio sent straight after the interrupt falls in the cooldown.
        if round == 0 {
            let _ = s.push(long[..4_800].to_vec());
            wait_until("cooldown drops", || server.stats().cooldown_dropped > 0).await;
        }
        // The avatar fades what it held as the session fades its own queue
        // (SPEC O5, C7): the speech it was playing goes on under the
        // 10^(-3t) curve for the 0.4 s fade, then silence. The position
        // acknowledged is where the tail ends.
        let fade = RATE * 2 / 5;
        wait_until("the tail played", || {
            let l = log();
            l.voice.len() >= *l.resets.last().unwrap() + fade + RATE / 50
        })
        .await;
        let l = log();
        let at = *l.resets.last().unwrap();
        let played = at - start;
        for k in 0..fade {
            let want =
                f32::from(long_samples[played + k]) * sotto_rt::fade_gain(k as u64, fade as u64);
            let got = f32::from(l.voice[at + k]);
            assert!(
                (got - want).abs() <= 1.0,
                "round {round}: tail sample {k}: {got} vs {want}"
            );
        }
        assert_eq!(
            (playback_position * RATE as f64).round() as usize,
            played + fade,
            "round {round}: acknowledged at the end of the tail"
        );
        assert!(
            l.voice[at + fade..].iter().all(|&v| v == 0),
            "round {round}: voice after the tail"
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    assert_eq!(server.stats().resets, 10);
    // The link still works: a whole segment plays and is acknowledged.
    let (short, samples) = speech(RATE / 2, 40.0);
    let before = log().voice.len();
    s.mark_synthesis_start().unwrap();
    let _ = s.push(short);
    s.mark_synthesis_complete().unwrap();
    let ack = next_avatar_event(&mut events, Duration::from_secs(10)).await;
    assert!(
        matches!(
            ack,
            SessionEventKind::AvatarSegmentEnded {
                interrupted: false,
                ..
            }
        ),
        "{ack:?}"
    );
    let l = log();
    let start = first_voice(&l, before).unwrap();
    assert!(l.voice[start..start + samples.len()] == samples[..]);
    assert!(avatar.is_connected());
    avatar.detach();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_any_peer_connection() {
    let _alone = sotto_testkit::alone().await;
    let (server, _) = server().await;
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let s = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let good = token::verify(&good_token(), SECRET).unwrap();
    let sign = |c: &Claims, secret: &str| token::sign(c, secret).unwrap();
    let expired = Claims {
        exp: good.iat - 5,
        iat: good.iat - 100,
        ..good.clone()
    };
    let no_join = Claims {
        permissions: vec!["allow_mod".into()],
        ..good.clone()
    };
    let v1 = Claims {
        version: 1,
        ..good.clone()
    };
    for (what, bad) in [
        ("wrong secret", sign(&good, "other-secret")),
        ("expired", sign(&expired, SECRET)),
        ("missing permission", sign(&no_join, SECRET)),
        ("old version", sign(&v1, SECRET)),
        ("garbage", "not.a.token".to_owned()),
    ] {
        let got = engine
            .attach_avatar(&s, link_config(&server, &bad))
            .await
            .unwrap_err();
        assert!(
            matches!(got, EngineError::AvatarRefused { status: 401, .. }),
            "{what}: {got:?}"
        );
    }
    assert_eq!(server.stats().refused, 5);
    assert_eq!(server.stats().peers, 0);
    // No dispatcher, no room: refused before anything is sent.
    let mut c = link_config(&server, &good_token());
    c.room_name.clear();
    assert!(matches!(
        engine.attach_avatar(&s, c).await.unwrap_err(),
        EngineError::AvatarConfig(m) if m == "no room name"
    ));
    engine.shutdown().await;
}

/// A hand-made agent that sends what no agent should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_counted_and_a_vanished_client_leaves_the_server_serving() {
    let _alone = sotto_testkit::alone().await;
    use bytes::BytesMut;
    use sotto_net::avatar::{JoinRequest, JoinResponse, AUDIO_LABEL, CONTROL_LABEL};
    use sotto_net::peer::{complete_local, connected, loopback_peer};
    use webrtc::data_channel::{DataChannelEvent, RTCDataChannelInit};
    use webrtc::peer_connection::RTCSessionDescription;

    let (server, _) = server().await;
    let stats = || server.stats();
    let (pc, mut events) = loopback_peer().await.unwrap();
    let audio = pc
        .create_data_channel(
            AUDIO_LABEL,
            Some(RTCDataChannelInit {
                ordered: false,
                max_retransmits: Some(0),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let control = pc.create_data_channel(CONTROL_LABEL, None).await.unwrap();
    let mut opened = Vec::new();
    for ch in [audio.clone(), control.clone()] {
        let (tx, rx) = tokio::sync::oneshot::channel();
        opened.push(rx);
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Some(e) = ch.poll().await {
                if matches!(e, DataChannelEvent::OnOpen) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
    }
    let offer = pc.create_offer(None).await.unwrap();
    let offer = complete_local(&pc, &mut events, offer).await.unwrap();
    let req = JoinRequest {
        room_name: "room".into(),
        token: good_token(),
        participant_id: "avatar_test".into(),
        signaling_base_url: None,
        offer,
        sample_rate: 24_000,
        channels: 1,
    };
    let http = reqwest::Client::new();
    // Not JSON at all: refused by the dispatcher, nothing made.
    let r = http
        .post(server.join_url())
        .body("{nonsense")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let answer: JoinResponse = http
        .post(server.join_url())
        .json(&req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    pc.set_remote_description(RTCSessionDescription::answer(answer.answer).unwrap())
        .await
        .unwrap();
    connected(&mut events, Duration::from_secs(10))
        .await
        .unwrap();
    for rx in opened {
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .unwrap()
            .unwrap();
    }
    // Oversized PCM, text on the PCM channel, binary and unknown JSON on
    // the control channel.
    audio
        .send(BytesMut::from(&[1u8; 15_002][..]))
        .await
        .unwrap();
    audio.send_text("hello").await.unwrap();
    control.send(BytesMut::from(&[0u8; 8][..])).await.unwrap();
    control.send_text(r#"{"type":"dance"}"#).await.unwrap();
    control.send_text("{not json").await.unwrap();
    wait_until("malformed counted", || stats().malformed == 5).await;
    // Mid-segment, the client vanishes.
    audio.send(BytesMut::from(&[3u8; 4_800][..])).await.unwrap();
    pc.close().await.unwrap();
    wait_until("the connection's end", || stats().ended == 1).await;

    // The server still serves.
    let (engine, _s, avatar) = attached(&server).await;
    assert!(avatar.is_connected());
    avatar.detach();
    engine.shutdown().await;
}

/// A/V lock (SPEC A7): over 60 s of speech played through the avatar's
/// playout with the built-in face at 640×480, 25 fps, every video frame is
/// shown within one frame of the voice it belongs to, on a 90 kHz clock.
#[test]
fn video_stays_within_a_frame_of_the_voice_over_a_minute() {
    let sink = MemorySink::new(1);
    let mut playout = Playout::new(
        PlayoutConfig::default(),
        Box::new(FaceRenderer::default()),
        Box::new(sink.clone()),
    );
    let now = Instant::now();
    let (bytes, _) = speech(RATE * 60, 0.0);
    for chunk in bytes.chunks(14_400) {
        playout.on_pcm(chunk, now);
    }
    playout.on_text(r#"{"type":"segment_end","id":7}"#, now);
    let mut acks = Vec::new();
    for _ in 0..3_000 {
        playout.tick(&mut acks);
    }
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].segment_id, Some(7));
    assert!((acks[0].playback_position - 60.0).abs() < 1e-9);
    let log = sink.log();
    assert_eq!(log.voice.len(), RATE * 60);
    assert_eq!(log.video.len(), 1_501);
    let frame = 1.0 / 25.0;
    for (k, &(pts, voice)) in log.video.iter().enumerate() {
        assert_eq!(pts, k as u64 * PTS_RATE / 25);
        let drift = pts as f64 / PTS_RATE as f64 - voice as f64 / RATE as f64;
        assert!(drift.abs() <= frame, "frame {k}: {drift:+.4} s");
    }
}

/// A lost `segment_end` times out with an event and is recovered by the
/// resend; a dropped connection is an event, the sink is detached, and
/// the session's own output plays again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_segment_end_is_recovered_and_a_dropped_link_falls_back_to_the_output() {
    let _alone = sotto_testkit::alone().await;
    let (server, _) = server().await;
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let s = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    let mut events = s.events();
    let mut config = link_config(&server, &good_token());
    config.ack_timeout = Duration::from_millis(500);
    let avatar = engine.attach_avatar(&s, config).await.unwrap();
    server.inject_lost_segment_ends(1);
    let (bytes, _) = speech(RATE / 5, 0.0);
    s.mark_synthesis_start().unwrap();
    let _ = s.push(bytes.clone());
    s.mark_synthesis_complete().unwrap();
    let first = next_avatar_event(&mut events, Duration::from_secs(5)).await;
    assert_eq!(first, SessionEventKind::AvatarAckTimeout { segment: 1 });
    let second = next_avatar_event(&mut events, Duration::from_secs(5)).await;
    let SessionEventKind::AvatarSegmentEnded {
        segment,
        playback_position,
        interrupted,
    } = second
    else {
        panic!("{second:?}");
    };
    assert_eq!((segment, interrupted), (1, false));
    assert!(
        (playback_position - 0.2).abs() <= 0.02,
        "{playback_position}"
    );
    assert_eq!(avatar.stats().ack_timeouts, 1);

    // The avatar vanishes.
    server.disconnect_all().await;
    let gone = next_avatar_event(&mut events, Duration::from_secs(20)).await;
    assert!(
        matches!(gone, SessionEventKind::AvatarDisconnected { .. }),
        "{gone:?}"
    );
    wait_until("the link down", || !avatar.is_connected()).await;
    engine.settle().await.unwrap();
    let _ = s.push(bytes);
    engine.settle().await.unwrap();
    let out = engine.render(RATE as u64).await.unwrap();
    assert!(
        out.iter().any(|&v| v != 0.0),
        "the session's own output did not come back"
    );
    engine.shutdown().await;
}

/// Mono asked for as stereo (SPEC A5): each sample on both channels, the
/// position still counted in the agent's frames; an odd chunk's last byte
/// waits for the next chunk.
#[test]
fn mono_plays_as_stereo_when_asked_and_odd_chunks_join() {
    let sink = MemorySink::new(2);
    let mut playout = Playout::new(
        PlayoutConfig {
            stereo: true,
            ..PlayoutConfig::default()
        },
        Box::new(FaceRenderer::new(32, 32)),
        Box::new(sink.clone()),
    );
    let now = Instant::now();
    let (bytes, samples) = speech(480, 0.0);
    playout.on_pcm(&bytes[..301], now);
    playout.on_pcm(&bytes[301..], now);
    playout.on_text(r#"{"type":"segment_end","id":1,"samples":480}"#, now);
    let mut acks = Vec::new();
    playout.tick(&mut acks);
    assert_eq!(acks.len(), 1);
    assert!((acks[0].playback_position - 0.02).abs() < 1e-9);
    let log = sink.log();
    let doubled: Vec<i16> = samples.iter().flat_map(|&v| [v, v]).collect();
    assert_eq!(log.voice, doubled);
}

/// SPEC S5: interrupts spun on with nothing sent between reach the avatar
/// as one, and segment ends past the link's control backlog are dropped
/// and counted, never queued without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_spun_on_stays_bounded_on_the_link() {
    let _alone = sotto_testkit::alone().await;
    let (server, _sinks) = server().await;
    let (engine, s, avatar) = attached(&server).await;
    let (bytes, _) = speech(RATE / 2, 0.0);
    let _ = s.push(bytes);
    let mut interrupts = 0;
    for _ in 0..2_000 {
        if s.interrupt().is_ok() {
            interrupts += 1;
        }
    }
    assert!(interrupts > 0);
    wait_until("the interrupt at the avatar", || server.stats().resets >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.stats().resets,
        1,
        "{interrupts} interrupts in a row are one"
    );
    let mut completes = 0;
    for _ in 0..2_000 {
        if s.mark_synthesis_complete().is_ok() {
            completes += 1;
        }
    }
    engine.settle().await.unwrap();
    let stats = || avatar.stats();
    wait_until("every segment end sent or dropped", || {
        stats().segments + stats().control_dropped == completes
    })
    .await;
    assert!(stats().control_backlog <= sotto_actors::avatar_link::LINK_CONTROL_BACKLOG);
    assert!(avatar.is_connected());
    avatar.detach();
    engine.shutdown().await;
}

/// A segment's acknowledgement is awaited from when its end is due to
/// play, not from when it was sent: three seconds handed to the avatar at
/// once, with a one-second acknowledgement timeout, end acknowledged whole
/// and on time, never timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_segment_end_waits_for_its_audio_to_play() {
    let _alone = sotto_testkit::alone().await;
    let (server, _sinks) = server().await;
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let s = engine
        .create_session(SessionConfig {
            queue: Duration::from_secs(3),
            ..SessionConfig::default()
        })
        .await
        .unwrap();
    let config = LinkConfig {
        ack_timeout: Duration::from_secs(1),
        ..link_config(&server, &good_token())
    };
    let avatar = engine.attach_avatar(&s, config).await.unwrap();
    let mut events = s.events();
    let (bytes, _) = speech(3 * RATE, 3.0);
    s.mark_synthesis_start().unwrap();
    let _ = s.push(bytes);
    s.mark_synthesis_complete().unwrap();
    let sent = Instant::now();
    let ack = next_avatar_event(&mut events, Duration::from_secs(10)).await;
    let SessionEventKind::AvatarSegmentEnded {
        playback_position,
        interrupted: false,
        ..
    } = ack
    else {
        panic!("{ack:?} after {:?}", sent.elapsed());
    };
    assert!(
        (playback_position - 3.0).abs() <= 0.020,
        "position {playback_position}"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(2_500),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(avatar.stats().ack_timeouts, 0);
    avatar.detach();
    engine.shutdown().await;
}
