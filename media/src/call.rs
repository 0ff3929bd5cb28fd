//! A call's media thread (SPEC W1, W2): Opus encoding of what the call
//! sends, and the far end's microphone — cleaned by the audio processing
//! module when the call asks, with the call's own output as the reverse
//! stream at the moment it was sent — resampled to the engine's rate and
//! cut into 10 ms chunks.
//!
//! One blocking thread per call does both, so the two streams reach the
//! echo canceller in the order they happened, and neither the encoder nor
//! the module (which takes locks inside) runs on an async worker.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use sotto_rt::FrameLength;
use tokio::sync::mpsc;

use crate::echo::{EchoPath, CHUNK};
use crate::g711::Law;
use crate::opus::{OpusEncoder, OPUS_RATE};
use crate::resample::{ResampleError, Resampler};

/// How often a silent call sends a packet, as Opus DTX does.
const DTX_INTERVAL: std::time::Duration = std::time::Duration::from_millis(400);

/// A call's counters, from `CallHandle::stats`: what to watch for packet
/// loss, jitter and the microphone's level.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CallStats {
    /// Opus packets sent.
    pub packets_sent: u64,
    /// Packets' worth of digital silence that skipped the encoder; past
    /// the first 200 ms of a silence, one packet in 400 ms of it is sent
    /// (as Opus DTX does) and the rest are not.
    pub silent_packets: u64,
    /// Packets the encoder thread could not take in time (dropped).
    pub encoder_dropped: u64,
    /// Frames of the session's output the call could not read in time
    /// (the output's bound overran): audio the far end never got.
    pub frames_lost: u64,
    /// Packets received from the far end and decoded.
    pub packets_received: u64,
    /// Packets missing from the far end (filled by FEC or concealment).
    pub packets_lost: u64,
    /// Of those, packets made up by concealment (the rest came back from
    /// the next packet's FEC).
    pub packets_concealed: u64,
    /// Packets that did not decode.
    pub packets_bad: u64,
    /// The far end's interarrival jitter (RFC 3550), in milliseconds.
    pub jitter_ms: f32,
    /// Microphone chunks delivered.
    pub mic_chunks: u64,
    /// Microphone chunks dropped (the reader lagged).
    pub mic_dropped: u64,
    /// The microphone's level over about the last 100 ms, in dB full
    /// scale (−100 before any has come).
    pub mic_level_db: f32,
    /// How old a packet's first sample was when the packet went out, on
    /// average, in milliseconds: from being rendered to being on the wire
    /// (the packet's length, the wait for the encoder, the encoding).
    pub send_age_ms: f32,
}

/// A call's counters, written by its media thread and its task, read
/// as a [`CallStats`] snapshot.
#[derive(Default)]
pub struct Counters {
    /// Opus packets sent.
    pub packets_sent: AtomicU64,
    /// Packets of digital silence that skipped the encoder.
    pub silent_packets: AtomicU64,
    /// Packets the media thread could not take in time.
    pub encoder_dropped: AtomicU64,
    /// Output frames the call read too late.
    pub frames_lost: AtomicU64,
    /// Far-end packets decoded.
    pub packets_received: AtomicU64,
    /// Far-end packets missing.
    pub packets_lost: AtomicU64,
    /// Of those, packets concealed.
    pub packets_concealed: AtomicU64,
    /// Far-end packets that did not decode.
    pub packets_bad: AtomicU64,
    /// The far end's jitter in ms, f32 bits.
    pub jitter_ms: AtomicU32,
    /// Microphone chunks delivered.
    pub mic_chunks: AtomicU64,
    /// Microphone chunks dropped.
    pub mic_dropped: AtomicU64,
    /// The microphone's level in dBFS, f32 bits, once a chunk has come.
    pub mic_level_db: AtomicU32,
    /// Sum over packets sent of their first sample's age, µs.
    pub send_age_us: AtomicU64,
}

impl Counters {
    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> CallStats {
        let c = self;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CallStats {
            packets_sent: get(&c.packets_sent),
            silent_packets: get(&c.silent_packets),
            encoder_dropped: get(&c.encoder_dropped),
            frames_lost: get(&c.frames_lost),
            packets_received: get(&c.packets_received),
            packets_lost: get(&c.packets_lost),
            packets_concealed: get(&c.packets_concealed),
            packets_bad: get(&c.packets_bad),
            jitter_ms: f32::from_bits(c.jitter_ms.load(Ordering::Relaxed)),
            mic_chunks: get(&c.mic_chunks),
            mic_dropped: get(&c.mic_dropped),
            send_age_ms: (get(&c.send_age_us) as f64 / get(&c.packets_sent).max(1) as f64 / 1000.0)
                as f32,
            mic_level_db: if get(&c.mic_chunks) + get(&c.mic_dropped) == 0 {
                -100.0
            } else {
                f32::from_bits(c.mic_level_db.load(Ordering::Relaxed))
            },
        }
    }
}

/// What the media thread is given, in the order it happened.
pub enum Work {
    /// One packet of the call's output: 48 kHz in Opus's layout, and its
    /// pts at 48 kHz.
    Encode(Vec<f32>, u64),
    /// Decoded microphone audio, mono at 48 kHz, from feed `.0` (a call
    /// has one, feed 0; a room one per participant heard, mixed here).
    Mic(u64, Vec<f32>),
    /// Feed `.0` is gone: what it sent is mixed out and it is forgotten.
    FeedGone(u64),
}

/// An encoded packet for the network.
pub struct Encoded {
    /// The Opus packet.
    pub bytes: Vec<u8>,
    /// Its first sample's pts at 48 kHz.
    pub pts: u64,
    /// The first packet of a talk spurt (RFC 3551).
    pub marker: bool,
}

/// What a link's output is encoded as.
pub enum Encoder {
    /// Opus, for WebRTC.
    Opus(OpusEncoder),
    /// G.711 at 8 kHz, for a phone line (SPEC T1).
    G711(Box<G711Encoder>),
}

/// 48 kHz mono to G.711 codes at 8 kHz: band-limited to the line's 4 kHz
/// first (the resampler's filter), then one code per sample.
pub struct G711Encoder {
    law: Law,
    to_8k: Resampler,
    narrow: Vec<f32>,
}

impl G711Encoder {
    /// An encoder to `law`.
    ///
    /// # Errors
    /// [`ResampleError`] when the resampler cannot be built.
    pub fn new(law: Law) -> Result<Self, ResampleError> {
        Ok(Self {
            law,
            to_8k: Resampler::new(48_000, 8_000, 1)?,
            narrow: Vec::with_capacity(256),
        })
    }

    /// The codes `pcm` (48 kHz mono) makes; the resampler holds a few
    /// milliseconds back, so a packet's codes are not exactly its own.
    fn encode(&mut self, pcm: &[f32]) -> Vec<u8> {
        self.narrow.clear();
        self.to_8k.push(pcm, &mut self.narrow);
        let mut codes = Vec::with_capacity(self.narrow.len());
        self.law.encode_f32(&self.narrow, &mut codes);
        codes
    }
}

/// The thread's state.
pub struct Media {
    /// The link's encoder.
    pub encoder: Encoder,
    /// The packet length it encodes.
    pub packet: FrameLength,
    /// Channels the call sends (1 or 2).
    pub opus_channels: usize,
    /// The audio processing module on the microphone, when asked for.
    pub echo: Option<EchoPath>,
    /// Where the microphone goes.
    pub mic: MicOut,
    /// The call's counters.
    pub counters: Arc<Counters>,
    /// Silence sent as Opus DTX does (one packet in 400 ms) rather than
    /// every packet.
    pub dtx: bool,
}

impl Media {
    /// Runs until the call drops its end of `work` or of `encoded`.
    pub fn run(mut self, mut work: mpsc::Receiver<Work>, encoded: mpsc::Sender<Encoded>) {
        let mut was_silent = true;
        // Silence, once the encoder skips it, goes out as Opus DTX does
        // it: one packet per DTX_INTERVAL, so a silent call costs the
        // network, SRTP and the far end almost nothing either.
        let every = if self.dtx {
            (DTX_INTERVAL.as_millis() / self.packet.duration().as_millis()).max(1) as u64
        } else {
            1
        };
        let mut silent_run = 0u64;
        let mut render = Vec::with_capacity(CHUNK * 8);
        let mut capture = Vec::with_capacity(CHUNK * 8);
        let mut mix = MicMix::default();
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
                    let opus = match &mut self.encoder {
                        Encoder::Opus(opus) => opus,
                        Encoder::G711(g711) => {
                            // A phone line takes every sample, silence too.
                            let packet = Encoded {
                                bytes: g711.encode(&pcm),
                                pts,
                                marker: false,
                            };
                            if encoded.blocking_send(packet).is_err() {
                                break;
                            }
                            continue;
                        }
                    };
                    let Ok(bytes) = opus.encode(&pcm) else {
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
                Work::FeedGone(feed) => mix.remove(feed, &mut capture),
                Work::Mic(feed, mono) => {
                    mix.add(feed, &mono, &mut capture);
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

/// Several feeds' microphones summed into one, as they arrive: each
/// feed writes at its own position in a shared buffer; the mix is handed
/// on up to where every feed has written, or, when one lags (a feed
/// gone quiet, a burst after loss), up to [`MIX_SLACK`] behind the one
/// furthest ahead, the laggard's late samples then dropped. One feed
/// passes straight through.
#[derive(Default)]
struct MicMix {
    /// Samples not yet handed on.
    sum: Vec<f32>,
    /// Each feed's write position in `sum`.
    feeds: Vec<(u64, usize)>,
}

/// How far one feed may run ahead of another before the mix goes on
/// without the laggard: 60 ms at 48 kHz.
const MIX_SLACK: usize = 2_880;

/// Feeds mixed at most; a further feed's audio is dropped.
const MAX_FEEDS: usize = 16;

impl MicMix {
    fn add(&mut self, feed: u64, mono: &[f32], out: &mut Vec<f32>) {
        let at = match self.feeds.iter().position(|(f, _)| *f == feed) {
            Some(i) => i,
            None if self.feeds.len() < MAX_FEEDS => {
                self.feeds.push((feed, 0));
                self.feeds.len() - 1
            }
            None => return,
        };
        let start = self.feeds[at].1;
        let end = start + mono.len();
        if self.sum.len() < end {
            self.sum.resize(end, 0.0);
        }
        for (m, s) in self.sum[start..end].iter_mut().zip(mono) {
            *m += s;
        }
        self.feeds[at].1 = end;
        self.flush(out);
    }

    fn remove(&mut self, feed: u64, out: &mut Vec<f32>) {
        self.feeds.retain(|(f, _)| *f != feed);
        self.flush(out);
    }

    /// Hands on what every feed has written (or all but [`MIX_SLACK`]).
    fn flush(&mut self, out: &mut Vec<f32>) {
        let Some(least) = self.feeds.iter().map(|(_, w)| *w).min() else {
            out.append(&mut self.sum);
            return;
        };
        let most = self.feeds.iter().map(|(_, w)| *w).max().unwrap_or(0);
        let ready = least.max(most.saturating_sub(MIX_SLACK));
        out.extend(self.sum.drain(..ready));
        for (_, w) in &mut self.feeds {
            *w = w.saturating_sub(ready);
        }
    }
}

/// The microphone's last stage: mono 48 kHz in, 10 ms chunks at the
/// engine's rate and channels out, the newest dropped when nobody reads.
pub struct MicOut {
    resampler: Option<Resampler>,
    channels: usize,
    chunk: usize,
    mono: Vec<f32>,
    /// Mean square, smoothed over about 100 ms.
    power: f32,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Vec<f32>>,
}

impl MicOut {
    /// The microphone out to `tx`, as `channels` at `rate`.
    #[must_use]
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
            Some(r) => r.push(mono48, &mut self.mono),
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
/// rates are the same (or out of the resampler's range).
#[must_use]
pub fn resampler(from: u32, to: u32, channels: usize) -> Option<Resampler> {
    if from == to {
        return None;
    }
    Resampler::new(from, to, channels).ok()
}
