//! SPEC W5, A6, A7 in part: the avatar's face as VP8 over RTP between two
//! webrtc-rs peers on loopback. The built-in face talks (its mouth opening
//! with a speech-like level), is encoded by libvpx, sent with 90 kHz
//! timestamps from the frames' pts, reassembled and decoded on the far
//! side: every frame arrives, at the size sent, its timestamp where its pts
//! put it, and the mouth measured in the decoded pictures follows the
//! level.
#![allow(clippy::unwrap_used)]
// test code: a failed unwrap is a failed test

use std::time::Duration;

use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, VideoFrame};
use sotto_media::vp8::{Vp8Config, Vp8Decoder, Vp8Encoder};
use sotto_net::video::{vp8_track, Vp8Receiver};
use sotto_net::{av_peer, complete_local, connected, peer::LOOPBACK};
use webrtc::peer_connection::RTCSessionDescription;

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt().max(1e-12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_face_goes_out_as_vp8_and_its_mouth_follows_the_voice() {
    let (width, height, fps, frames) = (320u32, 240u32, 25u64, 75u64);
    let (publisher, mut pub_events) = av_peer(LOOPBACK).await.unwrap();
    let (track, mut sender) = vp8_track(None);
    publisher.add_track(track).await.unwrap();
    let offer = publisher.create_offer(None).await.unwrap();
    let offer = complete_local(&publisher, &mut pub_events, offer)
        .await
        .unwrap();

    let (viewer, mut view_events) = av_peer(LOOPBACK).await.unwrap();
    viewer
        .set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let answer = viewer.create_answer(None).await.unwrap();
    let answer = complete_local(&viewer, &mut view_events, answer)
        .await
        .unwrap();
    publisher
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    connected(&mut pub_events, Duration::from_secs(10))
        .await
        .unwrap();
    // The viewer's track appears with its first packet: awaited once the
    // sender runs.
    let remote = tokio::time::timeout(Duration::from_secs(5), view_events.tracks.recv());

    // The face talks: a level rising and falling like syllables.
    let levels: Vec<i16> = (0..frames)
        .map(|k| ((k as f64 * 0.45).sin().abs() * 14_000.0) as i16)
        .collect();
    let send = tokio::spawn(async move {
        let mut face = FaceRenderer::new(width, height);
        let mut enc = Vp8Encoder::new(Vp8Config {
            width,
            height,
            fps: fps as u32,
            bitrate_kbps: 400,
            ..Vp8Config::default()
        })
        .unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(1_000 / fps));
        let mut mouths = Vec::new();
        for (k, &level) in levels.iter().enumerate() {
            tick.tick().await;
            // 40 ms of voice at 48 kHz, then the picture at its pts.
            face.push_audio(&vec![level; 1_920], 1);
            mouths.push(f64::from(face.mouth()));
            let mut picture = VideoFrame {
                width,
                height,
                y: Vec::new(),
                u: Vec::new(),
                v: Vec::new(),
            };
            let pts = k as u64 * 90_000 / fps;
            face.render(pts, &mut picture);
            let out = enc
                .encode(&picture.y, &picture.u, &picture.v, pts, k == 0)
                .unwrap()
                .to_vec();
            for f in &out {
                sender.send(f, pts).await.unwrap();
            }
        }
        mouths
    });
    let mut receiver = Vp8Receiver::new(remote.await.unwrap().unwrap());
    let mut decoder = Vp8Decoder::new().unwrap();
    let mut got = Vec::new();
    let collect = async {
        while got.len() < frames as usize {
            let Some((data, ts)) = receiver.next().await else {
                break;
            };
            let picture = decoder.decode(&data).unwrap().unwrap();
            got.push((ts, picture));
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), collect).await;
    let mouths = send.await.unwrap();
    // The first frame may go before the viewer's track is read.
    assert!(
        got.len() + 1 >= frames as usize,
        "{} of {frames} frames",
        got.len()
    );
    assert_eq!(receiver.incomplete, 0);
    let first = frames as usize - got.len();
    for (k, (ts, picture)) in got.iter().enumerate() {
        assert_eq!((picture.width, picture.height), (width, height));
        let step = ts.wrapping_sub(got[0].0);
        assert_eq!(step, (k as u32) * 3_600, "frame {k}'s timestamp");
    }
    // The mouth: how much of the region under the face's centre is dark.
    let mouth_area: Vec<f64> = got
        .iter()
        .map(|(_, p)| {
            let (w, h) = (p.width as usize, p.height as usize);
            let rows = h * 60 / 100..h * 80 / 100;
            let cols = w * 35 / 100..w * 65 / 100;
            let dark = rows
                .flat_map(|r| cols.clone().map(move |c| (r, c)))
                .filter(|&(r, c)| p.y[r * w + c] < 60)
                .count();
            dark as f64
        })
        .collect();
    let c = pearson(&mouth_area, &mouths[first..]);
    println!(
        "video: {} frames, mouth against level: correlation {c:.3}",
        got.len()
    );
    assert!(c >= 0.7, "the mouth follows the voice: {c:.3}");
    publisher.close().await.unwrap();
    viewer.close().await.unwrap();
}
