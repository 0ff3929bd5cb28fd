//! What turns samples into packets and back: Opus ([`opus`]), VP8 behind
//! the `video` feature (`vp8`), resampling for transports ([`resample`]),
//! the echo processing module ([`echo`]), a call's media thread ([`call`])
//! and the decoder of a far end's Opus track ([`receive`]).
//!
//! Nothing here runs on the audio thread: codecs and the echo module run
//! on a call's media thread, the avatar's publisher or a test.
#![deny(missing_docs)]

pub mod call;
pub mod echo;
pub mod g711;
pub mod opus;
pub mod receive;
pub mod resample;
#[cfg(feature = "video")]
pub mod vp8;
