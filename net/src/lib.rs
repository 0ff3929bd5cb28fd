//! Sotto's network plumbing, in pure Rust (no C codec, no echo module):
//! WebRTC peers kept on loopback ([`peer`]), a call's answer and its Opus
//! RTP track ([`call`]), the avatar's VP8 RTP packets ([`video`]), and the
//! avatar link's wire protocol ([`avatar`]), offers looked over before
//! anything is built for them ([`sdp`]), the Janus API a room
//! participant speaks ([`janus`]), shared by the agent side and
//! the avatar side so neither needs the other. Encoding lives in
//! `sotto-media`.
//!
//! Peers and tracks run on the tokio runtime; nothing here is reachable
//! from an audio thread.
#![deny(missing_docs)]

pub mod avatar;
pub mod call;
pub mod janus;
pub mod peer;
pub mod phone;
pub mod sdp;
pub mod video;

pub use peer::{
    audio_peer, av_peer, complete_local, connected, loopback_audio_peer, loopback_peer, NetError,
    Peer, PeerEvents,
};

/// Audio or video, as a track says what it carries.
pub use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
