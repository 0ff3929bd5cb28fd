//! Shared setup for Sotto's benchmarks: generated audio only, from the
//! tone generator the tests and the soak run use.

/// `n` frames of a mono s16 sine at amplitude 8000, as bytes.
#[must_use]
pub fn tone_s16(n: usize, freq: f32, rate: u32) -> Vec<u8> {
    sotto_cli::signal::tone_s16(n, freq, rate, 8000.0)
}
