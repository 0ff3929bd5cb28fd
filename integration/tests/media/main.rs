//! Real-time media over WebRTC peers on loopback, in one binary: the
//! avatar link, calls and their echo cancellation, the avatar's
//! publisher, `sotto serve`'s signalling. Each test runs alone
//! (`sotto_testkit::alone`): they measure what a real-time peer heard,
//! and two encoders or echo cancellers at once on a small machine would
//! measure the machine.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod avatar;
mod call;
mod call_echo;
mod publish;
mod serve;
