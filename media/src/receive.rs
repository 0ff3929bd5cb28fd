//! The far end's Opus track decoded (SPEC W2): 48 kHz interleaved
//! samples, packets lost by sequence number made up from the next
//! packet's FEC or concealed, interarrival jitter as RFC 3550 has it.

use std::sync::Arc;
use std::time::Instant;

use sotto_net::NetError;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::opus::{OpusDecoder, OPUS_RATE};

/// What the far end's packets have been so far.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Received {
    /// Packets decoded.
    pub packets: u64,
    /// Packets missing by sequence number: the last of a gap comes back
    /// from the next packet's FEC, the rest are concealed.
    pub lost: u64,
    /// Missing packets made up by concealment (not FEC).
    pub concealed: u64,
    /// Packets that could not be decoded (counted, skipped).
    pub bad: u64,
    /// Interarrival jitter (RFC 3550 6.4.1), in seconds.
    pub jitter: f64,
}

/// Decodes the far end's Opus track into 48 kHz interleaved samples.
pub struct OpusReceiver {
    track: Arc<dyn TrackRemote>,
    decoder: OpusDecoder,
    channels: usize,
    /// The last packet's sequence number.
    last_seq: Option<u16>,
    /// Where the last packet's audio ended (RTP timestamp), and its length.
    last_end: Option<u32>,
    last_frames: usize,
    counts: Received,
    out: Vec<f32>,
    jitter: Jitter,
}

/// RFC 3550's interarrival jitter: the smoothed change in transit time
/// from one packet to the next, in RTP clock units.
#[derive(Debug)]
struct Jitter {
    origin: Instant,
    last_transit: Option<f64>,
    value: f64,
}

impl Jitter {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_transit: None,
            value: 0.0,
        }
    }

    fn arrived(&mut self, rtp_ts: u32, at: Instant) {
        let arrival = at.duration_since(self.origin).as_secs_f64() * f64::from(OPUS_RATE);
        // Timestamps wrap; the transit's offset is arbitrary, only its
        // change from one packet to the next counts.
        let transit = arrival - f64::from(rtp_ts);
        if let Some(last) = self.last_transit {
            let mut d = (transit - last).abs();
            // A wrap of the 32-bit timestamp looks like a jump of 2^32.
            if d > f64::from(u32::MAX) / 2.0 {
                d = (d - f64::from(u32::MAX) - 1.0).abs();
            }
            self.value += (d - self.value) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    fn seconds(&self) -> f64 {
        self.value / f64::from(OPUS_RATE)
    }
}

/// The longest gap concealed at once: 200 ms; a longer one is a new
/// stream, not a loss.
const MAX_CONCEALED_FRAMES: u64 = 200 * OPUS_RATE as u64 / 1000;

impl OpusReceiver {
    /// A receiver decoding `track` as `channels` (1 or 2).
    ///
    /// # Errors
    /// [`NetError`] for a channel count Opus does not take.
    pub fn new(track: Arc<dyn TrackRemote>, channels: usize) -> Result<Self, NetError> {
        Ok(Self {
            track,
            decoder: OpusDecoder::new(channels)?,
            channels: channels.max(1),
            last_seq: None,
            last_end: None,
            last_frames: 960,
            counts: Received::default(),
            out: Vec::new(),
            jitter: Jitter::new(),
        })
    }

    /// The next audio: what the next packet holds, after concealment of
    /// any packets missing before it. `None` once the track has ended.
    pub async fn next(&mut self) -> Option<&[f32]> {
        loop {
            let packet = match self.track.poll().await? {
                TrackRemoteEvent::OnRtpPacket(p) => p,
                TrackRemoteEvent::OnEnded => return None,
                _ => continue,
            };
            let (seq, ts) = (packet.header.sequence_number, packet.header.timestamp);
            if let Some(last) = self.last_seq {
                let step = seq.wrapping_sub(last);
                if step == 0 || step > u16::MAX / 2 {
                    // A duplicate or a late packet: already played past.
                    continue;
                }
                self.counts.lost += u64::from(step - 1);
            }
            self.last_seq = Some(seq);
            // Padding (a sender probing bandwidth) takes a sequence number
            // and carries no audio: nothing is missing for it.
            if packet.payload.is_empty() {
                continue;
            }
            self.out.clear();
            self.jitter.arrived(ts, Instant::now());
            // Audio is missing where this packet starts later than the last
            // one ended; a gap longer than 200 ms is a new stream (a sender
            // that stopped for silence), not a loss.
            if let Some(end) = self.last_end {
                let gap = i64::from(ts.wrapping_sub(end) as i32);
                if gap > 0 && gap as u64 <= MAX_CONCEALED_FRAMES {
                    let per = self.last_frames.max(120);
                    let pieces = (gap as usize).div_ceil(per);
                    for k in 0..pieces {
                        // The last missing piece comes back from this
                        // packet's FEC; the ones before it are concealed.
                        let next = (k + 1 == pieces).then_some(&packet.payload[..]);
                        if next.is_none() {
                            self.counts.concealed += 1;
                        }
                        if let Ok(s) = self.decoder.conceal(per, next) {
                            self.out.extend_from_slice(s);
                        }
                    }
                }
            }
            match self.decoder.decode(&packet.payload) {
                Ok(s) => {
                    let frames = s.len() / self.channels;
                    self.out.extend_from_slice(s);
                    self.counts.packets += 1;
                    self.last_frames = frames;
                    self.last_end = Some(ts.wrapping_add(frames as u32));
                }
                Err(_) => self.counts.bad += 1,
            }
            if !self.out.is_empty() {
                return Some(&self.out);
            }
        }
    }

    /// The RTP timestamp where the audio [`OpusReceiver::next`] last gave
    /// ends: its samples are the ones just before it.
    #[must_use]
    pub fn end_timestamp(&self) -> Option<u32> {
        self.last_end
    }

    /// Packets decoded, lost, concealed and refused so far, and the jitter.
    #[must_use]
    pub fn counts(&self) -> Received {
        Received {
            jitter: self.jitter.seconds(),
            ..self.counts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_follows_rfc_3550() {
        let mut j = Jitter::new();
        let t0 = j.origin;
        // Packets every 20 ms, arriving on time: no jitter.
        for k in 0..50u32 {
            j.arrived(
                k * 960,
                t0 + std::time::Duration::from_millis(u64::from(k) * 20),
            );
        }
        assert!(j.seconds() < 1e-6, "{}", j.seconds());
        // Every other packet 10 ms late: |D| is 10 ms each time, and the
        // estimate converges on it.
        for k in 50..400u32 {
            let late = if k % 2 == 0 { 10 } else { 0 };
            let at = t0 + std::time::Duration::from_millis(u64::from(k) * 20 + late);
            j.arrived(k * 960, at);
        }
        assert!((j.seconds() - 0.010).abs() < 0.001, "{}", j.seconds());
        // A timestamp wrap is not a jump.
        let mut w = Jitter::new();
        let base = u32::MAX - 960 * 5;
        for k in 0..20u32 {
            let at = w.origin + std::time::Duration::from_millis(u64::from(k) * 20);
            w.arrived(base.wrapping_add(k * 960), at);
        }
        assert!(w.seconds() < 1e-3, "{}", w.seconds());
    }
}
