//! Messages held back until a moment: DPUB and REQ with a delay.
//!
//! A min-heap on the release instant. Deferred messages are never looked up
//! by id, so there is nothing to index; ties release in arrival order.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

use rsq_codec::Message;

#[derive(Debug)]
struct Held {
    due: Instant,
    seq: u64,
    msg: Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The deferred messages of one channel.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    heap: BinaryHeap<Reverse<Held>>,
    next_seq: u64,
}

impl Deferred {
    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Holds `msg` until `due`.
    pub fn push(&mut self, msg: Message, due: Instant) {
        self.next_seq += 1;
        self.heap.push(Reverse(Held {
            due,
            seq: self.next_seq,
            msg,
        }));
    }

    /// The earliest release instant.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(h)| h.due)
    }

    /// Releases one message due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Message> {
        if self.heap.peek()?.0.due > now {
            return None;
        }
        self.heap.pop().map(|Reverse(h)| Message {
            deferred: None,
            ..h.msg
        })
    }

    /// Takes out everything, earliest first, each carrying in `deferred`
    /// what was left of its delay at `now` (so a close can keep it).
    pub fn drain(&mut self, now: Instant) -> Vec<Message> {
        let mut all: Vec<Held> = self.heap.drain().map(|Reverse(h)| h).collect();
        all.sort();
        all.into_iter()
            .map(|h| Message {
                deferred: Some(h.due.saturating_duration_since(now)),
                ..h.msg
            })
            .collect()
    }

    /// Drops everything held.
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Iterates over the held messages, in no particular order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &Message> {
        self.heap.iter().map(|Reverse(h)| &h.msg)
    }
}
