//! The drivers: whoever calls `Renderer::render`. All of them go through
//! [`guarded_render`], the one place with the panic boundary and the
//! allocation audit.

pub mod device;
pub mod offline;

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

/// Asks the OS to run the calling thread under real-time (FIFO)
/// scheduling, so the control actors' threads cannot delay a block. Called
/// once by an audio thread before it renders; without the privilege the
/// thread stays a normal one, which is said here, once. Returns whether it
/// took.
pub fn promote_to_realtime() -> bool {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        use thread_priority::{ThreadPriority, ThreadPriorityValue};
        // High, not the top: the kernel's own real-time work stays above.
        let Ok(value) = ThreadPriorityValue::try_from(80u8) else {
            return false;
        };
        match set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(value),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        ) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = ?e, "no real-time scheduling for the audio thread; it runs as a normal thread");
                false
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
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
