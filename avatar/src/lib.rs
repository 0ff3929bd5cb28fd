//! The avatar side of Sotto's avatar link (SPEC A1–A7): the process an
//! agent streams its voice to. An HTTP dispatcher checks the agent's token
//! and answers its WebRTC offer; per connection, a playout turns the data
//! channels' PCM into a steady voice track and paces a face's video frames
//! from the voice's sample clock; sinks keep what it plays.
//!
//! Tokens are minted here too ([`token::create`]): the agent library only
//! carries a token string, so it needs neither a JWT library nor an HTTP
//! server. The wire protocol lives in `sotto-net`, shared with the agent.
//!
//! Everything runs on the tokio runtime, one task per connection.
#![deny(missing_docs)]

mod connection;
pub mod face;
pub mod playout;
pub mod publish;
pub mod server;
pub mod sink;
pub mod token;
pub mod viewers;

/// The wire protocol shared with the agent side.
pub use sotto_net::avatar as proto;
