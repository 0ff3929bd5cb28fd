//! Sotto's control plane: supervised actors and the drivers that own an
//! audio callback.
//!
//! Everything here runs on the tokio runtime or on a driver thread; only
//! `driver::guarded_render` enters the real-time core.
#![deny(missing_docs)]

pub mod ingest;

pub use ingest::{FormatError, Ingest, InputFormat, SampleFormat, SUPPORTED_RATES};
