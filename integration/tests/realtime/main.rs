//! The real-time clocks under load, in one binary: the virtual clock
//! keeping up with many sessions (audited for allocations on its
//! threads), render shards with calls coming and going, a short soak.
//! Each test runs alone (`sotto_testkit::alone`): each measures whether
//! the machine kept time, and two at once would measure each other.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use assert_no_alloc::AllocDisabler;

/// Counts allocations on threads that forbid them: the audio threads.
#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

mod clock;
mod shards;
mod soak;
