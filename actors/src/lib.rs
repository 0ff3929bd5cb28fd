//! Sotto's control plane: supervised actors and the drivers that own an
//! audio callback.
//!
//! Everything here runs on the tokio runtime or on a driver thread; only
//! [`driver::guarded_render`] enters the real-time core.
#![deny(missing_docs)]

pub mod avatar_link;
pub mod background;
pub mod capture;
pub mod decode;
pub mod device_manager;
pub mod devices;
pub mod driver;
pub mod frames;
pub mod ingest;
pub mod pump;
pub mod quiesce;
pub mod restart;
pub mod session;
pub mod sink;
pub mod supervisor;

pub use ingest::{FormatError, Ingest, InputFormat, SampleFormat, SUPPORTED_RATES};
pub use quiesce::{Quiescence, SettleTimeout};
pub use session::{
    Duck, Input, OutputConfig, PushOutcome, SessionClosed, SessionConfig, SessionEvent,
    SessionEventKind, SessionMsg, SessionOutput, SessionShared, SharedOutputConfig, SharedOutputId,
    MAX_WAITING,
};
pub use sink::{AudioSink, Recorder, RecorderLog, WavSink};
pub use supervisor::{CreateError, EngineSupervisor, SupervisorArgs, SupervisorMsg};
