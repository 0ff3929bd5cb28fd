//! Echo cancellation quality (SPEC D4) on a synthetic room: a speech-like
//! far end through a 40 ms delay and a decaying impulse response into the
//! microphone, with noise and a double-talk segment.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sotto_actors::capture::echo_link::{EchoLink, ReverseSlot};
use sotto_actors::capture::tap::tap_with_clock;
use sotto_media::echo::{erle_db, EchoConfig, EchoPath, CHUNK, RATE};

/// A deterministic noise source.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Voiced, pitch-varying, syllable-rate modulated, with pauses and some
/// breath noise: broadband like speech, unlike a tone.
fn talker(seconds: f64, f0: f64, seed: u64) -> Vec<f32> {
    let n = (seconds * f64::from(RATE)) as usize;
    let mut noise = Lcg(seed);
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let pitch = f0 * (1.0 + 0.2 * (std::f64::consts::TAU * 0.7 * t).sin());
            phase += std::f64::consts::TAU * pitch / f64::from(RATE);
            let voiced: f64 = (1..=30).map(|k| (k as f64 * phase).sin() / k as f64).sum();
            let syllable = (std::f64::consts::TAU * 3.3 * t).sin().max(0.0).sqrt();
            let pause = if (t % 2.0) > 1.6 { 0.0 } else { 1.0 };
            let breath = f64::from(noise.next()) * 0.1;
            ((voiced * 0.25 + breath) * syllable * pause * 0.5) as f32
        })
        .collect()
}

fn power_db(s: &[f32]) -> f64 {
    let p = s.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / s.len() as f64;
    10.0 * p.max(1e-20).log10()
}

#[test]
fn echo_cancellation_on_a_synthetic_room() {
    let seconds = 14.0;
    let rate = RATE as usize;
    let far = talker(seconds, 130.0, 1);
    // 40 ms of pure delay, then a 50 ms decaying tail, about -6 dB overall.
    let delay = rate * 40 / 1000;
    let mut room = Lcg(7);
    let tail: Vec<f32> = (0..rate / 20)
        .map(|k| room.next() * (-(k as f32) / (rate as f32 * 0.012)).exp() * 0.08)
        .collect();
    let mut mic = vec![0.0f32; far.len()];
    for (i, &x) in far.iter().enumerate() {
        if x == 0.0 {
            continue;
        }
        for (k, &h) in tail.iter().enumerate() {
            if let Some(m) = mic.get_mut(i + delay + k) {
                *m += x * h;
            }
        }
    }
    let mut hiss = Lcg(3);
    for m in &mut mic {
        *m += hiss.next() * 0.0005;
    }
    // Double talk from 3 s to 5 s: a second talker at the microphone.
    let near = talker(2.0, 210.0, 5);
    let dt = 3 * rate;
    for (k, &v) in near.iter().enumerate() {
        mic[dt + k] += v;
    }

    let config = EchoConfig {
        echo_cancellation: true,
        noise_suppression: false,
        high_pass: false,
        gain_control: false,
        delay_ms: 40,
    };
    let out = EchoPath::new(config)
        .unwrap()
        .process_all(&far, &mic)
        .unwrap();
    assert_eq!(out.len(), mic.len());
    let last5 = mic.len() - 5 * rate;
    let erle = erle_db(&mic[last5..], &out[last5..]);
    // The near-end talker in double talk keeps its level.
    let talk = dt + rate / 2..dt + 2 * rate;
    let kept = power_db(&out[talk.clone()]) - power_db(&near[talk.start - dt..talk.end - dt]);
    println!("ERLE over the last 5 s: {erle:.1} dB; near end in double talk: {kept:+.1} dB");
    assert!(erle >= 25.0, "ERLE {erle:.1} dB");
    assert!(kept.abs() <= 6.0, "near end changed by {kept:.1} dB");
    assert!(out.len() % CHUNK == mic.len() % CHUNK);
}

/// The simulated time the taps' marks read.
static SIM_NS: AtomicU64 = AtomicU64::new(0);

fn sim_now() -> u64 {
    SIM_NS.load(Ordering::Relaxed)
}

/// The live path (SPEC D4) on simulated device timing: a stereo output
/// rendering 441-frame buffers 25 ms ahead of the speaker, a microphone
/// delivering 1024-sample buffers 15 ms after capture, the room of the
/// test above without its own delay. The link must order the frames by
/// callback time and set the delay from the two latencies; halfway the
/// output is reopened (a new reverse stream) and cancellation must carry
/// on.
#[test]
fn the_live_link_pairs_callbacks_by_time_and_survives_a_reopen() {
    let seconds = 14.0;
    let rate = RATE as usize;
    let far = talker(seconds, 130.0, 1);
    let mut room = Lcg(7);
    let tail: Vec<f32> = (0..rate / 20)
        .map(|k| room.next() * (-(k as f32) / (rate as f32 * 0.012)).exp() * 0.08)
        .collect();
    let mut mic = vec![0.0f32; far.len()];
    for (i, &x) in far.iter().enumerate() {
        for (k, &h) in tail.iter().enumerate() {
            if let Some(m) = mic.get_mut(i + k) {
                *m += x * h;
            }
        }
    }
    let mut hiss = Lcg(3);
    for m in &mut mic {
        *m += hiss.next() * 0.0005;
    }

    let ns = |samples: usize| samples as u64 * 1_000_000_000 / rate as u64;
    let (out_lat, in_lat) = (ns(rate * 25 / 1000), ns(rate * 15 / 1000));
    let start = 1_000_000_000u64; // the render runs ahead: keep times positive
    let (render_cb, capture_cb) = (441usize, 1024usize);
    // Callbacks in time order: (time, is_render, first sample).
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for s in (0..far.len()).step_by(render_cb) {
        events.push((start + ns(s) - out_lat, true, s));
    }
    for m in (0..mic.len()).step_by(capture_cb) {
        let end = (m + capture_cb).min(mic.len());
        events.push((start + ns(end) + in_lat, false, m));
    }
    events.sort_by_key(|e| (e.0, e.1));

    let config = EchoConfig {
        echo_cancellation: true,
        noise_suppression: false,
        high_pass: false,
        gain_control: false,
        delay_ms: 0,
    };
    let slot = ReverseSlot::new();
    let new_output = || {
        let (w, r) = tap_with_clock(RATE, 1, rate, sim_now);
        w.set_latency(Some(Duration::from_nanos(out_lat)));
        (w, r)
    };
    let (mut render, reverse) = new_output();
    slot.publish(Some(reverse));
    let (mut capture, capture_rx) = tap_with_clock(RATE, 1, rate, sim_now);
    capture.set_latency(Some(Duration::from_nanos(in_lat)));
    let (out_tx, mut out_rx) = rtrb::RingBuffer::new(mic.len() + rate);
    let mut link = EchoLink::new(config, capture_rx, Arc::clone(&slot), out_tx).unwrap();
    let stats = link.stats();
    let mut stereo = Vec::new();
    let mut reopened = false;
    for &(at, is_render, first) in &events {
        SIM_NS.store(at, Ordering::Relaxed);
        if is_render {
            if !reopened && first >= far.len() / 2 {
                // The output moved: its successor's tap is published and the
                // old one goes quiet.
                let (w, r) = new_output();
                render = w;
                slot.publish(Some(r));
                reopened = true;
            }
            let end = (first + render_cb).min(far.len());
            stereo.clear();
            stereo.extend(far[first..end].iter().flat_map(|&v| [v, v]));
            render.push_mono(&stereo, 2);
        } else {
            let end = (first + capture_cb).min(mic.len());
            capture.push(&mic[first..end]);
        }
        link.step(at);
    }
    link.step(u64::MAX / 2);

    let cleaned: Vec<f32> = std::iter::from_fn(|| out_rx.pop().ok()).collect();
    let frames = mic.len() / CHUNK;
    assert_eq!(stats.capture_frames(), frames as u64);
    assert_eq!(stats.render_frames(), (far.len() / CHUNK) as u64 - 1);
    assert_eq!(stats.dropped_chunks(), 0);
    assert_eq!(stats.errors(), 0);
    assert_eq!(stats.rebinds(), 2);
    assert_eq!(stats.delay_ms(), 40);
    assert_eq!(cleaned.len(), frames * CHUNK);
    let last5 = cleaned.len() - 5 * rate;
    let erle = erle_db(&mic[last5..cleaned.len()], &cleaned[last5..]);
    println!("live link: ERLE over the last 5 s after a reopen: {erle:.1} dB");
    assert!(erle >= 25.0, "ERLE {erle:.1} dB");
}
