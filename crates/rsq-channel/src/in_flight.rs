//! Messages delivered and not yet finished: a table by id plus a deadline heap.
//!
//! The heap is lazy: FIN and TOUCH do not search it, they leave the old heap
//! entry behind, and an entry whose sequence number no longer matches its
//! table row is skipped when it reaches the top. So that skipped entries
//! cannot pile up (a busy channel finishes millions of messages long before
//! their deadlines), the heap is rebuilt from the table once stale entries
//! outnumber live ones; each rebuild is paid for by the removals that made
//! it necessary, so every operation stays O(log n) amortized.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use rsq_codec::{Message, MessageId};

use crate::ClientId;

/// Stale heap entries tolerated beyond the live count before a rebuild.
const STALE_SLACK: usize = 64;

/// One message out with a consumer.
#[derive(Debug, Clone)]
pub(crate) struct InFlightEntry {
    /// The message as delivered (attempts already incremented).
    pub msg: Message,
    /// The consumer holding it; only it may FIN, REQ or TOUCH it.
    pub client: ClientId,
    /// When it times out and is requeued.
    pub deadline: Instant,
    /// When it was delivered; TOUCH never extends past this plus `max_msg_timeout`.
    pub delivered_at: Instant,
    /// Delivery order, so requeues on disconnect and flushes on close keep it.
    order: u64,
    /// Matches the heap entry that currently stands for this row.
    seq: u64,
}

/// The in-flight table of one channel.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    entries: HashMap<MessageId, InFlightEntry>,
    heap: BinaryHeap<Reverse<(Instant, u64, MessageId)>>,
    next_seq: u64,
}

impl InFlight {
    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `id` is in flight.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.entries.contains_key(id)
    }

    /// The row for `id`, if in flight.
    pub fn get(&self, id: &MessageId) -> Option<&InFlightEntry> {
        self.entries.get(id)
    }

    /// Puts `msg` in flight with `client` until `deadline`. The caller has
    /// checked that its id is not in flight already.
    pub fn insert(&mut self, msg: Message, client: ClientId, now: Instant, deadline: Instant) {
        let seq = self.bump();
        let id = msg.id;
        self.heap.push(Reverse((deadline, seq, id)));
        let previous = self.entries.insert(
            id,
            InFlightEntry {
                msg,
                client,
                deadline,
                delivered_at: now,
                order: seq,
                seq,
            },
        );
        debug_assert!(previous.is_none(), "message {id} put in flight twice");
    }

    /// Takes `id` out of flight; its heap entry goes stale.
    pub fn remove(&mut self, id: &MessageId) -> Option<InFlightEntry> {
        let entry = self.entries.remove(id)?;
        self.compact_if_stale();
        Some(entry)
    }

    /// Moves the deadline of `id` to `deadline`.
    pub fn reschedule(&mut self, id: &MessageId, deadline: Instant) {
        let seq = self.bump();
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.deadline = deadline;
        entry.seq = seq;
        self.heap.push(Reverse((deadline, seq, *id)));
        self.compact_if_stale();
    }

    /// The earliest deadline of a message in flight.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale_top();
        self.heap.peek().map(|Reverse((deadline, _, _))| *deadline)
    }

    /// Takes out one message whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<InFlightEntry> {
        self.drop_stale_top();
        let Reverse((deadline, _, id)) = *self.heap.peek()?;
        if deadline > now {
            return None;
        }
        self.heap.pop();
        self.entries.remove(&id)
    }

    /// Takes out every message `client` holds, in delivery order.
    pub fn remove_client(&mut self, client: ClientId) -> Vec<InFlightEntry> {
        let ids: Vec<MessageId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.client == client)
            .map(|(id, _)| *id)
            .collect();
        let mut taken: Vec<InFlightEntry> = ids
            .iter()
            .filter_map(|id| self.entries.remove(id))
            .collect();
        taken.sort_by_key(|e| e.order);
        self.compact_if_stale();
        taken
    }

    /// Takes out everything, in delivery order.
    pub fn drain(&mut self) -> Vec<InFlightEntry> {
        let mut all: Vec<InFlightEntry> = self.entries.drain().map(|(_, e)| e).collect();
        all.sort_by_key(|e| e.order);
        self.heap.clear();
        all
    }

    /// Iterates over the rows, in no particular order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &InFlightEntry> {
        self.entries.values()
    }

    /// Heap entries that still stand for a row; equals `len()` when consistent.
    #[cfg(test)]
    pub fn live_heap_entries(&self) -> usize {
        self.heap
            .iter()
            .filter(|Reverse((d, seq, id))| {
                self.entries
                    .get(id)
                    .is_some_and(|e| e.seq == *seq && e.deadline == *d)
            })
            .count()
    }

    /// Entries in the deadline heap, stale ones included.
    #[cfg(test)]
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn is_live(&self, seq: u64, id: &MessageId) -> bool {
        self.entries.get(id).is_some_and(|e| e.seq == seq)
    }

    fn drop_stale_top(&mut self) {
        while let Some(Reverse((_, seq, id))) = self.heap.peek() {
            if self.is_live(*seq, id) {
                break;
            }
            self.heap.pop();
        }
    }

    fn compact_if_stale(&mut self) {
        if self.heap.len() > 2 * self.entries.len() + STALE_SLACK {
            self.heap = self
                .entries
                .iter()
                .map(|(id, e)| Reverse((e.deadline, e.seq, *id)))
                .collect();
        }
    }
}
