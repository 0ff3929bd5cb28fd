//! Generated audio: the one tone generator the scenarios, the soak run,
//! the tests and the benchmarks share, so a tone means the same samples
//! everywhere.

/// `frames` frames of a sine at `freq` Hz and `rate`, `amplitude` (full
/// scale 1.0) on every one of `channels`.
///
/// The phase is taken from the frame index in f64, so a tone of an hour
/// is as exact at its end as at its start.
#[must_use]
pub fn sine(frames: usize, freq: f64, rate: u32, channels: usize, amplitude: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(frames * channels);
    sine_into(&mut out, 0..frames, freq, rate, channels, amplitude);
    out
}

/// Appends frames `range` of the same sine to `out`: a tone made a piece
/// at a time is the same samples as made whole.
pub fn sine_into(
    out: &mut Vec<f32>,
    range: std::ops::Range<usize>,
    freq: f64,
    rate: u32,
    channels: usize,
    amplitude: f32,
) {
    let rate = f64::from(rate.max(1));
    for i in range {
        let phase = (freq * i as f64 / rate).fract();
        let v = (std::f64::consts::TAU * phase).sin() as f32 * amplitude;
        out.extend(std::iter::repeat_n(v, channels));
    }
}

/// The 16-bit value a sample (−1..1) is stored as: rounded, clamped.
#[must_use]
pub fn quantize(s: f32) -> i16 {
    sotto_rt::to_s16(s)
}

/// Samples as s16 little-endian bytes.
#[must_use]
pub fn s16_bytes(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    extend_s16(&mut out, samples);
    out
}

/// Appends samples to `out` as s16 little-endian bytes.
pub fn extend_s16(out: &mut Vec<u8>, samples: &[f32]) {
    out.extend(samples.iter().flat_map(|&s| quantize(s).to_le_bytes()));
}

/// Samples as f32 little-endian bytes.
#[must_use]
pub fn f32_bytes(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 4);
    extend_f32(&mut out, samples);
    out
}

/// Appends samples to `out` as f32 little-endian bytes.
pub fn extend_f32(out: &mut Vec<u8>, samples: &[f32]) {
    out.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
}

/// `frames` frames of a mono sine as s16 bytes, `amplitude` in s16 units.
#[must_use]
pub fn tone_s16(frames: usize, freq: f32, rate: u32, amplitude: f32) -> Vec<u8> {
    s16_bytes(&sine(frames, f64::from(freq), rate, 1, amplitude / 32768.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_a_sine_on_every_channel() {
        let s = sine(4, 6000.0, 24_000, 2, 0.5);
        let want = [0.0, 0.0, 0.5, 0.5, 0.0, 0.0, -0.5, -0.5];
        for (g, w) in s.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{s:?}");
        }
        assert_eq!(tone_s16(2, 6000.0, 24_000, 16384.0), [0, 0, 0, 64]);
        assert_eq!(quantize(1.0), 32767);
        assert_eq!(quantize(-1.5), -32768);
    }

    #[test]
    fn a_tone_made_in_pieces_is_the_tone_made_whole() {
        let whole = sine(1000, 440.0, 24_000, 2, 0.3);
        let mut pieces = Vec::new();
        for start in (0..1000).step_by(333) {
            sine_into(
                &mut pieces,
                start..(start + 333).min(1000),
                440.0,
                24_000,
                2,
                0.3,
            );
        }
        assert_eq!(whole, pieces);
    }
}
