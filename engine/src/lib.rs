//! Sotto: the real-time audio plane of a voice agent.
//!
//! An application starts an [`Engine`], opens sessions with
//! [`Engine::create_session`], streams TTS bytes into each
//! [`SessionHandle`] and controls playback with messages: interrupt with a
//! fade, pause and resume, turn marks, counters of what the user heard.
//! Every session renders on one sample clock, driven by the offline clock
//! (deterministic, as fast as possible), the virtual real-time clock (one
//! render thread per shard) or a sound card.
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

mod admission;
mod avatar_handle;
mod background;
mod call;
mod engine;
mod frames;
mod handle;
mod input;
mod phone;
mod player;
mod room;
mod stats;
mod whip;

// The engine and what it reports.
pub use admission::{AdmissionConfig, CallPermit, Refusal};
pub use engine::{Clock, Engine, EngineConfig, EngineError};
pub use sotto_rt::{FrameCount, SampleTime, Saturation};
pub use stats::{EngineStats, LinkStats, SessionStats};

// Sessions: the agent's voice, pushed as bytes, controlled by messages.
pub use handle::{PlaybackSnapshot, SessionError, SessionHandle};
pub use sotto_actors::{
    Duck, InputFormat, OutputConfig, PushOutcome, SampleFormat, SessionConfig, SessionEvent,
    SessionEventKind, SessionOutput, SharedOutputId,
};
pub use sotto_rt::SessionId;

// What a session tees and where its audio comes out.
pub use frames::OutputFrames;
pub use sotto_actors::frames::Frame;
pub use sotto_actors::AudioSink;
pub use sotto_rt::FrameLength;

// Background audio under the voice.
pub use background::BackgroundHandle;
pub use sotto_actors::background::{BackgroundConfig, BackgroundMode};

// Calls over WebRTC.
pub use call::{CallConfig, CallEvent, CallHandle, CallStats};
pub use phone::{
    MediaStreamSocket, PhoneCallHandle, PhoneConfig, PhoneEvent, PhonePlayout, Provider, WsMessage,
};
pub use room::{RoomConfig, RoomError, RoomEvent, RoomFeed, RoomHandle, Subscribe};
pub use whip::WhipHandle;

// The avatar link, agent side.
pub use avatar_handle::AvatarHandle;
pub use sotto_actors::avatar_link::LinkConfig;

// A sound card: devices, their microphones with echo cancellation, the
// output player.
pub use input::DeviceInput;
pub use player::OutputPlayer;
pub use sotto_actors::capture::echo_link::EchoStats;
pub use sotto_actors::capture::input::{CaptureChunk, InputConfig};
pub use sotto_actors::device_manager::DeviceEvent;
pub use sotto_actors::devices::DeviceInfo;
pub use sotto_media::echo::EchoConfig;

/// The README's and the guide's Rust examples, compiled (and the runnable
/// ones run) as doctests, so the text a reader pastes is the text the test
/// suite builds.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/GUIDE.md")]
pub struct GuideDoctests;
