//! Messages delivered and not yet finished: a table by id plus a deadline heap.
//!
//! The heap is lazy: FIN and TOUCH do not search it, they leave the old heap
//! entry behind, and an entry whose sequence number no longer matches its
//! table row is skipped when it reaches the top. So that skipped entries
//! cannot pile up (a busy channel finishes millions of messages long before
//! their deadlines), the heap is rebuilt from the table once stale entries
//! outnumber live ones; each rebuild is paid for by the removals that made
//! it necessary, so every operation stays O(log n) amortized.
//!
//! The table is a slab of rows with a small id-to-slot index beside it. A
//! hash map of whole rows would be several times larger: under the churn
//! of delivery and FIN its tombstones make it grow to four times the rows
//! in flight, and each bucket would hold a whole row.

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
    /// Where each message's row is in `slots`.
    index: HashMap<MessageId, usize>,
    /// The rows; `None` for a free slot, listed in `free`.
    slots: Vec<Option<InFlightEntry>>,
    free: Vec<usize>,
    heap: BinaryHeap<Reverse<(Instant, u64, MessageId)>>,
    next_seq: u64,
}

impl InFlight {
    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether `id` is in flight.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.index.contains_key(id)
    }

    /// The row for `id`, if in flight.
    pub fn get(&self, id: &MessageId) -> Option<&InFlightEntry> {
        let slot = *self.index.get(id)?;
        self.slots.get(slot)?.as_ref()
    }

    fn get_mut(&mut self, id: &MessageId) -> Option<&mut InFlightEntry> {
        let slot = *self.index.get(id)?;
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Takes the row for `id` out, freeing its slot.
    fn take(&mut self, id: &MessageId) -> Option<InFlightEntry> {
        let slot = self.index.remove(id)?;
        let entry = self.slots.get_mut(slot)?.take();
        self.free.push(slot);
        entry
    }

    /// Puts `msg` in flight with `client` until `deadline`. The caller has
    /// checked that its id is not in flight already.
    pub fn insert(&mut self, msg: Message, client: ClientId, now: Instant, deadline: Instant) {
        let seq = self.bump();
        let id = msg.id;
        self.heap.push(Reverse((deadline, seq, id)));
        let entry = Some(InFlightEntry {
            msg,
            client,
            deadline,
            delivered_at: now,
            order: seq,
            seq,
        });
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = entry;
                slot
            }
            None => {
                self.slots.push(entry);
                self.slots.len() - 1
            }
        };
        let previous = self.index.insert(id, slot);
        debug_assert!(previous.is_none(), "message {id} put in flight twice");
    }

    /// Takes `id` out of flight; its heap entry goes stale.
    pub fn remove(&mut self, id: &MessageId) -> Option<InFlightEntry> {
        let entry = self.take(id)?;
        self.compact_if_stale();
        Some(entry)
    }

    /// Moves the deadline of `id` to `deadline`.
    pub fn reschedule(&mut self, id: &MessageId, deadline: Instant) {
        let seq = self.bump();
        let Some(entry) = self.get_mut(id) else {
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
        self.take(&id)
    }

    /// Takes out every message `client` holds, in delivery order.
    pub fn remove_client(&mut self, client: ClientId) -> Vec<InFlightEntry> {
        let ids: Vec<MessageId> = self
            .rows()
            .filter(|e| e.client == client)
            .map(|e| e.msg.id)
            .collect();
        let mut taken: Vec<InFlightEntry> = ids.iter().filter_map(|id| self.take(id)).collect();
        taken.sort_by_key(|e| e.order);
        self.compact_if_stale();
        taken
    }

    /// Takes out everything, in delivery order.
    pub fn drain(&mut self) -> Vec<InFlightEntry> {
        let mut all: Vec<InFlightEntry> = self.slots.drain(..).flatten().collect();
        all.sort_by_key(|e| e.order);
        self.index.clear();
        self.free.clear();
        self.heap.clear();
        all
    }

    /// Iterates over the rows, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = &InFlightEntry> {
        self.slots.iter().flatten()
    }

    /// Heap entries that still stand for a row; equals `len()` when consistent.
    #[cfg(test)]
    pub fn live_heap_entries(&self) -> usize {
        self.heap
            .iter()
            .filter(|Reverse((d, seq, id))| {
                self.get(id)
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
        self.get(id).is_some_and(|e| e.seq == seq)
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
        if self.heap.len() > 2 * self.index.len() + STALE_SLACK {
            self.heap = self
                .slots
                .iter()
                .flatten()
                .map(|e| Reverse((e.deadline, e.seq, e.msg.id)))
                .collect();
        }
    }
}
