//! The fades, ramps, saturation and source mixing against their formulas.

use super::*;
use proptest::prelude::*;

#[test]
fn the_fade_tail_follows_its_formula() {
    for len in [1u64, 2, 3, 17, 480, 9600] {
        let mut buf = vec![1.0f32; len as usize];
        Tail::new(len).apply(&mut buf, 1);
        for (k, g) in buf.iter().enumerate() {
            let want = fade_gain(k as u64, len);
            assert!((g - want).abs() < 1e-6, "len {len} k {k}: {g} vs {want}");
        }
    }
    assert_eq!(fade_gain(0, 10), 1.0);
    assert!((fade_gain(7, 9) - 10f32.powf(-3.0 * 7.0 / 8.0)).abs() < 1e-7);
}

#[test]
fn a_fade_tail_ends_at_zero() {
    for len in [1u64, 2, 3, 17, 480, 9600] {
        let mut buf = vec![1.0f32; len as usize];
        let mut tail = Tail::new(len);
        tail.apply(&mut buf, 1);
        assert_eq!(buf[len as usize - 1], 0.0);
        assert_eq!(tail.remaining(), 0);
    }
    assert!((fade_gain(8, 9) - 0.0).abs() < f32::EPSILON);
}

#[test]
fn a_pause_ramp_reaches_zero() {
    let mut s = PauseState::RampDown { k: 0 };
    let mut gains = Vec::new();
    for _ in 0..4 {
        let (g, n) = s.step(4);
        gains.push(g);
        s = n;
    }
    assert_eq!(gains, vec![0.75, 0.5, 0.25, 0.0]);
    assert_eq!(s, PauseState::Paused);
}

#[test]
fn a_resume_ramp_reaches_unity() {
    let mut s = PauseState::RampUp { k: 0 };
    let mut gains = Vec::new();
    for _ in 0..4 {
        let (g, n) = s.step(4);
        gains.push(g);
        s = n;
    }
    assert_eq!(gains, vec![0.25, 0.5, 0.75, 1.0]);
    assert_eq!(s, PauseState::Playing);
}

/// A pause and a resume in any order, at any point of a ramp, leave a
/// state that moves: a ramp with frames left, or a steady one. (A
/// resume right after a pause once produced a ramp with none left,
/// and the render loop spun on it.)
#[test]
fn no_pause_or_resume_leaves_an_empty_ramp() {
    for len in [1u32, 2, 5, 240] {
        let mut states = vec![PauseState::Playing, PauseState::Paused];
        states.extend((0..len).map(|k| PauseState::RampDown { k }));
        states.extend((0..len).map(|k| PauseState::RampUp { k }));
        for s in states {
            for next in [s.pause(len), s.resume(len), s.pause(len).resume(len)] {
                assert_ne!(next.ramp_left(len), Some(0), "len {len}: {s:?} -> {next:?}");
            }
        }
    }
}

/// Gain carries over where a ramp reverses.
#[test]
fn a_reversed_ramp_keeps_its_gain() {
    for len in [1u32, 2, 5, 240] {
        for k in 1..len {
            let down = PauseState::RampDown { k };
            let up = down.resume(len);
            let PauseState::RampUp { k: u } = up else {
                panic!("{up:?}")
            };
            assert_eq!(u, len - k);
        }
        assert_eq!(
            PauseState::Playing.pause(len).resume(len),
            PauseState::Playing
        );
    }
}

proptest! {
    #[test]
    fn fade_gain_never_rises(len in 1u64..20_000) {
        let mut buf = vec![1.0f32; len as usize];
        Tail::new(len).apply(&mut buf, 1);
        for w in buf.windows(2) {
            prop_assert!(w[1] <= w[0]);
        }
        prop_assert_eq!(buf[len as usize - 1], 0.0);
    }

    #[test]
    fn tail_in_pieces_matches_the_formula(
        len in 1u64..3000,
        channels in 1usize..4,
        pieces in proptest::collection::vec(1usize..40, 1..200),
    ) {
        let mut buf = vec![1.0f32; len as usize * channels];
        let mut tail = Tail::new(len);
        let mut at = 0;
        for p in pieces.iter().cycle() {
            if at == len as usize {
                break;
            }
            let p = (*p).min(len as usize - at);
            tail.apply(&mut buf[at * channels..(at + p) * channels], channels);
            at += p;
        }
        for (k, frame) in buf.chunks_exact(channels).enumerate() {
            let want = fade_gain(k as u64, len);
            for g in frame {
                prop_assert!((g - want).abs() < 1e-6, "k {} {} vs {}", k, g, want);
            }
        }
        prop_assert_eq!(buf[buf.len() - 1], 0.0);
    }

    #[test]
    fn mix_sources_matches_mixing_through_a_buffer(
        speech_len in 0usize..50,
        speech_split in 0usize..50,
        background_len in 0usize..50,
        background_split in 0usize..50,
        gain in 0.0f32..2.0,
    ) {
        let speech: Vec<f32> = (0..speech_len).map(|i| (i as f32 * 0.7).sin()).collect();
        let background: Vec<f32> =
            (0..background_len).map(|i| (i as f32 * 0.3).cos()).collect();
        let ss = speech_split.min(speech_len);
        let bs = background_split.min(background_len);
        let len = speech_len.max(background_len);
        for sat in [Saturation::Hard, Saturation::Soft] {
            let mut want = vec![0.25f32; len];
            let mut scratch = vec![0.0f32; len];
            scratch[..speech_len].copy_from_slice(&speech);
            for (d, b) in scratch.iter_mut().zip(&background) {
                *d += b * gain;
            }
            sat.add_into(&mut want, &scratch);
            let mut got = vec![0.25f32; len];
            mix_sources(
                &mut got,
                speech.split_at(ss),
                background.split_at(bs),
                gain,
                sat,
            );
            prop_assert_eq!(&got, &want);
        }
    }

    #[test]
    fn saturation_stays_in_range(x in -1000.0f32..1000.0) {
        for s in [Saturation::Hard, Saturation::Soft] {
            prop_assert!((-1.0..=1.0).contains(&s.apply(x)));
        }
    }

    #[test]
    fn saturation_keeps_the_sign(x in -1000.0f32..1000.0) {
        for s in [Saturation::Hard, Saturation::Soft] {
            let y = s.apply(x);
            prop_assert!(y == 0.0 || y.signum() == x.signum());
        }
    }

    #[test]
    fn soft_saturation_leaves_what_is_below_the_knee(x in -KNEE..=KNEE) {
        prop_assert_eq!(Saturation::Soft.apply(x), x);
    }

    #[test]
    fn soft_saturation_is_monotonic(a in -10.0f32..10.0, b in -10.0f32..10.0) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(Saturation::Soft.apply(lo) <= Saturation::Soft.apply(hi));
    }
}
