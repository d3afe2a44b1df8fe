//! Counters shared by the writers and readers of one phase, so readers
//! know when everything published has arrived.

use std::sync::atomic::{AtomicU64, Ordering};

/// Totals of one phase, updated by every client task.
#[derive(Debug)]
pub struct Progress {
    published: AtomicU64,
    consumed: AtomicU64,
    consume_target: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Nothing published or consumed, target unknown.
    pub fn new() -> Progress {
        Progress {
            published: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consume_target: AtomicU64::new(u64::MAX),
        }
    }

    /// Counts `n` messages acknowledged by the daemon.
    pub fn add_published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages acknowledged so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Counts `n` messages received by readers.
    pub fn add_consumed(&self, n: u64) {
        self.consumed.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages received so far, over all readers.
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }

    /// Sets how many deliveries the readers wait for in all.
    pub fn set_consume_target(&self, target: u64) {
        self.consume_target.store(target, Ordering::Relaxed);
    }

    /// Whether the readers have received everything they wait for.
    pub fn consume_done(&self) -> bool {
        self.consumed() >= self.consume_target.load(Ordering::Relaxed)
    }
}
