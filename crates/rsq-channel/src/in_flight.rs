//! Messages delivered and not yet finished: a table by id plus deadline lanes.
//!
//! Nearly every deadline is "now plus the consumer's timeout", and `now`
//! only moves forward, so deadlines arrive almost sorted: one per distinct
//! timeout in use. They are kept in a few FIFO lanes, each sorted by
//! construction (a deadline joins the lane whose last deadline is the
//! latest one not after it), so scheduling and expiring are O(1) queue
//! operations instead of heap sifts. Only when more than [`MAX_LANES`]
//! unrelated orders are in use at once does a deadline go to an overflow
//! heap, which keeps every case correct.
//!
//! The lanes are lazy: FIN and TOUCH do not search them, they leave the old
//! timer behind, and a timer whose sequence number no longer matches its
//! table row is skipped when it reaches a lane's front. Because consumers
//! mostly finish in delivery order, stale timers are mostly at the fronts
//! and leave in O(1); so that the rest cannot pile up, the lanes are
//! filtered once stale timers outnumber live ones, each filter paid for by
//! the removals that made it necessary.
//!
//! The table is a slab of rows with a small id-to-slot index beside it. A
//! hash map of whole rows would be several times larger: under the churn
//! of delivery and FIN its tombstones make it grow to four times the rows
//! in flight, and each bucket would hold a whole row. The index hashes
//! with foldhash rather than SipHash: ids are made by this server, not
//! chosen by clients, and the lookup is on every FIN.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use rsq_codec::{Message, MessageId};

use crate::{ChannelError, ClientId};

/// Stale timers tolerated beyond the live count before the lanes are filtered.
const STALE_SLACK: usize = 64;

/// Sorted lanes kept before deadlines go to the overflow heap: enough for
/// every consumer timeout a deployment uses at once, small enough that
/// finding the earliest front is a short scan.
const MAX_LANES: usize = 8;

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
    /// Matches the timer that currently stands for this row.
    seq: u64,
}

/// A deadline for the row in `slot`, current while the row's `seq` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    deadline: Instant,
    seq: u64,
    slot: u32,
}

/// The in-flight table of one channel.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    /// Where each message's row is in `slots`.
    index: HashMap<MessageId, u32, foldhash::fast::RandomState>,
    /// The rows; `None` for a free slot, listed in `free`.
    slots: Vec<Option<InFlightEntry>>,
    free: Vec<u32>,
    /// Each lane is sorted by deadline.
    lanes: Vec<VecDeque<Timer>>,
    /// Deadlines that fit no lane.
    overflow: BinaryHeap<Reverse<Timer>>,
    /// Timers in `lanes` and `overflow`, stale ones included.
    timers: usize,
    next_seq: u64,
}

/// Where the earliest timer is.
#[derive(Clone, Copy)]
enum Source {
    Lane(usize),
    Overflow,
}

fn is_live(slots: &[Option<InFlightEntry>], t: &Timer) -> bool {
    slots
        .get(t.slot as usize)
        .and_then(Option::as_ref)
        .is_some_and(|e| e.seq == t.seq)
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
        self.slots.get(slot as usize)?.as_ref()
    }

    /// Takes the row in `slot` out, freeing the slot.
    fn take_slot(&mut self, slot: u32) -> Option<InFlightEntry> {
        let entry = self.slots.get_mut(slot as usize)?.take()?;
        self.index.remove(&entry.msg.id);
        self.free.push(slot);
        Some(entry)
    }

    /// Puts `msg` in flight with `client` until `deadline`, with one hash
    /// operation; gives it back if its id is in flight already.
    pub fn insert(
        &mut self,
        msg: Message,
        client: ClientId,
        now: Instant,
        deadline: Instant,
    ) -> Result<(), Message> {
        let free = self.free.last().copied();
        let next = match free {
            Some(slot) => slot,
            // A channel holds at most `max_in_flight` summed over its
            // consumers, each bounded by the RDY limit, far below 2^32.
            None => u32::try_from(self.slots.len()).expect("in-flight slots fit in u32"),
        };
        match self.index.entry(msg.id) {
            Entry::Occupied(_) => return Err(msg),
            Entry::Vacant(v) => {
                v.insert(next);
            }
        }
        let seq = self.bump();
        let entry = Some(InFlightEntry {
            msg,
            client,
            deadline,
            delivered_at: now,
            order: seq,
            seq,
        });
        match free {
            Some(slot) => {
                self.free.pop();
                self.slots[slot as usize] = entry;
            }
            None => self.slots.push(entry),
        }
        self.schedule(Timer {
            deadline,
            seq,
            slot: next,
        });
        Ok(())
    }

    /// Takes `id` out of flight if `client` holds it, with one hash lookup
    /// (FIN and REQ pay it per message); its timer goes stale.
    pub fn remove_held(
        &mut self,
        client: ClientId,
        id: &MessageId,
    ) -> Result<InFlightEntry, ChannelError> {
        let Entry::Occupied(row) = self.index.entry(*id) else {
            return Err(ChannelError::NotInFlight);
        };
        let slot = *row.get();
        let held = self.slots.get(slot as usize).and_then(Option::as_ref);
        match held {
            Some(entry) if entry.client == client => {}
            Some(_) => return Err(ChannelError::NotOwner),
            None => return Err(ChannelError::NotInFlight),
        }
        row.remove();
        let entry = self.slots[slot as usize]
            .take()
            .ok_or(ChannelError::NotInFlight)?;
        self.free.push(slot);
        self.compact_if_stale();
        Ok(entry)
    }

    /// Moves the deadline of `id` to `deadline`.
    pub fn reschedule(&mut self, id: &MessageId, deadline: Instant) {
        let Some(&slot) = self.index.get(id) else {
            return;
        };
        let seq = self.bump();
        let Some(entry) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        entry.deadline = deadline;
        entry.seq = seq;
        self.schedule(Timer {
            deadline,
            seq,
            slot,
        });
        self.compact_if_stale();
    }

    /// The earliest deadline of a message in flight.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.earliest().map(|(t, _)| t.deadline)
    }

    /// Takes out one message whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<InFlightEntry> {
        let (timer, source) = self.earliest()?;
        if timer.deadline > now {
            return None;
        }
        match source {
            Source::Lane(i) => {
                self.lanes[i].pop_front();
            }
            Source::Overflow => {
                self.overflow.pop();
            }
        }
        self.timers -= 1;
        self.take_slot(timer.slot)
    }

    /// Takes out every message `client` holds, in delivery order.
    pub fn remove_client(&mut self, client: ClientId) -> Vec<InFlightEntry> {
        let slots: Vec<u32> = self
            .index
            .values()
            .copied()
            .filter(|&s| {
                self.slots[s as usize]
                    .as_ref()
                    .is_some_and(|e| e.client == client)
            })
            .collect();
        let mut taken: Vec<InFlightEntry> = slots
            .into_iter()
            .filter_map(|s| self.take_slot(s))
            .collect();
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
        self.lanes.clear();
        self.overflow.clear();
        self.timers = 0;
        all
    }

    /// Iterates over the rows, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = &InFlightEntry> {
        self.slots.iter().flatten()
    }

    /// Asserts that every row has exactly one current timer, that each lane
    /// is sorted, and that the timer count is right.
    pub fn check_timers(&self) {
        let all: Vec<&Timer> = self
            .lanes
            .iter()
            .flatten()
            .chain(self.overflow.iter().map(|Reverse(t)| t))
            .collect();
        assert_eq!(all.len(), self.timers, "timer count");
        for lane in &self.lanes {
            assert!(
                lane.iter()
                    .zip(lane.iter().skip(1))
                    .all(|(a, b)| a.deadline <= b.deadline),
                "lane out of order"
            );
        }
        let live = all
            .iter()
            .filter(|t| {
                is_live(&self.slots, t)
                    && self.slots[t.slot as usize]
                        .as_ref()
                        .is_some_and(|e| e.deadline == t.deadline)
            })
            .count();
        assert_eq!(live, self.len(), "rows without exactly one current timer");
    }

    /// Timers held, stale ones included.
    #[cfg(test)]
    pub fn timer_count(&self) -> usize {
        self.timers
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Adds `t` to the lane whose last deadline is the latest not after it,
    /// an empty or new lane if none fits, the overflow heap past `MAX_LANES`.
    fn schedule(&mut self, t: Timer) {
        self.timers += 1;
        let mut best: Option<(usize, Instant)> = None;
        let mut empty = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            match lane.back() {
                None => empty = empty.or(Some(i)),
                Some(back) if back.deadline <= t.deadline => {
                    if best.is_none_or(|(_, d)| back.deadline > d) {
                        best = Some((i, back.deadline));
                    }
                }
                Some(_) => {}
            }
        }
        match best.map(|(i, _)| i).or(empty) {
            Some(i) => self.lanes[i].push_back(t),
            None if self.lanes.len() < MAX_LANES => self.lanes.push(VecDeque::from([t])),
            None => self.overflow.push(Reverse(t)),
        }
    }

    /// The earliest live timer and where it is, dropping stale ones met
    /// at the fronts.
    fn earliest(&mut self) -> Option<(Timer, Source)> {
        let mut best: Option<(Timer, Source)> = None;
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            while let Some(front) = lane.front() {
                if is_live(&self.slots, front) {
                    break;
                }
                lane.pop_front();
                self.timers -= 1;
            }
            if let Some(&front) = lane.front()
                && best.is_none_or(|(b, _)| front < b)
            {
                best = Some((front, Source::Lane(i)));
            }
        }
        while let Some(Reverse(top)) = self.overflow.peek() {
            if is_live(&self.slots, top) {
                if best.is_none_or(|(b, _)| *top < b) {
                    best = Some((*top, Source::Overflow));
                }
                break;
            }
            self.overflow.pop();
            self.timers -= 1;
        }
        best
    }

    fn compact_if_stale(&mut self) {
        if self.timers > 2 * self.index.len() + STALE_SLACK {
            let slots = &self.slots;
            for lane in &mut self.lanes {
                lane.retain(|t| is_live(slots, t));
            }
            self.overflow.retain(|Reverse(t)| is_live(slots, t));
            self.timers = self.lanes.iter().map(VecDeque::len).sum::<usize>() + self.overflow.len();
        }
    }
}

#[cfg(test)]
mod tests;
