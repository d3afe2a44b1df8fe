//! The channel the daemon uses: [`ChannelState`] behind one mutex, plus a
//! driver task that wakes at the next deadline and reads the backend.
//!
//! Everything that can be done without waiting happens inline, under the
//! lock, in the caller's task: a PUB that finds a ready consumer, or a FIN
//! that frees a slot, delivers the next message at once. The driver only
//! does what needs waiting: firing timeouts and deferred releases at
//! `poll_timeout`, and reading the backend when the state has room for
//! records read back (`ChannelState::backend_room`). Only the driver reads
//! the backend, a batch at a time, and never under the lock: records reach
//! the state in the order they were read, and a FIN never waits on a disk
//! read. No lock is held across an `.await` either. The driver also hands
//! dead letters to the channel's [`DeadLetterSink`] (`outbox.rs`).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_codec::{Message, MessageId};
use rsq_diskqueue::{BackendQueue, QueueError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::backend_reads::BackendReads;
use crate::state::{ChannelState, PutOutcome};
use crate::{
    ChannelConfig, ChannelError, ChannelStats, ClientId, Clock, DeadLetterSink, E2eLatencyWindow,
};

mod outbox;

/// How long the driver waits before reading again after a backend read error.
const BACKEND_RETRY_DELAY: Duration = Duration::from_millis(100);

/// One named channel of a topic, shared by its consumers.
///
/// Built with [`Channel::new`] inside a tokio runtime. Dropping the last
/// `Arc<Channel>` stops the driver but loses what memory held; call
/// [`Channel::close`] to keep it.
pub struct Channel {
    shared: Arc<Shared>,
}

/// A subscribed consumer's end of the channel: the messages delivered to it.
///
/// Each message [`Consumer::recv`] yields is already in flight for this
/// consumer, attempts incremented; at most its RDY count are outstanding.
/// Delivery appends to the consumer's outlet under the channel lock, which
/// the channel holds anyway; the consumer takes everything queued there in
/// one swap per wake-up, so a batch costs one lock and one wake, not one
/// per message. Dropping it unsubscribes, requeueing what it holds.
pub struct Consumer {
    client: ClientId,
    shared: Arc<Shared>,
    /// Taken from the outlet in one go, handed out one by one.
    taken: VecDeque<Message>,
    open: Arc<AtomicBool>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("client", &self.client)
            .field("channel", &self.shared.name)
            .field("taken", &self.taken.len())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// The client id it was subscribed with.
    pub fn client_id(&self) -> ClientId {
        self.client
    }

    /// The next message delivered to this consumer. `None` once the consumer
    /// was removed or the channel closed, emptied of consumers or deleted.
    ///
    /// Cancel-safe: dropping the future loses no message.
    pub async fn recv(&mut self) -> Option<Message> {
        if self.taken.is_empty() {
            let (shared, client, taken) = (&self.shared, self.client, &mut self.taken);
            std::future::poll_fn(|cx| shared.poll_take(client, taken, Some(cx))).await?;
        }
        self.hand_out()
    }

    /// A message already delivered to this consumer, without waiting; lets
    /// the connection batch every queued message into one write.
    pub fn try_recv(&mut self) -> Option<Message> {
        if self.taken.is_empty() {
            let _ = self.shared.poll_take(self.client, &mut self.taken, None);
        }
        self.hand_out()
    }

    fn hand_out(&mut self) -> Option<Message> {
        // What was taken before the consumer was removed has already been
        // requeued; handing it out would deliver it twice.
        if !self.open.load(Ordering::Acquire) {
            self.taken.clear();
            return None;
        }
        self.taken.pop_front()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.open.load(Ordering::Acquire) {
            let mut inner = self.shared.lock();
            self.shared.remove_consumer(&mut inner, self.client);
        }
    }
}

struct Shared {
    topic: String,
    name: String,
    backend: Arc<dyn BackendQueue>,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    wake: Notify,
    /// Where messages past `max_attempts` go; `None` means the channel has
    /// no limit (one without a sink would strand them).
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
}

struct Inner {
    state: ChannelState,
    outlets: HashMap<ClientId, Outlet, foldhash::fast::RandomState>,
    /// What the sleeping driver waits for; `None` while it is awake (it
    /// looks at the state again before sleeping, so no wake-up is needed).
    armed: Option<Armed>,
    backend_closed: bool,
    exiting: bool,
    driver: Option<JoinHandle<()>>,
    /// Records the driver read from the backend after shutdown began;
    /// `close` writes them back.
    orphans: Vec<Bytes>,
    /// Finished-ness of backend reads, when the backend commits explicitly
    /// (boxed: only `--durable` channels have it).
    reads: Option<Box<BackendReads>>,
}

/// The channel lock held; releasing it checks the state's invariants in
/// debug builds (`ChannelState::debug_check`), so every operation is
/// checked whichever path it took.
struct Locked<'a>(MutexGuard<'a, Inner>);

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.0
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.0.state.debug_check();
    }
}

/// Where delivered messages wait for their consumer to take them; at most
/// its RDY count, as each is in flight.
struct Outlet {
    queue: VecDeque<Message>,
    /// The consumer waiting for the queue to fill, if it is.
    waker: Option<Waker>,
    open: Arc<AtomicBool>,
}

impl Outlet {
    fn push(&mut self, msg: Message) {
        self.queue.push_back(msg);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn close(self) {
        self.open.store(false, Ordering::Release);
        if let Some(waker) = self.waker {
            waker.wake();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Armed {
    deadline: Option<Instant>,
    /// How many records it reads once the backend has one; 0: it does not
    /// wait on the backend.
    backend_room: usize,
}

impl Channel {
    /// Builds a channel and spawns its driver task; call inside a tokio
    /// runtime. It has no dead-letter sink, so `config.max_attempts` is
    /// ignored (see [`Channel::with_dead_letters`]).
    pub fn new(
        topic: &str,
        name: &str,
        config: ChannelConfig,
        backend: Arc<dyn BackendQueue>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Channel> {
        Channel::with_dead_letters(topic, name, config, backend, clock, None)
    }

    /// [`Channel::new`] with a sink for messages past
    /// `config.max_attempts`. Without a sink (`None`) the limit is off:
    /// there would be nowhere to put what it takes out.
    pub fn with_dead_letters(
        topic: &str,
        name: &str,
        mut config: ChannelConfig,
        backend: Arc<dyn BackendQueue>,
        clock: Arc<dyn Clock>,
        dead_letters: Option<Arc<dyn DeadLetterSink>>,
    ) -> Arc<Channel> {
        if dead_letters.is_none() {
            config.max_attempts = 0;
        }
        let shared = Arc::new(Shared {
            dead_letters,
            topic: topic.to_owned(),
            name: name.to_owned(),
            backend,
            clock,
            inner: Mutex::new(Inner {
                reads: config
                    .commit_backend_reads
                    .then(|| Box::new(BackendReads::default())),
                state: ChannelState::new(config),
                outlets: HashMap::default(),
                armed: None,
                backend_closed: false,
                exiting: false,
                driver: None,
                orphans: Vec::new(),
            }),
            wake: Notify::new(),
        });
        let handle = tokio::spawn(drive(Arc::clone(&shared)));
        shared.lock().driver = Some(handle);
        Arc::new(Channel { shared })
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The name of the topic it belongs to.
    pub fn topic_name(&self) -> &str {
        &self.shared.topic
    }

    /// Whether this is an ephemeral channel.
    pub fn is_ephemeral(&self) -> bool {
        self.shared.lock().state.config().ephemeral
    }

    /// Changes the attempt limit (`0`: none), from the next REQ or timeout
    /// on. Ignored by a channel without a dead-letter sink.
    pub fn set_max_attempts(&self, max_attempts: u16) {
        if self.shared.dead_letters.is_some() {
            self.shared.lock().state.set_max_attempts(max_attempts);
        }
    }

    /// The attempt limit in force (`0`: none).
    pub fn max_attempts(&self) -> u16 {
        self.shared.lock().state.config().max_attempts
    }

    /// Puts a fresh message: into memory, or to the backend when memory is
    /// full. Delivered at once if a consumer is ready.
    pub async fn put(&self, msg: Message) -> Result<(), ChannelError> {
        let overflow = {
            let mut inner = self.shared.lock();
            if inner.exiting {
                return Err(ChannelError::Exiting);
            }
            match inner.state.handle_put(msg) {
                PutOutcome::Queued => {
                    self.shared.pump(&mut inner);
                    self.shared.nudge(&mut inner);
                    None
                }
                PutOutcome::Overflow(msg) => Some(msg),
            }
        };
        if let Some(msg) = overflow {
            self.shared
                .backend
                .put(msg.to_record())
                .await
                .map_err(|e| self.refused(e, vec![msg]))?;
        }
        Ok(())
    }

    /// Puts a batch in order: what fits goes to memory, the rest to the
    /// backend as one `put_many` (one fsync when the backend syncs every
    /// put), which is what lets a durable topic's pump keep up.
    pub async fn put_many(&self, msgs: Vec<Message>) -> Result<(), ChannelError> {
        let overflow: Vec<Message> = {
            let mut inner = self.shared.lock();
            if inner.exiting {
                return Err(ChannelError::Exiting);
            }
            let mut overflow = Vec::new();
            let mut queued = false;
            for msg in msgs {
                match inner.state.handle_put(msg) {
                    PutOutcome::Queued => queued = true,
                    PutOutcome::Overflow(msg) => overflow.push(msg),
                }
            }
            if queued {
                self.shared.pump(&mut inner);
                self.shared.nudge(&mut inner);
            }
            overflow
        };
        if !overflow.is_empty() {
            let records = overflow.iter().map(Message::to_record).collect();
            // A disk queue's `put_many` stores all or, when full, nothing.
            self.shared
                .backend
                .put_many(records)
                .await
                .map_err(|e| self.refused(e, overflow))?;
        }
        Ok(())
    }

    /// Puts a fresh message that becomes deliverable after `delay`; a zero
    /// delay is a plain [`Channel::put`]. The daemon checks `delay` against
    /// `max_req_timeout` (DPUB rejects, it does not clamp).
    pub async fn put_deferred(&self, msg: Message, delay: Duration) -> Result<(), ChannelError> {
        if delay.is_zero() {
            return self.put(msg).await;
        }
        let stored = {
            let mut inner = self.shared.lock();
            if inner.exiting {
                return Err(ChannelError::Exiting);
            }
            if inner.reads.is_some() {
                // Durable: stored (with its delay) before this returns, and
                // held once read back, until finished.
                inner.state.count_put();
                Some(Message {
                    deferred: Some(delay),
                    ..msg
                })
            } else {
                let now = self.shared.clock.now();
                inner.state.handle_put_deferred(msg, delay, now);
                self.shared.nudge(&mut inner);
                None
            }
        };
        if let Some(msg) = stored {
            self.shared
                .backend
                .put(msg.to_record())
                .await
                .map_err(|e| self.refused(e, vec![msg]))?;
        }
        Ok(())
    }

    /// Subscribes `client` with its in-flight timeout (its IDENTIFY
    /// `msg_timeout`, else the channel's). It receives nothing until
    /// [`Channel::set_ready`].
    pub fn add_consumer(
        &self,
        client: ClientId,
        msg_timeout: Duration,
    ) -> Result<Consumer, ChannelError> {
        let mut inner = self.shared.lock();
        if inner.exiting {
            return Err(ChannelError::Exiting);
        }
        inner.state.add_consumer(client, msg_timeout)?;
        let open = Arc::new(AtomicBool::new(true));
        inner.outlets.insert(
            client,
            Outlet {
                queue: VecDeque::new(),
                waker: None,
                open: Arc::clone(&open),
            },
        );
        Ok(Consumer {
            client,
            shared: Arc::clone(&self.shared),
            taken: VecDeque::new(),
            open,
        })
    }

    /// Sets `client`'s RDY count (clamped to `max_rdy_count`): the most
    /// messages it may hold in flight at once.
    pub fn set_ready(&self, client: ClientId, count: u64) {
        let mut inner = self.shared.lock();
        if inner.exiting {
            return;
        }
        inner.state.handle_rdy(client, count);
        self.shared.pump(&mut inner);
        self.shared.nudge(&mut inner);
    }

    /// FIN: `client` is done with message `id`.
    pub fn finish(&self, client: ClientId, id: &MessageId) -> Result<(), ChannelError> {
        match self.finish_many(client, std::slice::from_ref(id)).pop() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// FIN for each of `ids` in order, under one lock and one clock read:
    /// what a connection settles for the FINs that arrived in one read.
    /// Returns the ones that failed, in order, with why.
    pub fn finish_many(
        &self,
        client: ClientId,
        ids: &[MessageId],
    ) -> Vec<(MessageId, ChannelError)> {
        let mut inner = self.shared.lock();
        if inner.exiting {
            return ids.iter().map(|id| (*id, ChannelError::Exiting)).collect();
        }
        let clock = &self.shared.clock;
        let (now, now_unix) = (clock.now(), clock.unix_nanos());
        let mut failures = Vec::new();
        for id in ids {
            match inner.state.handle_fin(client, id, now, now_unix) {
                Ok(_) => {
                    if let Some(reads) = inner.reads.as_mut() {
                        reads.finished(id);
                    }
                }
                Err(e) => failures.push((*id, e)),
            }
        }
        self.shared.finished_reads(&mut inner, None);
        self.shared.pump(&mut inner);
        self.shared.nudge(&mut inner);
        failures
    }

    /// REQ: `client` gives message `id` back, for redelivery now (`delay`
    /// zero) or after `delay`, clamped to `max_req_timeout`.
    pub fn requeue(
        &self,
        client: ClientId,
        id: &MessageId,
        delay: Duration,
    ) -> Result<(), ChannelError> {
        let mut inner = self.shared.lock();
        if inner.exiting {
            return Err(ChannelError::Exiting);
        }
        let now = self.shared.clock.now();
        inner.state.handle_req(client, id, delay, now)?;
        self.shared.pump(&mut inner);
        self.shared.nudge(&mut inner);
        Ok(())
    }

    /// TOUCH: restarts message `id`'s timeout, never past delivery plus
    /// `max_msg_timeout`.
    pub fn touch(&self, client: ClientId, id: &MessageId) -> Result<(), ChannelError> {
        let mut inner = self.shared.lock();
        if inner.exiting {
            return Err(ChannelError::Exiting);
        }
        let now = self.shared.clock.now();
        inner.state.handle_touch(client, id, now)?;
        self.shared.nudge(&mut inner);
        Ok(())
    }

    /// Unsubscribes `client`; its in-flight messages, including those queued
    /// in its [`Consumer`] but not yet read, are requeued at once. Returns
    /// `true` when the channel is ephemeral and has no consumers left: the
    /// owner then deletes it.
    pub fn remove_consumer(&self, client: ClientId) -> bool {
        let mut inner = self.shared.lock();
        self.shared.remove_consumer(&mut inner, client);
        inner.state.config().ephemeral && inner.state.consumer_count() == 0
    }

    /// Stops delivery; puts are still accepted.
    pub fn pause(&self) {
        self.shared.lock().state.pause();
    }

    /// Resumes delivery.
    pub fn unpause(&self) {
        let mut inner = self.shared.lock();
        inner.state.unpause();
        if !inner.exiting {
            self.shared.pump(&mut inner);
            self.shared.nudge(&mut inner);
        }
    }

    /// Whether delivery is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.lock().state.is_paused()
    }

    /// Drops every queued, in-flight and deferred message and empties the
    /// backend. Consumers stay subscribed.
    pub async fn empty(&self) -> Result<(), ChannelError> {
        {
            let mut inner = self.shared.lock();
            if inner.exiting {
                return Err(ChannelError::Exiting);
            }
            inner.state.handle_empty();
            self.shared.settle_reads(&mut inner);
        }
        self.shared.backend.empty().await?;
        Ok(())
    }

    /// Stops the channel and removes everything it stored, backend files
    /// included. Consumers' `recv` returns `None` from then on.
    pub async fn delete(&self) -> Result<(), ChannelError> {
        if self.shared.stop().await.is_none() {
            return Err(ChannelError::Exiting);
        }
        self.shared.backend.delete().await?;
        Ok(())
    }

    /// Stops the channel, writes memory, in-flight and deferred messages to
    /// the backend (deferred ones lose their delay, as in nsqd) and closes it,
    /// so a restart delivers them again.
    pub async fn close(&self) -> Result<(), ChannelError> {
        let Some((messages, orphans)) = self.shared.stop().await else {
            return Err(ChannelError::Exiting);
        };
        let mut first_error = None;
        let records = messages.iter().map(Message::to_record).chain(orphans);
        for record in records {
            if let Err(e) = self.shared.backend.put(record).await {
                tracing::error!(topic = %self.shared.topic, channel = %self.shared.name, error = %e,
                    "failed to flush a message to the backend on close");
                first_error.get_or_insert(e);
            }
        }
        // Everything read is written back as new records: the old reads may
        // be forgotten (unless a write failed; then a restart replays them).
        if first_error.is_none() {
            let mut inner = self.shared.lock();
            if inner.reads.take().is_some() {
                self.shared.backend.commit_reads();
            }
        }
        self.shared.backend.close().await?;
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// A snapshot of the channel's counters, as nsqd's `/stats` reports them.
    pub fn stats(&self) -> ChannelStats {
        let mut inner = self.shared.lock();
        let mut stats = inner.state.stats();
        stats.channel_name = self.shared.name.clone();
        stats.backend = self.shared.backend.stats();
        stats.backend_depth = stats.backend.depth;
        stats.depth += stats.backend_depth;
        stats.e2e_processing_latency = inner
            .state
            .e2e_latency(self.shared.clock.now())
            .map(E2eLatencyWindow::snapshot);
        stats
    }

    /// A copy of the end-to-end latency window as of now, for merging with
    /// other channels' (a topic reports its channels' latencies together);
    /// `None` when no percentiles are configured.
    pub fn e2e_latency_window(&self) -> Option<E2eLatencyWindow> {
        let mut inner = self.shared.lock();
        inner.state.e2e_latency(self.shared.clock.now()).cloned()
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if !inner.exiting {
            inner.exiting = true;
            for (_, outlet) in inner.outlets.drain() {
                outlet.close();
            }
            drop(inner);
            self.shared.wake.notify_one();
        }
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("topic", &self.shared.topic)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> Locked<'_> {
        // Every critical section leaves the state consistent between calls
        // into ChannelState, which itself never panics on input; recover.
        Locked(self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Delivers to ready consumers while there is something to deliver.
    fn pump(&self, inner: &mut Inner) {
        let now = self.clock.now();
        while let Some((client, msg)) = inner.state.poll_deliver(now) {
            match inner.outlets.get_mut(&client) {
                Some(outlet) => outlet.push(msg),
                None => {
                    // Consumers and outlets come and go together.
                    debug_assert!(false, "consumer {client} has no outlet");
                    inner.state.remove_consumer(client);
                }
            }
        }
    }

    /// Reads up to `room` records, `first` (what the driver waited for)
    /// and then whatever the backend has ready, outside the lock; then
    /// feeds them to the state in order and delivers. Returns whether a
    /// read failed in a way worth retrying later.
    fn read_batch(&self, first: Result<Bytes, QueueError>, room: usize) -> bool {
        let mut records = Vec::new();
        let mut end = first.map(|record| records.push(record)).err();
        while end.is_none() && records.len() < room {
            match self.backend.try_read() {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(e) => end = Some(e),
            }
        }
        let mut inner = self.lock();
        inner.armed = None;
        if inner.exiting {
            inner.orphans.extend(records);
        } else {
            for record in records {
                self.accept_record(&mut inner, record);
            }
            self.pump(&mut inner);
        }
        match end {
            None => false,
            Some(QueueError::Closed) => {
                inner.backend_closed = true;
                false
            }
            Some(e) => {
                tracing::warn!(channel = %self.name, error = %e, "backend read failed");
                true
            }
        }
    }

    /// Unsubscribes `client`, requeueing what it holds (its outlet's queue
    /// included: those messages are in flight for it).
    fn remove_consumer(&self, inner: &mut Inner, client: ClientId) {
        if let Some(outlet) = inner.outlets.remove(&client) {
            outlet.close();
        }
        inner.state.remove_consumer(client);
        if !inner.exiting {
            self.pump(inner);
            self.nudge(inner);
        }
    }

    /// Moves everything queued for `client` into `taken` (empty on entry).
    /// `Pending` (with `cx`'s waker kept) when nothing is queued; `None`
    /// once the consumer is gone.
    fn poll_take(
        &self,
        client: ClientId,
        taken: &mut VecDeque<Message>,
        cx: Option<&mut Context<'_>>,
    ) -> Poll<Option<()>> {
        debug_assert!(
            taken.is_empty(),
            "taken before the last batch was handed out"
        );
        let mut inner = self.lock();
        let Some(outlet) = inner.outlets.get_mut(&client) else {
            return Poll::Ready(None);
        };
        if outlet.queue.is_empty() {
            if let Some(cx) = cx
                && !outlet
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
            {
                outlet.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        std::mem::swap(&mut outlet.queue, taken);
        Poll::Ready(Some(()))
    }

    /// Tells a committing backend how many of its oldest reads are finished
    /// (`id` just finished; `None` only re-checks).
    fn finished_reads(&self, inner: &mut Inner, id: Option<&MessageId>) {
        if let Some(reads) = inner.reads.as_mut() {
            if let Some(id) = id {
                reads.finished(id);
            }
            let n = reads.take_committable();
            if n > 0 {
                self.backend.commit_oldest_reads(n);
            }
        }
    }

    /// Every backend read is settled (the channel was emptied, or its
    /// messages were written back at close): commit them all.
    fn settle_reads(&self, inner: &mut Inner) {
        if let Some(reads) = inner.reads.as_mut() {
            let n = reads.settle_all();
            if n > 0 {
                self.backend.commit_oldest_reads(n);
            }
        }
    }

    fn accept_record(&self, inner: &mut Inner, record: Bytes) {
        let decoded = Message::from_record(record);
        if let Some(reads) = inner.reads.as_mut() {
            reads.read(decoded.as_ref().ok().map(|m| m.id));
        }
        self.finished_reads(inner, None);
        match decoded {
            // Deferred when the channel was closed: held again for what was
            // left of its delay (a restart never delivers it early).
            Ok(msg) => match msg.deferred {
                Some(delay) => inner
                    .state
                    .handle_backend_deferred(msg, delay, self.clock.now()),
                None => inner.state.handle_backend_message(msg),
            },
            Err(e) => tracing::error!(topic = %self.topic, channel = %self.name, error = %e,
                "skipping undecodable backend record"),
        }
    }

    /// Wakes the driver if a change gave it something sooner to do than what
    /// it sleeps on.
    fn nudge(&self, inner: &mut Inner) {
        let Some(armed) = inner.armed else {
            return;
        };
        let earlier = match (inner.state.poll_timeout(), armed.deadline) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let backend = armed.backend_room == 0 && self.backend_room(inner) > 0;
        if earlier || backend || self.has_dead_letters(inner) {
            inner.armed = None;
            self.wake.notify_one();
        }
    }

    /// How many records the driver may read from the backend now.
    fn backend_room(&self, inner: &Inner) -> usize {
        match inner.backend_closed {
            true => 0,
            false => inner.state.backend_room(),
        }
    }

    /// Marks the channel exiting, closes consumers, waits for the driver and
    /// takes every message out. `None` if it was already stopped.
    async fn stop(&self) -> Option<(Vec<Message>, Vec<Bytes>)> {
        let (messages, driver) = {
            let mut inner = self.lock();
            if inner.exiting && inner.driver.is_none() {
                return None;
            }
            inner.exiting = true;
            for (_, outlet) in inner.outlets.drain() {
                outlet.close();
            }
            (inner.state.drain(self.clock.now()), inner.driver.take())
        };
        self.wake.notify_one();
        if let Some(driver) = driver
            && let Err(e) = driver.await
        {
            tracing::error!(channel = %self.name, error = %e, "channel driver failed");
        }
        let orphans = std::mem::take(&mut self.lock().orphans);
        Some((messages, orphans))
    }
}

/// The driver: fires deadlines and reads the backend, sleeping in between.
async fn drive(shared: Arc<Shared>) {
    // One timer, made at the first deadline and reset after: a channel
    // that never has one (no consumer, nothing deferred) carries none.
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let step = {
            let mut inner = shared.lock();
            if inner.exiting {
                return;
            }
            inner.state.handle_timeout(shared.clock.now());
            shared.pump(&mut inner);
            match shared.take_dead_letter(&mut inner) {
                Some(msg) => Err(msg),
                None => {
                    let armed = Armed {
                        deadline: inner.state.poll_timeout(),
                        backend_room: shared.backend_room(&inner),
                    };
                    inner.armed = Some(armed);
                    Ok(armed)
                }
            }
        };
        let armed = match step {
            Ok(armed) => armed,
            Err(msg) => {
                // Awake, not armed: nothing needs to wake it meanwhile.
                shared.send_dead_letter(msg).await;
                continue;
            }
        };
        let sleep = async {
            match armed.deadline {
                Some(deadline) => {
                    let at = tokio::time::Instant::from_std(deadline);
                    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    timer.as_mut().reset(at);
                    timer.as_mut().await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = sleep => {}
            read = shared.backend.read(), if armed.backend_room > 0 => {
                if shared.read_batch(read, armed.backend_room) {
                    // Boxed: rare, and not worth a timer in every idle task.
                    Box::pin(tokio::time::sleep(BACKEND_RETRY_DELAY)).await;
                }
            }
        }
        shared.lock().armed = None;
    }
}

impl Channel {
    /// The error for a backend put that failed: when the disk is full the
    /// messages were not stored and go back to the caller, to put again
    /// later (uncounted, so the put that stores them counts them once).
    fn refused(&self, error: rsq_diskqueue::QueueError, msgs: Vec<Message>) -> ChannelError {
        if !error.is_disk_full() {
            return ChannelError::Backend(error);
        }
        self.shared.lock().state.uncount_puts(msgs.len() as u64);
        ChannelError::DiskFull {
            unstored: msgs,
            source: error,
        }
    }
}
