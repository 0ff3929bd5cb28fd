//! Sotto's real-time core.
//!
//! Everything in this crate except constructors runs on the audio thread:
//! one driver (a device callback, the virtual clock or the offline loop)
//! calls [`Renderer::render`] and nothing else. Control code builds voices
//! and sends [`Command`]s and [`VoiceCommand`]s through lock-free rings; the
//! renderer answers with [`Event`]s and writes [`Telemetry`] atomics.
//!
//! Nothing reachable from `render` allocates, frees, locks, logs or sleeps.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod doorbell;
mod dsp;
mod message;
mod output;
mod renderer;
mod telemetry;
mod time;
mod voice;

pub use doorbell::Doorbells;
pub use dsp::{fade_gain, to_s16, Saturation};
pub use message::{ClipCommand, Command, Event, EventKind, VoiceCommand};
pub use output::{Output, OutputId, OutputReader, OutputSpec, OutputTelemetry};
pub use renderer::{Renderer, RendererConfig, RendererControl, RendererError};
pub use telemetry::{RenderTimes, Telemetry, VoiceTelemetry};
pub use time::{
    duration_of, frames_of, FrameCount, FrameLength, FromSlot, SampleTime, SessionId, StreamPos,
};
pub use voice::{DuckConfig, Voice, VoiceConfig, VoiceControl};
