//! SPEC W2: echo cancellation per call. The far end is a webrtc-rs peer
//! with no echo canceller of its own: it plays what it hears into its
//! microphone 60 ms later at −10 dB (a room), and its own talker speaks
//! over it for two seconds. The call's audio processing module, whose
//! reverse stream is the call's own output as it was sent, must take the
//! echo out (ERLE at least 25 dB) and keep the talker.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::time::Duration;

use sotto::{CallConfig, CallEvent, EchoConfig, OutputConfig, SessionConfig, SessionOutput};
use sotto_integration::{call_engine, far_end};
use sotto_media::opus::OpusEncoder;
use sotto_media::receive::OpusReceiver;
use sotto_net::connected;
use sotto_rt::FrameLength;
use sotto_server::calls::Utterance;
use webrtc::peer_connection::RTCSessionDescription;

const RATE: usize = 48_000;
const PACKET: usize = 960;

fn power_db(s: &[f32]) -> f64 {
    let p = s.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / s.len().max(1) as f64;
    10.0 * p.max(1e-20).log10()
}

/// The shipped speech at 48 kHz as f32 and as the session's s16 input.
fn speech() -> (Vec<f32>, Utterance) {
    let say = Utterance::clone(&sotto_testkit::hello());
    (sotto_testkit::utterance_at(&say, 48_000), say)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_its_own_echo_canceller_is_cleaned_per_call() {
    let _alone = sotto_testkit::alone().await;
    let engine = call_engine().await;
    let (voice, say) = speech();
    let mut config = SessionConfig {
        name: "echoing caller".into(),
        output: SessionOutput::Own(OutputConfig::default()),
        ..SessionConfig::default()
    };
    config.input = say.input;
    let session = engine.create_session(config).await.unwrap();
    let (far, mut far_events, offer, mut mic_sender) = far_end().await;
    let processing = EchoConfig {
        echo_cancellation: true,
        noise_suppression: false,
        high_pass: false,
        gain_control: false,
        delay_ms: 0,
    };
    let (answer, mut call) = engine
        .accept_call(
            &session,
            &offer,
            CallConfig {
                processing: Some(processing),
                ..CallConfig::default()
            },
        )
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

    // The agent talks for 19 s (its speech twice).
    session.mark_synthesis_start().unwrap();
    for _ in 0..2 {
        for piece in say.bytes.chunks(3_200) {
            drop(session.push(piece.to_vec()));
        }
    }

    // The far end: every packet it hears goes into a 60 ms delay line at
    // -10 dB, and out again as its microphone with its talker (the speech
    // backwards: speech-like, unlike the agent's) from 3 s to 5 s.
    let seconds = 14;
    let near: Vec<f32> = voice[RATE..RATE * 3]
        .iter()
        .rev()
        .map(|v| v * 0.7)
        .collect();
    let room = tokio::spawn(async move {
        let mut heard = OpusReceiver::new(track, 1).unwrap();
        let mut enc = OpusEncoder::new(1, FrameLength::Ms20, 64_000, 10).unwrap();
        let mut line = vec![0.0f32; RATE * 60 / 1000];
        let (mut echo_sent, mut near_sent) = (Vec::new(), Vec::new());
        let mut k = 0usize;
        while k < seconds * RATE / PACKET {
            let Some(audio) = heard.next().await else {
                break;
            };
            line.extend(audio.iter().map(|v| v * 0.316));
            while line.len() >= RATE * 60 / 1000 + PACKET {
                let echo: Vec<f32> = line.drain(..PACKET).collect();
                let at = k * PACKET;
                let talk: Vec<f32> = (at..at + PACKET)
                    .map(|i| {
                        i.checked_sub(3 * RATE)
                            .and_then(|j| near.get(j))
                            .copied()
                            .unwrap_or(0.0)
                    })
                    .collect();
                let mic: Vec<f32> = echo.iter().zip(&talk).map(|(e, t)| e + t).collect();
                let bytes = enc.encode(&mic).unwrap().to_vec();
                mic_sender.send(&bytes, at as u64, k == 0).await.unwrap();
                echo_sent.extend_from_slice(&echo);
                near_sent.extend_from_slice(&talk);
                k += 1;
            }
        }
        (echo_sent, near_sent)
    });

    // The call's microphone, cleaned.
    let mut cleaned = Vec::new();
    let mut mic = call.take_mic().unwrap();
    let collect = async {
        while cleaned.len() < (seconds * RATE) - RATE / 2 {
            match mic.recv().await {
                Some(c) => cleaned.extend_from_slice(&c),
                None => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(seconds as u64 + 10), collect)
        .await
        .unwrap();
    let (echo_sent, near_sent) = room.await.unwrap();
    let n = cleaned.len().min(echo_sent.len());
    assert!(n >= 12 * RATE, "{n} samples");

    // Echo alone over the last 5 s; the talker over most of its 2 s.
    let last = n - 5 * RATE..n;
    let erle = power_db(&echo_sent[last.clone()]) - power_db(&cleaned[last]);
    let talk = 3 * RATE + RATE / 2..5 * RATE;
    let kept = power_db(&cleaned[talk.clone()]) - power_db(&near_sent[talk]);
    let stats = call.stats();
    println!(
        "per-call echo cancellation: ERLE {erle:.1} dB over the last 5 s; the far end's \
         talker in double talk {kept:+.1} dB; {} mic packets, {} lost, jitter {:.2} ms",
        stats.packets_received, stats.packets_lost, stats.jitter_ms
    );
    assert!(erle >= 25.0, "ERLE {erle:.1} dB");
    assert!(kept.abs() <= 6.0, "the talker changed by {kept:.1} dB");
    assert_eq!(stats.packets_lost, 0);
    call.hang_up().await;
    far.close().await.unwrap();
    engine.shutdown().await;
}
