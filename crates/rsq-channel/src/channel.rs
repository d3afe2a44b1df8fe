//! The channel the daemon uses: [`ChannelState`] behind one mutex, plus a
//! driver task that wakes at the next deadline and reads the backend.
//!
//! Everything that can be done without waiting happens inline, under the
//! lock, in the caller's task: a PUB that finds a ready consumer, or a FIN
//! that frees a slot, delivers the next message at once. The driver only
//! does what needs waiting (`driver.rs`): firing timeouts and deferred
//! releases at `poll_timeout`, reading the backend when the state has room
//! for records read back (`ChannelState::backend_room`), and handing dead
//! letters to the channel's [`DeadLetterSink`] (`outbox.rs`). Only the
//! driver reads the backend, a batch at a time, and never under the lock
//! (`backend.rs`): records reach the state in the order they were read, and
//! a FIN never waits on a disk read. No lock is held across an `.await`
//! either. What is delivered waits in the consumer's outlet until its
//! [`Consumer`] takes it (`outlet.rs`).
//!
//! This file holds the shared state, its lock, and the public operations.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rsq_codec::{Message, MessageId};
use rsq_diskqueue::BackendQueue;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::backend_reads::BackendReads;
use crate::state::{ChannelState, PutOutcome};
use crate::{
    ChannelConfig, ChannelError, ChannelStats, ClientId, Clock, DeadLetterSink, E2eLatencyWindow,
};

mod backend;
mod driver;
mod outbox;
mod outlet;

use driver::{Armed, drive};
pub use outlet::Consumer;
use outlet::Outlet;

/// One named channel of a topic, shared by its consumers.
///
/// Built with [`Channel::new`] inside a tokio runtime. Dropping the last
/// `Arc<Channel>` stops the driver but loses what memory held; call
/// [`Channel::close`] to keep it.
pub struct Channel {
    shared: Arc<Shared>,
}

/// What the channel handle, its consumers and its driver share.
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

/// Everything under the channel lock.
struct Inner {
    state: ChannelState,
    /// One per consumer, added and removed with it.
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
        inner.outlets.insert(client, Outlet::new(Arc::clone(&open)));
        Ok(Consumer::new(client, Arc::clone(&self.shared), open))
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

    /// Stops the channel, writes memory, in-flight and deferred messages
    /// and unpublished dead letters to the backend in one `put_many` (one
    /// fsync under `--durable`, not one per message) and closes it, so a
    /// restart delivers them again.
    pub async fn close(&self) -> Result<(), ChannelError> {
        let Some((messages, orphans)) = self.shared.stop().await else {
            return Err(ChannelError::Exiting);
        };
        let written = self.shared.write_back(messages, orphans).await;
        self.shared.backend.close().await?;
        Ok(written?)
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
}
