//! Why an engine call failed.

use sotto_actors::background::BackgroundError;
use sotto_actors::devices::DeviceError;
use sotto_actors::supervisor::CreateError;
use sotto_actors::SettleTimeout;

/// Engine-level failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The config is out of range.
    #[error("bad engine config: {0}")]
    Config(String),
    /// An actor could not be started.
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
    /// A background source's config is out of range.
    #[error("bad background source: {0}")]
    Background(#[from] BackgroundError),
    /// A device cannot be used as asked.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The avatar link could not be made (a 401 for a bad token is here).
    #[error("avatar link: {0}")]
    Avatar(#[from] sotto_actors::avatar_link::LinkError),
    /// The engine was shut down.
    #[error("engine is shut down")]
    Stopped,
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
