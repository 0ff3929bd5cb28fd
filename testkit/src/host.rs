//! What the host did to the render threads while a real-time test ran: a
//! late block is Sotto's fault only when nothing outside it explains it.
//! A watcher samples, every 2 ms, the engine's late-block count, the run
//! delay of every `sotto-audio` thread (time it was runnable and waiting
//! for a CPU, `/proc/self/task/*/schedstat`) and the host's steal time
//! (`/proc/stat`, a virtual machine's CPU taken by its host). A late block
//! counts as explained when, in the 100 ms before it was seen, a render
//! thread waited for a CPU for longer than `budget` or the host stole
//! time; the rest are the ones Sotto controls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sotto::Engine;

/// The watcher's findings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LateBlocks {
    /// Late blocks seen.
    pub late: u64,
    /// Of those, explained by the render threads' run delay or steal.
    pub explained: u64,
    /// The render threads' run delay over the watch, summed, in ms.
    pub run_delay_ms: u64,
    /// The longest run delay in one 2 ms sample, in µs.
    pub worst_wait_us: u64,
    /// The host's steal over the watch, in ms.
    pub steal_ms: u64,
}

impl LateBlocks {
    /// Late blocks nothing outside Sotto explains.
    #[must_use]
    pub fn unexplained(&self) -> u64 {
        self.late - self.explained
    }
}

/// A running watch; [`Watch::stop`] returns what it saw.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<LateBlocks>>,
}

impl Watch {
    /// Starts watching `engine`'s render threads; a render thread's wait
    /// past `budget` (a block's slack) explains a late block.
    #[must_use]
    pub fn start(engine: &Engine, budget: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("late-watch".into())
            .spawn(move || watch(&engine, budget, &flag))
            .ok();
        Self { stop, thread }
    }

    /// Stops and reports.
    #[must_use]
    pub fn stop(mut self) -> LateBlocks {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

const SAMPLE: Duration = Duration::from_millis(2);
/// Samples looked back over when a late block is seen (100 ms).
const WINDOW: usize = 50;

fn watch(engine: &Engine, budget: Duration, stop: &AtomicBool) -> LateBlocks {
    let mut seen = LateBlocks::default();
    let start_late = engine.late_blocks();
    let (start_delay, start_steal) = (run_delay_ns(), steal_ms());
    let mut last_late = start_late;
    let mut last_delay = start_delay;
    let mut last_steal = start_steal;
    // Per sample: whether the host got in the way in it.
    let mut recent = std::collections::VecDeque::with_capacity(WINDOW);
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(SAMPLE);
        let (delay, steal, late) = (run_delay_ns(), steal_ms(), engine.late_blocks());
        let waited = delay.saturating_sub(last_delay);
        seen.worst_wait_us = seen.worst_wait_us.max(waited / 1_000);
        let hindered = waited > budget.as_nanos() as u64 || steal > last_steal;
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(hindered);
        let new = late.saturating_sub(last_late);
        if new > 0 && recent.iter().any(|&h| h) {
            seen.explained += new;
        }
        (last_delay, last_steal, last_late) = (delay, steal, late);
    }
    seen.late = last_late - start_late;
    seen.run_delay_ms = last_delay.saturating_sub(start_delay) / 1_000_000;
    seen.steal_ms = last_steal.saturating_sub(start_steal);
    seen
}

/// The run delay of every `sotto-audio` thread of this process, summed,
/// in ns (the second field of its `schedstat`).
fn run_delay_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("sotto-audio"))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The host's steal time so far, in ms (`/proc/stat`'s `cpu` line, its
/// eighth value, in 10 ms ticks): time a hypervisor ran something else
/// while this machine's CPUs wanted to run.
#[must_use]
pub fn steal_ms() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()?
                .split_whitespace()
                .nth(8)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |ticks| ticks * 10)
}

/// Open file descriptors of this process.
#[must_use]
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// CPU time process `pid` has used so far (user and system), in seconds:
/// `/proc/PID/stat`'s fields 14 and 15, in clock ticks of 10 ms.
#[must_use]
pub fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0.0, |stat| {
        // The command name may hold spaces: fields count from after it.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15; here 11 and 12 after ')'.
        (ticks(11) + ticks(12)) / 100.0
    })
}
