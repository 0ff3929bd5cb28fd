//! Echo cancellation quality (SPEC D4) on a synthetic room: a speech-like
//! far end through a 40 ms delay and a decaying impulse response into the
//! microphone, with noise and a double-talk segment.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use sotto_actors::echo::{erle_db, EchoConfig, EchoPath, FRAME, RATE};

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
    assert!(out.len() % FRAME == mic.len() % FRAME);
}
