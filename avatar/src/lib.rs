//! The avatar side of Sotto's avatar link (SPEC A1–A7, W5): what plays an
//! agent's voice and face. A playout turns the data channels' PCM into a
//! steady voice track and paces a face's pictures from the voice's sample
//! clock ([`playout`]); a renderer draws the face ([`face`]); sinks keep
//! what it plays ([`sink`]); a publisher sends voice and face to WebRTC
//! viewers ([`publish`]). The HTTP server that takes agents' joins and
//! viewers is `sotto-server`; the wire protocol lives in `sotto-net`.
//!
//! Playouts run in their connection's task on tokio; the publisher encodes
//! on a thread of its own (`sotto-publish`).
#![deny(missing_docs)]

pub mod face;
pub mod playout;
pub mod publish;
pub mod sink;

/// The wire protocol shared with the agent side.
pub use sotto_net::avatar as proto;
