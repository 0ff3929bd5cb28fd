//! Memory per idle session at defaults, measured with a counting allocator:
//! bytes live after creating 64 sessions, divided by 64.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use sotto::{BackgroundConfig, BackgroundMode, Engine, EngineConfig, SessionConfig};

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
        looping_source().await;
    });
}

/// A looping 60 s source: the decoded clip plus what else stays live.
async fn looping_source() {
    let path = std::env::temp_dir().join(format!("sotto-mem-{}.wav", std::process::id()));
    let frames = 60 * 24_000u32;
    let mut wav = Vec::with_capacity(44 + 2 * frames as usize);
    for chunk in [
        &b"RIFF"[..],
        &(36 + 2 * frames).to_le_bytes(),
        b"WAVEfmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &1u16.to_le_bytes(),
        &24_000u32.to_le_bytes(),
        &48_000u32.to_le_bytes(),
        &2u16.to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &(2 * frames).to_le_bytes(),
    ] {
        wav.extend_from_slice(chunk);
    }
    for i in 0..frames {
        wav.extend_from_slice(&((i % 200) as i16 * 100).to_le_bytes());
    }
    std::fs::write(&path, wav).unwrap();
    let engine = Engine::start(EngineConfig::default()).await.unwrap();
    let session = engine
        .create_session(SessionConfig::default())
        .await
        .unwrap();
    engine.render(480).await.unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let config = BackgroundConfig {
        mode: BackgroundMode::Mixing,
        looping: true,
        ..BackgroundConfig::new(&path)
    };
    let bed = engine.background(&session, config).await.unwrap();
    bed.start().await.unwrap();
    // Past the first pass, which streams through the background queue.
    engine.render(62 * 24_000).await.unwrap();
    let after = LIVE.load(Ordering::Relaxed);
    let clip = frames as isize * 4;
    let extra = (after - before - clip) as f64 / 1024.0;
    println!(
        "looping 60 s source: decoded clip {:.1} KiB + {extra:.1} KiB",
        clip as f64 / 1024.0
    );
    assert!(extra < 64.0, "over the 64 KiB target");
    bed.stop().await.unwrap();
    engine.shutdown().await;
    std::fs::remove_file(&path).ok();
}
