//! Sotto: the real-time audio plane of a voice agent.
//!
//! An application starts an [`Engine`], opens sessions with
//! [`Engine::create_session`], streams TTS bytes into each
//! [`SessionHandle`] and controls playback with messages: interrupt with a
//! fade, pause and resume, turn marks, counters of what the user heard. All
//! audio comes out of one real-time renderer, driven by the offline clock
//! (deterministic, as fast as possible), the virtual real-time clock or a
//! sound card.
//!
//! This crate is the library an application embeds: it has no command
//! line, HTTP server, plotting or token-signing dependencies. The avatar
//! side of the avatar link is `sotto-avatar`; the `sotto` program is
//! `sotto-cli`. `docs/ARCHITECTURE.md` in the repository maps the whole.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sotto::{Engine, EngineConfig, SessionConfig};
//! let engine = Engine::start(EngineConfig::default()).await?;
//! let agent = engine.create_session(SessionConfig::default()).await?;
//! agent.mark_synthesis_start()?;
//! let push = agent.push(vec![0u8; 4800]);
//! let audio = engine.render(24_000).await?; // one second, offline
//! push.await?;
//! agent.interrupt()?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod avatar_handle;
mod background;
mod call;
mod engine;
mod frames;
mod handle;
mod player;

pub use avatar_handle::AvatarHandle;
pub use background::BackgroundHandle;
pub use call::{
    CallConfig, CallError, CallEvent, CallHandle, CallStats, CallStatsReader, MicChunks,
};
pub use engine::{
    default_render_threads, Clock, Engine, EngineConfig, EngineError, ShardStats, SHUTDOWN_LIMIT,
};
pub use frames::{FramesError, OutputFrames, SharedOutput};
pub use handle::{SessionError, SessionHandle, OFFLINE_STALL};
pub use player::{EngineErrorText, OutputPlayer, PlayerError};
pub use sotto_actors::frames::{Frame, FrameLength};
/// Messages from the application a session's mailbox holds at most (SPEC S5).
pub use sotto_actors::session::MAILBOX_LIMIT;
/// The agent side of the avatar link (SPEC A1–A7): what
/// [`Engine::attach_avatar`] takes and reports. The avatar side itself
/// (dispatcher, playout, tokens) is the `sotto-avatar` crate.
pub mod avatar {
    pub use sotto_actors::avatar_link::{
        LinkConfig, LinkError, LinkStats, LINK_BACKLOG, LINK_CONTROL_BACKLOG,
    };
}
pub use sotto_actors::background::{BackgroundConfig, BackgroundError, BackgroundMode};
pub use sotto_actors::capture::echo;
pub use sotto_actors::capture::echo::{EchoConfig, EchoError, EchoPath};
pub use sotto_actors::capture::echo_link::EchoStats;
pub use sotto_actors::capture::input::{CaptureChunk, DeviceInput, InputConfig};
pub use sotto_actors::decode;
pub use sotto_actors::decode::DecodeError;
pub use sotto_actors::device_manager::{DeviceEvent, DEVICE_EVENT_QUEUE};
pub use sotto_actors::devices::{devices, DeviceError, DeviceInfo};
pub use sotto_actors::{
    AudioSink, Duck, InputFormat, OwnOutput, PushOutcome, Recorder, RecorderLog, SampleFormat,
    SessionConfig, SessionEvent, SessionEventKind, SessionOutput, SharedOutputConfig,
    SharedOutputId, SinkError, WavSink, MAX_WAITING, SUPPORTED_RATES,
};
pub use sotto_rt::{SampleTime, Saturation, SessionId, Telemetry, VoiceTelemetry};

/// The README's Rust examples, compiled (and the first one run) as doctests
/// so the text a reader pastes is the text the test suite builds.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
