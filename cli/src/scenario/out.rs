//! Where a render's audio goes as it is made: kept in memory, or written
//! to a WAV file a piece at a time, so a long render of many channels
//! never exists whole in memory (SPEC S1, S5).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::ScenarioError;
use crate::plot::Envelope;

/// The most audio a WAV file can hold: its sizes are 32-bit (less room
/// for the longest header).
pub const MAX_WAV_BYTES: u64 = u32::MAX as u64 - 128;

enum Sink {
    /// Nothing is kept (a render to a sound card).
    Nowhere,
    Memory(Vec<f32>),
    Wav {
        writer: hound::WavWriter<BufWriter<File>>,
        float: bool,
        path: PathBuf,
    },
}

/// One output of a render, written in order: the main mix or a session's
/// own output, cut at its length and padded with silence to it.
pub(super) struct Track {
    sink: Sink,
    /// Samples written so far, and how many the track has.
    written: usize,
    total: usize,
    envelope: Option<Envelope>,
    /// The first write that failed; the rest are skipped.
    error: Option<ScenarioError>,
}

impl Track {
    /// A track that keeps nothing.
    pub(super) fn nowhere() -> Self {
        Self::with(Sink::Nowhere, 0)
    }

    /// A track of `frames` frames of `channels` kept in memory.
    pub(super) fn memory(frames: u64, channels: usize) -> Self {
        let total = frames as usize * channels;
        Self::with(Sink::Memory(Vec::with_capacity(total)), total)
    }

    /// A track written to the WAV file at `path` as it comes, s16 or f32.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`] if it would not fit in a WAV file,
    /// [`ScenarioError::Write`] if the file cannot be created.
    pub(super) fn wav(
        path: &Path,
        frames: u64,
        rate: u32,
        channels: usize,
        float: bool,
    ) -> Result<Self, ScenarioError> {
        let bytes = frames
            .saturating_mul(channels as u64)
            .saturating_mul(if float { 4 } else { 2 });
        if bytes > MAX_WAV_BYTES {
            return Err(ScenarioError::Invalid {
                path: path.display().to_string(),
                place: "duration".into(),
                message: format!(
                    "the output is {} MiB; a WAV file holds at most {} MiB",
                    bytes >> 20,
                    MAX_WAV_BYTES >> 20
                ),
            });
        }
        let spec = hound::WavSpec {
            channels: channels as u16,
            sample_rate: rate,
            bits_per_sample: if float { 32 } else { 16 },
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| io_error(path, e))?;
        Ok(Self::with(
            Sink::Wav {
                writer,
                float,
                path: path.to_path_buf(),
            },
            frames as usize * channels,
        ))
    }

    fn with(sink: Sink, total: usize) -> Self {
        Self {
            sink,
            written: 0,
            total,
            envelope: None,
            error: None,
        }
    }

    /// Also gathers the picture's envelope of the first channel.
    pub(super) fn with_envelope(mut self, frames: u64, channels: usize) -> Self {
        self.envelope = Some(Envelope::new(frames, channels));
        self
    }

    /// Appends `samples`, up to the track's length.
    pub(super) fn write(&mut self, samples: &[f32]) {
        let n = samples.len().min(self.total - self.written);
        let samples = &samples[..n];
        if let Some(e) = &mut self.envelope {
            e.add(samples);
        }
        self.written += n;
        if self.error.is_some() {
            return;
        }
        let failed = match &mut self.sink {
            Sink::Nowhere => None,
            Sink::Memory(v) => {
                v.extend_from_slice(samples);
                None
            }
            Sink::Wav {
                writer,
                float,
                path,
            } => write_wav(writer, samples, *float)
                .err()
                .map(|e| io_error(path, e)),
        };
        self.error = failed;
    }

    /// Writes `samples` that begin at sample `at`: silence up to there,
    /// and nothing of what falls before what is already written.
    pub(super) fn place(&mut self, at: usize, samples: &[f32]) {
        if at > self.written {
            self.silence(at - self.written);
        }
        let skip = self.written.saturating_sub(at).min(samples.len());
        self.write(&samples[skip..]);
    }

    fn silence(&mut self, n: usize) {
        const ZEROS: [f32; 1024] = [0.0; 1024];
        let mut left = n.min(self.total - self.written);
        while left > 0 {
            let k = left.min(ZEROS.len());
            self.write(&ZEROS[..k]);
            left -= k;
        }
    }

    /// Pads the track with silence to its length and closes it; gives its
    /// samples when kept in memory (empty otherwise) and its envelope.
    ///
    /// # Errors
    /// [`ScenarioError::Write`] if a write failed.
    pub(super) fn finish(mut self) -> Result<(Vec<f32>, Option<Envelope>), ScenarioError> {
        self.silence(self.total - self.written);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let envelope = self.envelope.take();
        match self.sink {
            Sink::Nowhere => Ok((Vec::new(), envelope)),
            Sink::Memory(v) => Ok((v, envelope)),
            Sink::Wav { writer, path, .. } => {
                writer.finalize().map_err(|e| io_error(&path, e))?;
                Ok((Vec::new(), envelope))
            }
        }
    }
}

fn write_wav(
    w: &mut hound::WavWriter<BufWriter<File>>,
    samples: &[f32],
    float: bool,
) -> Result<(), hound::Error> {
    for &s in samples {
        if float {
            w.write_sample(s)?;
        } else {
            w.write_sample(sotto_rt::to_s16(s))?;
        }
    }
    Ok(())
}

fn io_error(path: &Path, e: hound::Error) -> ScenarioError {
    ScenarioError::Write {
        path: path.display().to_string(),
        source: match e {
            hound::Error::IoError(e) => e,
            other => std::io::Error::other(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_track_is_exactly_its_length() {
        let mut t = Track::memory(6, 1);
        t.place(2, &[1.0, 2.0]);
        // Overlapping what is written: only the new part is taken.
        t.place(3, &[9.0, 3.0]);
        t.write(&[4.0, 5.0, 6.0]);
        assert_eq!(t.finish().unwrap().0, [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
        let t = Track::memory(3, 2);
        assert_eq!(t.finish().unwrap().0, [0.0; 6]);
    }

    #[test]
    fn a_wav_past_the_format_is_refused() {
        let dir = std::env::temp_dir();
        let e = Track::wav(&dir.join("never.wav"), 1 << 31, 48_000, 2, false).err();
        assert!(e.is_some_and(|e| e.to_string().contains("a WAV file holds at most")));
    }
}
