//! The drivers: whoever calls `Renderer::render`. All of them go through
//! [`guarded_render`], the one place with the panic boundary and the
//! allocation audit.

pub mod device;
pub mod offline;
pub mod tap;
pub mod virtual_clock;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use sotto_rt::{Renderer, Telemetry};

/// Renders one device buffer. Runs on the audio thread.
///
/// A panic inside the renderer yields silence and sets `poisoned`; every
/// later call yields silence until the supervisor replaces the renderer.
/// With feature `rt-audit` the call runs inside an allocation guard and any
/// allocation or free is added to `alloc_violations`.
pub fn guarded_render(renderer: &mut Renderer, out: &mut [f32], telemetry: &Telemetry) {
    if telemetry.poisoned.load(Ordering::Relaxed) {
        out.fill(0.0);
        return;
    }
    let ok = audit(&telemetry.alloc_violations, || {
        catch_unwind(AssertUnwindSafe(|| renderer.render(out))).is_ok()
    });
    if !ok {
        out.fill(0.0);
        telemetry.poisoned.store(true, Ordering::Relaxed);
    }
}

/// Runs `f`, with feature `rt-audit` inside an allocation guard that adds
/// any allocation or free to `violations`. Wraps everything a device
/// callback does.
#[cfg(feature = "rt-audit")]
pub fn audit<T>(violations: &AtomicU64, f: impl FnOnce() -> T) -> T {
    let before = assert_no_alloc::violation_count();
    let result = assert_no_alloc::assert_no_alloc(f);
    let after = assert_no_alloc::violation_count();
    if after > before {
        violations.fetch_add(u64::from(after - before), Ordering::Relaxed);
    }
    result
}

/// Runs `f` (the allocation guard needs feature `rt-audit`).
#[cfg(not(feature = "rt-audit"))]
pub fn audit<T>(_: &AtomicU64, f: impl FnOnce() -> T) -> T {
    f()
}
