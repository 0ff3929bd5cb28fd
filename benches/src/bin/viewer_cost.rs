//! What watching an avatar costs (SPEC W5): one avatar's publisher, its
//! face (the built-in renderer) and voice (the shipped speech) played at
//! 25 fps in real time, watched by N webrtc-rs viewers in another process
//! on loopback, for T seconds.
//!
//! `viewer-cost --viewers N --seconds T [--size WxH]` prints one line of
//! JSON: the cores the publishing process used in all, the encoder
//! thread's share (VP8 and Opus, once for every viewer), and the rest
//! (drawing the face, the fan-out, SRTP and sending for N viewers);
//! frames encoded and packets dropped. `--viewers 0` is the same avatar
//! with nobody watching. `viewer-cost receive --viewers N` is the
//! watching process it starts.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, AvatarSink, VideoFrame};
use sotto_avatar::publish::{PublishConfig, Publisher};
use sotto_media::vp8::Vp8Config;
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::RTCSessionDescription;

const RATE: u32 = 48_000;

struct Args {
    receive: bool,
    viewers: usize,
    seconds: u64,
    size: (u32, u32),
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        receive: false,
        viewers: 4,
        seconds: 20,
        size: (640, 480),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "receive" => a.receive = true,
            "--viewers" => {
                a.viewers = value("--viewers")?
                    .parse::<usize>()
                    .map_err(|e| e.to_string())?
                    .min(256);
            }
            "--seconds" => {
                a.seconds = value("--seconds")?
                    .parse::<u64>()
                    .map_err(|e| e.to_string())?
                    .clamp(1, 3_600);
            }
            "--size" => {
                let v = value("--size")?;
                a.size = v
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                    .filter(|&(w, h): &(u32, u32)| {
                        (16..=1920).contains(&w) && (16..=1080).contains(&h)
                    })
                    .ok_or(format!("--size WxH within 16x16..=1920x1080, not {v}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("viewer-cost: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if args.receive {
        runtime.block_on(receive(args.viewers));
    } else {
        runtime.block_on(publish(&args));
    }
    std::process::ExitCode::SUCCESS
}

/// The shipped speech at 48 kHz mono s16 samples.
fn speech() -> Vec<i16> {
    sotto_testkit::utterance_at(&sotto_testkit::hello(), RATE)
        .iter()
        .map(|&s| sotto_testkit::signal::quantize(s))
        .collect()
}

async fn publish(args: &Args) {
    let (w, h) = args.size;
    let (publisher, mut sink) = Publisher::new(PublishConfig {
        video: Vp8Config {
            width: w,
            height: h,
            fps: 25,
            ..Vp8Config::default()
        },
        voice_rate: RATE,
        voice_channels: 1,
        max_viewers: args.viewers.max(1),
        ..PublishConfig::default()
    })
    .expect("a publisher");
    // The avatar plays as its playout does: 20 ms of voice a tick, a
    // picture every other tick, from the voice's clock.
    let voice = speech();
    let playing = tokio::spawn(async move {
        let mut face = FaceRenderer::new(w, h);
        let mut picture = VideoFrame {
            width: w,
            height: h,
            y: vec![],
            u: vec![],
            v: vec![],
        };
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let step = RATE as usize / 50;
        for (k, piece) in voice.chunks_exact(step).cycle().enumerate() {
            tick.tick().await;
            face.push_audio(piece, 1);
            sink.voice(piece);
            if k % 2 == 1 {
                let pts = (k * step) as u64 * 90_000 / u64::from(RATE);
                face.render(pts, &mut picture);
                sink.video(&picture, pts);
            }
        }
    });
    let mut child = None;
    if args.viewers > 0 {
        let exe = std::env::current_exe().expect("this program");
        let mut c = Command::new(exe)
            .args(["receive", "--viewers", &args.viewers.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the watching process");
        let mut to_child = c.stdin.take().expect("stdin");
        let mut from_child = std::io::BufReader::new(c.stdout.take().expect("stdout"));
        for _ in 0..args.viewers {
            let mut line = String::new();
            from_child.read_line(&mut line).expect("an offer");
            let offer: String = serde_json::from_str(&line).expect("an offer in JSON");
            let viewer = publisher.add_viewer(&offer).await.expect("a viewer");
            writeln!(
                to_child,
                "{}",
                serde_json::to_string(&viewer.answer).expect("json")
            )
            .expect("to the viewers");
        }
        let until = Instant::now() + Duration::from_secs(20);
        while publisher.stats().viewers < args.viewers && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child = Some((c, to_child));
    }
    // Settle, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (all0, enc0) = sotto_benches::thread_cpu("sotto-publish");
    let before = publisher.stats();
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (all1, enc1) = sotto_benches::thread_cpu("sotto-publish");
    let after = publisher.stats();
    let secs = wall.elapsed().as_secs_f64();
    let cores = (all1 - all0) / secs;
    let encode = (enc1 - enc0) / secs;
    println!(
        "{}",
        serde_json::json!({
            "viewers": args.viewers,
            "size": format!("{w}x{h}"),
            "seconds": secs,
            "cores": cores,
            "encoder_cores": encode,
            "rest_cores": cores - encode,
            "watching": after.viewers,
            "frames_encoded": after.frames_encoded - before.frames_encoded,
            "fps": (after.frames_encoded - before.frames_encoded) as f64 / secs,
            "dropped": after.dropped - before.dropped,
            "encoder_dropped": after.encoder_dropped - before.encoder_dropped,
        })
    );
    playing.abort();
    if let Some((mut c, to_child)) = child {
        drop(to_child);
        let _ = c.wait();
    }
    publisher.close().await;
}

/// The watching process: `viewers` webrtc-rs peers that offer (a line of
/// JSON each), take their answers (read a line each) and read every
/// packet of both tracks until standard input closes.
async fn receive(viewers: usize) {
    let mut peers = Vec::new();
    for _ in 0..viewers {
        let (peer, mut events) = sotto_net::av_peer(sotto_net::peer::LOOPBACK)
            .await
            .expect("a peer");
        let (mic, _) = sotto_net::call::opus_track();
        let (cam, _) = sotto_net::video::vp8_track(None);
        peer.add_track(mic).await.expect("a track");
        peer.add_track(cam).await.expect("a track");
        let offer = peer.create_offer(None).await.expect("an offer");
        let sdp = sotto_net::complete_local(&peer, &mut events, offer)
            .await
            .expect("candidates");
        println!("{}", serde_json::to_string(&sdp).expect("json"));
        let answer: String = read_line()
            .and_then(|l| serde_json::from_str(&l).ok())
            .expect("an answer");
        peer.set_remote_description(RTCSessionDescription::answer(answer).expect("sdp"))
            .await
            .expect("the answer");
        peers.push((peer, events));
    }
    for (_, events) in &mut peers {
        for _ in 0..2 {
            let Some(track) = events.tracks.recv().await else {
                break;
            };
            tokio::spawn(async move {
                while let Some(ev) = track.poll().await {
                    if matches!(ev, TrackRemoteEvent::OnEnded) {
                        break;
                    }
                }
            });
        }
    }
    let _ = tokio::task::spawn_blocking(|| while read_line().is_some() {}).await;
    for (peer, _) in peers {
        let _ = peer.close().await;
    }
}

use sotto_benches::stdin_line as read_line;
