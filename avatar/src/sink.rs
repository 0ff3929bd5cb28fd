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
    /// Voice samples not kept: past the sink's limit (SPEC S5).
    pub dropped_voice: u64,
    /// Video frames and interrupts not noted: past the sink's limit.
    pub dropped_marks: u64,
}

/// Voice samples a [`MemorySink`] keeps by default: two minutes of 48 kHz
/// stereo (22 MiB).
pub const MEMORY_SINK_SAMPLES: usize = 120 * 48_000 * 2;
/// Video frames and interrupts a [`MemorySink`] notes at most.
pub const MEMORY_SINK_MARKS: usize = 100_000;

/// Keeps the voice and the video timing in memory, shared with clones:
/// the first `limit` voice samples and [`MEMORY_SINK_MARKS`] marks; what
/// comes after is counted, not kept (SPEC S5).
#[derive(Debug, Clone)]
pub struct MemorySink {
    log: Arc<Mutex<MemoryLog>>,
    channels: usize,
    clock: u64,
    limit: usize,
}

impl MemorySink {
    /// An empty sink for `channels`-channel voice keeping at most
    /// [`MEMORY_SINK_SAMPLES`].
    #[must_use]
    pub fn new(channels: usize) -> Self {
        Self::with_limit(channels, MEMORY_SINK_SAMPLES)
    }

    /// An empty sink keeping at most `limit` voice samples.
    #[must_use]
    pub fn with_limit(channels: usize, limit: usize) -> Self {
        Self {
            log: Arc::default(),
            channels: channels.max(1),
            clock: 0,
            limit,
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
            let room = self.limit.saturating_sub(l.voice.len()).min(samples.len());
            l.voice.extend_from_slice(&samples[..room]);
            l.dropped_voice += (samples.len() - room) as u64;
        }
    }

    fn video(&mut self, _frame: &VideoFrame, pts: u64) {
        if let Ok(mut l) = self.log.lock() {
            if l.video.len() < MEMORY_SINK_MARKS {
                l.video.push((pts, self.clock));
            } else {
                l.dropped_marks += 1;
            }
        }
    }

    fn reset(&mut self) {
        if let Ok(mut l) = self.log.lock() {
            let at = l.voice.len();
            if l.resets.len() < MEMORY_SINK_MARKS {
                l.resets.push(at);
            } else {
                l.dropped_marks += 1;
            }
        }
    }

    fn finish(&mut self) {
        if let Ok(mut l) = self.log.lock() {
            l.finished = true;
        }
    }
}

/// Keeps nothing; counts what it was given. For a server whose output
/// nobody records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscardSink {
    /// Voice samples given.
    pub voice_samples: u64,
    /// Video frames given.
    pub video_frames: u64,
}

impl AvatarSink for DiscardSink {
    fn voice(&mut self, samples: &[i16]) {
        self.voice_samples += samples.len() as u64;
    }

    fn video(&mut self, _frame: &VideoFrame, _pts: u64) {
        self.video_frames += 1;
    }

    fn reset(&mut self) {}

    fn finish(&mut self) {}
}

/// Gives everything to two sinks: a server's own sink and the publisher's.
pub struct BothSinks(pub Box<dyn AvatarSink>, pub Box<dyn AvatarSink>);

impl AvatarSink for BothSinks {
    fn voice(&mut self, samples: &[i16]) {
        self.0.voice(samples);
        self.1.voice(samples);
    }

    fn video(&mut self, frame: &VideoFrame, pts: u64) {
        self.0.video(frame, pts);
        self.1.video(frame, pts);
    }

    fn reset(&mut self) {
        self.0.reset();
        self.1.reset();
    }

    fn finish(&mut self) {
        self.0.finish();
        self.1.finish();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_memory_sink_counts_what_it_could_not_keep() {
        let mut sink = MemorySink::with_limit(1, 1_000);
        sink.voice(&[1; 600]);
        sink.voice(&[2; 900]);
        let log = sink.log();
        assert_eq!(log.voice.len(), 1_000);
        assert_eq!(log.dropped_voice, 500);
        assert_eq!(&log.voice[595..605], &[1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    }
}
