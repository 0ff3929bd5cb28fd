//! File decoding for background sources (SPEC B2, B7): symphonia demuxes and
//! decodes, then the samples are remixed and resampled to the session's
//! output format.

use std::fs::File;
use std::path::{Path, PathBuf};

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use crate::ingest::{remix_with, Resample};

/// Largest reduced input:output rate ratio term accepted; beyond it the FFT
/// resampler's tables grow absurdly (e.g. 44 101 Hz).
const MAX_RATE_TERM: u32 = 4096;

/// Why a background file cannot be played (SPEC B7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The file does not exist.
    #[error("{0}: no such file")]
    NotFound(PathBuf),
    /// The file could not be read.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The file is empty.
    #[error("{0}: the file is empty")]
    Empty(PathBuf),
    /// No container format or codec here decodes it.
    #[error("{path}: unsupported format or codec: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },
    /// The file has no audio track.
    #[error("{0}: no audio track")]
    NoAudioTrack(PathBuf),
    /// The data is malformed before any audio could be decoded.
    #[error("{path}: corrupt data: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
}

/// How a pass over the file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassEnd {
    /// The file ended normally.
    Complete,
    /// A decode error or a truncated file ended the pass early; what was
    /// decoded before it is kept (SPEC B7).
    Damaged(String),
}

/// An open file decoding to a fixed output format.
pub struct FileDecoder {
    path: PathBuf,
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track: u32,
    in_rate: u32,
    out_channels: usize,
    resample: Option<Resample>,
    out_rate: u32,
    decoded: Vec<f32>,
    remixed: Vec<f32>,
    /// Frames produced at the output rate so far.
    produced: u64,
    /// Frames the container says the track has, at the input rate.
    expected: Option<u64>,
    /// Frames decoded at the input rate.
    decoded_frames: u64,
    ended: Option<PassEnd>,
}

impl std::fmt::Debug for FileDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDecoder")
            .field("path", &self.path)
            .field("in_rate", &self.in_rate)
            .field("out_rate", &self.out_rate)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

fn classify(path: &Path, e: SymphoniaError) -> DecodeError {
    let path = path.to_owned();
    match e {
        SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Corrupt {
                path,
                reason: "the file ends early".into(),
            }
        }
        SymphoniaError::IoError(e) => DecodeError::Io {
            path,
            reason: e.to_string(),
        },
        SymphoniaError::Unsupported(what) => DecodeError::Unsupported {
            path,
            reason: what.into(),
        },
        other => DecodeError::Corrupt {
            path,
            reason: other.to_string(),
        },
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl FileDecoder {
    /// Opens `path` and prepares to decode it at `out_rate` and
    /// `out_channels`. Reads only the file's headers.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the file and what is wrong with it.
    pub fn open(path: &Path, out_rate: u32, out_channels: usize) -> Result<Self, DecodeError> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DecodeError::NotFound(path.to_owned()),
            _ => DecodeError::Io {
                path: path.to_owned(),
                reason: e.to_string(),
            },
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len == 0 {
            return Err(DecodeError::Empty(path.to_owned()));
        }
        Self::from_source(path, Box::new(file), out_rate, out_channels)
    }

    /// Decodes `bytes` held in memory as if they were the file `name` (its
    /// extension is a hint to the prober) at `out_rate` and `out_channels`.
    ///
    /// # Errors
    /// As [`FileDecoder::open`], naming `name`.
    pub fn from_bytes(
        name: &Path,
        bytes: Vec<u8>,
        out_rate: u32,
        out_channels: usize,
    ) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty(name.to_owned()));
        }
        let source = Box::new(std::io::Cursor::new(bytes));
        Self::from_source(name, source, out_rate, out_channels)
    }

    fn from_source(
        path: &Path,
        source: Box<dyn MediaSource>,
        out_rate: u32,
        out_channels: usize,
    ) -> Result<Self, DecodeError> {
        if out_channels == 0 {
            return Err(DecodeError::Unsupported {
                path: path.to_owned(),
                reason: "zero output channels".into(),
            });
        }
        let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let reader = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| classify(path, e))?;
        let track = reader
            .default_track(TrackType::Audio)
            .ok_or_else(|| DecodeError::NoAudioTrack(path.to_owned()))?;
        let Some(CodecParameters::Audio(params)) = &track.codec_params else {
            return Err(DecodeError::NoAudioTrack(path.to_owned()));
        };
        let track_id = track.id;
        let expected = track.num_frames;
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(|e| classify(path, e))?;
        let in_rate = params.sample_rate.unwrap_or(0);
        if in_rate == 0 || in_rate > 384_000 {
            return Err(DecodeError::Unsupported {
                path: path.to_owned(),
                reason: format!("sample rate {in_rate} Hz"),
            });
        }
        let g = gcd(in_rate, out_rate);
        if in_rate / g > MAX_RATE_TERM || out_rate / g > MAX_RATE_TERM {
            return Err(DecodeError::Unsupported {
                path: path.to_owned(),
                reason: format!("sample rate {in_rate} Hz cannot be resampled to {out_rate} Hz"),
            });
        }
        let resample = if in_rate == out_rate {
            None
        } else {
            Some(Resample::new(in_rate, out_rate, out_channels).map_err(|e| {
                DecodeError::Unsupported {
                    path: path.to_owned(),
                    reason: e.to_string(),
                }
            })?)
        };
        Ok(Self {
            path: path.to_owned(),
            reader,
            decoder,
            track: track_id,
            in_rate,
            out_channels,
            resample,
            out_rate,
            decoded: Vec::new(),
            remixed: Vec::new(),
            produced: 0,
            expected,
            decoded_frames: 0,
            ended: None,
        })
    }

    /// The file's own sample rate.
    #[must_use]
    pub fn input_rate(&self) -> u32 {
        self.in_rate
    }

    /// Frames produced so far, at the output rate.
    #[must_use]
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Decodes packets until at least `frames` output frames were appended
    /// to `out` or the pass ended. Returns `Some` when the pass has ended,
    /// with how.
    ///
    /// # Errors
    /// [`DecodeError::Corrupt`] when the file yields no audio at all before
    /// failing.
    pub fn fill(
        &mut self,
        out: &mut Vec<f32>,
        frames: usize,
    ) -> Result<Option<PassEnd>, DecodeError> {
        let ch = self.out_channels;
        let want = out.len() + frames * ch;
        while out.len() < want && self.ended.is_none() {
            self.step(out)?;
        }
        Ok(self.ended.clone())
    }

    /// One packet.
    fn step(&mut self, out: &mut Vec<f32>) -> Result<(), DecodeError> {
        let packet = match self.reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => return self.finish(out, PassEnd::Complete),
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let reason = "the file ends early (truncated)".to_owned();
                return self.finish(out, PassEnd::Damaged(reason));
            }
            Err(e) => {
                let reason = classify(&self.path, e).to_string();
                return self.finish(out, PassEnd::Damaged(reason));
            }
        };
        if packet.track_id != self.track {
            return Ok(());
        }
        let buf = match self.decoder.decode(&packet) {
            Ok(buf) => buf,
            // A damaged packet ends the pass; what came before it plays.
            Err(e) => {
                let reason = classify(&self.path, e).to_string();
                return self.finish(out, PassEnd::Damaged(reason));
            }
        };
        let in_ch = buf.spec().channels().count().max(1);
        if buf.spec().rate() != self.in_rate {
            let reason = format!("sample rate changed to {} Hz mid-file", buf.spec().rate());
            return self.finish(out, PassEnd::Damaged(reason));
        }
        buf.copy_to_vec_interleaved::<f32>(&mut self.decoded);
        // A float file can hold NaN, infinities or values far past full
        // scale; they must not reach the resampler or the mix.
        for s in &mut self.decoded {
            *s = if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            };
        }
        self.decoded_frames += (self.decoded.len() / in_ch) as u64;
        let start = out.len();
        match &mut self.resample {
            None => remix_with(&self.decoded, in_ch, self.out_channels, out, |&s| s),
            Some(r) => {
                self.remixed.clear();
                let ch = self.out_channels;
                remix_with(&self.decoded, in_ch, ch, &mut self.remixed, |&s| s);
                r.push(&self.remixed, out);
            }
        }
        self.produced += ((out.len() - start) / self.out_channels) as u64;
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<f32>, mut end: PassEnd) -> Result<(), DecodeError> {
        // A demuxer that skipped damaged data to resynchronise ends
        // "normally" short of what the container promised.
        if let (PassEnd::Complete, Some(expected)) = (&end, self.expected) {
            if self.decoded_frames + expected / 100 < expected {
                end = PassEnd::Damaged(format!(
                    "{} of {expected} frames could not be decoded",
                    expected - self.decoded_frames
                ));
            }
        }
        let start = out.len();
        if let Some(r) = &mut self.resample {
            r.flush(out);
        }
        self.produced += ((out.len() - start) / self.out_channels) as u64;
        if self.produced == 0 {
            if let PassEnd::Damaged(reason) = end {
                return Err(DecodeError::Corrupt {
                    path: self.path.clone(),
                    reason,
                });
            }
        }
        self.ended = Some(end);
        Ok(())
    }

    /// Decodes the whole file at once, stopping early when `cancelled`
    /// says so.
    ///
    /// # Errors
    /// As [`FileDecoder::fill`].
    pub fn decode_all(
        &mut self,
        cancelled: impl Fn() -> bool,
    ) -> Result<(Vec<f32>, PassEnd), DecodeError> {
        let mut out = Vec::new();
        loop {
            if cancelled() {
                return Ok((out, PassEnd::Complete));
            }
            if let Some(end) = self.fill(&mut out, 4096)? {
                return Ok((out, end));
            }
        }
    }
}
