//! WebRTC peers that stay on loopback (DESIGN.md "Network"): sockets bound
//! to 127.0.0.1 only, no STUN or TURN servers, multicast DNS off, and the
//! whole offer or answer (every candidate in it) exchanged at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

/// Bytes a data channel may hold unsent: 20 s of 24 kHz mono s16.
pub const SEND_BUFFER: usize = 1 << 20;

/// Peer events (gathering done, state changes, opened channels) held unread;
/// a peer makes a handful in its life.
const PEER_EVENTS: usize = 16;

/// How long a call's far end may send nothing (media, keepalives) before
/// the connection counts as gone: ICE reports its STUN quiet this long
/// (Disconnected), and a call is over when its media is quiet too.
pub const CALL_SILENT_LIMIT: Duration = Duration::from_secs(3);

/// How long candidate gathering may take on loopback.
const GATHER_LIMIT: Duration = Duration::from_secs(5);

/// Why a peer connection could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webrtc: {0}")]
pub struct NetError(pub String);

impl NetError {
    /// Wraps any displayable error.
    pub fn from(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// A peer connection, shareable.
pub type Peer = Arc<dyn PeerConnection>;

/// What a peer connection reports, as channels.
pub struct PeerEvents {
    /// Candidate gathering finished.
    pub gathered: mpsc::Receiver<()>,
    /// Connection state changes.
    pub state: mpsc::Receiver<RTCPeerConnectionState>,
    /// Channels the remote side opened.
    pub channels: mpsc::Receiver<Arc<dyn DataChannel>>,
    /// Media tracks the remote side sends (an audio peer's only).
    pub tracks: mpsc::Receiver<Arc<dyn TrackRemote>>,
}

impl std::fmt::Debug for PeerEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerEvents").finish_non_exhaustive()
    }
}

struct Handler {
    gathered: mpsc::Sender<()>,
    state: mpsc::Sender<RTCPeerConnectionState>,
    channels: mpsc::Sender<Arc<dyn DataChannel>>,
    tracks: mpsc::Sender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.try_send(state);
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        // A peer opening channels without end loses the extra ones.
        let _ = self.channels.try_send(channel);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Likewise tracks: a call takes one.
        let _ = self.tracks.try_send(track);
    }
}

/// The Opus payload type offered here; an answer takes the offer's.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// Opus's RTP clock and the rate its codec runs at here (RFC 7587).
pub const OPUS_RATE: u32 = 48_000;

/// The RTP clock of video (RFC 3551): 90 kHz.
pub const VIDEO_RATE: u32 = 90_000;

/// Opus as a call offers and answers it (SPEC W1): a 48 kHz RTP clock, two
/// channels in the SDP as RFC 7587 has it, inband FEC.
#[must_use]
pub fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: OPUS_RATE,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1;maxaveragebitrate=64000".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PAYLOAD_TYPE,
    }
}

/// The VP8 payload type offered here.
pub const VP8_PAYLOAD_TYPE: u8 = 96;

/// VP8 as the avatar's face is offered (SPEC W5): a 90 kHz RTP clock,
/// picture loss indications and NACKs asked for.
#[must_use]
pub fn vp8_codec() -> RTCRtpCodecParameters {
    let feedback = |typ: &str, parameter: &str| rtc::rtp_transceiver::rtp_sender::RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8.to_owned(),
            clock_rate: VIDEO_RATE,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![feedback("nack", ""), feedback("nack", "pli")],
        },
        payload_type: VP8_PAYLOAD_TYPE,
    }
}

/// A peer like [`audio_peer`] that also carries VP8 video: the avatar's
/// voice and face (SPEC W5).
///
/// # Errors
/// [`NetError`] when the connection cannot be built.
pub async fn av_peer(bind: IpAddr) -> Result<(Peer, PeerEvents), NetError> {
    media_peer(
        &[
            (opus_codec(), RtpCodecKind::Audio),
            (vp8_codec(), RtpCodecKind::Video),
        ],
        // A viewer's key frame requests reach the sender
        // (`Vp8Sender::key_frame_requests`).
        Registry::new().with(KEY_FRAME_SLOT.into(), KeyFrameRequests::default()),
        bind,
    )
    .await
}

/// Where the key frame interceptor sits: after the default ones, nearer
/// the application, as the interceptor crate's own example places its.
const KEY_FRAME_SLOT: usize = 14_000;

/// A peer bound to `bind` carrying `codecs`, with the default
/// interceptors (sender and receiver reports, NACK) added to `registry`.
async fn media_peer(
    codecs: &[(RTCRtpCodecParameters, RtpCodecKind)],
    registry: Registry,
    bind: IpAddr,
) -> Result<(Peer, PeerEvents), NetError> {
    let mut media = MediaEngine::default();
    for (codec, kind) in codecs {
        media
            .register_codec(codec.clone(), *kind)
            .map_err(NetError::from)?;
    }
    let registry = register_default_interceptors(registry, &mut media).map_err(NetError::from)?;
    build(Some((media, registry)), bind).await
}

/// Whether an RTCP packet asks the sender for a key frame.
pub(crate) fn asks_key_frame(packet: &dyn rtc::rtcp::Packet) -> bool {
    use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Marks inbound key frame requests for the application: the interceptor
/// chain otherwise ends every inbound RTCP packet before it.
#[derive(Default)]
struct KeyFrameRequests {
    read: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
    write: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
}

impl rtc::sansio::Protocol<rtc::interceptor::TaggedPacket, rtc::interceptor::TaggedPacket, ()>
    for KeyFrameRequests
{
    type Rout = rtc::interceptor::TaggedPacket;
    type Wout = rtc::interceptor::TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: Self::Rout) -> Result<(), Self::Error> {
        if let rtc::interceptor::Packet::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| asks_key_frame(p.as_ref())) {
                msg.message
                    .add(rtc::interceptor::Attribute::DeliverToApplication);
            }
        }
        // Bounded by the chain: it polls after every read.
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: Self::Wout) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }

    fn handle_timeout(&mut self, _now: Self::Time) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl rtc::interceptor::Interceptor for KeyFrameRequests {
    fn bind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
}

/// A loopback peer (see [`loopback_peer`]) that also carries Opus audio
/// tracks, with the default interceptors (receiver reports, NACK).
///
/// # Errors
/// [`NetError`] when the connection cannot be built.
pub async fn loopback_audio_peer() -> Result<(Peer, PeerEvents), NetError> {
    audio_peer(LOOPBACK).await
}

/// 127.0.0.1, where peers bind unless told otherwise.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An audio peer like [`loopback_audio_peer`] whose sockets bind `bind`
/// (an interface's address for a real deployment) and whose only
/// candidates are there; multicast DNS stays off.
///
/// # Errors
/// [`NetError`] when the connection cannot be built.
pub async fn audio_peer(bind: IpAddr) -> Result<(Peer, PeerEvents), NetError> {
    media_peer(
        &[(opus_codec(), RtpCodecKind::Audio)],
        Registry::new(),
        bind,
    )
    .await
}

/// A peer connection whose only candidates are on 127.0.0.1.
///
/// # Errors
/// [`NetError`] when the connection cannot be built.
pub async fn loopback_peer() -> Result<(Peer, PeerEvents), NetError> {
    build(None, LOOPBACK).await
}

async fn build(
    media: Option<(MediaEngine, Registry)>,
    bind: IpAddr,
) -> Result<(Peer, PeerEvents), NetError> {
    let (gathered_tx, gathered) = mpsc::channel(PEER_EVENTS);
    let (state_tx, state) = mpsc::channel(PEER_EVENTS);
    let (channels_tx, channels) = mpsc::channel(PEER_EVENTS);
    let (tracks_tx, tracks) = mpsc::channel(PEER_EVENTS);
    let mut setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(bind.is_loopback());
    if media.is_some() {
        // ICE says Disconnected once the far end's STUN has been quiet
        // this long (SPEC W6: within a few seconds, not ICE's default 5 s);
        // a call then also asks whether its media stopped (see
        // `CALL_SILENT_LIMIT`). Failed comes only well after: an agent
        // that keeps its pair alive with RFC 5245's 25 s keepalives
        // (libnice's, GStreamer's) while media flows is not dropped.
        setting_engine = setting_engine.with_ice_timeouts(
            Some(CALL_SILENT_LIMIT),
            Some(Duration::from_secs(30)),
            Some(Duration::from_secs(1)),
        );
    }
    let setting_engine = setting_engine.build();
    let mut builder = PeerConnectionBuilder::new();
    if let Some((media, registry)) = media {
        builder = builder
            .with_media_engine(media)
            .with_interceptor_registry(registry);
    }
    let pc = builder
        .with_setting_engine(setting_engine)
        .with_handler(Arc::new(Handler {
            gathered: gathered_tx,
            state: state_tx,
            channels: channels_tx,
            tracks: tracks_tx,
        }))
        .with_udp_addrs(vec![SocketAddr::new(bind, 0).to_string()])
        // A stalled peer cannot grow a sender's memory past this.
        .with_data_channel_send_buffer_limit(SEND_BUFFER)
        .build()
        .await
        .map_err(NetError::from)?;
    Ok((
        Arc::new(pc),
        PeerEvents {
            gathered,
            state,
            channels,
            tracks,
        },
    ))
}

/// Sets `desc` as the local description and waits for every candidate,
/// so the returned SDP is complete.
///
/// # Errors
/// [`NetError`] when the description is refused or gathering stalls.
pub async fn complete_local(
    pc: &Peer,
    events: &mut PeerEvents,
    desc: RTCSessionDescription,
) -> Result<String, NetError> {
    pc.set_local_description(desc)
        .await
        .map_err(NetError::from)?;
    tokio::time::timeout(GATHER_LIMIT, events.gathered.recv())
        .await
        .map_err(|_| NetError("candidate gathering timed out".into()))?;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| NetError("no local description".into()))
}

/// Waits until the connection is up.
///
/// # Errors
/// [`NetError`] when it fails, closes or takes longer than `limit`.
pub async fn connected(events: &mut PeerEvents, limit: Duration) -> Result<(), NetError> {
    let wait = async {
        while let Some(s) = events.state.recv().await {
            match s {
                RTCPeerConnectionState::Connected => return Ok(()),
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    return Err(NetError(format!("connection {s}")));
                }
                _ => {}
            }
        }
        Err(NetError("connection dropped".into()))
    };
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| NetError("connection timed out".into()))?
}
