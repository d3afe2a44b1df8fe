//! The channel as a plain state machine: no IO, no clock, no tasks.
//!
//! Inputs are `handle_*` calls carrying the current instant; outputs are
//! `poll_deliver` (which consumer gets which message next) and
//! `poll_timeout` (when the caller must next call `handle_timeout`).
//! The backend is the caller's business: `handle_put` hands back a message
//! that does not fit in memory, and the caller feeds records read back from
//! the backend through `handle_backend_message`, as many at a time as
//! `backend_room` allows. Dead letters are the
//! caller's business too: a message REQueued or timed out on its
//! `max_attempts`-th delivery waits in an outbox until the caller takes it
//! with `poll_dead_letter` (and publishes it wherever dead letters go).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rsq_codec::{Message, MessageId};

use crate::consumer::ConsumerState;
use crate::deferred::Deferred;
use crate::e2e_latency::E2eLatencyWindow;
use crate::in_flight::InFlight;
use crate::{ChannelConfig, ChannelError, ChannelStats, ClientId, ConsumerStats};

#[cfg(test)]
mod tests;

/// Most records read back from the backend and not yet delivered: the
/// batch the caller reads outside its lock. A few hundred keeps one read
/// per batch of deliveries while holding little memory per channel.
pub const READ_AHEAD: usize = 256;

/// Most messages held for which debug builds check every invariant after
/// each operation ([`ChannelState::debug_check`]): the check is linear in
/// what is held, and tests with big backlogs would crawl.
pub const DEBUG_CHECK_LIMIT: usize = 256;

/// Where [`ChannelState::handle_put`] left a message.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum PutOutcome {
    /// In the memory queue.
    Queued,
    /// The memory queue is full (or sized 0): the caller writes this message
    /// to the backend.
    Overflow(Message),
}

/// One channel's messages and consumers.
///
/// Every message the channel holds is in exactly one of: the memory queue,
/// the read-back queue, the in-flight table (owned by one consumer), the
/// deferred heap, or the dead-letter outbox. The backend, kept by the
/// caller, is the sixth place.
///
/// The memory queue holds at most `mem_queue_size` *fresh* messages; messages
/// coming back from flight or deferral (requeue, timeout, disconnect, release)
/// join it regardless of that bound, because they were already held in
/// memory and moving them costs nothing. Records read back from the backend
/// wait in the read-back queue, at most [`READ_AHEAD`], so the caller can
/// read them in batches outside its lock; delivery alternates between the
/// two queues while both hold messages, so neither starves the other (nsqd
/// picks between them at random).
#[derive(Debug)]
pub struct ChannelState {
    config: ChannelConfig,
    memory: VecDeque<Message>,
    /// Records read back from the backend, oldest first, not yet delivered.
    read_back: VecDeque<Message>,
    /// The next delivery comes from `read_back` if it holds any.
    read_back_turn: bool,
    /// Consumers with RDY above zero: while there are some, records are
    /// read back ahead of their readiness, so a consumer made ready again
    /// by each FIN still gets its turn at the backend.
    rdy_consumers: usize,
    in_flight: InFlight,
    deferred: Deferred,
    consumers: HashMap<ClientId, ConsumerState>,
    /// Consumers that may be ready, in round-robin order. An entry may be
    /// stale (its consumer lowered RDY); it is checked when taken.
    ready: VecDeque<ClientId>,
    paused: bool,
    message_count: u64,
    requeue_count: u64,
    timeout_count: u64,
    /// Messages past their attempt limit, oldest first, until the caller
    /// takes them ([`ChannelState::poll_dead_letter`]).
    dead_letters: VecDeque<Message>,
    dead_letter_count: u64,
    /// Publish-to-FIN latencies; `None` unless percentiles are configured
    /// (boxed: most channels have none, and it is two hundred bytes).
    e2e: Option<Box<E2eLatencyWindow>>,
}

impl ChannelState {
    /// An empty, unpaused channel.
    pub fn new(config: ChannelConfig) -> Self {
        let e2e = (!config.e2e_percentiles.is_empty()).then(|| {
            Box::new(E2eLatencyWindow::new(
                config.e2e_percentiles.clone(),
                config.e2e_window,
            ))
        });
        ChannelState {
            e2e,
            config,
            memory: VecDeque::new(),
            read_back: VecDeque::new(),
            read_back_turn: false,
            rdy_consumers: 0,
            in_flight: InFlight::default(),
            deferred: Deferred::default(),
            consumers: HashMap::new(),
            ready: VecDeque::new(),
            paused: false,
            message_count: 0,
            requeue_count: 0,
            timeout_count: 0,
            dead_letters: VecDeque::new(),
            dead_letter_count: 0,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// Accepts a fresh message: into memory while there is room, else handed
    /// back for the backend. Either way it counts in `message_count`.
    ///
    /// An ephemeral channel with `mem_queue_size == 0` still hands a message
    /// straight to a waiting consumer, as nsqd's unbuffered channel does.
    pub fn handle_put(&mut self, msg: Message) -> PutOutcome {
        self.message_count += 1;
        let handoff = self.config.ephemeral
            && self.config.mem_queue_size == 0
            && self.memory.is_empty()
            && self.wants_message();
        if self.memory.len() < self.config.mem_queue_size || handoff {
            self.memory.push_back(msg);
            PutOutcome::Queued
        } else {
            PutOutcome::Overflow(msg)
        }
    }

    /// Counts a fresh message the caller stored in the backend itself (a
    /// durable channel's deferred put).
    pub fn count_put(&mut self) {
        self.message_count += 1;
    }

    /// Takes back the count of `n` fresh messages handed back as overflow
    /// (or counted with [`ChannelState::count_put`]) that the backend then
    /// refused: the caller puts them again, so they must not count twice.
    pub fn uncount_puts(&mut self, n: u64) {
        self.message_count = self.message_count.saturating_sub(n);
    }

    /// Accepts a fresh message that becomes deliverable `delay` after `now`.
    pub fn handle_put_deferred(&mut self, msg: Message, delay: Duration, now: Instant) {
        self.message_count += 1;
        self.deferred.push(msg, now + delay);
    }

    /// Takes a deferred message read back from the backend (written there
    /// by a close): held until `delay` from now, not counted again.
    pub fn handle_backend_deferred(&mut self, msg: Message, delay: Duration, now: Instant) {
        self.deferred.push(msg, now + delay);
    }

    /// Takes a message read back from the backend, after those read before
    /// it. The caller reads no more than [`ChannelState::backend_room`].
    pub fn handle_backend_message(&mut self, msg: Message) {
        debug_assert!(
            self.read_back.len() < READ_AHEAD,
            "read back past the read-ahead bound"
        );
        self.read_back.push_back(msg);
    }

    /// How many records the caller may read from the backend now: none
    /// while paused, while no consumer has RDY above zero or while the
    /// read-back queue is more than half full; else enough to fill it to
    /// [`READ_AHEAD`].
    pub fn backend_room(&self) -> usize {
        if self.paused || self.rdy_consumers == 0 || self.read_back.len() > READ_AHEAD / 2 {
            return 0;
        }
        READ_AHEAD - self.read_back.len()
    }

    /// Subscribes a consumer with its in-flight timeout. It receives nothing
    /// until it sends RDY. Refused with [`ChannelError::TooManyConsumers`]
    /// when `max_consumers` (non-zero) are subscribed already: the check and
    /// the insert are one step, so callers holding the state under one lock
    /// can never exceed the bound.
    pub fn add_consumer(
        &mut self,
        client: ClientId,
        msg_timeout: Duration,
    ) -> Result<(), ChannelError> {
        if self.consumers.contains_key(&client) {
            return Err(ChannelError::ConsumerExists(client));
        }
        let max = self.config.max_consumers;
        if max > 0 && self.consumers.len() >= max {
            return Err(ChannelError::TooManyConsumers { max });
        }
        self.consumers
            .insert(client, ConsumerState::new(msg_timeout));
        Ok(())
    }

    /// Unsubscribes a consumer; what it held in flight is requeued at once
    /// (and counted in `requeue_count`). Returns whether it was subscribed.
    pub fn remove_consumer(&mut self, client: ClientId) -> bool {
        let Some(consumer) = self.consumers.remove(&client) else {
            return false;
        };
        if consumer.rdy > 0 {
            self.rdy_consumers -= 1;
        }
        self.ready.retain(|c| *c != client);
        for entry in self.in_flight.remove_client(client) {
            self.requeue_count += 1;
            self.memory.push_back(entry.msg);
        }
        true
    }

    /// Sets a consumer's RDY count, clamped to `max_rdy_count`.
    pub fn handle_rdy(&mut self, client: ClientId, count: u64) {
        let count = count.min(self.config.max_rdy_count);
        if let Some(consumer) = self.consumers.get_mut(&client) {
            match (consumer.rdy > 0, count > 0) {
                (false, true) => self.rdy_consumers += 1,
                (true, false) => self.rdy_consumers -= 1,
                _ => {}
            }
            consumer.rdy = count;
            self.mark_ready(client);
        }
    }

    /// FIN: the message is done. Returns it.
    ///
    /// With end-to-end latency configured, records `now_unix_ns` minus the
    /// message's publish timestamp in the latency window at `now`.
    pub fn handle_fin(
        &mut self,
        client: ClientId,
        id: &MessageId,
        now: Instant,
        now_unix_ns: i64,
    ) -> Result<Message, ChannelError> {
        let entry = self.in_flight.remove_held(client, id)?;
        if let Some(e2e) = &mut self.e2e {
            let latency = now_unix_ns.saturating_sub(entry.msg.timestamp_ns);
            e2e.record(u64::try_from(latency).unwrap_or(0), now);
        }
        if let Some(consumer) = self.consumers.get_mut(&client) {
            consumer.in_flight -= 1;
            consumer.finish_count += 1;
        }
        self.mark_ready(client);
        Ok(entry.msg)
    }

    /// REQ: the message goes back, now (`delay` zero) or after `delay`,
    /// which is clamped to `max_req_timeout`; or, when this was its
    /// `max_attempts`-th delivery, to the dead-letter outbox (at once,
    /// whatever the delay). Counted in `requeue_count` either way.
    pub fn handle_req(
        &mut self,
        client: ClientId,
        id: &MessageId,
        delay: Duration,
        now: Instant,
    ) -> Result<(), ChannelError> {
        let entry = self.in_flight.remove_held(client, id)?;
        if let Some(consumer) = self.consumers.get_mut(&client) {
            consumer.in_flight -= 1;
            consumer.requeue_count += 1;
        }
        self.requeue_count += 1;
        let delay = delay.min(self.config.max_req_timeout);
        if self.at_attempt_limit(&entry.msg) {
            self.dead_letter(entry.msg);
        } else if delay.is_zero() {
            self.memory.push_back(entry.msg);
        } else {
            self.deferred.push(entry.msg, now + delay);
        }
        self.mark_ready(client);
        Ok(())
    }

    /// TOUCH: the deadline restarts at `now` plus the consumer's timeout, but
    /// never goes past delivery plus `max_msg_timeout`.
    pub fn handle_touch(
        &mut self,
        client: ClientId,
        id: &MessageId,
        now: Instant,
    ) -> Result<(), ChannelError> {
        self.check_owner(client, id)?;
        let entry = self.in_flight.get(id).ok_or(ChannelError::NotInFlight)?;
        let timeout = self
            .consumers
            .get(&client)
            .map_or(self.config.msg_timeout, |c| c.msg_timeout);
        let cap = entry.delivered_at + self.config.max_msg_timeout;
        let deadline = (now + timeout).min(cap);
        self.in_flight.reschedule(id, deadline);
        Ok(())
    }

    /// Stops delivery; puts are still accepted.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Resumes delivery.
    pub fn unpause(&mut self) {
        self.paused = false;
    }

    /// Whether delivery is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The next delivery: a ready consumer (round robin) and the message it
    /// now holds in flight, attempts already incremented. `None` when paused,
    /// when memory is empty or when nobody is ready.
    pub fn poll_deliver(&mut self, now: Instant) -> Option<(ClientId, Message)> {
        if self.paused {
            return None;
        }
        while !self.memory.is_empty() || !self.read_back.is_empty() {
            let client = self.ready.pop_front()?;
            let Some(consumer) = self.consumers.get_mut(&client) else {
                continue;
            };
            consumer.queued = false;
            if !consumer.is_ready() {
                continue;
            }
            while let Some(mut msg) = next_queued(
                &mut self.memory,
                &mut self.read_back,
                &mut self.read_back_turn,
            ) {
                msg.attempts = msg.attempts.saturating_add(1);
                let deadline = now + consumer.msg_timeout;
                if let Err(copy) = self.in_flight.insert(msg.clone(), client, now, deadline) {
                    // Ids are unique per topic; a duplicate is a publisher
                    // bug (or a replay), and two rows for one id cannot be
                    // told apart.
                    tracing::warn!(id = %copy.id, "message id already in flight; dropping the copy");
                    continue;
                }
                consumer.in_flight += 1;
                consumer.message_count += 1;
                self.mark_ready(client);
                return Some((client, msg));
            }
            // The queues ran out while skipping duplicates; keep the consumer's turn.
            self.ready.push_front(client);
            if let Some(consumer) = self.consumers.get_mut(&client) {
                consumer.queued = true;
            }
            return None;
        }
        None
    }

    /// When `handle_timeout` must next be called: the earliest in-flight
    /// deadline or deferred release. `None` when nothing is pending.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.in_flight.next_deadline(), self.deferred.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Requeues in-flight messages whose deadline is at or before `now`
    /// (counted in `timeout_count`; one on its `max_attempts`-th delivery
    /// goes to the dead-letter outbox instead) and releases deferred
    /// messages that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.in_flight.pop_expired(now) {
            self.timeout_count += 1;
            if let Some(consumer) = self.consumers.get_mut(&entry.client) {
                consumer.in_flight -= 1;
            }
            self.mark_ready(entry.client);
            if self.at_attempt_limit(&entry.msg) {
                self.dead_letter(entry.msg);
            } else {
                self.memory.push_back(entry.msg);
            }
        }
        while let Some(msg) = self.deferred.pop_due(now) {
            self.memory.push_back(msg);
        }
    }

    /// Whether a consumer could take a message now (not paused, someone ready).
    pub fn wants_message(&mut self) -> bool {
        if self.paused {
            return false;
        }
        while let Some(client) = self.ready.front() {
            match self.consumers.get_mut(client) {
                Some(consumer) if consumer.is_ready() => return true,
                Some(consumer) => consumer.queued = false,
                None => {}
            }
            self.ready.pop_front();
        }
        false
    }

    /// Drops every queued, in-flight, deferred and dead-lettered message
    /// not yet taken (the caller empties the backend). Consumers stay, holding nothing; a later FIN for a
    /// dropped message fails with `NotInFlight`.
    pub fn handle_empty(&mut self) {
        self.memory.clear();
        self.read_back.clear();
        self.in_flight.drain();
        self.deferred.clear();
        self.dead_letters.clear();
        let clients: Vec<ClientId> = self.consumers.keys().copied().collect();
        for client in clients {
            if let Some(consumer) = self.consumers.get_mut(&client) {
                consumer.in_flight = 0;
            }
            self.mark_ready(client);
        }
    }

    /// Takes every message out for a shutdown flush, in nsqd's order: memory
    /// (records read back first, as the oldest), then in flight (delivery order), then dead letters not yet taken
    /// (kept with their attempts, so the first failure after a restart
    /// dead-letters them), then deferred (release order). Consumers are
    /// unsubscribed.
    pub fn drain(&mut self, now: Instant) -> Vec<Message> {
        let mut all: Vec<Message> = self.read_back.drain(..).collect();
        all.extend(self.memory.drain(..));
        all.extend(self.in_flight.drain().into_iter().map(|e| e.msg));
        all.extend(self.dead_letters.drain(..));
        for msg in &mut all {
            msg.deferred = None;
        }
        all.extend(self.deferred.drain(now));
        self.consumers.clear();
        self.ready.clear();
        self.rdy_consumers = 0;
        all
    }

    /// Messages queued for delivery: the memory queue and records read
    /// back from the backend.
    pub fn queued_depth(&self) -> usize {
        self.memory.len() + self.read_back.len()
    }

    /// Messages in flight.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// Messages deferred.
    pub fn deferred_count(&self) -> usize {
        self.deferred.len()
    }

    /// Dead letters waiting for the caller to take them.
    pub fn dead_letter_depth(&self) -> usize {
        self.dead_letters.len()
    }

    /// Consumers subscribed.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// The end-to-end latency window as of `now` (older finishes
    /// forgotten), or `None` when no percentiles are configured.
    pub fn e2e_latency(&mut self, now: Instant) -> Option<&E2eLatencyWindow> {
        let e2e = self.e2e.as_mut()?;
        e2e.advance(now);
        Some(e2e)
    }

    /// Counters, with `depth` counting the queues in memory only
    /// ([`ChannelState::queued_depth`]) and no name or latency;
    /// the caller adds the backend's depth and [`ChannelState::e2e_latency`].
    pub fn stats(&self) -> ChannelStats {
        let mut clients: Vec<ConsumerStats> = self
            .consumers
            .iter()
            .map(|(id, c)| ConsumerStats {
                client_id: *id,
                ready_count: c.rdy,
                in_flight_count: c.in_flight,
                message_count: c.message_count,
                finish_count: c.finish_count,
                requeue_count: c.requeue_count,
            })
            .collect();
        clients.sort_by_key(|c| c.client_id);
        ChannelStats {
            channel_name: String::new(),
            depth: self.queued_depth() as u64,
            backend_depth: 0,
            in_flight_count: self.in_flight.len() as u64,
            deferred_count: self.deferred.len() as u64,
            message_count: self.message_count,
            requeue_count: self.requeue_count,
            timeout_count: self.timeout_count,
            dead_letter_count: self.dead_letter_count,
            max_attempts: self.config.max_attempts,
            paused: self.paused,
            client_count: self.consumers.len() as u64,
            clients,
            e2e_processing_latency: None,
            backend: rsq_diskqueue::BackendStats::default(),
        }
    }

    /// The next dead letter, oldest first: a message that was REQueued or
    /// timed out on its `max_attempts`-th delivery (its `attempts` says
    /// how many it had). The caller now holds it and publishes it to dead
    /// letters; if that fails it gives it back with
    /// [`ChannelState::handle_dead_letter_failed`].
    pub fn poll_dead_letter(&mut self) -> Option<Message> {
        self.dead_letters.pop_front()
    }

    /// A dead letter taken with [`ChannelState::poll_dead_letter`] could
    /// not be published: it is held again, first in line, not counted again.
    pub fn handle_dead_letter_failed(&mut self, msg: Message) {
        self.dead_letters.push_front(msg);
    }

    /// Changes the attempt limit (`0`: none). It applies from the next REQ
    /// or timeout on; messages already waiting or deferred are not moved.
    pub fn set_max_attempts(&mut self, max_attempts: u16) {
        self.config.max_attempts = max_attempts;
    }

    /// Whether a message leaving flight by REQ or timeout has had all the
    /// deliveries it may have.
    fn at_attempt_limit(&self, msg: &Message) -> bool {
        self.config.max_attempts > 0 && msg.attempts >= self.config.max_attempts
    }

    fn dead_letter(&mut self, msg: Message) {
        self.dead_letter_count += 1;
        self.dead_letters.push_back(msg);
    }

    fn check_owner(&self, client: ClientId, id: &MessageId) -> Result<(), ChannelError> {
        match self.in_flight.get(id) {
            None => Err(ChannelError::NotInFlight),
            Some(entry) if entry.client != client => Err(ChannelError::NotOwner),
            Some(_) => Ok(()),
        }
    }

    fn mark_ready(&mut self, client: ClientId) {
        if let Some(consumer) = self.consumers.get_mut(&client)
            && consumer.is_ready()
            && !consumer.queued
        {
            consumer.queued = true;
            self.ready.push_back(client);
        }
    }

    /// Messages the channel holds (queued, in flight, deferred, dead
    /// letters not yet taken); the backend's are not counted.
    pub fn held(&self) -> usize {
        self.queued_depth() + self.in_flight.len() + self.deferred.len() + self.dead_letters.len()
    }

    /// In debug builds, [`ChannelState::check_invariants`] while at most
    /// [`DEBUG_CHECK_LIMIT`] messages are held; nothing in release builds.
    /// The daemon's channel runs it each time it releases its lock.
    pub fn debug_check(&self) {
        if cfg!(debug_assertions) && self.held() <= DEBUG_CHECK_LIMIT {
            self.check_invariants();
        }
    }

    /// Panics unless the structural invariants hold: the read-back queue
    /// and the consumer count within their bounds, each in-flight row indexed once and owned by a
    /// subscribed consumer, consumer in-flight and RDY counts agree with
    /// the table, the timers agree, and every ready consumer is queued.
    /// Linear in what is held.
    ///
    /// It does not require ids to be unique across places: a backend
    /// replaying records (after damaged metadata, or a crash under
    /// at-least-once) can queue a copy of a message held elsewhere, which
    /// delivery drops while the original is in flight. Tests that never
    /// replay check that too (`check_unique_ids`).
    pub fn check_invariants(&self) {
        assert!(
            self.read_back.len() <= READ_AHEAD,
            "read back past the bound"
        );
        let max = self.config.max_consumers;
        assert!(
            max == 0 || self.consumers.len() <= max,
            "more consumers than max_consumers"
        );
        for msg in &self.dead_letters {
            assert!(msg.attempts >= 1, "{} dead-lettered undelivered", msg.id);
        }
        assert!(
            self.dead_letters.len() as u64 <= self.dead_letter_count,
            "more dead letters held than were counted"
        );
        assert_eq!(
            self.in_flight.rows().count(),
            self.in_flight.len(),
            "in-flight slots and index disagree"
        );
        for entry in self.in_flight.rows() {
            assert!(self.in_flight.contains(&entry.msg.id), "row not indexed");
            assert!(
                self.consumers.contains_key(&entry.client),
                "orphan in flight"
            );
        }
        assert_eq!(
            self.consumers.values().filter(|c| c.rdy > 0).count(),
            self.rdy_consumers,
            "consumers with RDY"
        );
        let sum: u64 = self.consumers.values().map(|c| c.in_flight).sum();
        assert_eq!(
            sum,
            self.in_flight.len() as u64,
            "consumer in-flight counts"
        );
        self.in_flight.check_timers();
        for (id, c) in &self.consumers {
            if c.is_ready() {
                assert!(
                    c.queued && self.ready.contains(id),
                    "ready consumer {id} not queued"
                );
            }
        }
    }
}

#[cfg(test)]
impl ChannelState {
    /// [`ChannelState::check_invariants`], and each held message in exactly
    /// one place: for tests whose backend never replays a record.
    pub(crate) fn check_unique_ids(&self) {
        self.check_invariants();
        let mut seen = std::collections::HashSet::new();
        let queued = self.memory.iter().chain(&self.read_back);
        let held = queued
            .chain(self.deferred.iter())
            .chain(&self.dead_letters)
            .chain(self.in_flight.rows().map(|e| &e.msg));
        for msg in held {
            assert!(seen.insert(msg.id), "{} held twice", msg.id);
        }
    }
}

/// The next queued message: alternately from the read-back queue and
/// memory while both hold some (a free function: the caller holds a
/// consumer borrowed from the state).
fn next_queued(
    memory: &mut VecDeque<Message>,
    read_back: &mut VecDeque<Message>,
    read_back_turn: &mut bool,
) -> Option<Message> {
    let from_read_back = !read_back.is_empty() && (memory.is_empty() || *read_back_turn);
    *read_back_turn = !from_read_back;
    match from_read_back {
        true => read_back.pop_front(),
        false => memory.pop_front(),
    }
}
