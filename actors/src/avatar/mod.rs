//! The avatar link (SPEC A1–A7, O12): the agent streams its voice to an
//! avatar over two WebRTC data channels, the avatar plays it with a face
//! locked to the audio clock and acknowledges every segment.

pub mod face;
pub mod link;
pub mod net;
pub mod playout;
pub mod proto;
pub mod server;
pub mod token;
