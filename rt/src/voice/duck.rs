//! Ducking (SPEC O11, beyond): the background's gain drops under speech
//! through ramps switched at the exact samples speaking starts and stops.

use super::*;

/// Background ducking under speech (SPEC O11, beyond).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DuckConfig {
    /// Background gain while the voice speaks (linear, e.g. 0.25 for −12 dB).
    pub gain: f32,
    /// Length of the ramp from unity down to `gain`, in frames.
    pub down_frames: u32,
    /// Length of the ramp from `gain` back up to unity, in frames.
    pub up_frames: u32,
}

impl DuckConfig {
    /// Gain change per frame of the ramp towards `target` from `from`.
    fn step(&self, from: f32, target: f32) -> f32 {
        let frames = if target < from {
            self.down_frames
        } else {
            self.up_frames
        };
        (1.0 - self.gain).abs() / frames.max(1) as f32
    }
}

impl Voice {
    /// The background gain the duck is heading for.
    pub(super) fn duck_target(&self) -> f32 {
        match self.duck {
            Some(duck) if self.speaking => duck.gain,
            _ => 1.0,
        }
    }

    /// Points the duck at the gain the speaking state calls for.
    pub(super) fn retarget_duck(&mut self) {
        let target = self.duck_target();
        if target != self.duck_gain.target() {
            let from = self.duck_gain.value();
            let step = self.duck.map_or(1.0, |d| d.step(from, target));
            self.duck_gain.head_at(target, step);
        }
    }
}
