//! Tee sinks (SPEC O12): every accepted chunk of a session's speech is
//! handed to its sinks as it is ingested. Runs in the session actor.

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

// A sink gives up with an `io::Error` (it is a writer of audio); the
// session detaches it and plays on.
type SinkError = std::io::Error;

/// Implement it to receive a session's speech as the engine takes it in
/// (a recorder, a transcriber, a transport of your own), and attach it
/// with `SessionHandle::add_sink`.
pub trait AudioSink: Send + 'static {
    /// A short name for events and traces.
    fn name(&self) -> &str;

    /// True if this sink publishes the voice itself (an avatar link): the
    /// session's direct output is silent while one is attached.
    fn publishes_voice(&self) -> bool {
        false
    }

    /// Takes one chunk of interleaved f32 frames at the output format.
    ///
    /// # Errors
    /// Any error detaches the sink; the session plays on.
    fn write(&mut self, frames: &[f32], sample_rate: u32, channels: usize)
        -> Result<(), SinkError>;

    /// The turn was interrupted: drop what is buffered. A sink that plays
    /// the voice itself (an avatar) fades the first `fade_frames` of what
    /// it holds as the session fades its own queue, and drops the rest
    /// (SPEC O5, C7).
    fn interrupt(&mut self, fade_frames: u64) {
        let _ = fade_frames;
    }

    /// The synthesis of the turn is complete.
    fn segment_end(&mut self) {}

    /// Called once, last: the sink was taken off, or its session is closing
    /// (removed, or the engine shutting down). Write out what is buffered
    /// and close, so nothing is left half-written.
    ///
    /// # Errors
    /// An error is logged, and reported as an event while the
    /// session still has listeners.
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

impl fmt::Debug for dyn AudioSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioSink")
            .field("name", &self.name())
            .finish()
    }
}

/// A sink that keeps everything in memory, shared with whoever holds a clone.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    name: String,
    publishes_voice: bool,
    inner: std::sync::Arc<std::sync::Mutex<RecorderLog>>,
}

/// What a [`Recorder`] saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecorderLog {
    /// Every frame written.
    pub frames: Vec<f32>,
    /// Interrupts seen.
    pub interrupts: usize,
    /// Segment ends seen.
    pub segment_ends: usize,
    /// Times the sink was finished (once, when it is taken off or its
    /// session closes).
    pub finished: usize,
}

impl Recorder {
    /// A recorder named `name`; `publishes_voice` makes it act as an avatar link.
    #[must_use]
    pub fn new(name: &str, publishes_voice: bool) -> Self {
        Self {
            name: name.to_owned(),
            publishes_voice,
            inner: Default::default(),
        }
    }

    /// A copy of what was recorded.
    #[must_use]
    pub fn log(&self) -> RecorderLog {
        self.inner.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[doc(hidden)]
impl AudioSink for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn publishes_voice(&self) -> bool {
        self.publishes_voice
    }

    fn write(&mut self, frames: &[f32], _: u32, _: usize) -> Result<(), SinkError> {
        let mut log = self
            .inner
            .lock()
            .map_err(|_| SinkError::other("recorder poisoned"))?;
        log.frames.extend_from_slice(frames);
        Ok(())
    }

    fn interrupt(&mut self, _: u64) {
        if let Ok(mut log) = self.inner.lock() {
            log.interrupts += 1;
        }
    }

    fn segment_end(&mut self) {
        if let Ok(mut log) = self.inner.lock() {
            log.segment_ends += 1;
        }
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        let mut log = self
            .inner
            .lock()
            .map_err(|_| SinkError::other("recorder poisoned"))?;
        log.finished += 1;
        Ok(())
    }
}

/// A sink recording a session's speech to a 16-bit PCM WAV file at the
/// engine's output format. The file is complete (its header says how much
/// audio follows) once the sink is finished: when it is taken off, or its
/// session is removed or the engine shuts down.
pub struct WavSink {
    name: String,
    path: PathBuf,
    sample_rate: u32,
    channels: usize,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

impl fmt::Debug for WavSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WavSink")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WavSink {
    /// Creates (or truncates) `path` for audio at `sample_rate` Hz and
    /// `channels` channels: the engine's output format.
    ///
    /// # Errors
    /// An error naming the path when the file cannot be created or the
    /// format cannot be written.
    pub fn create(path: &Path, sample_rate: u32, channels: usize) -> Result<Self, SinkError> {
        let spec = hound::WavSpec {
            channels: u16::try_from(channels)
                .ok()
                .filter(|&c| c > 0)
                .ok_or_else(|| {
                    SinkError::other(format!("{channels} channels cannot be written"))
                })?,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec)
            .map_err(|e| SinkError::other(format!("{}: {e}", path.display())))?;
        Ok(Self {
            name: format!("wav:{}", path.display()),
            path: path.to_owned(),
            sample_rate,
            channels,
            writer: Some(writer),
        })
    }

    /// The file being written.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[doc(hidden)]
impl AudioSink for WavSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(
        &mut self,
        frames: &[f32],
        sample_rate: u32,
        channels: usize,
    ) -> Result<(), SinkError> {
        if (sample_rate, channels) != (self.sample_rate, self.channels) {
            return Err(SinkError::other(format!(
                "{}: made for {} Hz x{}, given {sample_rate} Hz x{channels}",
                self.path.display(),
                self.sample_rate,
                self.channels
            )));
        }
        let writer = self.writer.as_mut().ok_or_else(|| {
            SinkError::other(format!("{}: already finished", self.path.display()))
        })?;
        for &v in frames {
            // The inverse of 16-bit ingest (x / 32768), so 16-bit input at
            // the output rate is written back bit for bit.
            let q = sotto_rt::to_s16(v);
            writer
                .write_sample(q)
                .map_err(|e| SinkError::other(format!("{}: {e}", self.path.display())))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        match self.writer.take() {
            Some(w) => w
                .finalize()
                .map_err(|e| SinkError::other(format!("{}: {e}", self.path.display()))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AudioSink, WavSink};

    #[test]
    fn a_wav_sink_writes_sixteen_bit_input_back_exactly_and_refuses_misuse() {
        let dir = std::env::temp_dir().join(format!("sotto-wavsink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tee.wav");
        let missing = dir.join("no/such/dir.wav");
        let err = WavSink::create(&missing, 24_000, 1).unwrap_err();
        assert!(err.to_string().contains("no/such/dir.wav"), "{err}");
        assert!(WavSink::create(&path, 24_000, 0).is_err());

        let mut sink = WavSink::create(&path, 24_000, 2).unwrap();
        let original: Vec<i16> = vec![i16::MIN, -1, 0, 1, 12_345, i16::MAX];
        let frames: Vec<f32> = original.iter().map(|&s| f32::from(s) / 32768.0).collect();
        sink.write(&frames, 24_000, 2).unwrap();
        assert!(sink.write(&frames, 48_000, 2).is_err(), "wrong rate");
        assert!(sink.write(&frames, 24_000, 1).is_err(), "wrong channels");
        sink.write(&[2.0, f32::NAN], 24_000, 2).unwrap();
        sink.finish().unwrap();
        assert!(sink.write(&frames, 24_000, 2).is_err(), "after finish");
        sink.finish().unwrap();

        let mut reader = hound::WavReader::open(&path).unwrap();
        let back: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let mut want = original;
        want.extend([i16::MAX, 0]);
        assert_eq!(back, want);
        std::fs::remove_dir_all(&dir).ok();
    }
}
