//! The fuzz checks (one property per fuzz target) and, for the tests, the
//! testkit's helpers under this crate's name.

pub mod fuzz;
pub mod load;

pub use sotto_testkit::*;
