//! Gain shapes and saturation. Runs on the audio thread.

/// Gains below this are snapped to exactly zero (−120 dB).
const MINUS_INFINITY_GAIN: f64 = 1e-6;

/// Gain of frame `k` of a fade tail `len` frames long (SPEC O5).
///
/// `10^(-3·t)` with `t = k / (len - 1)`, so the curve runs from 0 dB to
/// −60 dB across the tail's own length, and the last frame is exactly 0.
#[must_use]
pub fn fade_gain(k: u64, len: u64) -> f32 {
    if len == 0 || k + 1 >= len {
        return 0.0;
    }
    let t = k as f64 / (len - 1) as f64;
    10f64.powf(-3.0 * t) as f32
}

/// A fade tail in progress: the O5 curve, advanced by one multiply a frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail {
    /// Frames of the tail.
    pub len: u64,
    /// Frames already played.
    pub pos: u64,
    gain: f64,
    ratio: f64,
}

impl Tail {
    pub fn new(len: u64) -> Self {
        let ratio = if len > 1 {
            10f64.powf(-3.0 / (len - 1) as f64)
        } else {
            0.0
        };
        Self {
            len,
            pos: 0,
            gain: 1.0,
            ratio,
        }
    }

    pub fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    /// Applies the next `frames` gains to interleaved `buf`.
    pub fn apply(&mut self, buf: &mut [f32], channels: usize) {
        for frame in buf.chunks_exact_mut(channels) {
            let g = if self.pos + 1 >= self.len {
                0.0
            } else {
                self.gain as f32
            };
            for s in frame {
                *s *= g;
            }
            self.pos += 1;
            self.gain *= self.ratio;
        }
    }
}

/// The short declicking ramp of pause/resume (SPEC O6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseState {
    /// Playing at unity gain.
    Playing,
    /// Ramping down; `k` frames of `len` done.
    RampDown { k: u32 },
    /// Frozen: no frames taken from the ring.
    Paused,
    /// Ramping up; `k` frames of `len` done.
    RampUp { k: u32 },
}

impl PauseState {
    /// Gain of the next frame and the state after it, for a ramp of `len` frames.
    pub fn step(self, len: u32) -> (f32, Self) {
        let len = len.max(1);
        match self {
            Self::Playing => (1.0, Self::Playing),
            Self::Paused => (0.0, Self::Paused),
            Self::RampDown { k } => {
                let k = k + 1;
                let g = 1.0 - k as f32 / len as f32;
                if k >= len {
                    (0.0, Self::Paused)
                } else {
                    (g, Self::RampDown { k })
                }
            }
            Self::RampUp { k } => {
                let k = k + 1;
                let g = k as f32 / len as f32;
                if k >= len {
                    (1.0, Self::Playing)
                } else {
                    (g, Self::RampUp { k })
                }
            }
        }
    }

    /// Frames left in a ramp, or `None` when steady.
    pub fn ramp_left(self, len: u32) -> Option<u32> {
        match self {
            Self::RampDown { k } | Self::RampUp { k } => Some(len.max(1).saturating_sub(k)),
            _ => None,
        }
    }
}

/// How a sum is kept inside full scale (SPEC O11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Saturation {
    /// Clip at ±1.0.
    #[default]
    Hard,
    /// Pass up to −1.9 dBFS unchanged, then bend smoothly towards ±1.0.
    Soft,
}

/// Where the soft knee starts.
const KNEE: f32 = 0.8;

impl Saturation {
    /// Keeps `x` inside [-1, 1].
    #[inline]
    #[must_use]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Hard => x.clamp(-1.0, 1.0),
            Self::Soft => {
                let a = x.abs();
                if a <= KNEE {
                    x
                } else {
                    // A rational curve with slope 1 at the knee and asymptote 1.0;
                    // cheaper than tanh and without a kink.
                    let over = (a - KNEE) / (1.0 - KNEE);
                    let bent = KNEE + (1.0 - KNEE) * over / (1.0 + over);
                    bent.copysign(x)
                }
            }
        }
    }

    /// Applies [`Saturation::apply`] to every sample and returns the peak
    /// absolute value of the result, in the same pass.
    #[inline]
    pub fn apply_all(self, buf: &mut [f32]) -> f32 {
        let mut peak = 0.0f32;
        for s in buf {
            *s = self.apply(*s);
            peak = peak.max(s.abs());
        }
        peak
    }
}

/// Snaps a gain that is inaudibly small to exactly zero.
#[must_use]
pub(crate) fn snap(g: f32) -> f32 {
    if f64::from(g.abs()) < MINUS_INFINITY_GAIN {
        0.0
    } else {
        g
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_macros)] // tests are not on the audio thread
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fade_curve_matches_formula_and_ends_at_zero() {
        for len in [1u64, 2, 3, 17, 480, 9600] {
            let mut buf = vec![1.0f32; len as usize];
            let mut tail = Tail::new(len);
            tail.apply(&mut buf, 1);
            for (k, g) in buf.iter().enumerate() {
                let want = fade_gain(k as u64, len);
                assert!((g - want).abs() < 1e-6, "len {len} k {k}: {g} vs {want}");
            }
            assert_eq!(buf[len as usize - 1], 0.0);
            assert_eq!(tail.remaining(), 0);
        }
        assert_eq!(fade_gain(0, 10), 1.0);
        assert!((fade_gain(8, 9) - 0.0).abs() < f32::EPSILON);
        assert!((fade_gain(7, 9) - 10f32.powf(-3.0 * 7.0 / 8.0)).abs() < 1e-7);
    }

    #[test]
    fn pause_ramps_reach_zero_and_unity() {
        let mut s = PauseState::RampDown { k: 0 };
        let mut gains = Vec::new();
        for _ in 0..4 {
            let (g, n) = s.step(4);
            gains.push(g);
            s = n;
        }
        assert_eq!(gains, vec![0.75, 0.5, 0.25, 0.0]);
        assert_eq!(s, PauseState::Paused);
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
        fn saturation_stays_in_range_and_keeps_sign(x in -1000.0f32..1000.0) {
            for s in [Saturation::Hard, Saturation::Soft] {
                let y = s.apply(x);
                prop_assert!((-1.0..=1.0).contains(&y));
                prop_assert!(y == 0.0 || y.signum() == x.signum());
            }
            if x.abs() <= KNEE {
                prop_assert_eq!(Saturation::Soft.apply(x), x);
            }
        }

        #[test]
        fn soft_saturation_is_monotonic(a in -10.0f32..10.0, b in -10.0f32..10.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(Saturation::Soft.apply(lo) <= Saturation::Soft.apply(hi));
        }
    }
}
