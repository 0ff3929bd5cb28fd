//! Helpers shared by the end-to-end tests: generated audio and event capture.

use sotto::{SessionEvent, SessionEventKind};
use tokio::sync::mpsc::UnboundedReceiver;

/// `n` frames of a mono s16 sine at `freq` Hz and `rate`, amplitude in s16 units.
#[must_use]
pub fn tone_s16(n: usize, freq: f32, rate: u32, amplitude: f32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let v = (std::f32::consts::TAU * freq * i as f32 / rate as f32).sin() * amplitude;
            (v.round() as i16).to_le_bytes()
        })
        .collect()
}

/// `n` frames of a constant mono s16 value.
#[must_use]
pub fn dc_s16(n: usize, value: i16) -> Vec<u8> {
    (0..n).flat_map(|_| value.to_le_bytes()).collect()
}

/// Every event received so far.
pub fn drain(rx: &mut UnboundedReceiver<SessionEvent>) -> Vec<SessionEvent> {
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
