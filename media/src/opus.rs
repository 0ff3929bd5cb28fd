//! Opus for calls (SPEC W1, W2): 48 kHz, mono or stereo, 10, 20 or 40 ms
//! packets; inband FEC and DTX on the way out, loss concealment and FEC
//! recovery on the way in. Digital silence is encoded for its first
//! 200 ms, so the far end's decoder comes to rest on true silence, and from
//! then on is not encoded at all: it goes out as one-byte packets (a TOC
//! with no frame, which a decoder at rest plays as silence), so a silent
//! call costs no encoder time.

use std::time::Duration;

use audiopus::coder::{Decoder, Encoder, GenericCtl};
use audiopus::{Application, Bitrate, Channels, MutSignals, SampleRate};

use sotto_rt::FrameLength;

use sotto_net::NetError;

pub use sotto_net::peer::OPUS_RATE;

/// The longest packet Opus makes (120 ms) in samples per channel.
const MAX_PACKET_FRAMES: usize = 5_760;

/// Bytes an encoded packet may take: RFC 6716's limit for one frame.
const MAX_PACKET_BYTES: usize = 1_275;

fn channels_of(n: usize) -> Result<Channels, NetError> {
    match n {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        _ => Err(NetError(format!("opus takes 1 or 2 channels, not {n}"))),
    }
}

/// The TOC byte of a CELT fullband packet of `packet`'s length with no
/// frame data (RFC 6716 3.1); stereo sets bit 2.
fn silence_toc(channels: usize, packet: FrameLength) -> u8 {
    // CELT fullband configs 28–31 are 2.5, 5, 10, 20 ms; a 40 ms packet
    // is two 20 ms frames (code 1, both empty).
    let (config, code) = match packet {
        FrameLength::Ms10 => (30u8, 0u8),
        FrameLength::Ms20 => (31, 0),
        FrameLength::Ms40 => (31, 1),
    };
    config << 3 | u8::from(channels == 2) << 2 | code
}

/// Digital silence encoded before the encoder is skipped: long enough for
/// a decoder's concealment and filters to come to rest.
const SILENCE_SETTLE: Duration = Duration::from_millis(200);

/// Encodes 48 kHz f32 frames into Opus packets of one [`FrameLength`].
pub struct OpusEncoder {
    encoder: Encoder,
    rate: u32,
    channels: usize,
    packet: FrameLength,
    out: Vec<u8>,
    /// Packets of digital silence in a row so far.
    silent_run: usize,
    /// Packets encoded, and packets sent as silence without the encoder.
    encoded: u64,
    silent: u64,
}

impl OpusEncoder {
    /// A VoIP encoder with inband FEC (tuned for `loss_percent` expected
    /// loss) and DTX on, at `bitrate` bits per second.
    ///
    /// # Errors
    /// [`NetError`] for channels other than 1 or 2, or when libopus refuses.
    pub fn new(
        channels: usize,
        packet: FrameLength,
        bitrate: u32,
        loss_percent: u8,
    ) -> Result<Self, NetError> {
        Self::at_rate(OPUS_RATE, channels, packet, bitrate, loss_percent)
    }

    /// An encoder like [`OpusEncoder::new`] taking samples at `rate`: one
    /// of the rates libopus takes itself (8, 12, 16, 24 or 48 kHz). The
    /// RTP clock stays 48 kHz.
    ///
    /// # Errors
    /// [`NetError`] for another rate, channels other than 1 or 2, or when
    /// libopus refuses.
    pub fn at_rate(
        rate: u32,
        channels: usize,
        packet: FrameLength,
        bitrate: u32,
        loss_percent: u8,
    ) -> Result<Self, NetError> {
        let sample_rate = match rate {
            8_000 => SampleRate::Hz8000,
            12_000 => SampleRate::Hz12000,
            16_000 => SampleRate::Hz16000,
            24_000 => SampleRate::Hz24000,
            48_000 => SampleRate::Hz48000,
            other => return Err(NetError(format!("Opus does not take {other} Hz"))),
        };
        let mut encoder = Encoder::new(sample_rate, channels_of(channels)?, Application::Voip)
            .map_err(NetError::from)?;
        encoder
            .set_bitrate(Bitrate::BitsPerSecond(
                i32::try_from(bitrate.clamp(6_000, 510_000)).unwrap_or(32_000),
            ))
            .map_err(NetError::from)?;
        encoder.set_inband_fec(true).map_err(NetError::from)?;
        encoder
            .set_packet_loss_perc(loss_percent.min(100))
            .map_err(NetError::from)?;
        encoder.set_dtx(true).map_err(NetError::from)?;
        Ok(Self {
            encoder,
            rate,
            channels,
            packet,
            out: vec![0; MAX_PACKET_BYTES],
            silent_run: 0,
            encoded: 0,
            silent: 0,
        })
    }

    /// Samples (interleaved) one packet takes.
    #[must_use]
    pub fn packet_samples(&self) -> usize {
        self.packet.frames_at(self.rate) * self.channels
    }

    /// Encodes one packet of interleaved samples, exactly
    /// [`packet_samples`](Self::packet_samples) of them.
    ///
    /// # Errors
    /// [`NetError`] for a wrong length or when libopus fails.
    pub fn encode(&mut self, samples: &[f32]) -> Result<&[u8], NetError> {
        if samples.len() != self.packet_samples() {
            return Err(NetError(format!(
                "an opus packet takes {} samples, not {}",
                self.packet_samples(),
                samples.len()
            )));
        }
        let settle =
            SILENCE_SETTLE.as_millis() as usize / self.packet.duration().as_millis() as usize;
        if samples.iter().all(|&s| s == 0.0) {
            self.silent_run += 1;
            if self.silent_run > settle {
                self.silent += 1;
                self.out[0] = silence_toc(self.channels, self.packet);
                return Ok(&self.out[..1]);
            }
        } else if std::mem::take(&mut self.silent_run) > settle {
            // The far end has been concealing: both start afresh.
            self.encoder.reset_state().map_err(NetError::from)?;
        }
        let n = self
            .encoder
            .encode_float(samples, &mut self.out)
            .map_err(NetError::from)?;
        self.encoded += 1;
        Ok(&self.out[..n])
    }

    /// `(encoded, silent)`: packets through the encoder, and packets of
    /// silence that skipped it.
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        (self.encoded, self.silent)
    }
}

/// Decodes Opus packets into 48 kHz f32 frames, concealing lost ones.
pub struct OpusDecoder {
    decoder: Decoder,
    channels: usize,
    pcm: Vec<f32>,
}

impl OpusDecoder {
    /// A decoder for `channels` (1 or 2).
    ///
    /// # Errors
    /// [`NetError`] for other channel counts or when libopus refuses.
    pub fn new(channels: usize) -> Result<Self, NetError> {
        Ok(Self {
            decoder: Decoder::new(SampleRate::Hz48000, channels_of(channels)?)
                .map_err(NetError::from)?,
            channels,
            pcm: vec![0.0; MAX_PACKET_FRAMES * channels],
        })
    }

    /// Decodes a packet; the interleaved samples it held.
    ///
    /// # Errors
    /// [`NetError`] for a packet libopus cannot decode.
    pub fn decode(&mut self, packet: &[u8]) -> Result<&[f32], NetError> {
        let packet = audiopus::packet::Packet::try_from(packet).map_err(NetError::from)?;
        let out = MutSignals::try_from(&mut self.pcm[..]).map_err(NetError::from)?;
        let n = self
            .decoder
            .decode_float(Some(packet), out, false)
            .map_err(NetError::from)?;
        Ok(&self.pcm[..n * self.channels])
    }

    /// Fills `frames` samples per channel of lost audio: from `next`'s
    /// inband FEC when the packet after the loss is there, else by
    /// concealment.
    ///
    /// # Errors
    /// [`NetError`] when libopus fails.
    pub fn conceal(&mut self, frames: usize, next: Option<&[u8]>) -> Result<&[f32], NetError> {
        let frames = frames.min(MAX_PACKET_FRAMES);
        let packet = match next {
            Some(p) => Some(audiopus::packet::Packet::try_from(p).map_err(NetError::from)?),
            None => None,
        };
        let fec = packet.is_some();
        let out = MutSignals::try_from(&mut self.pcm[..frames * self.channels])
            .map_err(NetError::from)?;
        let n = self
            .decoder
            .decode_float(packet, out, fec)
            .map_err(NetError::from)?;
        Ok(&self.pcm[..n * self.channels])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frames: usize, freq: f64) -> Vec<f32> {
        (0..frames)
            .map(|i| (std::f64::consts::TAU * freq * i as f64 / 48_000.0).sin() as f32 * 0.3)
            .collect()
    }

    #[test]
    fn a_tone_survives_encoding() {
        let mut enc = OpusEncoder::new(1, FrameLength::Ms20, 32_000, 10).unwrap();
        let mut dec = OpusDecoder::new(1).unwrap();
        let input = tone(48_000, 440.0);
        let mut output = Vec::new();
        for packet in input.chunks(960) {
            let bytes = enc.encode(packet).unwrap().to_vec();
            output.extend_from_slice(dec.decode(&bytes).unwrap());
        }
        assert_eq!(output.len(), input.len());
        // Past the codec's delay the level is the input's.
        let rms = |s: &[f32]| (s.iter().map(|v| v * v).sum::<f32>() / s.len() as f32).sqrt();
        let ratio = rms(&output[4_800..]) / rms(&input[4_800..]);
        assert!((0.85..1.15).contains(&ratio), "level ratio {ratio}");
    }

    /// Silence after speech is encoded for 200 ms, then goes out as
    /// one-byte packets the decoder plays as silence, until sound comes
    /// back and is encoded from a fresh start.
    #[test]
    fn silence_skips_the_encoder() {
        let mut enc = OpusEncoder::new(1, FrameLength::Ms20, 32_000, 10).unwrap();
        let mut dec = OpusDecoder::new(1).unwrap();
        let input = tone(48_000, 440.0);
        for packet in input.chunks(960) {
            let bytes = enc.encode(packet).unwrap().to_vec();
            dec.decode(&bytes).unwrap();
        }
        let silent = vec![0.0; 960];
        for k in 0..40 {
            let bytes = enc.encode(&silent).unwrap().to_vec();
            assert_eq!(
                bytes.len() == 1,
                k >= 10,
                "packet {k}: {} bytes",
                bytes.len()
            );
            let decoded = dec.decode(&bytes).unwrap();
            assert_eq!(decoded.len(), 960);
            if k >= 10 {
                // Below -60 dBFS: a few LSB of 16-bit audio at most.
                let peak = decoded.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(peak < 1e-3, "packet {k}: peak {peak}");
            }
        }
        assert_eq!(enc.counts(), (60, 30));
        for packet in input.chunks(960).take(10) {
            let bytes = enc.encode(packet).unwrap().to_vec();
            assert!(bytes.len() > 1);
            dec.decode(&bytes).unwrap();
        }
    }

    #[test]
    fn misuse_is_refused() {
        let mut enc = OpusEncoder::new(1, FrameLength::Ms20, 32_000, 10).unwrap();
        let mut dec = OpusDecoder::new(1).unwrap();
        assert!(enc.encode(&[0.0; 100]).is_err());
        assert!(dec.decode(&[]).is_err());
        assert_eq!(dec.conceal(960, None).unwrap().len(), 960);
        assert!(OpusEncoder::new(3, FrameLength::Ms20, 32_000, 0).is_err());
    }
}
