//! Sampling a daemon process from `/proc`: peak resident memory and CPU.
//!
//! `VmHWM` in `/proc/<pid>/status` is the process's lifetime peak, exact
//! for a daemon started for one scenario. For a long-running daemon the
//! sampler also polls `VmRSS` and keeps the largest value it saw during the
//! scenario. CPU is `utime + stime` from `/proc/<pid>/stat`, in clock ticks
//! of [`CLOCK_TICKS_PER_SEC`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Linux's `USER_HZ`, the unit of `/proc/<pid>/stat` times; 100 on every
/// architecture Linux supports for userspace ABI purposes.
pub const CLOCK_TICKS_PER_SEC: u64 = 100;

/// How often the sampler reads `VmRSS`.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// What a process used during one scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcessSample {
    /// Largest resident set seen: `VmHWM` when the process lived only for
    /// this scenario, else the largest sampled `VmRSS`, in KiB.
    pub peak_rss_kib: u64,
    /// CPU time (user + system) spent during the scenario, in seconds.
    pub cpu_secs: f64,
    /// Wall time sampled, in seconds.
    pub wall_secs: f64,
}

impl ProcessSample {
    /// CPU use as a percentage of one core.
    pub fn cpu_percent(&self) -> f64 {
        if self.wall_secs <= 0.0 {
            0.0
        } else {
            100.0 * self.cpu_secs / self.wall_secs
        }
    }
}

/// A value in KiB from `/proc/<pid>/status` text, e.g. `key = "VmHWM"`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") | None => Some(value),
            Some(_) => None,
        }
    })
}

/// `utime + stime` in clock ticks from `/proc/<pid>/stat` text. The command
/// name may contain spaces and parentheses, so fields are counted after
/// the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name come state (field 3), ..., utime (14) and stime (15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `/proc/PID/status`, if the process exists.
pub fn read_status(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// User plus system CPU ticks the process used so far.
pub fn read_cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A background thread sampling one process until [`ProcessSampler::finish`].
pub struct ProcessSampler {
    pid: u32,
    started: Instant,
    cpu_ticks_at_start: Option<u64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl ProcessSampler {
    /// Starts sampling `pid` now.
    pub fn start(pid: u32) -> ProcessSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rsq-bench-sampler".into())
            .spawn(move || {
                let mut peak = 0;
                while !flag.load(Ordering::Relaxed) {
                    let rss = read_status(pid).and_then(|s| parse_status_kib(&s, "VmRSS"));
                    match rss {
                        Some(kib) => peak = peak.max(kib),
                        None => break,
                    }
                    std::thread::sleep(SAMPLE_INTERVAL);
                }
                peak
            })
            .ok();
        ProcessSampler {
            pid,
            started: Instant::now(),
            cpu_ticks_at_start: read_cpu_ticks(pid),
            stop,
            thread,
        }
    }

    /// Stops sampling. With `use_hwm` (the process lived only for this
    /// scenario) the peak is `VmHWM`; otherwise the largest sampled `VmRSS`.
    /// `None` if the process could not be read.
    pub fn finish(mut self, use_hwm: bool) -> Option<ProcessSample> {
        let wall_secs = self.started.elapsed().as_secs_f64();
        let ticks_now = read_cpu_ticks(self.pid);
        let hwm = read_status(self.pid).and_then(|s| parse_status_kib(&s, "VmHWM"));
        self.stop.store(true, Ordering::Relaxed);
        let sampled = self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0);
        let peak_rss_kib = if use_hwm { hwm? } else { sampled.max(1) };
        let cpu_ticks = ticks_now?.saturating_sub(self.cpu_ticks_at_start?);
        Some(ProcessSample {
            peak_rss_kib,
            cpu_secs: cpu_ticks as f64 / CLOCK_TICKS_PER_SEC as f64,
            wall_secs,
        })
    }
}

impl Drop for ProcessSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
