//! One call's media over WebRTC (SPEC W1–W3, W6): the answer to a far
//! end's offer, an Opus track out whose RTP timestamps are the frames'
//! pts, and the far end's Opus track decoded back, lost packets concealed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCSessionDescription;

use crate::opus::{OpusDecoder, OPUS_RATE};
use crate::peer::{audio_peer, complete_local, opus_codec, NetError, Peer, PeerEvents};

/// The longest offer taken (SPEC S1): a browser's is 4–6 KiB.
pub const MAX_OFFER_BYTES: usize = 32 << 10;

/// The most media sections (`m=` lines) an offer may have.
pub const MAX_MEDIA_SECTIONS: usize = 4;

/// A call's peer connection, answered and sending.
pub struct CallPeer {
    /// The connection.
    pub peer: Peer,
    /// What it reports: state changes, the far end's track.
    pub events: PeerEvents,
    /// The Opus track out.
    pub sender: OpusSender,
}

/// Why an offer was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The offer is too long, not SDP, offers no Opus audio or cannot be
    /// answered: the far end's mistake.
    #[error("bad offer: {0}")]
    BadOffer(String),
    /// The peer connection could not be set up here.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Answers `offer` (SDP) with an audio peer bound to `bind` (loopback
/// unless a deployment says otherwise) that sends one Opus track and takes
/// the far end's: the answer's SDP, complete with its candidates, and the
/// peer.
///
/// # Errors
/// [`AnswerError::BadOffer`] for an offer too long, not SDP, without Opus
/// audio; [`AnswerError::Net`] for a peer that cannot be set up.
pub async fn answer_call(offer: &str, bind: IpAddr) -> Result<(String, CallPeer), AnswerError> {
    let bad = |m: &str| AnswerError::BadOffer(m.to_owned());
    if offer.len() > MAX_OFFER_BYTES {
        return Err(AnswerError::BadOffer(format!(
            "an offer may be at most {MAX_OFFER_BYTES} bytes"
        )));
    }
    if offer_opus_type(offer).is_none() {
        return Err(bad("it has no Opus audio"));
    }
    // Each media section is a transceiver to build and run: a call has
    // one audio section, perhaps video and data a browser adds.
    let sections = offer.lines().filter(|l| l.starts_with("m=")).count();
    if sections > MAX_MEDIA_SECTIONS {
        return Err(AnswerError::BadOffer(format!(
            "an offer may have at most {MAX_MEDIA_SECTIONS} media sections"
        )));
    }
    let desc = RTCSessionDescription::offer(offer.to_owned()).map_err(|_| bad("not SDP"))?;
    let (peer, mut events) = audio_peer(bind).await?;
    let (track, mut sender) = opus_track();
    peer.add_track(track).await.map_err(NetError::from)?;
    if peer.set_remote_description(desc).await.is_err() {
        let _ = peer.close().await;
        return Err(bad("it cannot be answered"));
    }
    let answer = peer.create_answer(None).await.map_err(NetError::from)?;
    let sdp = complete_local(&peer, &mut events, answer).await?;
    // The answer takes the offer's payload type for Opus.
    sender.payload_type = offer_opus_type(&sdp).unwrap_or(crate::peer::OPUS_PAYLOAD_TYPE);
    Ok((
        sdp,
        CallPeer {
            peer,
            events,
            sender,
        },
    ))
}

/// An Opus track to add to a peer, and the sender that writes it (with
/// [`OPUS_PAYLOAD_TYPE`](crate::peer::OPUS_PAYLOAD_TYPE) until told the
/// negotiated one): a call's voice, or a test's microphone.
#[must_use]
pub fn opus_track() -> (Arc<dyn TrackLocal>, OpusSender) {
    opus_track_in(None)
}

/// An Opus track like [`opus_track`] in the media stream `stream` (tracks
/// of one stream are played in sync by a browser); `None`: a stream of
/// its own.
#[must_use]
pub fn opus_track_in(stream: Option<&str>) -> (Arc<dyn TrackLocal>, OpusSender) {
    let (track, ssrc) = rtp_track(stream, "voice", RtpCodecKind::Audio, opus_codec().rtp_codec);
    let sender = OpusSender {
        track: Arc::clone(&track),
        ssrc,
        payload_type: crate::peer::OPUS_PAYLOAD_TYPE,
        sequence: random_u32() as u16,
        base: random_u32(),
        sent: 0,
    };
    (track, sender)
}

/// A track we write RTP to ourselves, of `kind` with `codec`, labelled
/// `label`, under a random SSRC (returned beside it), in `stream` (or a
/// stream of its own).
pub(crate) fn rtp_track(
    stream: Option<&str>,
    label: &str,
    kind: RtpCodecKind,
    codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
) -> (Arc<TrackLocalStaticRTP>, u32) {
    let ssrc = random_u32();
    let stream = stream.map_or_else(|| format!("sotto-{ssrc:08x}"), str::to_owned);
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream,
        format!("{label}-{ssrc:08x}"),
        label.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )));
    (track, ssrc)
}

/// The payload type an SDP gives Opus (`a=rtpmap:N opus/48000/2`).
#[must_use]
pub fn offer_opus_type(sdp: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("a=rtpmap:")?;
        let (pt, codec) = rest.split_once(' ')?;
        codec
            .to_ascii_lowercase()
            .starts_with("opus/48000")
            .then(|| pt.parse().ok())
            .flatten()
    })
}

/// A random 32-bit value for SSRCs and the sequence and timestamp
/// origins (RFC 3550 asks for them random), from the process's hasher keys.
pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish() as u32
}

/// Sends Opus packets as RTP on a call's track.
pub struct OpusSender {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
    /// The RTP timestamp of pts 0.
    base: u32,
    sent: u64,
}

impl OpusSender {
    /// Sends one packet whose audio starts at `pts48` (samples at 48 kHz
    /// on the engine's sample clock); `marker` starts a talk spurt.
    ///
    /// # Errors
    /// [`NetError`] when the track is not bound (not yet connected) or the
    /// connection is gone.
    pub async fn send(&mut self, payload: &[u8], pts48: u64, marker: bool) -> Result<(), NetError> {
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker,
                payload_type: self.payload_type,
                sequence_number: self.sequence,
                timestamp: self.base.wrapping_add(pts48 as u32),
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.track.write_rtp(packet).await.map_err(NetError::from)?;
        self.sent += 1;
        Ok(())
    }

    /// Packets sent.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The RTP timestamp of pts 0 (random, RFC 3550 5.1).
    #[must_use]
    pub fn origin(&self) -> u32 {
        self.base
    }

    /// The negotiated Opus payload type.
    #[must_use]
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// Sets the payload type the far end negotiated.
    pub fn set_payload_type(&mut self, payload_type: u8) {
        self.payload_type = payload_type;
    }
}

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

    #[test]
    fn the_opus_payload_type_is_read_from_the_sdp() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=rtpmap:63 red/48000/2\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(offer_opus_type(sdp), Some(111));
        assert_eq!(offer_opus_type("v=0\r\na=rtpmap:96 VP8/90000\r\n"), None);
        assert_eq!(offer_opus_type("a=rtpmap:999 opus/48000/2"), None);
    }
}
