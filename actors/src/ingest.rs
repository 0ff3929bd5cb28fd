//! TTS ingest: bytes of any chunking in the session's input format become
//! f32 frames at the output rate and channel count (SPEC O1, O3).
//!
//! Runs inside the session actor, off the audio thread; it may allocate.

pub(crate) use sotto_media::resample::Resampler as Resample;

/// Sample encoding of pushed bytes: 16-bit integers or 32-bit floats,
/// little-endian, as the TTS sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleFormat {
    /// Signed 16-bit little-endian.
    #[default]
    S16,
    /// 32-bit float little-endian.
    F32,
}

impl SampleFormat {
    /// Bytes per sample.
    #[must_use]
    pub fn bytes(self) -> usize {
        match self {
            Self::S16 => 2,
            Self::F32 => 4,
        }
    }
}

/// Input rates a session may declare (SPEC O3).
pub const SUPPORTED_RATES: [u32; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];

/// The format of the TTS bytes an application pushes into a session: set
/// it in the session's config to match the TTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputFormat {
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: usize,
    /// Encoding.
    pub sample_format: SampleFormat,
}

impl InputFormat {
    /// The input rates taken, in Hz.
    pub const RATES: [u32; 6] = SUPPORTED_RATES;
}

/// Why an input format cannot be ingested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The rate is not one of [`SUPPORTED_RATES`].
    #[error("unsupported input rate {0} Hz (supported: 8000, 16000, 22050, 24000, 44100, 48000)")]
    UnsupportedRate(u32),
    /// Zero or more than 8 channels.
    #[error("unsupported channel count {0} (1 to 8)")]
    UnsupportedChannels(usize),
    /// The resampler could not be built.
    #[error("resampler: {0}")]
    Resampler(String),
}

/// Converts pushed bytes to output frames, holding partial samples and
/// frames across pushes.
pub struct Ingest {
    input: InputFormat,
    out_channels: usize,
    carry: Vec<u8>,
    frames: Vec<f32>,
    resampler: Option<Resample>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("input", &self.input)
            .field("out_channels", &self.out_channels)
            .field("carry", &self.carry.len())
            .field("resampling", &self.resampler.is_some())
            .finish()
    }
}

impl Ingest {
    /// An ingest from `input` to `out_rate`/`out_channels`.
    ///
    /// # Errors
    /// [`FormatError`] for a rate or channel count out of range.
    pub fn new(
        input: InputFormat,
        out_rate: u32,
        out_channels: usize,
    ) -> Result<Self, FormatError> {
        if !SUPPORTED_RATES.contains(&input.sample_rate) {
            return Err(FormatError::UnsupportedRate(input.sample_rate));
        }
        if input.channels == 0 || input.channels > 8 {
            return Err(FormatError::UnsupportedChannels(input.channels));
        }
        let resampler = if input.sample_rate == out_rate {
            None
        } else {
            Some(
                Resample::new(input.sample_rate, out_rate, out_channels)
                    .map_err(|e| FormatError::Resampler(e.to_string()))?,
            )
        };
        Ok(Self {
            input,
            out_channels,
            carry: Vec::new(),
            frames: Vec::new(),
            resampler,
        })
    }

    /// Bytes of one input frame.
    #[must_use]
    pub fn frame_bytes(&self) -> usize {
        self.input.channels * self.input.sample_format.bytes()
    }

    /// Converts `bytes` and appends whole output frames to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<f32>) {
        let (input, out_ch) = (&self.input, self.out_channels);
        match &mut self.resampler {
            // Nothing between decoding and the output: decode straight into it.
            None => push_frames(input, out_ch, &mut self.carry, bytes, out),
            Some(r) => {
                self.frames.clear();
                push_frames(input, out_ch, &mut self.carry, bytes, &mut self.frames);
                r.push(&self.frames, out);
            }
        }
    }

    /// Ends the stream: emits what the resampler still holds, then starts
    /// afresh. A held partial frame is dropped (it can never complete).
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        self.carry.clear();
        if let Some(r) = &mut self.resampler {
            r.flush(out);
        }
    }

    /// Discards everything held (an interrupt or clear).
    pub fn reset(&mut self) {
        self.carry.clear();
        if let Some(r) = &mut self.resampler {
            r.reset();
        }
    }

    /// Bytes held back waiting for the rest of a frame.
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.carry.len()
    }

    /// Output frames taken in but not yet given out: what the resampler
    /// holds (its pending input and its delay line). An interrupt or clear
    /// that resets the ingest drops them (SPEC O5).
    #[must_use]
    pub fn held_frames(&self) -> u64 {
        self.resampler.as_ref().map_or(0, Resample::held_frames)
    }
}

/// Completes the partial frame held in `carry`, decodes every whole frame of
/// `bytes` into `out` and holds the bytes left over.
fn push_frames(
    input: &InputFormat,
    out_ch: usize,
    carry: &mut Vec<u8>,
    bytes: &[u8],
    out: &mut Vec<f32>,
) {
    let fb = input.channels * input.sample_format.bytes();
    let mut rest = bytes;
    if !carry.is_empty() {
        let take = (fb - carry.len()).min(rest.len());
        carry.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        if carry.len() == fb {
            decode(input, out_ch, carry, out);
            carry.clear();
        }
    }
    let whole = rest.len() - rest.len() % fb;
    decode(input, out_ch, &rest[..whole], out);
    carry.extend_from_slice(&rest[whole..]);
}

/// Decodes whole input frames into `out` at `out_ch` channels.
fn decode(input: &InputFormat, out_ch: usize, bytes: &[u8], out: &mut Vec<f32>) {
    // The format is matched once, outside the per-sample loops, so each loop
    // is a plain conversion the compiler can vectorise.
    match input.sample_format {
        SampleFormat::S16 => decode_with::<2>(input.channels, out_ch, bytes, out, |b| {
            f32::from(i16::from_le_bytes(*b)) / 32768.0
        }),
        SampleFormat::F32 => decode_with::<4>(input.channels, out_ch, bytes, out, |b| {
            let v = f32::from_le_bytes(*b);
            // NaN or infinity from a broken synthesiser becomes silence, not
            // a poisoned mix; beyond full scale is clipped here, so no
            // resampler or mixer arithmetic downstream can overflow.
            if v.is_finite() {
                v.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        }),
    }
}

fn decode_with<const BYTES: usize>(
    in_ch: usize,
    out_ch: usize,
    bytes: &[u8],
    out: &mut Vec<f32>,
    sample: impl Fn(&[u8; BYTES]) -> f32,
) {
    let (samples, _) = bytes.as_chunks::<BYTES>();
    remix_with(samples, in_ch, out_ch, out, sample);
}

/// Converts interleaved `src` with `sample` and remixes it from `in_ch` to
/// `out_ch` channels, appending to `out`: mono is copied to every channel,
/// anything to mono is averaged, otherwise channels are taken in turn.
/// One loop per case, so the common ones vectorise.
pub(crate) fn remix_with<T>(
    src: &[T],
    in_ch: usize,
    out_ch: usize,
    out: &mut Vec<f32>,
    sample: impl Fn(&T) -> f32,
) {
    out.reserve(src.len() / in_ch * out_ch);
    if in_ch == out_ch {
        out.extend(src.iter().map(sample));
    } else if out_ch == 1 {
        for frame in src.chunks_exact(in_ch) {
            let sum: f32 = frame.iter().map(&sample).sum();
            out.push(sum / in_ch as f32);
        }
    } else if in_ch == 1 {
        for s in src {
            out.extend(std::iter::repeat_n(sample(s), out_ch));
        }
    } else {
        for frame in src.chunks_exact(in_ch) {
            out.extend((0..out_ch).map(|c| sample(&frame[c % in_ch])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s16(rate: u32, ch: usize) -> InputFormat {
        InputFormat {
            sample_rate: rate,
            channels: ch,
            sample_format: SampleFormat::S16,
        }
    }

    fn tone_bytes(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| (((i as f32 * 0.07).sin() * 12_000.0) as i16).to_le_bytes())
            .collect()
    }

    fn ingest_chunked(
        format: InputFormat,
        out_rate: u32,
        bytes: &[u8],
        cuts: &[usize],
    ) -> Vec<f32> {
        let mut ing = Ingest::new(format, out_rate, 1).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts {
            let end = (at + c).min(bytes.len());
            ing.push(&bytes[at..end], &mut out);
            at = end;
        }
        ing.push(&bytes[at..], &mut out);
        ing.flush(&mut out);
        out
    }

    #[test]
    fn odd_byte_is_held_not_padded() {
        let mut ing = Ingest::new(s16(24_000, 1), 24_000, 1).unwrap();
        let mut out = Vec::new();
        ing.push(&[0x00, 0x40, 0x00], &mut out);
        assert_eq!(out, vec![0.5]);
        assert_eq!(ing.held_bytes(), 1);
        ing.push(&[0xC0], &mut out);
        assert_eq!(out, vec![0.5, -0.5]);
        assert_eq!(ing.held_bytes(), 0);
    }

    #[test]
    fn stereo_input_is_averaged_to_mono() {
        let mut ing = Ingest::new(s16(24_000, 2), 24_000, 1).unwrap();
        let mut out = Vec::new();
        let bytes: Vec<u8> = [16384i16, 0, -16384, -16384]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        ing.push(&bytes, &mut out);
        assert_eq!(out, vec![0.25, -0.5]);
    }

    #[test]
    fn resampled_length_matches_ratio() {
        for rate in SUPPORTED_RATES {
            let bytes = tone_bytes(rate as usize / 10);
            let out = ingest_chunked(s16(rate, 1), 24_000, &bytes, &[]);
            assert_eq!(out.len(), 2400, "from {rate} Hz");
        }
    }

    #[test]
    fn what_the_resampler_holds_is_counted_until_flushed() {
        let mut ing = Ingest::new(s16(16_000, 1), 24_000, 1).unwrap();
        let mut out = Vec::new();
        ing.push(&tone_bytes(1000), &mut out);
        // 1000 frames at 16 kHz are 1500 at 24 kHz: what is not out yet
        // is held.
        assert_eq!(out.len() as u64 + ing.held_frames(), 1500);
        assert!(ing.held_frames() > 0);
        ing.flush(&mut out);
        assert_eq!((out.len(), ing.held_frames()), (1500, 0));
        let same = Ingest::new(s16(24_000, 1), 24_000, 1).unwrap();
        assert_eq!(same.held_frames(), 0);
    }

    #[test]
    fn bad_formats_are_rejected() {
        assert_eq!(
            Ingest::new(s16(11_025, 1), 24_000, 1).unwrap_err(),
            FormatError::UnsupportedRate(11_025)
        );
        assert_eq!(
            Ingest::new(s16(24_000, 0), 24_000, 1).unwrap_err(),
            FormatError::UnsupportedChannels(0)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_chunking_gives_the_same_frames(
            cuts in proptest::collection::vec(0usize..700, 0..12),
            rate in prop::sample::select(vec![16_000u32, 22_050, 24_000]),
        ) {
            let bytes = tone_bytes(3001);
            let whole = ingest_chunked(s16(rate, 1), 24_000, &bytes, &[]);
            let cut = ingest_chunked(s16(rate, 1), 24_000, &bytes, &cuts);
            prop_assert_eq!(whole, cut);
        }
    }
}
