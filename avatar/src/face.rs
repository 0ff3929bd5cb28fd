//! The built-in renderer: a face whose mouth opens with the voice's level,
//! so lip sync can be checked by eye.

use crate::playout::{AvatarRenderer, VideoFrame};

/// A face drawn in YUV, mouth opening with the audio level (SPEC A6).
#[derive(Debug, Clone)]
pub struct FaceRenderer {
    width: u32,
    height: u32,
    /// Smoothed level, 0..1.
    level: f32,
}

impl FaceRenderer {
    /// A face of `width` × `height` pixels (rounded down to even).
    #[must_use]
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width: (width & !1).max(16),
            height: (height & !1).max(16),
            level: 0.0,
        }
    }

    /// How open the mouth is, 0..1.
    #[must_use]
    pub fn mouth(&self) -> f32 {
        self.level
    }
}

impl Default for FaceRenderer {
    fn default() -> Self {
        Self::new(640, 480)
    }
}

/// Fills the ellipse centred at `(cx, cy)` with radii `(rx, ry)` in a plane
/// `w` wide, with `value`.
fn ellipse(plane: &mut [u8], w: usize, (cx, cy): (f32, f32), (rx, ry): (f32, f32), value: u8) {
    let h = plane.len() / w.max(1);
    let y0 = (cy - ry).max(0.0) as usize;
    let y1 = ((cy + ry) as usize + 1).min(h);
    for y in y0..y1 {
        let dy = (y as f32 + 0.5 - cy) / ry;
        let half = rx * (1.0 - dy * dy).max(0.0).sqrt();
        let x0 = (cx - half).max(0.0) as usize;
        let x1 = ((cx + half) as usize).min(w);
        if x0 < x1 {
            plane[y * w + x0..y * w + x1].fill(value);
        }
    }
}

impl AvatarRenderer for FaceRenderer {
    fn push_audio(&mut self, samples: &[i16], _channels: usize) {
        let n = samples.len().max(1) as f32;
        let rms = (samples
            .iter()
            .map(|&s| (f32::from(s) / 32768.0).powi(2))
            .sum::<f32>()
            / n)
            .sqrt();
        // Opens at once, closes over about 100 ms, and shut at once in
        // silence (below -60 dBFS): the end of a fade closes it within a
        // frame.
        let target = (rms * 6.0).min(1.0);
        self.level = if rms < 1e-3 {
            0.0
        } else if target > self.level {
            target
        } else {
            self.level * 0.8 + target * 0.2
        };
    }

    fn reset(&mut self) {
        self.level = 0.0;
    }

    fn render(&mut self, _pts: u64, frame: &mut VideoFrame) {
        let (w, h) = (self.width as usize, self.height as usize);
        frame.width = self.width;
        frame.height = self.height;
        frame.y.resize(w * h, 0);
        frame.u.resize(w * h / 4, 128);
        frame.v.resize(w * h / 4, 128);
        let (wf, hf) = (w as f32, h as f32);
        frame.y.fill(40);
        frame.u.fill(128);
        frame.v.fill(128);
        // Face, eyes, mouth.
        ellipse(
            &mut frame.y,
            w,
            (wf / 2.0, hf / 2.0),
            (wf * 0.22, hf * 0.38),
            170,
        );
        let (cw, ch) = (w / 2, (wf / 4.0, hf / 4.0));
        ellipse(&mut frame.u, cw, (ch.0, ch.1), (wf * 0.11, hf * 0.19), 110);
        ellipse(&mut frame.v, cw, (ch.0, ch.1), (wf * 0.11, hf * 0.19), 150);
        for side in [-1.0f32, 1.0] {
            let eye = (wf / 2.0 + side * wf * 0.08, hf * 0.4);
            ellipse(&mut frame.y, w, eye, (wf * 0.03, hf * 0.03), 20);
        }
        let open = 2.0 + self.level * hf * 0.08;
        ellipse(
            &mut frame.y,
            w,
            (wf / 2.0, hf * 0.66),
            (wf * 0.08, open),
            25,
        );
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}
