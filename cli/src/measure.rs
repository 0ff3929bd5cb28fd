//! What this process and its host use, read from `/proc` (Linux): the one
//! resident-set reader the soak run and the memory tests share. Every
//! reading is 0 where `/proc` is missing.

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

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_resident_set() {
        let r = super::rss();
        assert!(r.current_kib > 0 && r.peak_kib >= r.current_kib, "{r:?}");
    }
}
