//! End-to-end processing latency: publish to FIN, over recent finishes.
//!
//! A fixed ring of the latest samples; percentiles are computed when stats
//! are read, so a FIN costs one store.

use crate::E2eLatency;

/// Samples kept; percentiles cover the latest this many finishes.
const WINDOW_LEN: usize = 1024;

/// Quantiles reported, as nsqd operators usually configure them.
const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// A ring of recent latencies in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct LatencyWindow {
    samples: Vec<u64>,
    next: usize,
}

impl LatencyWindow {
    /// Records one finish.
    pub fn record(&mut self, latency_ns: u64) {
        if self.samples.len() < WINDOW_LEN {
            self.samples.push(latency_ns);
        } else {
            self.samples[self.next] = latency_ns;
        }
        self.next = (self.next + 1) % WINDOW_LEN;
    }

    /// Percentiles over the window, or `None` before the first finish.
    pub fn snapshot(&self) -> Option<E2eLatency> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let last = sorted.len() - 1;
        let percentiles = QUANTILES
            .iter()
            .map(|q| {
                // Nearest rank; `q` is in (0, 1] so the index is in range.
                let rank = ((*q * sorted.len() as f64).ceil() as usize).saturating_sub(1);
                (*q, sorted[rank.min(last)])
            })
            .collect();
        Some(E2eLatency {
            count: sorted.len() as u64,
            percentiles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.snapshot(), None);
        for v in 1..=100 {
            w.record(v);
        }
        let s = w.snapshot().expect("samples");
        assert_eq!(s.count, 100);
        assert_eq!(s.percentiles, vec![(0.5, 50), (0.95, 95), (0.99, 99)]);
    }

    #[test]
    fn window_forgets_old_samples() {
        let mut w = LatencyWindow::default();
        for _ in 0..WINDOW_LEN {
            w.record(1_000_000);
        }
        for _ in 0..WINDOW_LEN {
            w.record(5);
        }
        let s = w.snapshot().expect("samples");
        assert_eq!(s.count, WINDOW_LEN as u64);
        assert!(s.percentiles.iter().all(|(_, v)| *v == 5));
    }
}
