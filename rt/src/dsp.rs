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

/// Frames whose gains a [`Tail`] computes side by side.
const LANES: usize = 8;

/// A fade tail in progress: the O5 curve as a geometric sequence.
///
/// Eight independent recurrences, each stepping eight frames at a time,
/// replace one serial chain of multiplies, so the gains of a block are
/// computed in parallel instead of one multiply latency per frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail {
    /// Frames of the tail.
    pub len: u64,
    /// Frames already played.
    pub pos: u64,
    /// `lanes[j]` is the gain of frame `pos + j`.
    lanes: [f64; LANES],
    /// `ratio^LANES`: one step of every lane.
    stride: f64,
}

impl Tail {
    pub fn new(len: u64) -> Self {
        let ratio = if len > 1 {
            10f64.powf(-3.0 / (len - 1) as f64)
        } else {
            0.0
        };
        let mut lanes = [0.0; LANES];
        let mut g = 1.0;
        for lane in &mut lanes {
            *lane = g;
            g *= ratio;
        }
        Self {
            len,
            pos: 0,
            lanes,
            stride: g,
        }
    }

    /// A tail at unity gain but for its last frame: the pause ramp it
    /// plays under does the fading (SPEC O5, an interrupt while pausing).
    pub fn flat(len: u64) -> Self {
        Self {
            len,
            pos: 0,
            lanes: [1.0; LANES],
            stride: 1.0,
        }
    }

    pub fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    /// Ends the tail at most `frames` from here.
    pub fn cut_to(&mut self, frames: u64) {
        self.len = self.pos + self.remaining().min(frames);
    }

    /// Applies the next `buf.len() / channels` gains to interleaved `buf`.
    pub fn apply(&mut self, buf: &mut [f32], channels: usize) {
        let frames = buf.len() / channels;
        let mut chunks = buf.chunks_exact_mut(LANES * channels);
        for chunk in &mut chunks {
            let gains = self.lanes.map(|g| g as f32);
            if channels == 1 {
                for (s, g) in chunk.iter_mut().zip(gains) {
                    *s *= g;
                }
            } else {
                for (frame, g) in chunk.chunks_exact_mut(channels).zip(gains) {
                    frame.iter_mut().for_each(|s| *s *= g);
                }
            }
            for lane in &mut self.lanes {
                *lane *= self.stride;
            }
        }
        let rest = chunks.into_remainder();
        let m = rest.len() / channels;
        if m > 0 {
            for (frame, g) in rest.chunks_exact_mut(channels).zip(self.lanes) {
                let g = g as f32;
                frame.iter_mut().for_each(|s| *s *= g);
            }
            // Lanes `m..` move to the front; the consumed ones step once and
            // wrap round behind them.
            self.lanes.rotate_left(m);
            for lane in &mut self.lanes[LANES - m..] {
                *lane *= self.stride;
            }
        }
        let before = self.pos;
        self.pos += frames as u64;
        // The curve ends on an exact zero, whatever the rounding before it.
        if self.pos >= self.len && self.len > before {
            let last = (self.len - 1 - before) as usize;
            buf[last * channels..(last + 1) * channels].fill(0.0);
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

    /// The state after a pause request: a ramp down from the current gain
    /// (a ramp up reverses where it is; one that has not started is
    /// already silent).
    pub fn pause(self, len: u32) -> Self {
        let len = len.max(1);
        match self {
            Self::Playing => Self::RampDown { k: 0 },
            // Gain k/len going up is gain 1 - (len-k)/len going down.
            Self::RampUp { k: 0 } => Self::Paused,
            Self::RampUp { k } => Self::RampDown {
                k: len.saturating_sub(k),
            },
            other => other,
        }
    }

    /// The state after a resume request, mirroring [`PauseState::pause`]:
    /// a pause that has not started ramping is simply undone.
    pub fn resume(self, len: u32) -> Self {
        let len = len.max(1);
        match self {
            Self::Paused => Self::RampUp { k: 0 },
            Self::RampDown { k: 0 } => Self::Playing,
            Self::RampDown { k } => Self::RampUp {
                k: len.saturating_sub(k),
            },
            other => other,
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

/// The 16-bit value a sample (full scale ±1) is stored as: rounded to the
/// nearest step and clamped; the inverse of 16-bit ingest (`x / 32768`).
/// The one conversion the engine, its sinks and its tools write s16 with.
#[must_use]
pub fn to_s16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// How a mix is kept inside full scale (SPEC O11): pick it per output.
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
    pub fn apply_all(self, buf: &mut [f32]) -> f32 {
        // One loop per curve so each one vectorises without a branch inside.
        match self {
            Self::Hard => saturate_with_peak(buf, |x| x.clamp(-1.0, 1.0)),
            Self::Soft => saturate_with_peak(buf, |x| Self::Soft.apply(x)),
        }
    }

    /// Adds `src`, kept inside full scale, into `out`.
    pub fn add_into(self, out: &mut [f32], src: &[f32]) {
        match self {
            Self::Hard => {
                for (o, s) in out.iter_mut().zip(src) {
                    *o += s.clamp(-1.0, 1.0);
                }
            }
            Self::Soft => {
                for (o, s) in out.iter_mut().zip(src) {
                    *o += Self::Soft.apply(*s);
                }
            }
        }
    }
}

/// `out += saturate(speech + gain * background)`, where each input is a
/// ring's two slices and may be shorter than `out` (missing samples count
/// as silence, and `out` is only as long as the longer input).
pub(crate) fn mix_sources(
    out: &mut [f32],
    speech: (&[f32], &[f32]),
    background: (&[f32], &[f32]),
    gain: f32,
    saturation: Saturation,
) {
    match saturation {
        Saturation::Hard => mix_with(out, speech, background, gain, |x| x.clamp(-1.0, 1.0)),
        Saturation::Soft => mix_with(out, speech, background, gain, |x| Saturation::Soft.apply(x)),
    }
}

#[inline]
fn mix_with(
    out: &mut [f32],
    speech: (&[f32], &[f32]),
    background: (&[f32], &[f32]),
    gain: f32,
    curve: impl Fn(f32) -> f32,
) {
    /// What is left of a split ring slice from `pos` up to its next split.
    fn rest<'a>((a, b): (&'a [f32], &'a [f32]), pos: usize) -> &'a [f32] {
        match a.get(pos..) {
            Some(r) if !r.is_empty() => r,
            _ => b.get(pos.saturating_sub(a.len())..).unwrap_or(&[]),
        }
    }
    let mut pos = 0;
    while pos < out.len() {
        let (s, b) = (rest(speech, pos), rest(background, pos));
        let o = &mut out[pos..];
        // Each arm runs up to the nearest split, in a loop that vectorises.
        let m = match (s.is_empty(), b.is_empty()) {
            (false, false) => {
                let m = s.len().min(b.len()).min(o.len());
                for ((o, s), b) in o[..m].iter_mut().zip(&s[..m]).zip(&b[..m]) {
                    *o += curve(s + b * gain);
                }
                m
            }
            (false, true) => {
                let m = s.len().min(o.len());
                for (o, s) in o[..m].iter_mut().zip(&s[..m]) {
                    *o += curve(*s);
                }
                m
            }
            (true, false) => {
                let m = b.len().min(o.len());
                for (o, b) in o[..m].iter_mut().zip(&b[..m]) {
                    *o += curve(b * gain);
                }
                m
            }
            (true, true) => break,
        };
        pos += m;
    }
}

/// Maps every sample through `curve`; returns the peak absolute value.
#[inline]
fn saturate_with_peak(buf: &mut [f32], curve: impl Fn(f32) -> f32) -> f32 {
    // Lane-wise peaks, so the loop vectorises instead of waiting on one
    // running maximum.
    let mut peaks = [0.0f32; LANES];
    let mut chunks = buf.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, p) in chunk.iter_mut().zip(&mut peaks) {
            *s = curve(*s);
            let a = s.abs();
            *p = if a > *p { a } else { *p };
        }
    }
    for s in chunks.into_remainder() {
        *s = curve(*s);
        peaks[0] = peaks[0].max(s.abs());
    }
    peaks.iter().fold(0.0f32, |m, &p| m.max(p))
}

/// A gain moving linearly towards a target at a fixed slope, a frame at a
/// time, so that no gain change is ever a step (no zipper noise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ramp {
    value: f32,
    target: f32,
    step: f32,
}

impl Ramp {
    /// A ramp resting at `value`.
    pub fn new(value: f32) -> Self {
        Self {
            value,
            target: value,
            step: 0.0,
        }
    }

    /// Heads for `target`, covering the current distance in `frames` frames.
    pub fn head(&mut self, target: f32, frames: u32) {
        self.step = (target - self.value).abs() / frames.max(1) as f32;
        self.target = target;
    }

    /// Heads for `target` at `step` per frame.
    pub fn head_at(&mut self, target: f32, step: f32) {
        self.step = step;
        self.target = target;
    }

    /// The current gain.
    pub fn value(&self) -> f32 {
        self.value
    }

    /// Where the ramp is heading.
    pub fn target(&self) -> f32 {
        self.target
    }

    /// Whether the gain has reached its target.
    pub fn steady(&self) -> bool {
        self.value == self.target
    }

    /// Steps one frame; returns the gain of that frame.
    #[inline]
    pub fn next(&mut self) -> f32 {
        self.value = approach(self.value, self.target, self.step);
        self.value
    }

    /// Steps `frames` frames at once.
    pub fn skip(&mut self, frames: usize) {
        self.value = snap(approach(self.value, self.target, self.step * frames as f32));
    }

    /// Ends a run of [`Ramp::next`] calls: inaudible gains become exactly 0.
    pub fn settle(&mut self) {
        self.value = snap(self.value);
    }
}

/// Moves `from` towards `to` by at most `step`.
#[inline]
pub(crate) fn approach(from: f32, to: f32, step: f32) -> f32 {
    if from < to {
        (from + step).min(to)
    } else {
        (from - step).max(to)
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
mod tests;
