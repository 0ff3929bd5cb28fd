//! The avatar's face over RTP (SPEC W5): VP8 frames cut into RTP packets
//! (RFC 7741) whose timestamps are the frames' pts on the 90 kHz clock, and
//! the reassembly a viewer (or a test) does.

use std::sync::Arc;

use bytes::Bytes;
use rtc::rtp;
use rtc::rtp::codec::vp8::{Vp8Packet, Vp8Payloader};
use rtc::rtp::packetizer::{Depacketizer, Payloader};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::call::{random_u32, rtp_track};
use crate::peer::{vp8_codec, NetError, VP8_PAYLOAD_TYPE};

/// One encoded VP8 frame, as the encoder gives it and a receiver
/// reassembles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp8Frame {
    /// The VP8 bitstream of the frame.
    pub data: Vec<u8>,
    /// A key frame: a viewer can start here.
    pub key: bool,
}

/// The largest RTP payload sent: under a 1,500-byte MTU with room for the
/// IP, UDP, SRTP and header extensions around it.
pub const VIDEO_MTU: usize = 1_200;
/// The largest frame a receiver reassembles: a 1080p key frame at a high
/// rate is a few hundred KiB.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// A VP8 track to add to a peer, and the sender that writes it, in the
/// media stream `stream` (the voice's, so a browser plays both in sync) or
/// a stream of its own.
#[must_use]
pub fn vp8_track(stream: Option<&str>) -> (Arc<dyn TrackLocal>, Vp8Sender) {
    let (track, ssrc) = rtp_track(stream, "face", RtpCodecKind::Video, vp8_codec().rtp_codec);
    let sender = Vp8Sender {
        track: Arc::clone(&track),
        ssrc,
        payload_type: VP8_PAYLOAD_TYPE,
        payloader: Vp8Payloader::default(),
        sequence: random_u32() as u16,
        base: random_u32(),
    };
    (track, sender)
}

/// Sends VP8 frames as RTP on a track.
pub struct Vp8Sender {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    payloader: Vp8Payloader,
    sequence: u16,
    /// The RTP timestamp of pts 0.
    base: u32,
}

impl Vp8Sender {
    /// Sets the payload type the far end negotiated.
    pub fn set_payload_type(&mut self, payload_type: u8) {
        self.payload_type = payload_type;
    }

    /// The RTP timestamp of pts 0 (random, RFC 3550 5.1).
    #[must_use]
    pub fn origin(&self) -> u32 {
        self.base
    }

    /// The viewer's requests for a key frame, to wait on beside sending.
    #[must_use]
    pub fn key_frame_requests(&self) -> KeyFrameRequests {
        KeyFrameRequests {
            track: Arc::clone(&self.track),
        }
    }

    /// Sends one frame shown at `pts90` (the 90 kHz clock, derived from the
    /// voice's sample clock by the caller); the marker bit ends it.
    ///
    /// # Errors
    /// [`NetError`] when the track is not bound or the connection is gone.
    pub async fn send(&mut self, frame: &Vp8Frame, pts90: u64) -> Result<(), NetError> {
        let parts = self
            .payloader
            .payload(VIDEO_MTU, &Bytes::copy_from_slice(&frame.data))
            .map_err(NetError::from)?;
        let last = parts.len().saturating_sub(1);
        for (k, payload) in parts.into_iter().enumerate() {
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: k == last,
                    payload_type: self.payload_type,
                    sequence_number: self.sequence,
                    timestamp: self.base.wrapping_add(pts90 as u32),
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload,
            };
            self.sequence = self.sequence.wrapping_add(1);
            self.track.write_rtp(packet).await.map_err(NetError::from)?;
        }
        Ok(())
    }
}

/// A viewer's picture loss indications and full intra requests: each
/// asks for a key frame (a viewer that lost packets cannot decode on
/// until one comes).
pub struct KeyFrameRequests {
    track: Arc<TrackLocalStaticRTP>,
}

impl KeyFrameRequests {
    /// Waits for the next request: true when one comes, false once the
    /// track is gone.
    pub async fn next(&self) -> bool {
        use webrtc::media_stream::track_local::TrackLocalEvent;
        while let Some(event) = self.track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                continue;
            };
            if packets
                .iter()
                .any(|p| crate::peer::asks_key_frame(p.as_ref()))
            {
                return true;
            }
        }
        false
    }
}

/// Reassembles VP8 frames from a remote track: a viewer's side, for tests.
pub struct Vp8Receiver {
    track: Arc<dyn TrackRemote>,
    depacketizer: Vp8Packet,
    frame: Vec<u8>,
    last_seq: Option<u16>,
    broken: bool,
    /// Frames dropped because a packet of theirs was missing.
    pub incomplete: u64,
}

impl Vp8Receiver {
    /// A receiver reading `track`.
    #[must_use]
    pub fn new(track: Arc<dyn TrackRemote>) -> Self {
        Self {
            track,
            depacketizer: Vp8Packet::default(),
            frame: Vec::new(),
            last_seq: None,
            broken: false,
            incomplete: 0,
        }
    }

    /// Asks the sender for a key frame, as a viewer that lost a picture
    /// does (a picture loss indication).
    ///
    /// # Errors
    /// [`NetError`] once the connection is gone.
    pub async fn ask_key_frame(&self) -> Result<(), NetError> {
        use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
        let media_ssrc = self.track.ssrcs().await.first().copied().unwrap_or(0);
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        self.track
            .write_rtcp(vec![Box::new(pli)])
            .await
            .map_err(NetError::from)
    }

    /// The next whole frame and its RTP timestamp; `None` once the track
    /// has ended. A frame missing a packet is skipped and counted.
    pub async fn next(&mut self) -> Option<(Vec<u8>, u32)> {
        loop {
            let packet = match self.track.poll().await? {
                TrackRemoteEvent::OnRtpPacket(p) => p,
                TrackRemoteEvent::OnEnded => return None,
                _ => continue,
            };
            if packet.payload.is_empty() {
                continue;
            }
            let seq = packet.header.sequence_number;
            if let Some(last) = self.last_seq {
                if seq.wrapping_sub(last) != 1 {
                    self.broken = true;
                }
            }
            self.last_seq = Some(seq);
            if self.depacketizer.is_partition_head(&packet.payload) && !self.frame.is_empty() {
                // A new frame began before the last one's marker.
                self.broken = true;
                self.frame.clear();
            }
            match self.depacketizer.depacketize(&packet.payload) {
                Ok(part) if self.frame.len() + part.len() <= MAX_FRAME_BYTES => {
                    self.frame.extend_from_slice(&part);
                }
                _ => self.broken = true,
            }
            if packet.header.marker {
                let whole = std::mem::take(&mut self.frame);
                if std::mem::take(&mut self.broken) {
                    self.incomplete += 1;
                    continue;
                }
                return Some((whole, packet.header.timestamp));
            }
        }
    }
}
