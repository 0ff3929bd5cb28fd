//! What this process and its host use, read from `/proc` (Linux): the one
//! resident-set reader the soak run and the memory tests share. Every
//! reading is 0 where `/proc` is missing. And a watch for pauses of the
//! whole machine.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident set size, KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rss {
    /// Now.
    pub current_kib: u64,
    /// The most this process has held.
    pub peak_kib: u64,
}

/// This process's resident set.
#[must_use]
pub fn rss() -> Rss {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        current_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    }
}

/// The host's steal counter (all CPUs, in hundredths of a second).
#[must_use]
pub fn steal_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // "cpu  user nice system idle iowait irq softirq steal ..."
    stat.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds this process used (user and system).
#[must_use]
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// Page faults of this process that had to read from disk (major faults,
/// field 12 of `/proc/self/stat`): a thread that takes one waits for I/O.
#[must_use]
pub fn major_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // `rest` starts at field 3.
    rest.split_whitespace()
        .nth(9)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Watches for moments in which this machine ran nothing at all (the host
/// paused it, or the kernel stopped every CPU): a real-time thread sleeps
/// 5 ms at a time and notes each wake-up more than 50 ms late. No audio
/// thread can keep a deadline through such a pause, whatever it does.
#[derive(Debug)]
pub struct PauseWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Pauses>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a [`PauseWatch`] saw.
#[derive(Debug, Default)]
pub struct Pauses {
    /// Wake-ups more than 50 ms late.
    pub count: AtomicU64,
    /// The latest of them, in µs.
    pub longest_us: AtomicU64,
}

impl PauseWatch {
    /// Starts the watching thread (`sotto-pausewatch`).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start() -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Pauses::default());
        let thread = {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            std::thread::Builder::new()
                .name("sotto-pausewatch".into())
                .spawn(move || {
                    sotto_actors::driver::promote_to_realtime();
                    let tick = Duration::from_millis(5);
                    while !stop.load(Ordering::Relaxed) {
                        let before = Instant::now();
                        std::thread::sleep(tick);
                        let late = before.elapsed().saturating_sub(tick);
                        if late > Duration::from_millis(50) {
                            seen.count.fetch_add(1, Ordering::Relaxed);
                            let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
                            seen.longest_us.fetch_max(us, Ordering::Relaxed);
                        }
                    }
                })?
        };
        Ok(Self {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// What it saw so far.
    #[must_use]
    pub fn pauses(&self) -> &Pauses {
        &self.seen
    }
}

impl Drop for PauseWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_resident_set() {
        let r = super::rss();
        assert!(r.current_kib > 0 && r.peak_kib >= r.current_kib, "{r:?}");
    }
}
