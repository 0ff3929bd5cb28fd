//! One call's media over WebRTC (SPEC W1–W3, W6): the answer to a far
//! end's offer, an Opus track out whose RTP timestamps are the frames'
//! pts, and the far end's Opus track decoded back, lost packets concealed.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::RTCSessionDescription;

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
    let vetted = crate::sdp::vet_offer(
        offer,
        crate::sdp::OfferRules {
            opus_audio: true,
            loopback: bind.is_loopback(),
        },
    )
    .map_err(bad)?;
    crate::sdp::log_dropped(vetted.dropped);
    let bundled = crate::sdp::bundle_single_section(&vetted.sdp);
    let unbundled = bundled.is_some();
    let desc =
        RTCSessionDescription::offer(bundled.unwrap_or(vetted.sdp)).map_err(|_| bad("not SDP"))?;
    let (peer, mut events) = audio_peer(bind).await?;
    let (track, mut sender) = opus_track();
    peer.add_track(track).await.map_err(NetError::from)?;
    if peer.set_remote_description(desc).await.is_err() {
        let _ = peer.close().await;
        return Err(bad("it cannot be answered"));
    }
    let answer = peer.create_answer(None).await.map_err(NetError::from)?;
    let mut sdp = complete_local(&peer, &mut events, answer).await?;
    if unbundled {
        sdp = crate::sdp::unbundle_answer(&sdp);
    }
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

/// Offers to publish one Opus track from a peer bound to `bind`, as a
/// participant does to an SFU (SPEC F2): the offer's SDP, complete with
/// its candidates, and the peer, which waits for
/// [`accept_answer`].
///
/// # Errors
/// [`NetError`] when the peer cannot be built or gather.
pub async fn offer_publish(bind: IpAddr) -> Result<(String, CallPeer), NetError> {
    let (peer, mut events) = audio_peer(bind).await?;
    let (track, sender) = opus_track();
    let built = async {
        peer.add_track(track).await.map_err(NetError::from)?;
        let offer = peer.create_offer(None).await.map_err(NetError::from)?;
        complete_local(&peer, &mut events, offer).await
    }
    .await;
    match built {
        Ok(sdp) => Ok((
            sdp,
            CallPeer {
                peer,
                events,
                sender,
            },
        )),
        Err(e) => {
            let _ = peer.close().await;
            Err(e)
        }
    }
}

/// Applies the SFU's `answer` to a peer that offered with
/// [`offer_publish`], and takes its Opus payload type.
///
/// # Errors
/// [`AnswerError::BadOffer`] when the answer is not SDP or does not fit the
/// offer.
pub async fn accept_answer(call: &mut CallPeer, answer: &str) -> Result<(), AnswerError> {
    let bad = |m: &str| AnswerError::BadOffer(format!("the answer: {m}"));
    if answer.len() > MAX_OFFER_BYTES {
        return Err(bad("too long"));
    }
    let desc = RTCSessionDescription::answer(answer.to_owned()).map_err(|_| bad("not SDP"))?;
    call.peer
        .set_remote_description(desc)
        .await
        .map_err(|e| bad(&e.to_string()))?;
    if let Some(pt) = offer_opus_type(answer) {
        call.sender.set_payload_type(pt);
    }
    Ok(())
}

/// Answers an SFU's `offer` of a feed to subscribe to (SPEC F2) with a
/// receive-only audio peer bound to `bind`: the answer's SDP, complete,
/// and the peer, whose tracks come through its events.
///
/// # Errors
/// [`AnswerError::BadOffer`] for an offer that cannot be answered (no Opus,
/// too long, malformed); [`AnswerError::Net`] for a peer that cannot be
/// built.
pub async fn answer_subscription(
    offer: &str,
    bind: IpAddr,
) -> Result<(String, Peer, PeerEvents), AnswerError> {
    if offer.len() > MAX_OFFER_BYTES {
        return Err(AnswerError::BadOffer("an offer too long".into()));
    }
    let vetted = crate::sdp::vet_offer(
        offer,
        crate::sdp::OfferRules {
            opus_audio: true,
            loopback: bind.is_loopback(),
        },
    )
    .map_err(|m| AnswerError::BadOffer(m.to_owned()))?;
    let desc = RTCSessionDescription::offer(vetted.sdp)
        .map_err(|_| AnswerError::BadOffer("not SDP".into()))?;
    let (peer, mut events) = audio_peer(bind).await?;
    let built = async {
        peer.set_remote_description(desc)
            .await
            .map_err(|e| AnswerError::BadOffer(e.to_string()))?;
        let answer = peer.create_answer(None).await.map_err(NetError::from)?;
        Ok::<_, AnswerError>(complete_local(&peer, &mut events, answer).await?)
    }
    .await;
    match built {
        Ok(sdp) => Ok((sdp, peer, events)),
        Err(e) => {
            let _ = peer.close().await;
            Err(e)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opus_payload_type_is_read_from_the_sdp() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=rtpmap:63 red/48000/2\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(offer_opus_type(sdp), Some(111));
        assert_eq!(offer_opus_type("v=0\r\na=rtpmap:96 VP8/90000\r\n"), None);
        assert_eq!(offer_opus_type("a=rtpmap:999 opus/48000/2"), None);
    }
}
