//! The run's trace: every event the driver saw, in order, folded into a
//! stable hash (64-bit FNV-1a, written here so it never changes with a
//! dependency), with the last events kept to show when a run fails.

use std::collections::VecDeque;

/// How many of the latest events a failure shows by default.
pub(crate) const TAIL_MAX: usize = 40;

/// The events of one run and their hash.
#[derive(Debug)]
pub(crate) struct Trace {
    tail_max: usize,
    hash: u64,
    events: u64,
    tail: VecDeque<String>,
}

impl Trace {
    /// An empty trace that keeps its last `tail_max` events.
    pub(crate) fn new(tail_max: usize) -> Self {
        Trace {
            tail_max: tail_max.max(1),
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            tail: VecDeque::new(),
        }
    }

    /// Records one event (its text is what is hashed, then a newline).
    pub(crate) fn event(&mut self, text: String) {
        for byte in text.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.events += 1;
        if self.tail.len() == self.tail_max {
            self.tail.pop_front();
        }
        self.tail.push_back(text);
    }

    /// The hash of every event so far.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// How many events were recorded.
    pub(crate) fn len(&self) -> u64 {
        self.events
    }

    /// The latest events, oldest first, one a line.
    pub(crate) fn tail(&self) -> String {
        let skipped = self.events - self.tail.len() as u64;
        let mut out = format!("(last {} of {} events)\n", self.tail.len(), self.events);
        for (i, e) in self.tail.iter().enumerate() {
            out += &format!("  {:>6} {e}\n", skipped + i as u64);
        }
        out
    }
}
