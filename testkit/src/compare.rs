//! Finding one recording inside another after a codec and a network:
//! where it is, how alike, how loud.

/// Where `b` holds `a`'s stretch from `a_at`, `len` samples long (48 kHz).
#[derive(Debug, Clone)]
pub struct Alignment {
    /// The pieces' normalised cross-correlations, weighted by their energy.
    pub correlation: f64,
    /// `b`'s level against `a`'s over the stretch, in dB.
    pub level_db: f32,
    /// Where in `b` each 100 ms piece puts `a_at`, in samples.
    pub lags: Vec<usize>,
    /// Each piece's normalised cross-correlation.
    pub pieces: Vec<f64>,
}

impl Alignment {
    /// How far the lag moved from the first piece to the last, in samples.
    #[must_use]
    pub fn drift(&self) -> i64 {
        match (self.lags.first(), self.lags.last()) {
            (Some(&a), Some(&b)) => b as i64 - a as i64,
            _ => 0,
        }
    }
}

/// The lag is found on the signals' envelopes (1 ms steps, anywhere in
/// `b`), then 100 ms at a time, each piece found sample by sample within
/// 5 ms of where the one before it was: a receiver's jitter buffer may
/// stretch or squeeze the audio between packets, which a single lag over
/// seconds would count against the waveform, while each piece is still
/// compared sample for sample.
///
/// # Panics
/// When `a` is shorter than `a_at + len`.
#[must_use]
pub fn align(a: &[f32], a_at: usize, b: &[f32], len: usize) -> Alignment {
    let env = |s: &[f32]| -> Vec<f32> {
        s.chunks(48)
            .map(|c| c.iter().map(|v| v.abs()).sum::<f32>() / c.len() as f32)
            .collect()
    };
    let (ea, eb) = (env(a), env(b));
    let (at, n) = (a_at / 48, len / 48);
    let mut coarse = (f64::MIN, 0usize);
    for lag in 0..eb.len().saturating_sub(n) {
        let c = ncc(&ea[at..at + n], &eb[lag..lag + n]);
        if c > coarse.0 {
            coarse = (c, lag * 48);
        }
    }
    let energy = |s: &[f32]| s.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
    let (piece, reach) = (4_800, 240);
    let mut lag = coarse.1;
    let (mut weighted, mut weights, mut heard, mut said) = (0.0, 0.0, 0.0, 0.0);
    let (mut lags, mut pieces) = (Vec::new(), Vec::new());
    for k in 0..len / piece {
        let x = &a[a_at + k * piece..a_at + (k + 1) * piece];
        let mut found = (f64::MIN, lag);
        for l in lag.saturating_sub(reach)..lag + reach {
            if l + (k + 1) * piece > b.len() {
                break;
            }
            let c = ncc(x, &b[l + k * piece..l + (k + 1) * piece]);
            if c > found.0 {
                found = (c, l);
            }
        }
        lag = found.1;
        let w = energy(x);
        weighted += found.0 * w;
        weights += w;
        said += w;
        heard += energy(&b[(lag + k * piece).min(b.len())..(lag + (k + 1) * piece).min(b.len())]);
        lags.push(lag);
        pieces.push(found.0);
    }
    Alignment {
        correlation: weighted / weights.max(1e-12),
        level_db: (10.0 * (heard / said.max(1e-12)).log10()) as f32,
        lags,
        pieces,
    }
}

/// Normalised cross-correlation of two equal stretches.
#[must_use]
pub fn ncc(x: &[f32], y: &[f32]) -> f64 {
    let xy: f64 = x
        .iter()
        .zip(y)
        .map(|(p, q)| f64::from(*p) * f64::from(*q))
        .sum();
    let xx: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum();
    let yy: f64 = y.iter().map(|q| f64::from(*q).powi(2)).sum();
    xy / (xx * yy).sqrt().max(1e-12)
}

/// Power of `samples` at `freq` Hz (Goertzel), normalised to a full-scale
/// sine's 0.5.
#[must_use]
pub fn tone_power(samples: &[f32], freq: f64, rate: u32) -> f64 {
    let w = std::f64::consts::TAU * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = samples.len().max(1) as f64;
    2.0 * power / (n * n)
}

/// Pearson correlation of `x` and `y` (over the shorter).
#[must_use]
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt().max(1e-12)
}
