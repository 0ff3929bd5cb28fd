//! SPEC W1, W2, W6: a call between a session and a WebRTC peer on
//! loopback. The far end here is a webrtc-rs peer that offers, plays what
//! it hears through a real Opus decoder and sends a tone as its
//! microphone through a real Opus encoder.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::time::Duration;

use sotto::{CallConfig, CallEvent, OutputConfig, SessionConfig, SessionOutput};
use sotto_integration::{call_engine, far_end, frequency, rms, tone_s16};
use sotto_media::opus::OpusEncoder;
use sotto_media::receive::OpusReceiver;
use sotto_net::connected;
use sotto_rt::FrameLength;
use webrtc::peer_connection::RTCSessionDescription;

const RATE: u32 = 48_000;

/// The best normalised cross-correlation of `got` against `want` over
/// lags up to `max_lag` samples, and that lag.
fn best_correlation(want: &[f32], got: &[f32], max_lag: usize) -> (f64, usize) {
    let mut best = (0.0, 0);
    for lag in 0..max_lag.min(got.len()) {
        let n = want.len().min(got.len() - lag);
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for i in 0..n {
            let (x, y) = (f64::from(want[i]), f64::from(got[i + lag]));
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        let c = xy / (xx.sqrt() * yy.sqrt()).max(1e-12);
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

fn session_config() -> SessionConfig {
    let mut c = SessionConfig {
        name: "caller".into(),
        output: SessionOutput::Own(OutputConfig::default()),
        ..SessionConfig::default()
    };
    c.input.sample_rate = RATE;
    c
}

/// The agent's voice reaches the far end as Opus, the same audio at the
/// same level; the far end's microphone comes back into the call as 10 ms
/// chunks at the engine's rate; silence skips the encoder; hanging up
/// frees the session's output for the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carries_voice_both_ways() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let session = engine.create_session(session_config()).await.unwrap();

    // The far end offers, with its microphone track.
    let (far, mut far_events, offer, mut mic_sender) = far_end().await;

    let (answer, mut call) = engine
        .accept_call(&session, &offer, CallConfig::default())
        .await
        .unwrap();
    far.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    connected(&mut far_events, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(call.next_event().await, Some(CallEvent::Connected));
    let track = tokio::time::timeout(Duration::from_secs(5), far_events.tracks.recv())
        .await
        .unwrap()
        .unwrap();
    let mut heard = OpusReceiver::new(track, 1).unwrap();

    // A second of speech-level tone, then silence.
    let tone = tone_s16(RATE as usize, 440.0, RATE, 8_000.0);
    let want: Vec<f32> = tone
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    session.mark_synthesis_start().unwrap();
    session.push(tone).await.unwrap();

    // The far end's microphone: a 300 Hz tone, 20 ms packets.
    let mic = tokio::spawn(async move {
        let mut enc = OpusEncoder::new(1, FrameLength::Ms20, 32_000, 0).unwrap();
        let tone: Vec<f32> = (0..RATE as usize * 2)
            .map(|i| {
                (std::f64::consts::TAU * 300.0 * i as f64 / f64::from(RATE)).sin() as f32 * 0.3
            })
            .collect();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for (k, packet) in tone.chunks(960).enumerate() {
            tick.tick().await;
            let bytes = enc.encode(packet).unwrap().to_vec();
            mic_sender
                .send(&bytes, k as u64 * 960, k == 0)
                .await
                .unwrap();
        }
    });

    // What the far end heard, from its first sound for the tone's length.
    let mut got = Vec::new();
    let collect = async {
        while got.len() < RATE as usize * 3 / 2 {
            let Some(audio) = heard.next().await else {
                break;
            };
            got.extend_from_slice(audio);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .unwrap();
    let start = got.iter().position(|s| s.abs() > 0.01).unwrap();
    let (c, _) = best_correlation(&want[2_400..45_600], &got[start..], 4_800);
    assert!(c >= 0.9, "correlation {c}");
    let level =
        20.0 * (rms(&got[start + 2_400..start + 45_600]) / rms(&want[2_400..45_600])).log10();
    assert!(level.abs() <= 1.0, "level {level:.2} dB");

    // The microphone came back at the engine's rate.
    let mut back = Vec::new();
    while back.len() < RATE as usize {
        let chunk = tokio::time::timeout(Duration::from_secs(5), call.next_mic_chunk())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(chunk.len(), RATE as usize / 100);
        back.extend(chunk);
    }
    mic.await.unwrap();
    let f = frequency(&back[RATE as usize / 2..], RATE);
    assert!((f - 300.0).abs() < 5.0, "mic at {f} Hz");
    assert!((rms(&back[RATE as usize / 2..]) - 0.3 / 2f32.sqrt()).abs() < 0.05);

    // After the tone, the call's frames are silence: no encoder time, and
    // past its first 200 ms one packet in 400 ms goes out (DTX).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = call.stats();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = call.stats();
    assert!(stats.packets_sent > 60, "{stats:?}");
    assert!(
        stats.silent_packets - before.silent_packets >= 90,
        "{stats:?}"
    );
    let sent = stats.packets_sent - before.packets_sent;
    assert!((4..=7).contains(&sent), "{sent} packets in 2 s of silence");
    assert!(stats.mic_chunks >= 100, "{stats:?}");

    // Hung up, the output is the session's again.
    call.hang_up().await;
    assert!(session.frames().is_ok());
    far.close().await.unwrap();
    engine.shutdown().await;
}

/// A far end that vanishes ends the call with an event within seconds; the
/// session goes on rendering and its output can take a new call (W6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_far_end_ends_only_the_call() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let session = engine.create_session(session_config()).await.unwrap();
    let (far, mut far_events, offer, _mic) = far_end().await;
    let (answer, mut call) = engine
        .accept_call(&session, &offer, CallConfig::default())
        .await
        .unwrap();
    // A second call on the same output is refused while this one has it.
    assert!(engine
        .accept_call(&session, &offer, CallConfig::default())
        .await
        .is_err());
    far.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    connected(&mut far_events, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(call.next_event().await, Some(CallEvent::Connected));
    let gone = std::time::Instant::now();
    far.close().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), call.next_event())
        .await
        .expect("the call ends within 5 s");
    assert!(matches!(ended, Some(CallEvent::Ended { .. })), "{ended:?}");
    assert!(gone.elapsed() < Duration::from_secs(5));
    let before = engine.clock().0;
    sotto_integration::wait_until("the session to render on", || engine.clock().0 > before).await;
    sotto_integration::wait_until("the output to be free again", || session.frames().is_ok()).await;
    engine.shutdown().await;
}

/// Bad offers are refused with a typed error and no call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_are_refused() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let session = engine.create_session(session_config()).await.unwrap();
    for offer in [
        String::new(),
        "garbage".to_owned(),
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n".to_owned(),
        "a=rtpmap:111 opus/48000/2\r\n".to_owned(),
        "a=rtpmap:111 opus/48000/2\r\n".repeat(2_000),
    ] {
        let e = engine
            .accept_call(&session, &offer, CallConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(e, sotto::SessionError::BadOffer(_)), "{e}");
    }
    // The output was given back each time.
    assert!(session.frames().is_ok());
    engine.shutdown().await;
}
