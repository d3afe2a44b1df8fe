//! End-to-end processing latency (publish to FIN) over a sliding time window.
//!
//! nsqd keeps two quantile streams, the current and the previous half of
//! `--e2e-processing-latency-window-time`, and rotates them every half
//! window; a reading covers both halves, so it spans between half a window
//! and a whole window of recent finishes. [`E2eLatencyWindow`] keeps the
//! same two halves, but each half is a small exact sample that turns into a
//! log-bucket histogram once it outgrows [`EXACT_SAMPLES`]:
//!
//! * up to [`EXACT_SAMPLES`] finishes per half, percentiles are exact
//!   (nearest rank over the sorted samples);
//! * beyond that, each value falls into one of at most [`MAX_BUCKETS`]
//!   buckets whose width is at most 1/64 of their lower bound (values
//!   below 128 ns keep a bucket each), so a percentile is off by at most
//!   1/128 of its value; the largest value (quantile 1.0) stays exact.
//!
//! Memory is bounded whatever the traffic: a half holds either at most
//! [`EXACT_SAMPLES`] `u64`s (2 KiB) or at most [`MAX_BUCKETS`] `(u16, u64)`
//! pairs (about 59 KiB; typical latencies spanning three decades use a few
//! hundred buckets), so a window holds at most about 118 KiB. Histograms
//! add up bucket by bucket, so windows merge exactly, which is how a topic
//! reports the latency of all its channels.
//!
//! The window never reads a clock: callers pass `now`, and rotation starts
//! at the first instant it is given.

use std::time::{Duration, Instant};

use crate::E2eLatency;

/// Finishes per half kept as raw samples, for exact percentiles.
pub const EXACT_SAMPLES: usize = 256;

/// Sub-buckets per power of two once a half overflows into a histogram.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

/// Largest number of histogram buckets one half can hold.
pub const MAX_BUCKETS: usize = bucket_of(u64::MAX) as usize + 1;

/// The histogram bucket holding `v`: values below `2 * SUB` have their own
/// bucket; above, each power of two is split into `SUB` equal buckets.
const fn bucket_of(v: u64) -> u16 {
    if v < 2 * SUB {
        return v as u16;
    }
    let top = 63 - v.leading_zeros();
    let shift = top - SUB_BITS;
    let mantissa = (v >> shift) - SUB;
    ((shift as u64 + 1) * SUB + mantissa) as u16
}

/// The smallest value of bucket `b` and the number of values it spans.
fn bucket_range(b: u16) -> (u64, u64) {
    let b = u64::from(b);
    if b < 2 * SUB {
        return (b, 1);
    }
    let shift = b / SUB - 1;
    let mantissa = b % SUB;
    ((SUB + mantissa) << shift, 1 << shift)
}

/// The finishes of one half window.
///
/// Invariant: while `count <= EXACT_SAMPLES`, `exact` holds every sample and
/// `buckets` is empty; past it, `exact` is empty and `buckets` (sorted by
/// bucket, no zero counts) holds every sample.
#[derive(Debug, Clone, Default)]
struct Half {
    count: u64,
    min: u64,
    max: u64,
    exact: Vec<u64>,
    buckets: Vec<(u16, u64)>,
}

impl Half {
    fn is_exact(&self) -> bool {
        self.count as usize <= EXACT_SAMPLES
    }

    fn note_range(&mut self, min: u64, max: u64) {
        if self.count == 0 {
            self.min = min;
            self.max = max;
        } else {
            self.min = self.min.min(min);
            self.max = self.max.max(max);
        }
    }

    fn insert(&mut self, v: u64) {
        self.note_range(v, v);
        self.count += 1;
        if self.is_exact() {
            self.exact.push(v);
        } else {
            self.spill();
            self.bump(bucket_of(v), 1);
        }
    }

    /// Moves the exact samples into buckets (once the half has overflowed).
    fn spill(&mut self) {
        for v in std::mem::take(&mut self.exact) {
            self.bump(bucket_of(v), 1);
        }
    }

    fn bump(&mut self, bucket: u16, n: u64) {
        match self.buckets.binary_search_by_key(&bucket, |e| e.0) {
            Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(n),
            Err(i) => self.buckets.insert(i, (bucket, n)),
        }
        debug_assert!(self.buckets.len() <= MAX_BUCKETS);
    }

    fn merge(&mut self, other: &Half) {
        if other.count == 0 {
            return;
        }
        self.note_range(other.min, other.max);
        self.count = self.count.saturating_add(other.count);
        if self.is_exact() {
            self.exact.extend_from_slice(&other.exact);
            return;
        }
        self.spill();
        for v in &other.exact {
            self.bump(bucket_of(*v), 1);
        }
        for (b, n) in &other.buckets {
            self.bump(*b, *n);
        }
    }
}

/// Nearest rank (1-based) of quantile `q` among `n` values.
fn rank(q: f64, n: u64) -> u64 {
    // The small slack keeps `0.95 * 100` at rank 95 despite rounding.
    let r = (q * n as f64 - 1e-9).ceil();
    if r.is_nan() || r < 1.0 {
        1
    } else {
        (r as u64).min(n)
    }
}

/// Publish-to-FIN latencies over the last half to whole window, with the
/// quantiles to report (see the module documentation for the accuracy and
/// memory bounds).
#[derive(Debug, Clone)]
pub struct E2eLatencyWindow {
    quantiles: Vec<f64>,
    half: Duration,
    /// When the current half becomes the previous one; set by the first
    /// instant the window sees.
    rotate_after: Option<Instant>,
    current: Half,
    previous: Half,
}

impl E2eLatencyWindow {
    /// An empty window reporting `quantiles` (each expected in `(0, 1]`;
    /// values outside are clamped to the smallest or largest rank) over
    /// `window` (nsqd's `--e2e-processing-latency-window-time`).
    pub fn new(quantiles: Vec<f64>, window: Duration) -> Self {
        E2eLatencyWindow {
            quantiles,
            half: (window / 2).max(Duration::from_nanos(1)),
            rotate_after: None,
            current: Half::default(),
            previous: Half::default(),
        }
    }

    /// The quantiles it reports, in the order given.
    pub fn quantiles(&self) -> &[f64] {
        &self.quantiles
    }

    /// Records one finish `latency_ns` after its publish, at `now`.
    pub fn record(&mut self, latency_ns: u64, now: Instant) {
        self.advance(now);
        self.current.insert(latency_ns);
    }

    /// Forgets finishes that fell out of the window by `now`: the current
    /// half becomes the previous one once `now` is past its end, as nsqd
    /// rotates its two streams.
    pub fn advance(&mut self, now: Instant) {
        let Some(end) = self.rotate_after else {
            self.rotate_after = Some(now + self.half);
            return;
        };
        if now <= end {
            return;
        }
        if now - end <= self.half {
            self.previous = std::mem::take(&mut self.current);
            self.rotate_after = Some(end + self.half);
        } else {
            // Idle for over a half: both halves are stale.
            self.previous = Half::default();
            self.current = Half::default();
            self.rotate_after = Some(now + self.half);
        }
    }

    /// Adds `other`'s finishes, half by half (current to current, previous
    /// to previous), as nsqd merges its channels' streams for the topic.
    /// Both should have been advanced to the same instant.
    pub fn merge(&mut self, other: &E2eLatencyWindow) {
        self.current.merge(&other.current);
        self.previous.merge(&other.previous);
    }

    /// Finishes in the window.
    pub fn count(&self) -> u64 {
        self.current.count + self.previous.count
    }

    /// The configured quantiles over the window; values are 0 while it is
    /// empty (as nsqd reports them).
    pub fn snapshot(&self) -> E2eLatency {
        let n = self.count();
        let values: Vec<u64> = if n == 0 {
            vec![0; self.quantiles.len()]
        } else if self.current.is_exact() && self.previous.is_exact() {
            let mut all = Vec::with_capacity(n as usize);
            all.extend_from_slice(&self.previous.exact);
            all.extend_from_slice(&self.current.exact);
            all.sort_unstable();
            self.quantiles
                .iter()
                .map(|q| all[(rank(*q, n) - 1) as usize])
                .collect()
        } else {
            // One half overflowed, so the sum does too: all in buckets.
            let mut all = self.previous.clone();
            all.merge(&self.current);
            self.quantiles
                .iter()
                .map(|q| bucket_value(&all, rank(*q, n)))
                .collect()
        };
        E2eLatency {
            count: n,
            percentiles: self.quantiles.iter().copied().zip(values).collect(),
        }
    }

    /// Heap entries held (samples plus buckets), for the memory-bound tests.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.current.exact.len()
            + self.current.buckets.len()
            + self.previous.exact.len()
            + self.previous.buckets.len()
    }
}

/// The value at 1-based rank `r` of a histogram half: the exact minimum or
/// maximum at the ends, else its bucket's middle kept within them.
fn bucket_value(half: &Half, r: u64) -> u64 {
    if r <= 1 {
        return half.min;
    }
    if r >= half.count {
        return half.max;
    }
    let mut seen = 0u64;
    for (b, n) in &half.buckets {
        seen += n;
        if seen >= r {
            let (low, width) = bucket_range(*b);
            return (low + (width - 1) / 2).clamp(half.min, half.max);
        }
    }
    half.max
}

#[cfg(test)]
mod tests;
