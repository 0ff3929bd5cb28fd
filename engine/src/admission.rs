//! Admission (SPEC S7): whether the engine has the budget for one
//! more call now. Setting calls up is the expensive part of a call (ICE
//! gathering, the DTLS handshake, a media thread): many at once starve the
//! calls already running. A call is admitted only while few are being set
//! up, at a bounded rate, with headroom left in the render and the
//! machine's CPU; a refusal says when to try again.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What admission allows (SPEC S7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// Calls being set up at once: admitted and not yet connected or gone.
    pub max_connecting: usize,
    /// Calls admitted a second at most, on average; up to
    /// `max_connecting` may come together.
    pub per_second: f64,
    /// The busiest render shard's recent render time, as a share of a
    /// block's period, above which no call is admitted.
    pub max_render_load: f64,
    /// The machine's CPU use over about the last second (every process's,
    /// and time a virtual machine's host took), as a share of all its
    /// cores, above which no call is admitted: a machine short of CPU for
    /// any reason takes no more calls.
    pub max_cpu_load: f64,
    /// How far the calls' readers (the tasks that take a call's frames to
    /// its encoder) may have fallen behind the render over the last second
    /// or two, at most, for a call to be admitted: readers behind mean the
    /// runtime is short of time, and a reader that falls behind by its
    /// output's bound loses frames.
    pub max_reader_lag: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_connecting: 4,
            per_second: 10.0,
            max_render_load: 0.5,
            max_cpu_load: 0.9,
            max_reader_lag: Duration::from_millis(60),
        }
    }
}

impl AdmissionConfig {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.max_connecting == 0 {
            return Err("admission: max_connecting must be at least 1".into());
        }
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(format!(
                "admission: per_second {} must be above 0",
                self.per_second
            ));
        }
        for (name, v) in [
            ("max_render_load", self.max_render_load),
            ("max_cpu_load", self.max_cpu_load),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("admission: {name} {v} must be above 0"));
            }
        }
        if self.max_reader_lag.is_zero() {
            return Err("admission: max_reader_lag must be above 0".into());
        }
        Ok(())
    }
}

/// Why a call was not admitted now.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The engine holds as many sessions as it may.
    #[error("the engine is full")]
    Full,
    /// `max_connecting` calls are being set up.
    #[error("{0} calls are being set up")]
    Connecting(usize),
    /// Calls came faster than `per_second`.
    #[error("calls are arriving too fast")]
    Rate,
    /// The render has too little headroom.
    #[error("the render is {0:.0}% loaded")]
    Render(f64),
    /// The machine is short of CPU.
    #[error("the CPU is {0:.0}% used")]
    Cpu(f64),
    /// The calls' readers are behind the render by this many milliseconds.
    #[error("the calls' readers are {0} ms behind")]
    Behind(u64),
}

impl Refusal {
    /// When trying again makes sense.
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::Connecting(_) | Self::Rate | Self::Behind(_) => Duration::from_secs(1),
            Self::Full | Self::Render(_) | Self::Cpu(_) => Duration::from_secs(5),
        }
    }
}

/// A call admitted and being set up: drop it once the call has connected
/// (or failed), and another may be set up in its place.
#[derive(Debug)]
pub struct CallPermit {
    connecting: Arc<AtomicUsize>,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        self.connecting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The admission state of one engine.
#[derive(Debug)]
pub(crate) struct Admission {
    config: AdmissionConfig,
    connecting: Arc<AtomicUsize>,
    meter: Mutex<Meter>,
    lag: Arc<ReaderLag>,
}

/// The worst lag the calls' readers reported over the last one to two
/// seconds: two one-second windows, the older dropped as a new one opens.
#[derive(Debug)]
pub(crate) struct ReaderLag {
    base: Instant,
    /// The second `current` counts, since `base`.
    window: AtomicU64,
    current: AtomicU64,
    previous: AtomicU64,
}

impl ReaderLag {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            window: AtomicU64::new(0),
            current: AtomicU64::new(0),
            previous: AtomicU64::new(0),
        }
    }

    fn second(&self) -> u64 {
        self.base.elapsed().as_secs()
    }

    /// A reader is `lag` behind the render now.
    pub(crate) fn report(&self, lag: Duration) {
        let now = self.second();
        let window = self.window.load(Ordering::Acquire);
        if window != now
            && self
                .window
                .compare_exchange(window, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let last = self.current.swap(0, Ordering::AcqRel);
            let kept = if now == window + 1 { last } else { 0 };
            self.previous.store(kept, Ordering::Release);
        }
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.current.fetch_max(us, Ordering::AcqRel);
    }

    /// The worst lag reported over the last one to two seconds.
    fn worst(&self) -> Duration {
        let now = self.second();
        let window = self.window.load(Ordering::Acquire);
        let us = if window == now {
            self.current
                .load(Ordering::Acquire)
                .max(self.previous.load(Ordering::Acquire))
        } else if window + 1 == now {
            self.current.load(Ordering::Acquire)
        } else {
            0
        };
        Duration::from_micros(us)
    }
}

#[derive(Debug)]
struct Meter {
    /// Calls that may be admitted now (a token bucket).
    tokens: f64,
    filled: Instant,
    /// The machine's busy and total CPU time read last, when, and the
    /// load they gave.
    cpu: Option<(Instant, (u64, u64))>,
    load: f64,
}

/// CPU load is read over at least this long.
const CPU_WINDOW: Duration = Duration::from_millis(500);

impl Admission {
    pub(crate) fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            connecting: Arc::new(AtomicUsize::new(0)),
            lag: Arc::new(ReaderLag::new()),
            meter: Mutex::new(Meter {
                tokens: config.max_connecting as f64,
                filled: Instant::now(),
                cpu: machine_cpu().map(|c| (Instant::now(), c)),
                load: 0.0,
            }),
        }
    }

    /// Where the calls' readers report how far behind they are.
    pub(crate) fn reader_lag(&self) -> Arc<ReaderLag> {
        Arc::clone(&self.lag)
    }

    /// Calls admitted and still being set up.
    pub(crate) fn connecting(&self) -> usize {
        self.connecting.load(Ordering::Acquire)
    }

    /// Admits one call when the budget allows; `render_load` is the
    /// busiest shard's recent render time over a block's period, `full`
    /// whether the engine holds all the sessions it may.
    pub(crate) fn admit(&self, render_load: f64, full: bool) -> Result<CallPermit, Refusal> {
        if full {
            return Err(Refusal::Full);
        }
        if render_load > self.config.max_render_load {
            return Err(Refusal::Render(render_load * 100.0));
        }
        let lag = self.lag.worst();
        if lag > self.config.max_reader_lag {
            return Err(Refusal::Behind(
                u64::try_from(lag.as_millis()).unwrap_or(u64::MAX),
            ));
        }
        let mut m = self.meter.lock().map_err(|_| Refusal::Full)?;
        let now = Instant::now();
        if let Some((at, (busy0, total0))) = m.cpu {
            if now.duration_since(at) >= CPU_WINDOW {
                if let Some((busy, total)) = machine_cpu() {
                    let spent = total.saturating_sub(total0);
                    if spent > 0 {
                        m.load = busy.saturating_sub(busy0) as f64 / spent as f64;
                    }
                    m.cpu = Some((now, (busy, total)));
                }
            }
        }
        if m.load > self.config.max_cpu_load {
            return Err(Refusal::Cpu(m.load * 100.0));
        }
        let burst = self.config.max_connecting as f64;
        let refill = now.duration_since(m.filled).as_secs_f64() * self.config.per_second;
        m.tokens = (m.tokens + refill).min(burst);
        m.filled = now;
        if m.tokens < 1.0 {
            return Err(Refusal::Rate);
        }
        let was = self.connecting.fetch_add(1, Ordering::AcqRel);
        if was >= self.config.max_connecting {
            self.connecting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Connecting(was));
        }
        m.tokens -= 1.0;
        Ok(CallPermit {
            connecting: Arc::clone(&self.connecting),
        })
    }
}

/// The machine's CPU time so far, busy and in all (`/proc/stat`'s first
/// line, in ticks): everything but idle and I/O wait is busy, steal too.
fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_ascii_whitespace()
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    if ticks.len() < 5 {
        return None;
    }
    let total: u64 = ticks.iter().sum();
    // user nice system idle iowait irq softirq steal
    let idle = ticks[3] + ticks[4];
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_connecting: usize, per_second: f64) -> Admission {
        Admission::new(AdmissionConfig {
            max_connecting,
            per_second,
            max_render_load: 0.5,
            max_cpu_load: 1e9,
            max_reader_lag: Duration::from_millis(60),
        })
    }

    #[test]
    fn set_ups_at_once_are_bounded_and_freed_by_their_permits() {
        let a = admission(2, 1e12);
        let one = a.admit(0.0, false).unwrap();
        let _two = a.admit(0.0, false).unwrap();
        assert_eq!(a.admit(0.0, false).unwrap_err(), Refusal::Connecting(2));
        drop(one);
        assert_eq!(a.connecting(), 1);
        assert!(a.admit(0.0, false).is_ok());
    }

    #[test]
    fn the_rate_is_bounded_after_a_burst() {
        let a = admission(3, 0.5);
        for _ in 0..3 {
            drop(a.admit(0.0, false).unwrap());
        }
        assert_eq!(a.admit(0.0, false).unwrap_err(), Refusal::Rate);
        assert_eq!(Refusal::Rate.retry_after(), Duration::from_secs(1));
    }

    #[test]
    fn no_headroom_and_a_full_engine_refuse() {
        let a = admission(3, 10.0);
        assert!(matches!(a.admit(0.7, false), Err(Refusal::Render(_))));
        assert_eq!(a.admit(0.1, true).unwrap_err(), Refusal::Full);
        assert_eq!(a.connecting(), 0);
    }

    #[test]
    fn readers_behind_refuse_until_they_catch_up() {
        let a = admission(3, 10.0);
        a.reader_lag().report(Duration::from_millis(20));
        assert!(a.admit(0.0, false).is_ok());
        a.reader_lag().report(Duration::from_millis(150));
        let refusal = a.admit(0.0, false).unwrap_err();
        assert_eq!(refusal, Refusal::Behind(150));
        assert_eq!(refusal.retry_after(), Duration::from_secs(1));
        // Two seconds on, the lag has left both windows.
        let lag = ReaderLag {
            base: Instant::now() - Duration::from_secs(5),
            window: AtomicU64::new(2),
            current: AtomicU64::new(150_000),
            previous: AtomicU64::new(150_000),
        };
        assert_eq!(lag.worst(), Duration::ZERO);
        lag.report(Duration::from_millis(1));
        assert_eq!(lag.worst(), Duration::from_millis(1));
    }

    #[test]
    fn a_config_out_of_range_is_an_error() {
        let bad = AdmissionConfig {
            per_second: f64::NAN,
            ..AdmissionConfig::default()
        };
        assert!(bad.check().is_err());
        assert!(AdmissionConfig::default().check().is_ok());
        assert!(machine_cpu().is_some_and(|(busy, total)| busy <= total));
    }
}
