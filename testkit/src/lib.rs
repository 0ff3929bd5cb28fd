//! What Sotto's tests and benchmarks share: generated audio (the tone
//! generator the program uses too), `/proc` readings, the program's
//! scenario runner and soak run, engines and servers set up for tests,
//! waits to a deadline, a headless browser, signal comparisons. Never
//! shipped.

pub mod browser;
pub mod compare;
pub mod host;
pub mod janus;

// The program's own modules, compiled in here by path: the program is a
// binary with no library, and its scenario runner, soak run, tone
// generator and `/proc` readings are what the tests, the benchmarks and the
// fuzz targets drive. One source, so a scenario means the same render in
// the program and in a test.
#[path = "../../cli/src/measure.rs"]
pub mod measure;
pub mod phone;
#[path = "../../cli/src/plot.rs"]
pub mod plot;
#[path = "../../cli/src/scenario/mod.rs"]
pub mod scenario;
#[path = "../../cli/src/signal.rs"]
pub mod signal;
#[path = "../../cli/src/soak.rs"]
pub mod soak;

pub use signal::{quantize, sine, tone_s16};

/// The shipped speech (`examples/hello.wav`, 16 kHz mono s16) as the
/// demo agent's utterance.
///
/// # Panics
/// If the file is missing (a broken checkout).
#[must_use]
pub fn hello() -> std::sync::Arc<sotto_server::calls::Utterance> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.wav");
    std::sync::Arc::new(
        sotto_server::calls::Utterance::from_wav(std::path::Path::new(path))
            .expect("examples/hello.wav reads"),
    )
}

/// An utterance as a session at `rate` plays it: mono f32 resampled by
/// the engine's own ingest, to the last sample. What a test compares a
/// call's or an avatar's received voice against.
///
/// # Panics
/// If the engine's ingest refuses the rates (a test failure).
#[must_use]
pub fn utterance_at(say: &sotto_server::calls::Utterance, rate: u32) -> Vec<f32> {
    let mut ingest =
        sotto_actors::ingest::Ingest::new(say.input, rate, 1).expect("the ingest takes the rate");
    let mut out = Vec::new();
    ingest.push(&say.bytes, &mut out);
    ingest.flush(&mut out);
    out
}

/// This process's resident set size in KiB (Linux), 0 where unknown.
#[must_use]
pub fn rss_kib() -> u64 {
    measure::rss().current_kib
}

use std::sync::Arc;
use std::time::Duration;

use sotto::{Engine, EngineConfig, SessionEvent, SessionEventKind};
use sotto_avatar::face::FaceRenderer;
use sotto_avatar::playout::{AvatarRenderer, AvatarSink};
use sotto_avatar::sink::MemorySink;
use sotto_server::avatar::{AvatarServer, ServerConfig};
use tokio::sync::mpsc::Receiver;

/// A mono engine at the default rate on the offline clock.
///
/// # Panics
/// If it does not start (a test failure).
pub async fn mono_engine() -> Engine {
    Engine::start(EngineConfig {
        channels: 1,
        ..EngineConfig::default()
    })
    .await
    .expect("a default mono engine starts")
}

/// An avatar server on loopback accepting tokens signed with `secret`,
/// drawing small faces (32x24, 25 fps) into memory.
///
/// # Panics
/// If it cannot listen (a test failure).
pub async fn face_avatar_server(secret: &str) -> AvatarServer {
    let config = ServerConfig {
        publish: None,
        clock: None,
        secret: secret.into(),
        fps: 25,
        cooldown: Duration::from_millis(300),
        stereo: false,
        renderer: Arc::new(|| Box::new(FaceRenderer::new(32, 24)) as Box<dyn AvatarRenderer>),
        sink: Arc::new(|req| {
            Box::new(MemorySink::new(usize::from(req.channels))) as Box<dyn AvatarSink>
        }),
    };
    AvatarServer::start("127.0.0.1:0".parse().expect("a loopback address"), config)
        .await
        .expect("the avatar server listens on loopback")
}

/// An avatar server on loopback that publishes its avatars to viewers
/// (SPEC W5): tokens signed with `secret`, the built-in face at `w`×`h`
/// and 25 fps, nothing kept.
///
/// # Panics
/// If it cannot listen (a test failure).
pub async fn published_avatar_server(
    secret: &str,
    (w, h): (u32, u32),
    publishing: sotto_server::avatar::viewers::ViewersConfig,
) -> AvatarServer {
    let config = ServerConfig {
        clock: None,
        publish: Some(publishing),
        secret: secret.into(),
        fps: 25,
        cooldown: Duration::from_millis(300),
        stereo: false,
        renderer: Arc::new(move || Box::new(FaceRenderer::new(w, h)) as Box<dyn AvatarRenderer>),
        sink: Arc::new(|_| {
            Box::new(sotto_avatar::sink::DiscardSink::default()) as Box<dyn AvatarSink>
        }),
    };
    AvatarServer::start("127.0.0.1:0".parse().expect("a loopback address"), config)
        .await
        .expect("the avatar server listens on loopback")
}

/// `n` frames of a constant mono s16 value.
#[must_use]
pub fn dc_s16(n: usize, value: i16) -> Vec<u8> {
    (0..n).flat_map(|_| value.to_le_bytes()).collect()
}

/// Every event received so far.
pub fn drain(rx: &mut Receiver<SessionEvent>) -> Vec<SessionEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Sample times of events of one kind.
#[must_use]
pub fn times(events: &[SessionEvent], want: fn(&SessionEventKind) -> bool) -> Vec<u64> {
    events
        .iter()
        .filter(|e| want(&e.kind))
        .map(|e| e.at.0)
        .collect()
}

/// Writes a 16-bit WAV of interleaved `samples` (−1..1).
///
/// # Panics
/// When the file cannot be written.
pub fn write_wav_s16(path: &std::path::Path, samples: &[f32], rate: u32, channels: u16) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    for &s in samples {
        w.write_sample(quantize(s)).expect("write wav");
    }
    w.finalize().expect("finalize wav");
}

/// A 16-bit WAV's first channel as samples in −1..1 (the reply a phone
/// simulator recorded, say).
///
/// # Panics
/// When the file cannot be read as a 16-bit WAV.
#[must_use]
pub fn read_wav_mono(path: &std::path::Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).expect("a wav");
    let channels = usize::from(reader.spec().channels.max(1));
    reader
        .samples::<i16>()
        .step_by(channels)
        .map(|s| f32::from(s.expect("a sample")) / 32_768.0)
        .collect()
}

/// Encodes `wav` to `out` with ffmpeg (`codec` as ffmpeg names it).
///
/// # Panics
/// When ffmpeg is missing or fails: `make test` installs it.
pub fn ffmpeg(wav: &std::path::Path, out: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-i"])
        .arg(wav)
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg must be installed (make test installs it)");
    assert!(status.success(), "ffmpeg failed for {}", out.display());
}

/// Frequency of a mono signal from its rising zero crossings.
#[must_use]
pub fn frequency(samples: &[f32], rate: u32) -> f64 {
    let crossings: Vec<f64> = samples
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0.0 && w[1] >= 0.0)
        .map(|(i, w)| i as f64 + f64::from(-w[0] / (w[1] - w[0])))
        .collect();
    let (Some(first), Some(last)) = (crossings.first(), crossings.last()) else {
        return 0.0;
    };
    (crossings.len() - 1) as f64 * f64::from(rate) / (last - first)
}

/// Root mean square.
#[must_use]
pub fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// A fresh scratch directory under the system's temporary directory.
///
/// # Panics
/// When it cannot be created.
#[must_use]
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sotto-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Writes an ALSA configuration that loads the system's and adds `pcm`
/// (a `pcm.NAME { ... }` definition), and selects it for this process.
/// Call it before anything opens a device: ALSA reads its configuration
/// once.
///
/// # Panics
/// When the file cannot be written.
pub fn use_alsa_config(dir: &std::path::Path, pcm: &str) {
    let conf = dir.join("asound.conf");
    std::fs::write(&conf, format!("</usr/share/alsa/alsa.conf>\n{pcm}\n")).expect("alsa conf");
    std::env::set_var("ALSA_CONFIG_PATH", &conf);
}

/// An engine for calls: 48 kHz mono on the virtual clock, running.
///
/// # Panics
/// When the engine cannot start.
pub async fn call_engine() -> Engine {
    Engine::start(EngineConfig {
        sample_rate: 48_000,
        channels: 1,
        clock: sotto::Clock::Virtual {
            capture: None,
            deferred: false,
        },
        // Tests of other things set calls up as fast as they like; the
        // admission tests use the defaults.
        admission: sotto::AdmissionConfig {
            max_connecting: 64,
            per_second: 1_000.0,
            max_render_load: 100.0,
            max_cpu_load: 100.0,
            max_reader_lag: std::time::Duration::from_secs(3600),
        },
        ..EngineConfig::default()
    })
    .await
    .expect("a call engine starts")
}

/// A webrtc-rs far end of a call: its peer, its events, its offer (every
/// candidate in it) with an Opus microphone track, and that track's sender.
///
/// # Panics
/// When the peer cannot be built.
pub async fn far_end() -> (
    sotto_net::Peer,
    sotto_net::PeerEvents,
    String,
    sotto_net::call::OpusSender,
) {
    let (far, mut events) = sotto_net::loopback_audio_peer().await.expect("a peer");
    let (mic, sender) = sotto_net::call::opus_track();
    far.add_track(mic).await.expect("a track");
    let offer = far.create_offer(None).await.expect("an offer");
    let sdp = sotto_net::complete_local(&far, &mut events, offer)
        .await
        .expect("candidates");
    (far, events, sdp, sender)
}

/// Opens `count` connections to `addr` that send nothing and waits until
/// the server has closed every one (SPEC S2: a cap, a header timeout):
/// how long that took.
///
/// # Panics
/// When a connection cannot be opened or stays open for 5 s.
pub async fn held_connections_closed(addr: std::net::SocketAddr, count: usize) -> Duration {
    let mut held = Vec::new();
    for _ in 0..count {
        held.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("a connection"),
        );
    }
    let started = std::time::Instant::now();
    for c in held.drain(..) {
        let read = async {
            let mut buf = [0u8; 64];
            loop {
                c.readable().await?;
                match c.try_read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    other => return other,
                }
            }
        };
        let n = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the server closes a silent connection");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    started.elapsed()
}

/// An offline engine at the defaults with one session of `config`, and
/// that session's events.
///
/// # Panics
/// If the engine or the session does not start (a test failure).
pub async fn setup(
    config: sotto::SessionConfig,
) -> (Engine, sotto::SessionHandle, Receiver<SessionEvent>) {
    let engine = Engine::start(EngineConfig::default())
        .await
        .expect("a default engine starts");
    let s = engine
        .create_session(config)
        .await
        .expect("the session starts");
    let events = s.events();
    (engine, s, events)
}

/// Held by a test that must run alone in its binary (one that measures
/// what a real-time peer heard); the others in that binary wait for it.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until no other test of this binary holding it runs; hold the
/// guard for the whole test.
pub async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    ALONE.lock().await
}

/// Polls `cond` every 5 ms until it holds.
///
/// # Panics
/// After 20 s without it, naming `what`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
