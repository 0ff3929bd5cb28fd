//! The engine's end-to-end tests that need no process of their own, in one
//! binary (each binary links WebRTC, Opus, VP8 and the echo module again):
//! sessions, background audio, supervision and injected faults, the output
//! player, scenarios, shutdown, the echo path on recorded audio, the
//! face over VP8 on a loopback peer, the fuzz corpus.
//!
//! Tests that measure the whole process (its memory, its allocator, its
//! network namespace, its ALSA configuration) stay in binaries of their
//! own beside this one.

mod background;
mod echo;
mod fault_injection;
mod fuzz_regressions;
mod player;
mod scenario;
mod session;
mod shutdown;
mod supervision;
mod video;
