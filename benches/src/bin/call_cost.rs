//! What calls cost (SPEC W1): N calls, each a session's output sent as
//! Opus over RTP and SRTP to a webrtc-rs receiver in another process on
//! loopback, for T seconds in real time; against bare libopus encoding the
//! same speech, measured in the same run.
//!
//! `call-cost --calls N --seconds T [--silent-half]` prints one line of
//! JSON: the CPU per call per 20 ms packet (the process's, less its audio
//! threads', which render the sessions and are no call's), bare libopus's
//! per packet, late blocks, packets dropped and frames lost.
//! `call-cost receive --calls N` is the receiving process it starts.
//! `--floor` measures the least any Rust stack on the same crates could
//! spend instead: one task per call that encodes the next 20 ms with
//! libopus and writes it with webrtc-rs, every 20 ms, no engine.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto::{
    CallConfig, CallHandle, Clock, Engine, EngineConfig, InputFormat, OutputConfig, SampleFormat,
    SessionConfig, SessionOutput,
};
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::RTCSessionDescription;

const RATE: u32 = 48_000;
const PACKET: usize = 960;

struct Args {
    receive: bool,
    calls: usize,
    seconds: u64,
    silent_half: bool,
    floor: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        receive: false,
        calls: 10,
        seconds: 20,
        silent_half: false,
        floor: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match arg.as_str() {
            "receive" => a.receive = true,
            "--calls" => a.calls = number("--calls")?.clamp(1, 1_000) as usize,
            "--seconds" => a.seconds = number("--seconds")?.clamp(1, 3_600),
            "--silent-half" => a.silent_half = true,
            "--floor" => a.floor = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("call-cost: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if args.receive {
        runtime.block_on(receive(args.calls));
    } else {
        runtime.block_on(send(&args));
    }
    std::process::ExitCode::SUCCESS
}

/// The shipped speech at 48 kHz mono s16, looped to `seconds`.
fn speech(seconds: u64) -> Vec<u8> {
    let pcm = sotto_testkit::utterance_at(&sotto_testkit::hello(), RATE);
    let want = seconds as usize * RATE as usize;
    pcm.iter()
        .cycle()
        .take(want)
        .flat_map(|s| sotto_testkit::signal::quantize(*s).to_le_bytes())
        .collect()
}

/// CPU seconds of this process's threads, all of them and the audio
/// threads' (`sotto-audio-*`).
fn cpu_split() -> (f64, f64) {
    sotto_benches::thread_cpu("sotto-audio")
}

/// Bare libopus: the same speech encoded packet after packet with the
/// calls' settings, CPU seconds per packet.
fn bare_opus_per_packet(pcm: &[u8]) -> f64 {
    use audiopus::coder::Encoder;
    use audiopus::{Application, Bitrate, Channels, SampleRate};
    let mut enc =
        Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).expect("opus");
    enc.set_bitrate(Bitrate::BitsPerSecond(64_000))
        .expect("bitrate");
    enc.set_inband_fec(true).expect("fec");
    enc.set_packet_loss_perc(10).expect("loss");
    enc.set_dtx(true).expect("dtx");
    let samples: Vec<f32> = pcm
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
        .collect();
    let mut out = [0u8; 1_500];
    let started = sotto_testkit::measure::cpu_seconds();
    let mut n = 0u64;
    for _ in 0..3 {
        for p in samples.chunks_exact(PACKET) {
            std::hint::black_box(enc.encode_float(p, &mut out[..]).expect("encode"));
            n += 1;
        }
    }
    (sotto_testkit::measure::cpu_seconds() - started) / n as f64
}

async fn send(args: &Args) {
    let pcm = speech(args.seconds + 3);
    let bare = bare_opus_per_packet(&pcm[..pcm.len().min(RATE as usize * 2 * 10)]);

    let engine = Engine::start(EngineConfig {
        sample_rate: RATE,
        channels: 1,
        max_sessions: args.calls,
        clock: Clock::Virtual {
            capture: None,
            deferred: false,
        },
        ..EngineConfig::default()
    })
    .await
    .expect("an engine");
    let exe = std::env::current_exe().expect("this program");
    let mut child = Command::new(exe)
        .args(["receive", "--calls", &args.calls.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the receiving process");
    let mut to_child = child.stdin.take().expect("stdin");
    let mut from_child = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut calls: Vec<(sotto::SessionHandle, CallHandle)> = Vec::new();
    let mut floors = Vec::new();
    for k in 0..args.calls {
        let mut line = String::new();
        from_child.read_line(&mut line).expect("an offer");
        let offer: String = serde_json::from_str(&line).expect("an offer in JSON");
        let session = engine
            .create_session(SessionConfig {
                name: format!("call-{k}"),
                output: SessionOutput::Own(OutputConfig::default()),
                input: InputFormat {
                    sample_rate: RATE,
                    channels: 1,
                    sample_format: SampleFormat::S16,
                },
                ..SessionConfig::default()
            })
            .await
            .expect("a session");
        if args.floor {
            let (answer, peer) = sotto_net::call::answer_call(&offer, sotto_net::peer::LOOPBACK)
                .await
                .expect("a call");
            writeln!(
                to_child,
                "{}",
                serde_json::to_string(&answer).expect("json")
            )
            .expect("to the receiver");
            floors.push(peer);
            continue;
        }
        let (answer, call) = engine
            .accept_call(&session, &offer, CallConfig::default())
            .await
            .expect("a call");
        writeln!(
            to_child,
            "{}",
            serde_json::to_string(&answer).expect("json")
        )
        .expect("to the receiver");
        calls.push((session, call));
    }
    if args.floor {
        floor(floors, &pcm, args.seconds).await;
        drop(to_child);
        let _ = child.wait();
        engine.shutdown().await;
        return;
    }
    for (_, call) in &mut calls {
        let ev = tokio::time::timeout(Duration::from_secs(20), call.next_event()).await;
        assert!(
            matches!(ev, Ok(Some(sotto::CallEvent::Connected))),
            "{ev:?}"
        );
    }
    let pcm = Arc::new(pcm);
    for (k, (session, _)) in calls.iter().enumerate() {
        if args.silent_half && k % 2 == 1 {
            continue;
        }
        session.mark_synthesis_start().expect("turn");
        for piece in pcm.chunks(RATE as usize / 5) {
            drop(session.push(piece.to_vec()));
        }
    }
    // Two seconds to settle, then the measured stretch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sum = |calls: &[(sotto::SessionHandle, CallHandle)]| {
        calls.iter().fold((0u64, 0u64, 0u64, 0u64), |a, (_, c)| {
            let s = c.stats();
            (
                a.0 + s.packets_sent,
                a.1 + s.silent_packets,
                a.2 + s.encoder_dropped,
                a.3 + s.frames_lost,
            )
        })
    };
    let (cpu0, audio0) = cpu_split();
    let late0 = engine.late_blocks();
    let sent0 = sum(&calls);
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (cpu1, audio1) = cpu_split();
    let sent1 = sum(&calls);
    let elapsed = wall.elapsed().as_secs_f64();
    let packets = sent1.0 - sent0.0;
    let calls_cpu = (cpu1 - cpu0) - (audio1 - audio0);
    let per_packet = calls_cpu / packets.max(1) as f64;
    let expected = (elapsed * 50.0 * args.calls as f64) as u64;
    println!(
        "{}",
        serde_json::json!({
            "calls": args.calls,
            "silent_half": args.silent_half,
            "seconds": elapsed,
            "packets": packets,
            "packets_expected": expected,
            "silent_packets": sent1.1 - sent0.1,
            "encoder_dropped": sent1.2 - sent0.2,
            "frames_lost": sent1.3 - sent0.3,
            "frames_lost_before": sent0.3,
            "late_blocks": engine.late_blocks() - late0,
            "cpu_per_packet_us": per_packet * 1e6,
            "audio_thread_cpu_s": audio1 - audio0,
            "bare_opus_per_packet_us": bare * 1e6,
            "beyond_bare_percent": (per_packet - bare) / bare * 100.0,
            "cpu_cores_used": (cpu1 - cpu0) / elapsed,
        })
    );
    drop(to_child);
    let _ = child.wait();
    for (_, call) in calls {
        call.hang_up().await;
    }
    engine.shutdown().await;
}

/// The floor: each call a task that encodes and sends a packet every 20 ms.
async fn floor(peers: Vec<sotto_net::call::CallPeer>, pcm: &[u8], seconds: u64) {
    let samples: Arc<Vec<f32>> = Arc::new(
        pcm.chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
            .collect(),
    );
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut p in peers {
        sotto_net::connected(&mut p.events, Duration::from_secs(20))
            .await
            .expect("connected");
        let (samples, sent) = (Arc::clone(&samples), Arc::clone(&sent));
        tasks.push(tokio::spawn(async move {
            let mut enc =
                sotto_media::opus::OpusEncoder::new(1, sotto_rt::FrameLength::Ms20, 64_000, 10)
                    .expect("opus");
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for (k, packet) in samples.chunks_exact(PACKET).enumerate() {
                tick.tick().await;
                let bytes = enc.encode(packet).expect("encode").to_vec();
                if p.sender
                    .send(&bytes, (k * PACKET) as u64, k == 0)
                    .await
                    .is_ok()
                {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            p.peer
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, _) = cpu_split();
    let sent0 = sent.load(std::sync::atomic::Ordering::Relaxed);
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, _) = cpu_split();
    let packets = sent.load(std::sync::atomic::Ordering::Relaxed) - sent0;
    let elapsed = wall.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "floor": true,
            "calls": tasks.len(),
            "seconds": elapsed,
            "packets": packets,
            "packets_expected": (elapsed * 50.0 * tasks.len() as f64) as u64,
            "cpu_per_packet_us": (cpu1 - cpu0) / packets.max(1) as f64 * 1e6,
        })
    );
    for t in tasks {
        t.abort();
    }
}

/// The receiving process: `calls` webrtc-rs peers on loopback that offer
/// (printed a line each, JSON), take their answers (read a line each) and
/// count the RTP packets that arrive until standard input closes.
async fn receive(calls: usize) {
    let mut peers = Vec::new();
    for _ in 0..calls {
        let (peer, mut events) = sotto_net::loopback_audio_peer().await.expect("a peer");
        let (mic, _sender) = sotto_net::call::opus_track();
        peer.add_track(mic).await.expect("a track");
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
        let Some(track) = events.tracks.recv().await else {
            continue;
        };
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if matches!(ev, TrackRemoteEvent::OnEnded) {
                    break;
                }
            }
        });
    }
    // Until the sender is done.
    let _ = tokio::task::spawn_blocking(|| while read_line().is_some() {}).await;
    for (peer, _) in peers {
        let _ = peer.close().await;
    }
}

use sotto_benches::stdin_line as read_line;
