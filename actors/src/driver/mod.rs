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

/// Locks the program's code in memory — every executable mapping of a
/// file: the binary and its libraries — once per process; returns the
/// bytes locked. Called by the real-time drivers before their threads
/// start, on the control side.
///
/// Why: a page of code the kernel has dropped (memory pressure, or a host
/// that reclaims cold pages) is read back from disk the next time it runs,
/// and an audio thread that takes such a fault misses its deadline by tens
/// of milliseconds. Anonymous memory (rings, voices) is not locked: it is
/// only ever written out to swap, which a server's audio plane should not
/// have. Without the privilege (`RLIMIT_MEMLOCK`, `CAP_IPC_LOCK`) this is
/// said once and the program runs on.
pub fn lock_code_in_memory() -> usize {
    static LOCKED: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LOCKED.get_or_init(lock_code)
}

#[cfg(target_os = "linux")]
// The one call into libc of the project: mlock has no safe wrapper, and
// pinning pages is all it does.
#[allow(unsafe_code)]
fn lock_code() -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut locked = 0;
    let mut refused = None;
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        if !perms.contains('x') || !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let len = end.saturating_sub(start);
        // SAFETY: mlock only pins pages of a range this process has mapped
        // (read from its own maps); it neither reads nor writes them.
        let rc = unsafe { libc::mlock(start as *const libc::c_void, len) };
        if rc == 0 {
            locked += len;
        } else {
            refused = Some(std::io::Error::last_os_error());
        }
    }
    if let Some(e) = refused {
        tracing::warn!(error = %e, locked, "could not lock all of the program's code in memory; a page fault may then delay an audio block");
    }
    locked
}

#[cfg(not(target_os = "linux"))]
fn lock_code() -> usize {
    0
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
