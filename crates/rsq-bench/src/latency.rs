//! End-to-end latency: the stamp a writer puts in each body, and the
//! histogram a reader records delays in.
//!
//! A stamped body starts with [`STAMP_MAGIC`] followed by the send time as
//! big-endian nanoseconds since the Unix epoch; the rest is padding. Wall
//! time (not `Instant`) is used so a writer and a reader in different
//! processes on one machine still agree. Bodies without the magic (traffic
//! from other clients) are simply not measured.

use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The 4 bytes that open every stamped body.
pub const STAMP_MAGIC: &[u8; 4] = b"RSQB";

/// Bytes a stamp occupies: magic plus an 8-byte timestamp.
pub const STAMP_LEN: usize = 12;

/// Largest delay the histogram resolves, in microseconds (one hour); longer
/// delays are recorded as this value.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Now, as nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A body of `size` bytes (at least [`STAMP_LEN`]) whose stamp is `sent_ns`.
pub fn stamped_body(size: usize, sent_ns: u64) -> Vec<u8> {
    let mut body = vec![b'x'; size.max(STAMP_LEN)];
    write_stamp(&mut body, sent_ns);
    body
}

/// Writes the magic and `sent_ns` into the first [`STAMP_LEN`] bytes of
/// `body`; a shorter body is left alone.
pub fn write_stamp(body: &mut [u8], sent_ns: u64) {
    if body.len() >= STAMP_LEN {
        body[..4].copy_from_slice(STAMP_MAGIC);
        body[4..STAMP_LEN].copy_from_slice(&sent_ns.to_be_bytes());
    }
}

/// The send time stamped in `body`, if it carries a stamp.
pub fn read_stamp(body: &[u8]) -> Option<u64> {
    if body.len() < STAMP_LEN || &body[..4] != STAMP_MAGIC {
        return None;
    }
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&body[4..STAMP_LEN]);
    Some(u64::from_be_bytes(ns))
}

/// Positions of every stamp in an encoded PUB or MPUB command: each
/// occurrence of [`STAMP_MAGIC`] after the command line's newline. Sizes
/// and counts before the bodies cannot spell the magic (it would be a
/// 1.3 GB size), so this finds exactly the bodies' starts.
pub fn stamp_offsets(encoded: &[u8]) -> Vec<usize> {
    let Some(newline) = encoded.iter().position(|&b| b == b'\n') else {
        return Vec::new();
    };
    let mut offsets = Vec::new();
    let mut at = newline + 1;
    while at + STAMP_LEN <= encoded.len() {
        if &encoded[at..at + 4] == STAMP_MAGIC {
            offsets.push(at);
            at += STAMP_LEN;
        } else {
            at += 1;
        }
    }
    offsets
}

/// A histogram of delays in microseconds (3 significant figures).
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder covering 1 µs to [`LATENCY_MAX_US`].
    pub fn new() -> LatencyRecorder {
        let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
            .expect("constant histogram bounds are valid");
        LatencyRecorder { histogram }
    }

    /// Records the delay between `sent_ns` and `received_ns`; a receive
    /// before the send (clock step) counts as the smallest delay.
    pub fn record(&mut self, sent_ns: u64, received_ns: u64) {
        let us = received_ns.saturating_sub(sent_ns) / 1_000;
        self.histogram.saturating_record(us.max(1));
    }

    /// Records the stamp of `body` received at `received_ns`; returns
    /// whether the body was stamped.
    pub fn record_body(&mut self, body: &[u8], received_ns: u64) -> bool {
        match read_stamp(body) {
            Some(sent) => {
                self.record(sent, received_ns);
                true
            }
            None => false,
        }
    }

    /// Adds every delay recorded by `other`.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    /// Number of delays recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The percentiles, or `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.histogram.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: self.histogram.len(),
            p50_us: self.histogram.value_at_quantile(0.50),
            p99_us: self.histogram.value_at_quantile(0.99),
            p999_us: self.histogram.value_at_quantile(0.999),
            max_us: self.histogram.max(),
        })
    }
}

/// Delay percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Delays recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest (to the histogram's resolution).
    pub max_us: u64,
}

#[cfg(test)]
mod tests;
