//! The properties the fuzz targets check, one function per target. Each
//! takes arbitrary bytes and panics only when Sotto breaks a promise: a
//! panic inside Sotto, lost or changed audio, a non-finite sample, memory
//! past a bound. The `fuzz/` crate calls them from `cargo fuzz`; the
//! regression test runs the saved seeds and crashes through them on stable.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sotto_actors::decode::FileDecoder;
use sotto_actors::{Ingest, InputFormat, SampleFormat, SUPPORTED_RATES};
use sotto_avatar::playout::{AvatarRenderer, AvatarSink, Playout, PlayoutConfig};
use sotto_net::avatar::{JoinRequest, StreamEnded, INTERRUPT, JOIN_RATES, MAX_JOIN_BODY, MAX_NAME};
use sotto_server::token;
use sotto_testkit::scenario::{RenderClock, Scenario};

/// One target's check.
pub type Check = fn(&[u8]);

/// The fuzz targets, by the name `cargo fuzz` and the seed folders use.
pub const TARGETS: [(&str, Check); 6] = [
    ("ingest", ingest),
    ("scenario", scenario),
    ("avatar_messages", avatar_messages),
    ("token", token),
    ("decode", decode),
    ("join", join),
];

/// A small deterministic generator for choices derived from the input.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        // xorshift64*: fixed by the seed byte, so a crash replays exactly.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// TTS bytes in any format, cut into any chunks (SPEC O1, O3): the first
/// byte picks the input format (including invalid ones), the second the
/// output format, the third the chunking. The chunked output must equal
/// the output of one push bit for bit, hold no non-finite sample, and be
/// the length the frame count says.
pub fn ingest(data: &[u8]) {
    let [head, out, seed, audio @ ..] = data else {
        return;
    };
    let sample_rate = match head & 7 {
        i @ 0..=5 => SUPPORTED_RATES[usize::from(i)],
        6 => 11_025,
        _ => 0,
    };
    let channels = usize::from((head >> 3) & 0x0F);
    let sample_format = if head & 0x80 == 0 {
        SampleFormat::S16
    } else {
        SampleFormat::F32
    };
    let input = InputFormat {
        sample_rate,
        channels,
        sample_format,
    };
    let out_rate = [16_000, 24_000, 44_100, 48_000][usize::from(out & 3)];
    let out_channels = usize::from((out >> 2) & 1) + 1;
    let valid = SUPPORTED_RATES.contains(&sample_rate) && (1..=8).contains(&channels);
    let (Ok(mut whole), Ok(mut chunked)) = (
        Ingest::new(input, out_rate, out_channels),
        Ingest::new(input, out_rate, out_channels),
    ) else {
        assert!(!valid, "a valid input format was refused: {input:?}");
        return;
    };
    assert!(valid, "an invalid input format was accepted: {input:?}");

    let mut a = Vec::new();
    whole.push(audio, &mut a);
    assert_eq!(whole.held_bytes(), audio.len() % whole.frame_bytes());
    whole.flush(&mut a);

    let mut b = Vec::new();
    let mut choices = Choices(u64::from(*seed) * 0x9E37_79B9 + 1);
    let mut rest = audio;
    while !rest.is_empty() {
        let limit = match choices.next() % 8 {
            0 => 1,
            1..=5 => 2 * whole.frame_bytes() + 3,
            _ => 4096,
        } as u64;
        let n = (choices.next() % (limit + 1)) as usize;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        chunked.push(chunk, &mut b);
        rest = tail;
    }
    chunked.flush(&mut b);

    assert!(same_bits(&a, &b), "chunking changed the audio");
    assert!(a.iter().all(|s| s.is_finite()), "a non-finite sample");
    assert_eq!(a.len() % out_channels, 0, "a partial output frame");
    let frames_in = (audio.len() / whole.frame_bytes()) as f64;
    let expect = (frames_in * f64::from(out_rate) / f64::from(sample_rate)).round();
    let got = (a.len() / out_channels) as f64;
    assert!(
        (got - expect).abs() <= 1.0,
        "{frames_in} input frames became {got} output frames, not {expect}"
    );
}

/// A runtime shared by the scenario renders: starting one per input would
/// dominate the time.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Scenario text (the `render` command's input): parsing must not panic;
/// a scenario that parses and is small (at most 2 s and 4 sessions, no
/// avatar) is rendered offline through a fresh engine, which must give
/// exactly its duration of finite samples.
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative paths resolve to the examples, so a bed can be found.
    let base = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
    let Ok(prepared) = Scenario::parse(text, "fuzz.toml", base) else {
        return;
    };
    let sc = prepared.scenario();
    let pushed: f64 = sc.at.iter().filter_map(|s| s.op.tone_seconds()).sum();
    let small = sc.duration.0 <= 2.0
        && sc.sessions.len() <= 4
        && sc.at.len() <= 64
        && pushed <= 10.0
        && sc.at.iter().all(|s| !s.op.is_avatar());
    if !small {
        return;
    }
    let rendered = runtime()
        .block_on(prepared.render(RenderClock::Offline))
        .expect("a scenario that parsed renders");
    let total = (sc.duration.0 * f64::from(sc.sample_rate)).round() as usize;
    assert_eq!(rendered.samples.len(), total * sc.channels);
    assert!(
        rendered
            .samples
            .iter()
            .all(|s| s.is_finite() && s.abs() <= 1.0),
        "a sample past full scale or not finite"
    );
}

/// Counts what the playout emits and checks its shape as it comes.
struct CheckSink {
    frame_len: usize,
    last_pts: Option<u64>,
}

impl AvatarSink for CheckSink {
    fn voice(&mut self, samples: &[i16]) {
        assert_eq!(
            samples.len(),
            self.frame_len,
            "a voice frame of the wrong length"
        );
    }

    fn video(&mut self, _frame: &sotto_avatar::playout::VideoFrame, pts: u64) {
        assert!(self.last_pts.is_none_or(|p| pts > p), "video pts went back");
        self.last_pts = Some(pts);
    }
}

/// A renderer that draws nothing: the playout is under test, not a face.
struct Blank;

impl AvatarRenderer for Blank {
    fn push_audio(&mut self, _samples: &[i16], _channels: usize) {}
    fn reset(&mut self) {}
    fn render(&mut self, _pts: u64, _frame: &mut sotto_avatar::playout::VideoFrame) {}
    fn size(&self) -> (u32, u32) {
        (16, 16)
    }
}

fn check_ack(ack: &StreamEnded) {
    assert!(
        ack.playback_position.is_finite() && ack.playback_position >= 0.0,
        "ack position {}",
        ack.playback_position
    );
}

/// Avatar data-channel traffic (SPEC A4–A6) as a peer might send it: any
/// bytes on either channel, text or binary, segment ends with any numbers,
/// interrupts, time passing. The playout must count what it cannot use,
/// keep every voice frame 20 ms long, its video pts rising, its acks sane
/// and its memory within the configured queue.
pub fn avatar_messages(data: &[u8]) {
    let [config, ops @ ..] = data else {
        return;
    };
    let channels = usize::from(config & 1) + 1;
    let stereo = config & 2 != 0;
    let out_channels = if stereo && channels == 1 { 2 } else { channels };
    let sample_rate = [16_000, 24_000, 48_000, 22_050][usize::from((config >> 2) & 3)];
    let playout_config = PlayoutConfig {
        sample_rate,
        channels,
        stereo,
        fps: u32::from(config >> 4) * 4,
        queue: Duration::from_secs(2),
        ..PlayoutConfig::default()
    };
    let sink = CheckSink {
        frame_len: sample_rate as usize / 50 * out_channels,
        last_pts: None,
    };
    let mut playout = Playout::new(playout_config, Box::new(Blank), Box::new(sink));
    let start = Instant::now();
    let mut now = start;
    let mut acks = Vec::new();
    let mut rest = ops;
    let mut malformed_sent = 0u64;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, tail) = tail.split_at(n);
        rest = tail;
        let ack = match op % 8 {
            0 => playout.on_message(false, false, body, now),
            // Long PCM: the body repeated, past the chunk limit sometimes.
            1 => playout.on_message(false, false, &body.repeat(usize::from(*op) + 1), now),
            2 => playout.on_message(true, true, body, now),
            3 => {
                let id = body.first().map(|&b| u64::from(b) << 40);
                let samples = body.get(1..9).and_then(|b| b.try_into().ok());
                let samples = samples.map(u64::from_le_bytes);
                let text = serde_json::json!({
                    "type": "segment_end",
                    "id": id,
                    "samples": samples.map(|s| s % 1_000_000),
                });
                playout.on_message(true, true, text.to_string().as_bytes(), now)
            }
            4 => playout.on_message(true, true, INTERRUPT.as_bytes(), now),
            5 => {
                for _ in 0..=n % 8 {
                    playout.tick(&mut acks);
                }
                None
            }
            6 => {
                now += Duration::from_millis(u64::from(*len) * 4);
                None
            }
            _ => {
                // Wrong kind for the channel.
                malformed_sent += 1;
                playout.on_message(*len & 1 == 0, *len & 1 == 1, body, now)
            }
        };
        if let Some(ack) = ack {
            check_ack(&ack);
        }
    }
    for _ in 0..200 {
        playout.tick(&mut acks);
    }
    acks.iter().for_each(check_ack);
    let stats = playout.stats();
    assert!(
        stats.malformed >= malformed_sent,
        "a wrong-channel message went uncounted"
    );
    let dropped = stats.cooldown_dropped + stats.queue_dropped + stats.voice_dropped;
    assert!(dropped <= stats.received + stats.cooldown_dropped);
}

/// Avatar join credentials (SPEC A2): any text as a token must be refused
/// without a panic unless it is a valid signature; any claims must survive
/// signing and verification unchanged when they are valid.
pub fn token(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    let secret = "fuzz-secret";
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Ok(claims) = token::verify(&text, secret) {
            // Only a genuine signature gets here; it must still carry the
            // permission and version the check promises.
            assert!(claims.permissions.iter().any(|p| p == token::ALLOW_JOIN));
            assert_eq!(claims.version, token::VERSION);
        }
        return;
    }
    let text = String::from_utf8_lossy(rest);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut parts = text.split('\u{0}');
    let mut field = || parts.next().unwrap_or_default().to_owned();
    let claims = token::Claims {
        apikey: field(),
        permissions: field().split(',').map(str::to_owned).collect(),
        version: u32::from(mode >> 1) % 4,
        iat: now,
        exp: if mode & 0x80 == 0 { now + 600 } else { 1 },
        participant_id: field(),
        nbf: None,
        room: None,
    };
    let Ok(signed) = token::sign(&claims, secret) else {
        return;
    };
    let valid = claims.exp > 1
        && claims.version == token::VERSION
        && claims.permissions.iter().any(|p| p == token::ALLOW_JOIN);
    match token::verify(&signed, secret) {
        Ok(back) => {
            assert!(valid, "invalid claims verified: {claims:?}");
            assert_eq!(back, claims);
        }
        Err(e) => assert!(!valid, "valid claims refused: {e}"),
    }
    assert!(token::verify(&signed, "another-secret").is_err());
}

/// A join request body as the avatar dispatcher takes it (SPEC A2, S1,
/// S3, S4): any bytes within the body limit parse to a refusal or to a
/// request whose every number is in bounds and whose names are each one
/// safe path component; its token is checked and its offer parsed as SDP,
/// both without a panic, as the dispatcher does before it makes a peer.
pub fn join(data: &[u8]) {
    if data.len() > MAX_JOIN_BODY {
        return; // refused (413) before it is read
    }
    let Ok(req) = serde_json::from_slice::<JoinRequest>(data) else {
        return;
    };
    if req.validate().is_err() {
        return;
    }
    assert!(JOIN_RATES.contains(&req.sample_rate), "{}", req.sample_rate);
    assert!((1..=2).contains(&req.channels), "{}", req.channels);
    for name in [&req.room_name, &req.participant_id] {
        assert!(!name.is_empty() && name.len() <= MAX_NAME, "{name:?}");
        let mut parts = Path::new(name).components();
        assert!(
            matches!(parts.next(), Some(std::path::Component::Normal(_))) && parts.next().is_none(),
            "{name:?} is not one plain path component"
        );
    }
    if let Ok(claims) = token::verify_for(
        &req.token,
        "fuzz-secret",
        &req.participant_id,
        &req.room_name,
    ) {
        assert_eq!(claims.participant_id, req.participant_id);
    }
    let _ = webrtc::peer_connection::RTCSessionDescription::offer(req.offer);
}

/// Audio decoding of arbitrary bytes (SPEC B2, B7): the first byte picks
/// the name's extension (the prober's hint) and the output format. Any
/// bytes must give a typed error or finite, bounded audio, and decoding
/// must end.
pub fn decode(data: &[u8]) {
    let [pick, bytes @ ..] = data else {
        return;
    };
    let ext = ["wav", "flac", "ogg", "mp3", "m4a", "aac", "bin", "caf"][usize::from(pick & 7)];
    let out_rate = [48_000, 24_000, 44_100, 16_000][usize::from((pick >> 3) & 3)];
    let out_channels = usize::from((pick >> 5) & 1) + 1;
    let name = Path::new("fuzz").with_extension(ext);
    let Ok(mut decoder) = FileDecoder::from_bytes(&name, bytes.to_vec(), out_rate, out_channels)
    else {
        return;
    };
    let mut out = Vec::new();
    // Far more than any input this size can hold; past it, decoding loops.
    let limit = 600 * out_rate as usize * out_channels;
    loop {
        match decoder.fill(&mut out, 4096) {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) => assert!(out.len() < limit, "decoding does not end"),
        }
    }
    assert_eq!(out.len() % out_channels, 0, "a partial frame");
    // The resampler's filter rings past full scale on adversarial input
    // (2.15 from a garbled MP3 at ±1); the mix saturates at the end, so
    // the promise here is finite and bounded, not within ±1.
    let bad = out.iter().position(|s| !(s.is_finite() && s.abs() <= 16.0));
    assert!(
        bad.is_none(),
        "sample {bad:?} of {}: {:?}",
        out.len(),
        bad.map(|i| out[i])
    );
}
