//! Sotto's HTTP side (SPEC S1–S5, W3–W5, A2): the call server browsers
//! call ([`calls`]), the avatar server agents join and viewers watch
//! ([`avatar`]), the tokens both check ([`token`]), input typed at the
//! edge ([`http`]) and the one capped accept loop they run on
//! ([`accept`]). The pages share one JavaScript module (`/sotto.js`).
//!
//! Everything runs on the tokio runtime, one task per connection.
#![deny(missing_docs)]

pub mod accept;
pub mod avatar;
pub mod calls;
pub mod events;
pub mod http;
mod stats;
pub mod token;
