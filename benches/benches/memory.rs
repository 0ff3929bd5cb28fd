//! Memory per idle session at defaults, measured with a counting allocator:
//! bytes live after creating 64 sessions, divided by 64.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use sotto::{Engine, EngineConfig, SessionConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = Engine::start(EngineConfig::default()).await.unwrap();
        engine.render(480).await.unwrap();
        let before = LIVE.load(Ordering::Relaxed);
        let mut sessions = Vec::new();
        for _ in 0..64 {
            sessions.push(
                engine
                    .create_session(SessionConfig::default())
                    .await
                    .unwrap(),
            );
        }
        engine.render(480).await.unwrap();
        let after = LIVE.load(Ordering::Relaxed);
        let per = (after - before) as f64 / 64.0;
        println!(
            "memory per idle session (defaults: 1 s queue, 24 kHz mono): {:.1} KiB",
            per / 1024.0
        );
        assert!(per < 300.0 * 1024.0, "over the 300 KiB target");
        engine.shutdown().await;
    });
}
