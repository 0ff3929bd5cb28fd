//! What crosses the network between Sotto's processes, shared by the agent
//! side (`sotto-actors`) and the avatar side (`sotto-avatar`) so that
//! neither needs the other: WebRTC peers kept on loopback, and the avatar
//! link's wire protocol.
//!
//! Everything here runs on the tokio runtime; nothing is on an audio thread.
#![deny(missing_docs)]

pub mod avatar;
pub mod call;
pub mod peer;
pub mod video;

pub use peer::{
    audio_peer, av_peer, complete_local, connected, loopback_audio_peer, loopback_peer, NetError,
    Peer, PeerEvents,
};

/// Audio or video, as a track says what it carries.
pub use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
