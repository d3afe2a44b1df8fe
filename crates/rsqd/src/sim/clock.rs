//! The simulation's clock: tokio's (paused) instant for deadlines, and a
//! wall clock that starts where the driver says and moves only with it, so
//! message ids and timestamps are the same on every run of a seed.

use std::time::Instant;

use rsq_channel::Clock;

/// A life's clock: `unix_nanos` is `start_unix_nanos` plus the virtual time
/// since the life began.
#[derive(Debug)]
pub(crate) struct SimClock {
    start: tokio::time::Instant,
    start_unix_nanos: i64,
}

impl SimClock {
    /// A clock whose wall time reads `start_unix_nanos` now.
    pub(crate) fn new(start_unix_nanos: i64) -> SimClock {
        SimClock {
            start: tokio::time::Instant::now(),
            start_unix_nanos,
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn unix_nanos(&self) -> i64 {
        let since = tokio::time::Instant::now().duration_since(self.start);
        self.start_unix_nanos
            .saturating_add(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
    }
}
