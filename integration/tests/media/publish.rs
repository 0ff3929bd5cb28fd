//! SPEC W5, A7, S5 in part: the avatar's publisher with a webrtc-rs viewer
//! on loopback. Nothing is encoded while nobody watches; a viewer gets
//! the voice (Opus) and the face (VP8), both stamped from the voice's
//! sample clock; the voice it hears is the voice played; when it leaves
//! the encoding stops.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, AvatarSink, VideoFrame};
use sotto_avatar::publish::{PublishConfig, Publisher};
use sotto_integration::compare::align;
use sotto_media::receive::OpusReceiver;
use sotto_media::vp8::{Vp8Config, Vp8Decoder};
use sotto_net::call::opus_track;
use sotto_net::video::{vp8_track, Vp8Receiver};
use sotto_net::RtpCodecKind;
use sotto_net::{av_peer, complete_local, connected, peer::LOOPBACK};
use webrtc::peer_connection::RTCSessionDescription;

const RATE: u32 = 16_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_watches_the_avatar_and_nothing_is_encoded_for_nobody() {
    let _alone = sotto_testkit::alone().await;
    let say = sotto_testkit::hello();
    assert_eq!(say.input.sample_rate, RATE);
    let voice: Vec<i16> = say
        .bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let (w, h) = (320, 240);
    let (publisher, mut sink) = Publisher::new(PublishConfig {
        video: Vp8Config {
            width: w,
            height: h,
            fps: 25,
            bitrate_kbps: 300,
            ..Vp8Config::default()
        },
        voice_rate: RATE,
        voice_channels: 1,
        ..PublishConfig::default()
    })
    .unwrap();

    // The playout, as the avatar's plays: 20 ms of voice a tick, a
    // picture every other tick at the voice's pts on the 90 kHz clock.
    let played = Arc::new(std::sync::Mutex::new(Vec::<(u64, i16)>::new()));
    let log = Arc::clone(&played);
    let playout = tokio::spawn(async move {
        let mut face = FaceRenderer::new(w, h);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let step = RATE as usize / 50;
        for (k, piece) in voice.chunks_exact(step).cycle().take(500).enumerate() {
            tick.tick().await;
            let at = (k * step) as u64;
            face.push_audio(piece, 1);
            sink.voice(piece);
            if let Ok(mut l) = log.lock() {
                l.extend(piece.iter().enumerate().map(|(i, &s)| (at + i as u64, s)));
            }
            if k % 2 == 0 {
                let mut picture = VideoFrame {
                    width: w,
                    height: h,
                    y: vec![],
                    u: vec![],
                    v: vec![],
                };
                let pts = at * 90_000 / u64::from(RATE);
                face.render(pts, &mut picture);
                sink.video(&picture, pts);
            }
        }
        sink.finish();
    });

    // Nobody watches for half a second: nothing is encoded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = publisher.stats();
    assert_eq!(
        (idle.frames_encoded, idle.voice_packets),
        (0, 0),
        "{idle:?}"
    );

    // A viewer offers (with tracks of its own, as a browser's sendrecv
    // offer has) and watches.
    let (viewer, mut events) = av_peer(LOOPBACK).await.unwrap();
    let (mic, _mic_sender) = opus_track();
    let (cam, _cam_sender) = vp8_track(None);
    viewer.add_track(mic).await.unwrap();
    viewer.add_track(cam).await.unwrap();
    let offer = viewer.create_offer(None).await.unwrap();
    let offer = complete_local(&viewer, &mut events, offer).await.unwrap();
    let taken = publisher.add_viewer(&offer).await.unwrap();
    assert_eq!(
        publisher.origins(taken.id),
        Some((taken.voice_origin, taken.face_origin))
    );
    viewer
        .set_remote_description(RTCSessionDescription::answer(taken.answer).unwrap())
        .await
        .unwrap();
    connected(&mut events, Duration::from_secs(10))
        .await
        .unwrap();
    let (mut audio, mut video) = (None, None);
    for _ in 0..2 {
        let t = tokio::time::timeout(Duration::from_secs(5), events.tracks.recv())
            .await
            .unwrap()
            .unwrap();
        match t.kind().await {
            RtpCodecKind::Audio => audio = Some(t),
            _ => video = Some(t),
        }
    }
    let mut heard = OpusReceiver::new(audio.unwrap(), 1).unwrap();
    let mut seen = Vp8Receiver::new(video.unwrap());
    let mut decoder = Vp8Decoder::new().unwrap();
    let (mut pcm, mut pictures) = (Vec::new(), Vec::new());
    let watch = async {
        loop {
            tokio::select! {
                a = heard.next() => match a {
                    Some(s) => pcm.extend_from_slice(s),
                    None => break,
                },
                v = seen.next() => match v {
                    Some((data, ts)) => {
                        if let Ok(Some(p)) = decoder.decode(&data) {
                            pictures.push((ts, p));
                        }
                    }
                    None => break,
                },
            }
            if pcm.len() >= 48_000 * 4 && pictures.len() >= 100 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), watch).await;
    let watching = publisher.stats();
    println!(
        "watching: {watching:?}; heard {} samples, saw {} pictures",
        pcm.len(),
        pictures.len()
    );
    assert_eq!(watching.viewers, 1);
    // 4 s at 25 fps, all of them.
    assert!(pictures.len() >= 95, "{} pictures", pictures.len());
    assert!(pictures.iter().all(|(_, p)| (p.width, p.height) == (w, h)));
    for pair in pictures.windows(2) {
        assert_eq!(
            pair[1].0.wrapping_sub(pair[0].0),
            3_600,
            "one frame per 40 ms of voice"
        );
    }
    // The voice heard is the voice played (both at 48 kHz to compare).
    let said: Vec<f32> = {
        let l = played.lock().unwrap();
        let bytes: Vec<u8> = l.iter().flat_map(|&(_, s)| s.to_le_bytes()).collect();
        let mut up = sotto_actors::ingest::Ingest::new(say.input, 48_000, 1).unwrap();
        let mut out = Vec::new();
        up.push(&bytes, &mut out);
        out
    };
    let found = align(&said, 48_000 * 2, &pcm, 48_000);
    println!(
        "voice: correlation {:.3}, level {:+.2} dB",
        found.correlation, found.level_db
    );
    assert!(found.correlation >= 0.9, "{:.3}", found.correlation);

    // A viewer that lost a picture asks for a key frame and gets one
    // (RFC 4585 picture loss indication; VP8's key frames have bit 0 of
    // their first byte clear).
    let keys = |frames: &[Vec<u8>]| {
        frames
            .iter()
            .filter(|f| f.first().is_some_and(|b| b & 1 == 0))
            .count()
    };
    let mut after_pli = Vec::new();
    for _ in 0..3 {
        seen.ask_key_frame().await.unwrap();
        let more = async {
            while after_pli.len() < 10 {
                match seen.next().await {
                    Some((data, _)) => after_pli.push(data),
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), more).await;
        if keys(&after_pli) > 0 {
            break;
        }
    }
    let asked = publisher.stats().key_frames_asked;
    println!(
        "key frames asked: {asked}; key frames among the next {}: {}",
        after_pli.len(),
        keys(&after_pli)
    );
    assert!(asked >= 1);
    assert!(keys(&after_pli) >= 1, "a key frame after the request");

    // The viewer leaves: encoding stops.
    viewer.close().await.unwrap();
    sotto_integration::wait_until("the viewer to be gone", || publisher.stats().viewers == 0).await;
    // A picture already in the encoder when the viewer went still counts:
    // let it finish (a few picture intervals), then watch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = publisher.stats();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = publisher.stats();
    assert_eq!(after.viewers, 0, "{after:?}");
    assert_eq!(
        after.frames_encoded, left.frames_encoded,
        "no encoding for nobody"
    );
    playout.abort();
}
