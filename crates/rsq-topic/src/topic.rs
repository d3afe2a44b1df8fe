//! The topic handle: publishing, channel management, pause, empty, delete,
//! close and stats. The delivery itself happens in the [`pump`](crate::pump).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rsq_codec::Message;
use rsq_diskqueue::{BackendQueue, BackendStats};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

use crate::pump::{self, Control, Shared};
use crate::watch_cell;
use crate::{SinkFactory, TopicError, TopicSink};

/// nsqd's default `--mem-queue-size`.
pub const DEFAULT_MEM_QUEUE_SIZE: usize = 10_000;

/// How a topic is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    /// Messages held in memory before overflowing to the backend
    /// (`--mem-queue-size`). With 0, messages go to the backend, except
    /// deferred messages and those of an ephemeral topic, which are handed
    /// straight to the pump if it is waiting for one.
    pub mem_queue_size: usize,
    /// Every message goes through the backend, deferred ones included, so a
    /// put returns only once the backend has stored it (a durable daemon).
    pub backend_only: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            mem_queue_size: DEFAULT_MEM_QUEUE_SIZE,
            backend_only: false,
        }
    }
}

/// A topic's counters, as `/stats` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    /// The topic name.
    pub name: String,
    /// Messages accepted by put and multi-put since the topic was created
    /// (an ephemeral topic counts the ones it dropped, as nsqd does).
    pub message_count: u64,
    /// Body bytes of those messages.
    pub message_bytes: u64,
    /// Messages waiting at the topic: memory plus backend.
    pub depth: u64,
    /// Of those, messages in the memory queue.
    pub memory_depth: u64,
    /// Of those, records in the backend.
    pub backend_depth: u64,
    /// Whether the topic is paused.
    pub paused: bool,
    /// Number of channels.
    pub channel_count: usize,
    /// The backend's own counters (depth, corrupt records, quarantined
    /// files), as of the same snapshot.
    pub backend: BackendStats,
}

/// An NSQ topic: receives published messages and, once started, copies each
/// into every channel through its pump task.
///
/// Created stopped (while the daemon loads its metadata); [`Topic::start`]
/// lets the pump deliver. All methods take `&self`; the topic is shared
/// behind an `Arc`. Dropping the last handle without [`Topic::close`] stops
/// the pump and loses what is in the memory queue.
pub struct Topic<C: TopicSink> {
    shared: Arc<Shared<C>>,
    ephemeral: bool,
    /// `TopicConfig::backend_only`.
    backend_only: bool,
    factory: Arc<dyn SinkFactory<C>>,
    control: watch_cell::Sender<Control>,
    applied: watch_cell::Receiver<u64>,
    /// Puts hold it shared; close and delete take it exclusively to set
    /// `exiting`, so no put is half done when the memory queue is flushed.
    gate: RwLock<()>,
    /// Held by a channel's creation while the factory opens it (outside the
    /// channel-map lock), and by close and delete to set `exiting`: one
    /// creator at a time, and none half done once the topic exits.
    creating: tokio::sync::Mutex<()>,
    exiting: AtomicBool,
    message_count: AtomicU64,
    message_bytes: AtomicU64,
    pump: Mutex<Option<JoinHandle<()>>>,
}

impl<C: TopicSink> Topic<C> {
    /// A stopped topic overflowing into `backend`, whose channels come from
    /// `factory`. Spawns the pump task, so it must be called inside a tokio
    /// runtime.
    ///
    /// The caller picks the backend: a disk queue, or
    /// `MemoryQueue::discarding(0)` for an ephemeral topic (name ending in
    /// [`rsq_codec::EPHEMERAL_SUFFIX`]).
    pub fn new(
        name: &str,
        config: TopicConfig,
        backend: Arc<dyn BackendQueue>,
        factory: Arc<dyn SinkFactory<C>>,
    ) -> Arc<Self> {
        let shared = Arc::new(Shared::new(name, config.mem_queue_size, backend));
        let (control, control_rx) = watch_cell::new(Control::default());
        let (applied_tx, applied) = watch_cell::new(0);
        let pump = tokio::spawn(pump::run(shared.clone(), control_rx, applied_tx));
        Arc::new(Topic {
            shared,
            ephemeral: rsq_codec::is_ephemeral(name),
            backend_only: config.backend_only,
            factory,
            control,
            applied,
            gate: RwLock::new(()),
            creating: tokio::sync::Mutex::new(()),
            exiting: AtomicBool::new(false),
            message_count: AtomicU64::new(0),
            message_bytes: AtomicU64::new(0),
            pump: Mutex::new(Some(pump)),
        })
    }

    /// The topic name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the name ends in `#ephemeral`: the topic lives in memory only
    /// and its owner removes it once its last channel is gone.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Lets the pump deliver. Idempotent.
    pub fn start(&self) {
        self.control
            .send_if_modified(|c| !std::mem::replace(&mut c.started, true));
    }

    /// Publishes one message (PUB, or DPUB when `msg.deferred` is set).
    ///
    /// Goes to the memory queue if it has room, else to the backend as
    /// `msg.to_bytes()` (a deferred message loses its timer there, as in
    /// nsqd). Fails with [`TopicError::Exiting`] once close or delete has
    /// begun, and with [`TopicError::Backend`] if the backend write fails.
    pub async fn put(&self, msg: Message) -> Result<(), TopicError> {
        let _open = self.gate.read().await;
        if self.exiting.load(Ordering::Acquire) {
            return Err(TopicError::Exiting);
        }
        let body_len = msg.body.len() as u64;
        let handoff = self.ephemeral || msg.deferred.is_some();
        if self.backend_only {
            self.write_backend(&msg).await?;
        } else if let Err(msg) = self.shared.memory.try_push(msg, handoff) {
            self.write_backend(&msg).await?;
        }
        self.count(1, body_len);
        Ok(())
    }

    /// Publishes a batch (MPUB): into memory if the whole batch fits there,
    /// otherwise the whole batch to the backend, in order.
    ///
    /// All or none: an exiting topic or a backend that refuses the first
    /// record takes nothing. The backend is append-only, so a write error in
    /// the middle of a batch leaves the records before it stored.
    pub async fn put_many(&self, msgs: Vec<Message>) -> Result<(), TopicError> {
        let _open = self.gate.read().await;
        if self.exiting.load(Ordering::Acquire) {
            return Err(TopicError::Exiting);
        }
        let count = msgs.len() as u64;
        let body_len: u64 = msgs.iter().map(|m| m.body.len() as u64).sum();
        let rest = if self.backend_only {
            Err(msgs)
        } else {
            self.shared.memory.try_push_all(msgs)
        };
        if let Err(msgs) = rest {
            let records = msgs.iter().map(Message::to_record).collect();
            self.shared
                .backend
                .put_many(records)
                .await
                .map_err(|error| {
                    tracing::error!(topic = %self.shared.name, %error, "topic backend write failed");
                    TopicError::Backend(error)
                })?;
        }
        self.count(count, body_len);
        Ok(())
    }

    async fn write_backend(&self, msg: &Message) -> Result<(), TopicError> {
        self.shared
            .backend
            .put(msg.to_record())
            .await
            .map_err(|error| {
                tracing::error!(topic = %self.shared.name, %error, "topic backend write failed");
                TopicError::Backend(error)
            })
    }

    fn count(&self, messages: u64, body_bytes: u64) {
        self.message_count.fetch_add(messages, Ordering::Relaxed);
        self.message_bytes.fetch_add(body_bytes, Ordering::Relaxed);
    }

    /// The channel `name`, created through the factory if absent; the flag
    /// says whether it was created. Creation tells the pump, which delivers
    /// to the new channel from its next message on. Creating fails with
    /// [`TopicError::Exiting`] once close or delete has begun.
    ///
    /// Two phases: the factory opens the channel with no lock held but
    /// `creating` (so a slow open blocks neither the pump nor lookups of
    /// other channels), then it is inserted under the channel-map lock.
    pub async fn get_or_create_channel(&self, name: &str) -> Result<(Arc<C>, bool), TopicError> {
        if let Some(channel) = self.channel(name) {
            return Ok((channel, false));
        }
        let _creating = self.creating.lock().await;
        if let Some(channel) = self.channel(name) {
            return Ok((channel, false));
        }
        if self.exiting.load(Ordering::Acquire) {
            return Err(TopicError::Exiting);
        }
        let channel = self.factory.create(&self.shared.name, name).await?;
        self.shared.lock_channels().insert(name, channel.clone());
        self.control.send_modify(|_| ());
        Ok((channel, true))
    }

    /// The channel `name`, if it exists.
    pub fn channel(&self, name: &str) -> Option<Arc<C>> {
        self.shared.lock_channels().get(name).cloned()
    }

    /// Every channel, sorted by name.
    pub fn channels(&self) -> Vec<(String, Arc<C>)> {
        let set = self.shared.lock_channels();
        set.iter()
            .map(|(name, channel)| (name.to_owned(), channel.clone()))
            .collect()
    }

    /// Removes the channel `name` and deletes it.
    ///
    /// Waits until the pump has dropped its old channel list before calling
    /// the channel's `delete`, so the channel gets no put after its delete
    /// begins. A failing `delete` is logged; the channel is gone either way.
    /// Returns `true` when the topic is ephemeral and now has no channels:
    /// the owner should then delete the topic.
    pub async fn delete_channel(&self, name: &str) -> Result<bool, TopicError> {
        let (channel, version, now_empty) = {
            let mut set = self.shared.lock_channels();
            let channel = set
                .remove(name)
                .ok_or_else(|| TopicError::ChannelNotFound(name.to_owned()))?;
            (channel, set.version, set.len() == 0)
        };
        self.control.send_modify(|_| ());
        let mut applied = self.applied.clone();
        // An error means the pump is gone, which also means it holds no list.
        let _ = applied.wait_for(|v| *v >= version).await;
        if let Err(error) = channel.delete().await {
            tracing::error!(topic = %self.shared.name, channel = name, %error, "channel delete failed");
        }
        Ok(self.ephemeral && now_empty)
    }

    /// Stops the pump from reading: messages wait at the topic.
    pub fn pause(&self) {
        self.control
            .send_if_modified(|c| !std::mem::replace(&mut c.paused, true));
    }

    /// Lets the pump read again.
    pub fn unpause(&self) {
        self.control
            .send_if_modified(|c| std::mem::replace(&mut c.paused, false));
    }

    /// Whether the topic is paused.
    pub fn is_paused(&self) -> bool {
        self.control.borrow().paused
    }

    /// Drops every message waiting at the topic (memory and backend); the
    /// channels keep theirs.
    pub async fn empty(&self) -> Result<(), TopicError> {
        self.shared.memory.drain();
        self.shared.backend.empty().await?;
        Ok(())
    }

    /// Deletes the topic: stops the pump, removes and deletes every channel,
    /// drops the memory queue and deletes the backend with its files.
    /// Fails with [`TopicError::Exiting`] if close or delete already began;
    /// otherwise reports the first failure after attempting every step.
    pub async fn delete(&self) -> Result<(), TopicError> {
        self.begin_exit().await?;
        self.stop_pump().await;
        let channels = self.shared.lock_channels().take_all();
        let mut first_error = None;
        for (name, channel) in channels {
            if let Err(source) = channel.delete().await {
                tracing::error!(topic = %self.shared.name, channel = %name, error = %source, "channel delete failed");
                first_error.get_or_insert(TopicError::Channel {
                    channel: name.to_string(),
                    source,
                });
            }
        }
        self.shared.memory.drain();
        if let Err(error) = self.shared.backend.delete().await {
            tracing::error!(topic = %self.shared.name, %error, "topic backend delete failed");
            first_error.get_or_insert(TopicError::Backend(error));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Shuts the topic down without losing messages: stops the pump (a
    /// message it has taken still reaches the channels), writes the memory
    /// queue to the backend, then closes every channel and the backend.
    /// Fails with [`TopicError::Exiting`] if close or delete already began;
    /// otherwise reports the first failure after attempting every step.
    pub async fn close(&self) -> Result<(), TopicError> {
        self.begin_exit().await?;
        self.stop_pump().await;
        let mut first_error = None;
        let flushed = self.shared.memory.drain();
        let flushed_len = flushed.len();
        for msg in flushed {
            if let Err(error) = self.write_backend(&msg).await {
                first_error.get_or_insert(error);
            }
        }
        if flushed_len > 0 {
            tracing::debug!(topic = %self.shared.name, messages = flushed_len, "flushed memory queue to backend");
        }
        for (name, channel) in self.channels() {
            if let Err(source) = channel.close().await {
                tracing::error!(topic = %self.shared.name, channel = %name, error = %source, "channel close failed");
                first_error.get_or_insert(TopicError::Channel {
                    channel: name.to_string(),
                    source,
                });
            }
        }
        if let Err(error) = self.shared.backend.close().await {
            tracing::error!(topic = %self.shared.name, %error, "topic backend close failed");
            first_error.get_or_insert(TopicError::Backend(error));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Marks the topic exiting once no put is in progress, and tells the pump.
    async fn begin_exit(&self) -> Result<(), TopicError> {
        let _no_creation = self.creating.lock().await;
        let _closed = self.gate.write().await;
        if self.exiting.swap(true, Ordering::AcqRel) {
            return Err(TopicError::Exiting);
        }
        self.control.send_modify(|c| c.exiting = true);
        Ok(())
    }

    /// Waits for the pump task to return (after finishing any delivery).
    async fn stop_pump(&self) {
        let handle = self.pump.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle
            && let Err(error) = handle.await
        {
            tracing::error!(topic = %self.shared.name, %error, "topic pump task failed");
        }
    }

    /// The topic's counters.
    pub fn stats(&self) -> TopicStats {
        let memory_depth = self.shared.memory.len() as u64;
        let backend = self.shared.backend.stats();
        let backend_depth = backend.depth;
        TopicStats {
            name: self.shared.name.clone(),
            message_count: self.message_count.load(Ordering::Relaxed),
            message_bytes: self.message_bytes.load(Ordering::Relaxed),
            depth: memory_depth + backend_depth,
            memory_depth,
            backend_depth,
            paused: self.is_paused(),
            channel_count: self.shared.lock_channels().len(),
            backend,
        }
    }
}

impl<C: TopicSink> Drop for Topic<C> {
    fn drop(&mut self) {
        // Without this the pump, which holds only the shared state, would
        // wait forever for a signal nobody can send.
        self.control.send_modify(|c| c.exiting = true);
    }
}

impl<C: TopicSink> std::fmt::Debug for Topic<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.shared.name)
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}
