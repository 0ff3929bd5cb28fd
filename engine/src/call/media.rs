//! A call's media thread (SPEC W1, W2): Opus encoding of what the call
//! sends, and the far end's microphone — cleaned by the audio processing
//! module when the call asks, with the call's own output as the reverse
//! stream at the moment it was sent — resampled to the engine's rate and
//! cut into 10 ms chunks.
//!
//! One blocking thread per call does both, so the two streams reach the
//! echo canceller in the order they happened, and neither the encoder nor
//! the module (which takes locks inside) runs on an async worker.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sotto_actors::capture::echo::{EchoPath, CHUNK};
use sotto_actors::ingest::Ingest;
use sotto_net::opus::{OpusEncoder, OPUS_RATE};
use tokio::sync::mpsc;

use super::Counters;
use crate::{FrameLength, InputFormat, SampleFormat};

/// How often a silent call sends a packet, as Opus DTX does.
const DTX_INTERVAL: std::time::Duration = std::time::Duration::from_millis(400);

/// What the media thread is given, in the order it happened.
pub(super) enum Work {
    /// One packet of the call's output: 48 kHz in Opus's layout, and its
    /// pts at 48 kHz.
    Encode(Vec<f32>, u64),
    /// Decoded microphone audio, mono at 48 kHz.
    Mic(Vec<f32>),
}

/// An encoded packet for the network.
pub(super) struct Encoded {
    pub bytes: Vec<u8>,
    pub pts: u64,
    /// The first packet of a talk spurt (RFC 3551).
    pub marker: bool,
}

/// The thread's state.
pub(super) struct Media {
    pub encoder: OpusEncoder,
    pub packet: FrameLength,
    pub opus_channels: usize,
    pub echo: Option<EchoPath>,
    pub mic: MicOut,
    pub counters: Arc<Counters>,
}

impl Media {
    /// Runs until the call drops its end of `work` or of `encoded`.
    pub fn run(mut self, mut work: mpsc::Receiver<Work>, encoded: mpsc::Sender<Encoded>) {
        let mut was_silent = true;
        // Silence, once the encoder skips it, goes out as Opus DTX does
        // it: one packet per DTX_INTERVAL, so a silent call costs the
        // network, SRTP and the far end almost nothing either.
        let every = (DTX_INTERVAL.as_millis() / self.packet.duration().as_millis()).max(1) as u64;
        let mut silent_run = 0u64;
        let mut render = Vec::with_capacity(CHUNK * 8);
        let mut capture = Vec::with_capacity(CHUNK * 8);
        while let Some(w) = work.blocking_recv() {
            match w {
                Work::Encode(pcm, pts) => {
                    if let Some(echo) = &mut self.echo {
                        let ch = self.opus_channels;
                        render.extend(
                            pcm.chunks_exact(ch)
                                .map(|f| f.iter().sum::<f32>() / ch as f32),
                        );
                        let whole = render.len() / CHUNK * CHUNK;
                        for chunk in render[..whole].chunks_exact(CHUNK) {
                            let _ = echo.process_render(chunk);
                        }
                        render.drain(..whole);
                    }
                    let Ok(bytes) = self.encoder.encode(&pcm) else {
                        continue;
                    };
                    let silent = bytes.len() == 1;
                    if silent {
                        self.counters.silent_packets.fetch_add(1, Ordering::Relaxed);
                        silent_run += 1;
                        if !(silent_run - 1).is_multiple_of(every) {
                            continue;
                        }
                    } else {
                        silent_run = 0;
                    }
                    let marker = was_silent && !silent;
                    was_silent = silent;
                    let packet = Encoded {
                        bytes: bytes.to_vec(),
                        pts,
                        marker,
                    };
                    if encoded.blocking_send(packet).is_err() {
                        break;
                    }
                }
                Work::Mic(mono) => {
                    capture.extend_from_slice(&mono);
                    let whole = capture.len() / CHUNK * CHUNK;
                    for chunk in capture[..whole].chunks_exact_mut(CHUNK) {
                        if let Some(echo) = &mut self.echo {
                            let _ = echo.process_capture(chunk);
                        }
                        self.mic.push(chunk);
                    }
                    capture.drain(..whole);
                }
            }
        }
    }
}

/// The microphone's last stage: mono 48 kHz in, 10 ms chunks at the
/// engine's rate and channels out, the newest dropped when nobody reads.
pub(super) struct MicOut {
    resampler: Option<Ingest>,
    channels: usize,
    chunk: usize,
    mono: Vec<f32>,
    /// Mean square, smoothed over about 100 ms.
    power: f32,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Vec<f32>>,
}

impl MicOut {
    pub fn new(
        rate: u32,
        channels: usize,
        counters: Arc<Counters>,
        tx: mpsc::Sender<Vec<f32>>,
    ) -> Self {
        Self {
            resampler: resampler(OPUS_RATE, rate, 1),
            channels,
            chunk: rate as usize / 100,
            mono: Vec::new(),
            power: 0.0,
            counters,
            tx,
        }
    }

    fn push(&mut self, mono48: &[f32]) {
        match &mut self.resampler {
            None => self.mono.extend_from_slice(mono48),
            Some(r) => r.push(&f32_bytes(mono48), &mut self.mono),
        }
        while self.mono.len() >= self.chunk {
            let piece = &self.mono[..self.chunk];
            let p = piece.iter().map(|s| s * s).sum::<f32>() / piece.len() as f32;
            self.power += (p - self.power) * 0.1;
            let db = 10.0 * self.power.max(1e-10).log10();
            self.counters
                .mic_level_db
                .store(db.to_bits(), Ordering::Relaxed);
            let mut out = Vec::with_capacity(self.chunk * self.channels);
            for &s in piece {
                out.extend(std::iter::repeat_n(s, self.channels));
            }
            self.mono.drain(..self.chunk);
            match self.tx.try_send(out) {
                Ok(()) => self.counters.mic_chunks.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.counters.mic_dropped.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

/// A resampler from `from` to `to` Hz for `channels`, or none when the
/// rates are the same: the engine's own ingest, fed f32.
pub(super) fn resampler(from: u32, to: u32, channels: usize) -> Option<Ingest> {
    if from == to {
        return None;
    }
    Ingest::new(
        InputFormat {
            sample_rate: from,
            channels,
            sample_format: SampleFormat::F32,
        },
        to,
        channels,
    )
    .ok()
}

pub(super) fn f32_bytes(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}
