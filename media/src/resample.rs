//! Resampling between a transport's rate and the engine's (SPEC O1, W2):
//! an FFT resampler whose output does not depend on how its input was
//! chunked, its start-up delay trimmed so output and input line up.
//! Runs wherever its caller runs; it allocates, so never on the audio
//! thread.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

/// Input frames the resampler takes at a time: small, so little is held
/// back before output starts.
const RESAMPLE_CHUNK: usize = 256;

/// Why a resampler could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResampleError(String);

impl std::fmt::Display for ResampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "resampler: {}", self.0)
    }
}

impl std::error::Error for ResampleError {}

/// A fixed-chunk FFT resampler whose output does not depend on how the
/// input was chunked, with its start-up delay trimmed.
pub struct Resampler {
    inner: Fft<f32>,
    channels: usize,
    ratio: f64,
    pending: Vec<f32>,
    out_buf: Vec<f32>,
    delay_left: usize,
    in_frames: u64,
    out_frames: u64,
}

impl Resampler {
    /// A resampler of `channels` interleaved from `in_rate` to `out_rate`.
    ///
    /// # Errors
    /// [`ResampleError`] when the rates are out of the resampler's range.
    pub fn new(in_rate: u32, out_rate: u32, channels: usize) -> Result<Self, ResampleError> {
        let inner = Fft::<f32>::new(
            in_rate as usize,
            out_rate as usize,
            RESAMPLE_CHUNK,
            channels,
            FixedSync::Input,
        )
        .map_err(|e| ResampleError(e.to_string()))?;
        let out_buf = vec![0.0; inner.output_frames_max() * channels];
        let delay_left = inner.output_delay();
        Ok(Self {
            inner,
            channels,
            ratio: f64::from(out_rate) / f64::from(in_rate),
            pending: Vec::new(),
            out_buf,
            delay_left,
            in_frames: 0,
            out_frames: 0,
        })
    }

    /// Resamples `frames` (interleaved) and appends whole output frames to `out`.
    pub fn push(&mut self, frames: &[f32], out: &mut Vec<f32>) {
        self.pending.extend_from_slice(frames);
        self.in_frames += (frames.len() / self.channels) as u64;
        let chunk = RESAMPLE_CHUNK * self.channels;
        let mut start = 0;
        while self.pending.len() - start >= chunk {
            self.run(start, None, out, u64::MAX);
            start += chunk;
        }
        self.pending.drain(..start);
    }

    /// Ends the stream: emits what is held, then starts afresh.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        let expected = (self.in_frames as f64 * self.ratio).round() as u64;
        let mut partial = self.pending.len() / self.channels;
        // Feed silence until the delayed output has caught up with the input.
        let mut guard = 0;
        while self.out_frames < expected && guard < 64 {
            self.pending.resize(RESAMPLE_CHUNK * self.channels, 0.0);
            self.run(0, Some(partial), out, expected);
            partial = 0;
            guard += 1;
        }
        self.reset();
    }

    /// Output frames owed for the input so far and not yet emitted.
    pub fn held_frames(&self) -> u64 {
        let expected = (self.in_frames as f64 * self.ratio).round() as u64;
        expected.saturating_sub(self.out_frames)
    }

    /// Discards everything held.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.pending.clear();
        self.delay_left = self.inner.output_delay();
        self.in_frames = 0;
        self.out_frames = 0;
    }

    /// Resamples one chunk starting at `start`; appends at most `limit` total output frames.
    fn run(&mut self, start: usize, partial: Option<usize>, out: &mut Vec<f32>, limit: u64) {
        let ch = self.channels;
        let input = &self.pending[start..start + RESAMPLE_CHUNK * ch];
        let Ok(adapter_in) = InterleavedSlice::new(input, ch, RESAMPLE_CHUNK) else {
            return;
        };
        let out_max = self.out_buf.len() / ch;
        let Ok(mut adapter_out) = InterleavedSlice::new_mut(&mut self.out_buf, ch, out_max) else {
            return;
        };
        let indexing = Indexing {
            partial_len: partial,
            ..Indexing::default()
        };
        let Ok((_, produced)) =
            self.inner
                .process_into_buffer(&adapter_in, &mut adapter_out, Some(&indexing))
        else {
            return;
        };
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        let avail = (produced - skip) as u64;
        let keep = avail.min(limit.saturating_sub(self.out_frames)) as usize;
        out.extend_from_slice(&self.out_buf[skip * ch..(skip + keep) * ch]);
        self.out_frames += keep as u64;
    }
}
