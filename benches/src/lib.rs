//! Shared setup for Sotto's benchmarks: generated audio only.

/// `n` frames of a mono s16 sine, as bytes.
#[must_use]
pub fn tone_s16(n: usize, freq: f32, rate: u32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let v = (std::f32::consts::TAU * freq * i as f32 / rate as f32).sin() * 8000.0;
            (v as i16).to_le_bytes()
        })
        .collect()
}
