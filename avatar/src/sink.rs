//! Sinks that keep what an avatar plays: in memory (for tests) or as a
//! WAV and a Y4M video any player opens.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::playout::{AvatarSink, VideoFrame, PTS_RATE};

/// What a [`MemorySink`] kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryLog {
    /// Every voice sample, interleaved.
    pub voice: Vec<i16>,
    /// Each video frame's pts and the voice samples (per channel) emitted
    /// when it was shown.
    pub video: Vec<(u64, u64)>,
    /// Voice samples emitted when each interrupt arrived.
    pub resets: Vec<usize>,
    /// Whether the connection finished.
    pub finished: bool,
}

/// Keeps the voice and the video timing in memory, shared with clones.
#[derive(Debug, Clone)]
pub struct MemorySink {
    log: Arc<Mutex<MemoryLog>>,
    channels: usize,
    clock: u64,
}

impl MemorySink {
    /// An empty sink for `channels`-channel voice.
    #[must_use]
    pub fn new(channels: usize) -> Self {
        Self {
            log: Arc::default(),
            channels: channels.max(1),
            clock: 0,
        }
    }

    /// A copy of what was kept.
    #[must_use]
    pub fn log(&self) -> MemoryLog {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl AvatarSink for MemorySink {
    fn voice(&mut self, samples: &[i16]) {
        self.clock += (samples.len() / self.channels) as u64;
        if let Ok(mut l) = self.log.lock() {
            l.voice.extend_from_slice(samples);
        }
    }

    fn video(&mut self, _frame: &VideoFrame, pts: u64) {
        if let Ok(mut l) = self.log.lock() {
            l.video.push((pts, self.clock));
        }
    }

    fn reset(&mut self) {
        if let Ok(mut l) = self.log.lock() {
            let at = l.voice.len();
            l.resets.push(at);
        }
    }

    fn finish(&mut self) {
        if let Ok(mut l) = self.log.lock() {
            l.finished = true;
        }
    }
}

/// Writes the voice to `voice.wav` and the video to `video.y4m` in a
/// folder, for a person to check lip sync.
pub struct FileSink {
    wav: Option<hound::WavWriter<BufWriter<File>>>,
    y4m: BufWriter<File>,
    header: Option<u32>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").finish_non_exhaustive()
    }
}

impl FileSink {
    /// Creates both files in `dir`.
    ///
    /// # Errors
    /// When a file cannot be created.
    pub fn create(dir: &Path, sample_rate: u32, channels: u16, fps: u32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let spec = hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let wav = hound::WavWriter::create(dir.join("voice.wav"), spec)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let y4m = BufWriter::new(File::create(dir.join("video.y4m"))?);
        Ok(Self {
            wav: Some(wav),
            y4m,
            header: Some(fps.max(1)),
        })
    }
}

impl AvatarSink for FileSink {
    fn voice(&mut self, samples: &[i16]) {
        if let Some(w) = &mut self.wav {
            for &s in samples {
                if w.write_sample(s).is_err() {
                    self.wav = None;
                    break;
                }
            }
        }
    }

    fn video(&mut self, frame: &VideoFrame, _pts: u64) {
        if let Some(fps) = self.header.take() {
            let _ = writeln!(
                self.y4m,
                "YUV4MPEG2 W{} H{} F{fps}:1 Ip A1:1 C420jpeg",
                frame.width, frame.height
            );
        }
        let _ = self.y4m.write_all(b"FRAME\n");
        let _ = self.y4m.write_all(&frame.y);
        let _ = self.y4m.write_all(&frame.u);
        let _ = self.y4m.write_all(&frame.v);
    }

    fn finish(&mut self) {
        if let Some(w) = self.wav.take() {
            let _ = w.finalize();
        }
        let _ = self.y4m.flush();
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Seconds of a pts.
#[must_use]
pub fn pts_seconds(pts: u64) -> f64 {
    pts as f64 / PTS_RATE as f64
}
