//! Histograms of group commits: how long each took and how many records it
//! made durable, kept in fixed atomic buckets so recording costs no lock and
//! no allocation. Queues opened with `sync_every = 1` record into the
//! [`CommitStats`] their config names (a daemon passes one to all its queues
//! and reports the sum); the figures are plain numbers, and the caller
//! chooses how to export them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in microseconds, of the commit latency buckets; a last,
/// unbounded bucket holds the slower commits.
pub const COMMIT_LATENCY_BOUNDS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Upper bounds of the records-per-commit buckets; a last, unbounded bucket
/// holds the larger commits.
pub const COMMIT_RECORDS_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Commit counters shared by the queues that record into them.
#[derive(Debug, Default)]
pub struct CommitStats {
    latency: [AtomicU64; COMMIT_LATENCY_BOUNDS_MICROS.len() + 1],
    latency_sum_nanos: AtomicU64,
    records: [AtomicU64; COMMIT_RECORDS_BOUNDS.len() + 1],
    records_sum: AtomicU64,
}

/// What [`CommitStats::snapshot`] read. Bucket counts are per bucket, not
/// cumulative; index `i` counts values up to the `i`th bound (and above the
/// one before), the last index values above every bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitSnapshot {
    /// Commits per latency bucket (bounds: [`COMMIT_LATENCY_BOUNDS_MICROS`]).
    pub latency_buckets: [u64; COMMIT_LATENCY_BOUNDS_MICROS.len() + 1],
    /// Time all commits took together.
    pub latency_sum: Duration,
    /// Commits per records-covered bucket (bounds: [`COMMIT_RECORDS_BOUNDS`]).
    pub records_buckets: [u64; COMMIT_RECORDS_BOUNDS.len() + 1],
    /// Records all commits made durable together.
    pub records_sum: u64,
}

impl CommitSnapshot {
    /// Commits counted (the latency buckets' total).
    pub fn commits(&self) -> u64 {
        self.latency_buckets.iter().sum()
    }
}

fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds.partition_point(|&bound| bound < value)
}

impl CommitStats {
    /// Empty counters.
    pub fn new() -> CommitStats {
        CommitStats::default()
    }

    /// Counts one commit that took `elapsed` (writing the pending records
    /// and the fdatasync) and made `records` records durable.
    pub fn record(&self, elapsed: Duration, records: u64) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(b) = self
            .latency
            .get(bucket(&COMMIT_LATENCY_BOUNDS_MICROS, micros))
        {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(b) = self.records.get(bucket(&COMMIT_RECORDS_BOUNDS, records)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.records_sum.fetch_add(records, Ordering::Relaxed);
    }

    /// The counters as of now (each read on its own: a commit recorded
    /// meanwhile may be in some figures and not yet in others).
    pub fn snapshot(&self) -> CommitSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CommitSnapshot {
            latency_buckets: std::array::from_fn(|i| self.latency.get(i).map_or(0, load)),
            latency_sum: Duration::from_nanos(load(&self.latency_sum_nanos)),
            records_buckets: std::array::from_fn(|i| self.records.get(i).map_or(0, load)),
            records_sum: load(&self.records_sum),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_holds_them() {
        let stats = CommitStats::new();
        stats.record(Duration::from_micros(100), 1);
        stats.record(Duration::from_micros(101), 3);
        stats.record(Duration::from_secs(10), 5000);
        let s = stats.snapshot();
        assert_eq!(s.commits(), 3);
        assert_eq!(s.latency_buckets[0], 1, "100 us is within the 100 us bound");
        assert_eq!(s.latency_buckets[1], 1);
        assert_eq!(s.latency_buckets[COMMIT_LATENCY_BOUNDS_MICROS.len()], 1);
        assert_eq!(s.records_buckets[0], 1);
        assert_eq!(s.records_buckets[2], 1, "3 records: the 4 bucket");
        assert_eq!(s.records_buckets[COMMIT_RECORDS_BOUNDS.len()], 1);
        assert_eq!(s.records_sum, 5004);
        assert_eq!(
            s.latency_sum,
            Duration::from_secs(10) + Duration::from_micros(201)
        );
    }
}
