//! Capture and echo cancellation (SPEC D3, D4): the microphone's input
//! stream, the timestamped tap rings that carry audio out of the device
//! callbacks, and the `sotto-echo` thread that
//! pairs what was played with what was heard.
//!
//! None of it owns a renderer: that is the drivers' job.

pub mod echo_link;
pub mod input;
pub mod tap;
