//! Time as the channel sees it, injectable so tests step it by hand.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time: monotonic instants for deadlines, wall-clock
/// nanoseconds for message timestamps and end-to-end latency.
pub trait Clock: Send + Sync + 'static {
    /// The current monotonic instant; deadlines are compared against it.
    fn now(&self) -> Instant;
    /// Nanoseconds since the Unix epoch, as nsqd stamps messages.
    fn unix_nanos(&self) -> i64;
}

/// The real clock.
///
/// Monotonic time is read through tokio, so under
/// `#[tokio::test(start_paused = true)]` it follows tokio's paused clock and
/// agrees with `tokio::time::sleep_until`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn unix_nanos(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: tests advance it past a deadline
/// and observe exactly what fires, without sleeping.
///
/// ```
/// use std::time::Duration;
/// use rsq_channel::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let (start, start_ns) = (clock.now(), clock.unix_nanos());
/// assert_eq!(clock.now(), start, "it stands still");
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now() - start, Duration::from_millis(1500));
/// assert_eq!(clock.unix_nanos() - start_ns, 1_500_000_000);
/// ```
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_unix_nanos: i64,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at an arbitrary instant, with wall time 2021-01-01.
    pub fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            start_unix_nanos: 1_609_459_200_000_000_000,
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }

    fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn unix_nanos(&self) -> i64 {
        self.start_unix_nanos + i64::try_from(self.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }
}
