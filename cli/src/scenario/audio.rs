//! Turning a scenario's values into the engine's: session configs,
//! background sources opened up front, WAV files and tones in a session's
//! input format.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use sotto::{BackgroundConfig, BackgroundMode, Duck, SampleFormat, SessionConfig};
use sotto_actors::decode::FileDecoder;

use super::{Secs, SessionSpec, Tone};

pub(super) fn session_config(s: &SessionSpec, out_rate: u32) -> Result<SessionConfig, String> {
    let mut c = SessionConfig {
        name: s.name.clone(),
        ..SessionConfig::default()
    };
    c.input.sample_rate = s.input_rate.unwrap_or(out_rate);
    if !sotto::InputFormat::RATES.contains(&c.input.sample_rate) {
        return Err(format!(
            "input_rate {} Hz is not one of 8000, 16000, 22050, 24000, 44100, 48000",
            c.input.sample_rate
        ));
    }
    c.input.channels = s.input_channels.unwrap_or(1);
    if !(1..=8).contains(&c.input.channels) {
        return Err(format!(
            "input_channels {} is outside 1..=8",
            c.input.channels
        ));
    }
    c.input.sample_format = match s.input_format.as_deref().unwrap_or("s16") {
        "s16" => SampleFormat::S16,
        "f32" => SampleFormat::F32,
        other => return Err(format!("input_format '{other}' must be \"s16\" or \"f32\"")),
    };
    // Only what a `Duration` cannot hold is checked here; the ranges are
    // the engine's own (`SessionConfig::validate`).
    let dur = |v: Option<Secs>, name: &str, def: Duration| -> Result<Duration, String> {
        match v {
            None => Ok(def),
            Some(Secs(x)) => Duration::try_from_secs_f64(x)
                .map_err(|_| format!("{name} {x} s is not a valid duration")),
        }
    };
    c.fade = dur(s.fade, "fade", c.fade)?;
    c.grace = dur(s.grace, "grace", c.grace)?;
    c.queue = dur(s.queue, "queue", c.queue)?;
    if let Some(db) = s.duck_db {
        let d = Duck::default();
        c.duck = Some(Duck {
            depth_db: db,
            down: dur(s.duck_down, "duck_down", d.down)?,
            up: dur(s.duck_up, "duck_up", d.up)?,
        });
    } else if s.duck_down.is_some() || s.duck_up.is_some() {
        return Err("duck_down and duck_up need duck_db".into());
    }
    c.saturation = match s.saturation.as_deref().unwrap_or("hard") {
        "hard" => sotto::Saturation::Hard,
        "soft" => sotto::Saturation::Soft,
        other => return Err(format!("saturation '{other}' must be \"hard\" or \"soft\"")),
    };
    c.validate()?;
    Ok(c)
}

/// A `background_start` step's source, checked up to opening the file.
pub(super) fn background_config(
    path: &Path,
    mode: BackgroundMode,
    volume: f32,
    looping: bool,
    rate: u32,
    channels: usize,
) -> Result<BackgroundConfig, String> {
    let config = BackgroundConfig {
        path: path.to_path_buf(),
        enabled: true,
        mode,
        volume,
        looping,
    };
    sotto_actors::background::validate(&config).map_err(|e| e.to_string())?;
    // Reads the headers only: a missing, empty or undecodable file is
    // named here, before anything renders.
    FileDecoder::open(&config.path, rate, channels).map_err(|e| e.to_string())?;
    Ok(config)
}

/// Checks a pushed WAV file to its last sample without keeping any of
/// it: its format must be the session's, and it must decode to the end.
/// Returns its size in the session's input format, in bytes.
pub(super) fn check_wav(path: &Path, input: sotto::InputFormat) -> Result<u64, String> {
    let mut samples = WavSamples::open(path, input)?;
    let mut block = Vec::new();
    let mut n = 0u64;
    while samples.read(&mut block, BLOCK_FRAMES * input.channels)? {
        n += block.len() as u64;
        block.clear();
    }
    Ok(n * input.sample_format.bytes() as u64)
}

/// Frames made or read at a time for a push.
const BLOCK_FRAMES: usize = 4096;

/// A WAV file's samples as f32, read as they are asked for.
enum WavSamples {
    Float(hound::WavIntoSamples<BufReader<File>, f32>, String),
    Int(hound::WavIntoSamples<BufReader<File>, i32>, f32, String),
}

impl WavSamples {
    fn open(path: &Path, input: sotto::InputFormat) -> Result<Self, String> {
        let shown = path.display().to_string();
        let reader =
            hound::WavReader::open(path).map_err(|e| format!("cannot read WAV '{shown}': {e}"))?;
        let spec = reader.spec();
        if spec.sample_rate != input.sample_rate || usize::from(spec.channels) != input.channels {
            return Err(format!(
                "WAV '{shown}' is {} Hz x {} channels; the session takes {} Hz x {}",
                spec.sample_rate, spec.channels, input.sample_rate, input.channels
            ));
        }
        Ok(match spec.sample_format {
            hound::SampleFormat::Float => Self::Float(reader.into_samples(), shown),
            hound::SampleFormat::Int => {
                let scale = 2f32.powi(i32::from(spec.bits_per_sample) - 1);
                Self::Int(reader.into_samples(), scale, shown)
            }
        })
    }

    /// Appends up to `n` samples to `out`; false once the file has no more.
    fn read(&mut self, out: &mut Vec<f32>, n: usize) -> Result<bool, String> {
        let before = out.len();
        let corrupt = |shown: &str, e: hound::Error| format!("corrupt WAV '{shown}': {e}");
        match self {
            Self::Float(it, shown) => {
                for s in it.by_ref().take(n) {
                    out.push(s.map_err(|e| corrupt(shown, e))?);
                }
            }
            Self::Int(it, scale, shown) => {
                for s in it.by_ref().take(n) {
                    out.push(s.map_err(|e| corrupt(shown, e))? as f32 / *scale);
                }
            }
        }
        Ok(out.len() > before)
    }
}

/// Where a push's samples come from.
enum Samples {
    Tone {
        tone: Tone,
        next: usize,
        frames: usize,
        input: sotto::InputFormat,
    },
    Wav(WavSamples),
}

/// A push's audio made a block at a time, in the session's input format,
/// and cut into the step's chunks: the same bytes as made whole and cut,
/// but never more than a block and a chunk of them at once.
pub(super) struct Chunks {
    samples: Samples,
    format: SampleFormat,
    channels: usize,
    size: usize,
    bytes: Vec<u8>,
    /// Bytes of `bytes` already handed out.
    taken: usize,
    block: Vec<f32>,
    done: bool,
}

impl Chunks {
    /// A tone, `size` bytes a chunk.
    pub(super) fn tone(tone: &Tone, input: sotto::InputFormat, size: usize) -> Self {
        let frames = (tone.seconds * f64::from(input.sample_rate)).round() as usize;
        let samples = Samples::Tone {
            tone: tone.clone(),
            next: 0,
            frames,
            input,
        };
        Self::new(samples, input, size)
    }

    /// A WAV file, `size` bytes a chunk.
    pub(super) fn wav(path: &Path, input: sotto::InputFormat, size: usize) -> Result<Self, String> {
        Ok(Self::new(
            Samples::Wav(WavSamples::open(path, input)?),
            input,
            size,
        ))
    }

    fn new(samples: Samples, input: sotto::InputFormat, size: usize) -> Self {
        Self {
            samples,
            format: input.sample_format,
            channels: input.channels,
            size: size.max(1),
            bytes: Vec::new(),
            taken: 0,
            block: Vec::new(),
            done: false,
        }
    }

    /// Makes the next block into bytes; false when there is no more.
    fn fill(&mut self) -> Result<bool, String> {
        self.block.clear();
        let more = match &mut self.samples {
            Samples::Tone {
                tone,
                next,
                frames,
                input,
            } => {
                let end = (*next + BLOCK_FRAMES).min(*frames);
                crate::signal::sine_into(
                    &mut self.block,
                    *next..end,
                    f64::from(tone.freq),
                    input.sample_rate,
                    input.channels,
                    tone.amplitude / 32768.0,
                );
                *next = end;
                !self.block.is_empty()
            }
            Samples::Wav(wav) => wav.read(&mut self.block, BLOCK_FRAMES * self.channels)?,
        };
        match self.format {
            SampleFormat::S16 => crate::signal::extend_s16(&mut self.bytes, &self.block),
            SampleFormat::F32 => crate::signal::extend_f32(&mut self.bytes, &self.block),
        }
        Ok(more)
    }
}

impl Iterator for Chunks {
    type Item = Result<Vec<u8>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done && self.bytes.len() - self.taken < self.size {
            self.bytes.drain(..self.taken);
            self.taken = 0;
            match self.fill() {
                Ok(more) => self.done = !more,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let n = self.size.min(self.bytes.len() - self.taken);
        if n == 0 {
            return None;
        }
        let chunk = self.bytes[self.taken..self.taken + n].to_vec();
        self.taken += n;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made a block at a time and cut as it goes, a push is the same bytes
    /// as made whole and cut: for chunk sizes that split samples, that are
    /// smaller than a block and larger than the whole.
    #[test]
    fn chunks_are_the_whole_push_cut() {
        let input = sotto::InputFormat {
            sample_rate: 24_000,
            channels: 2,
            sample_format: SampleFormat::S16,
        };
        let t = Tone {
            seconds: 0.5,
            freq: 440.0,
            amplitude: 12_000.0,
            chunk_bytes: None,
        };
        let whole = crate::signal::s16_bytes(&crate::signal::sine(
            12_000,
            440.0,
            24_000,
            2,
            12_000.0 / 32768.0,
        ));
        for size in [1, 333, 4800, 20_000, 1 << 20] {
            let got: Vec<Vec<u8>> = Chunks::tone(&t, input, size).map(Result::unwrap).collect();
            let want: Vec<Vec<u8>> = whole.chunks(size).map(<[u8]>::to_vec).collect();
            assert!(got == want, "chunks of {size} bytes differ");
        }
        let empty = Tone { seconds: 0.0, ..t };
        assert_eq!(Chunks::tone(&empty, input, 4800).count(), 0);
    }
}
