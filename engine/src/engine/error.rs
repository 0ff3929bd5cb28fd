//! Why an engine call failed: one error for everything but a session's own
//! operations (those fail with [`SessionError`](crate::SessionError)).

use std::path::PathBuf;

use sotto_actors::avatar_link::LinkError;
use sotto_actors::background::BackgroundError;
use sotto_actors::decode::DecodeError;
use sotto_actors::devices::DeviceError;
use sotto_actors::supervisor::CreateError;
use sotto_actors::SettleTimeout;

/// Everything an engine, its background sources, its sound card side and
/// its avatar links can refuse, one variant per thing the caller can act
/// on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A config value is out of range (the engine's, a background
    /// source's, an output's).
    #[error("bad config: {0}")]
    Config(String),
    /// An actor or thread could not be started.
    #[error("could not start {what}: {reason}")]
    Start {
        /// Which actor or thread.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A session or an output could not be created: no free slot, a
    /// config or input format out of range, no such shared output.
    #[error("could not create session: {0}")]
    Create(String),
    /// The operation needs the other clock.
    #[error("operation needs the {0} clock")]
    WrongClock(&'static str),
    /// The actors did not settle (a stuck actor).
    #[error("{0}")]
    Stuck(String),
    /// The engine was shut down.
    #[error("engine is shut down")]
    Stopped,

    /// A background file does not exist (SPEC B7).
    #[error("{0}: no such file")]
    NoSuchFile(PathBuf),
    /// A background file could not be read.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A background file is empty.
    #[error("{0}: the file is empty")]
    EmptyFile(PathBuf),
    /// No container format or codec here decodes a background file.
    #[error("{path}: unsupported format or codec: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },
    /// A background file has no audio track.
    #[error("{0}: no audio track")]
    NoAudioTrack(PathBuf),
    /// A background file is malformed before any audio could be decoded.
    #[error("{path}: corrupt data: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the decoder found.
        reason: String,
    },
    /// A background volume outside 0..=2 or not a number.
    #[error("volume {0} must be within 0..=2")]
    Volume(f32),
    /// The background source was removed with its session.
    #[error("background source is closed")]
    BackgroundClosed,

    /// No such sound card device, or no default one (no sound card).
    #[error("no device {0}")]
    NoDevice(String),
    /// The device cannot run the format asked for.
    #[error("device {device} cannot run {channels} channels at {rate} Hz as f32 or i16")]
    DeviceFormat {
        /// The device.
        device: String,
        /// The rate asked for.
        rate: u32,
        /// The channels asked for.
        channels: usize,
    },
    /// The host refused the device's stream.
    #[error("device {device}: {reason}")]
    DeviceStream {
        /// The device.
        device: String,
        /// What the host said.
        reason: String,
    },
    /// Echo processing cannot run as asked.
    #[error("echo processing: {0}")]
    Echo(String),
    /// The output player already has a track of that name.
    #[error("track '{0}' is already added")]
    DuplicateTrack(String),
    /// The output player has no track of that name.
    #[error("no track '{0}'")]
    NoSuchTrack(String),
    /// The output player was started before.
    #[error("the player is already started")]
    AlreadyStarted,
    /// The output player was closed.
    #[error("the player is closed")]
    PlayerClosed,

    /// An avatar link's config is incomplete (no dispatcher URL, no room).
    #[error("avatar link: {0}")]
    AvatarConfig(String),
    /// The avatar server answered the join with an HTTP error (a 401 for
    /// a bad token).
    #[error("avatar link: the server answered {status}: {body}")]
    AvatarRefused {
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// The avatar server could not be reached, or the peer connection to
    /// it failed.
    #[error("avatar link: {0}")]
    AvatarUnreachable(String),
}

// The actors' own errors stay out of the public API; their text is kept.
#[doc(hidden)]
impl From<CreateError> for EngineError {
    fn from(e: CreateError) -> Self {
        Self::Create(e.to_string())
    }
}

#[doc(hidden)]
impl From<SettleTimeout> for EngineError {
    fn from(e: SettleTimeout) -> Self {
        Self::Stuck(e.to_string())
    }
}

#[doc(hidden)]
impl From<DecodeError> for EngineError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::NotFound(path) => Self::NoSuchFile(path),
            DecodeError::Io { path, reason } => Self::Unreadable { path, reason },
            DecodeError::Empty(path) => Self::EmptyFile(path),
            DecodeError::Unsupported { path, reason } => Self::Unsupported { path, reason },
            DecodeError::NoAudioTrack(path) => Self::NoAudioTrack(path),
            DecodeError::Corrupt { path, reason } => Self::Corrupt { path, reason },
        }
    }
}

#[doc(hidden)]
impl From<BackgroundError> for EngineError {
    fn from(e: BackgroundError) -> Self {
        match e {
            BackgroundError::Decode(d) => d.into(),
            BackgroundError::Volume(v) => Self::Volume(v),
            BackgroundError::Config(m) => Self::Config(m),
            BackgroundError::Closed => Self::BackgroundClosed,
        }
    }
}

#[doc(hidden)]
impl From<DeviceError> for EngineError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::NotFound(device) => Self::NoDevice(device),
            DeviceError::Unsupported {
                device,
                rate,
                channels,
            } => Self::DeviceFormat {
                device,
                rate,
                channels,
            },
            DeviceError::Echo(m) => Self::Echo(m),
            DeviceError::Stream { device, reason } => Self::DeviceStream { device, reason },
        }
    }
}

#[doc(hidden)]
impl From<LinkError> for EngineError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::NoDispatcher | LinkError::NoRoom => Self::AvatarConfig(e.to_string()),
            LinkError::Http { status, body } => Self::AvatarRefused { status, body },
            LinkError::Unreachable(m) => Self::AvatarUnreachable(m),
            LinkError::Net(n) => Self::AvatarUnreachable(n.to_string()),
        }
    }
}
