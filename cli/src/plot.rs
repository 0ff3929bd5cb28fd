//! The waveform picture of a render, with its events marked.

use std::path::Path;

use plotters::prelude::*;

use crate::scenario::Rendered;

const WIDTH: u32 = 1600;
const HEIGHT: u32 = 520;
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn color_of(event: &str) -> RGBColor {
    match event {
        "first_audio" => RGBColor(0, 150, 0),
        "last_audio" => RGBColor(0, 90, 200),
        "interrupted" => RGBColor(220, 0, 0),
        "fade_done" => RGBColor(240, 120, 0),
        "paused" | "resumed" => RGBColor(150, 0, 170),
        "stopped_speaking" => RGBColor(0, 160, 160),
        "underrun" | "error" | "dropped_input" => RGBColor(0, 0, 0),
        _ => RGBColor(120, 120, 120),
    }
}

/// The first channel's envelope as the picture draws it: the lowest and
/// highest sample of each pixel column, gathered as the render goes so the
/// picture needs none of the samples kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `(low, high)` of each column; `low > high` where no frame fell.
    pub columns: Vec<(f32, f32)>,
    frames_per_column: f64,
    channels: usize,
    /// Frames seen so far, and how many the render has.
    seen: u64,
    total: u64,
}

impl Envelope {
    /// An envelope for a render of `total` frames of `channels`.
    #[must_use]
    pub fn new(total: u64, channels: usize) -> Self {
        Self {
            // A column no frame falls in stays low above high.
            columns: vec![(f32::INFINITY, f32::NEG_INFINITY); WIDTH as usize],
            frames_per_column: (total as f64 / f64::from(WIDTH)).max(1.0),
            channels: channels.max(1),
            seen: 0,
            total,
        }
    }

    /// Takes the next interleaved samples of the render.
    pub fn add(&mut self, samples: &[f32]) {
        for frame in samples.chunks_exact(self.channels) {
            if self.seen >= self.total {
                return;
            }
            let x = ((self.seen as f64 / self.frames_per_column) as usize).min(WIDTH as usize - 1);
            let (lo, hi) = &mut self.columns[x];
            // The line always reaches the middle, as a silent column's does.
            *lo = lo.min(frame[0]).min(0.0);
            *hi = hi.max(frame[0]).max(0.0);
            self.seen += 1;
        }
    }
}

/// Draws the first channel's envelope and a line per event to a PNG.
/// Labels are drawn when a DejaVu font is installed.
///
/// # Errors
/// A message if the picture cannot be written.
pub fn plot(r: &Rendered, path: &Path) -> Result<(), String> {
    let labels = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .is_some_and(|bytes| {
            let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok()
        });
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let frames = r.frames;
    let secs = frames as f64 / f64::from(r.sample_rate);
    let (top, bottom) = if labels { (40i32, 30i32) } else { (10, 10) };
    let plot_h = HEIGHT as i32 - top - bottom;
    let mid = top + plot_h / 2;
    let x_of = |frame: u64| -> i32 {
        if frames == 0 {
            0
        } else {
            (frame as f64 / frames as f64 * f64::from(WIDTH - 1)) as i32
        }
    };
    for (x, &(lo, hi)) in r.envelope.columns.iter().enumerate() {
        if lo > hi {
            continue;
        }
        let y0 = mid - (hi * plot_h as f32 / 2.0) as i32;
        let y1 = mid - (lo * plot_h as f32 / 2.0) as i32;
        root.draw(&PathElement::new(
            vec![(x as i32, y0), (x as i32, y1.max(y0 + 1))],
            RGBColor(60, 60, 60),
        ))
        .map_err(|e| err(&e))?;
    }
    root.draw(&PathElement::new(
        vec![(0, mid), (WIDTH as i32, mid)],
        RGBColor(200, 200, 200),
    ))
    .map_err(|e| err(&e))?;
    for (i, e) in r.events.iter().enumerate() {
        let x = x_of(e.sample);
        let c = color_of(&e.event);
        root.draw(&PathElement::new(
            vec![(x, top), (x, top + plot_h)],
            c.stroke_width(2),
        ))
        .map_err(|er| err(&er))?;
        if labels {
            let y = 4 + (i as i32 % 3) * 12;
            let style = ("sans-serif", 12).into_font().color(&c);
            let text = format!("{}:{}", e.session, e.event);
            // Near the right edge the label goes to the left of its line.
            let width = style.font.box_size(&text).map_or(0, |(w, _)| w as i32);
            let lx = if x + 2 + width > WIDTH as i32 {
                x - 2 - width
            } else {
                x + 2
            };
            root.draw(&Text::new(text, (lx, y), style))
                .map_err(|er| err(&er))?;
        }
    }
    if labels {
        let style = ("sans-serif", 13).into_font().color(&BLACK);
        for k in 0..=(secs.ceil() as u64) {
            let x = x_of(k * u64::from(r.sample_rate));
            root.draw(&Text::new(
                format!("{k}s"),
                (x + 2, HEIGHT as i32 - 20),
                style.clone(),
            ))
            .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
