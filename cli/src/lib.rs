//! The `sotto` program's library: scenarios (a TOML timeline of engine
//! messages rendered through the full engine), the soak run and the
//! picture of a render; and the tone generator and the process readings
//! the soak run shares with the tests and the benchmarks (through
//! `sotto-testkit`). The
//! binary in `main.rs` is a thin command line over these; the integration
//! tests use them directly.
#![deny(missing_docs)]

pub mod measure;
pub mod plot;
pub mod scenario;

pub mod signal;
pub mod soak;
