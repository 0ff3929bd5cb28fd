//! Shared setup for Sotto's benchmarks: generated audio only, from the
//! tone generator the tests and the soak run use.

/// `n` frames of a mono s16 sine at amplitude 8000, as bytes.
#[must_use]
pub fn tone_s16(n: usize, freq: f32, rate: u32) -> Vec<u8> {
    sotto_testkit::signal::tone_s16(n, freq, rate, 8000.0)
}

/// CPU seconds of this process's threads from `/proc/self/task`: all of
/// them, and those whose name starts with `prefix`.
#[must_use]
pub fn thread_cpu(prefix: &str) -> (f64, f64) {
    let tick = 100.0; // USER_HZ on Linux
    let (mut all, mut named) = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0.0, 0.0);
    };
    for t in tasks.filter_map(Result::ok) {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ..." with utime and stime the 14th and 15th.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let cpu = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        all += cpu / tick;
        if head
            .split_once('(')
            .is_some_and(|(_, comm)| comm.starts_with(prefix))
        {
            named += cpu / tick;
        }
    }
    (all, named)
}

/// A line of standard input; `None` at its end. The cost programs'
/// children read their answers with it.
#[must_use]
pub fn stdin_line() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}
