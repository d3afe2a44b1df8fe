//! The topic message pump: one task per topic that moves each message from
//! the memory queue or the backend into every channel.
//!
//! The pump owns no state of its own beyond what it reads from [`Shared`]
//! and the [`Control`] signal; the [`Topic`](crate::Topic) handle changes
//! those and wakes it. Signals go through a [`watch_cell`](crate::watch_cell), so
//! sending one never waits for the pump, whether it is waiting to start,
//! delivering, or gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rsq_codec::Message;
use rsq_diskqueue::{BackendQueue, QueueError};

use crate::TopicSink;
use crate::mem_queue::MemQueue;
use crate::watch_cell;

/// How long the pump stops reading the backend after a read error other
/// than `Closed`, so a failing disk does not spin it.
const BACKEND_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Most messages the pump takes from the memory queue or records from the
/// backend in one turn.
const BATCH_MAX: usize = 128;

/// The pump's first wait before putting again messages a channel's full
/// disk refused; each refusal in a row doubles it, up to
/// [`DISK_FULL_RETRY_MAX`].
const DISK_FULL_RETRY_MIN: Duration = Duration::from_millis(10);

/// The longest wait between two puts of messages a full disk refused.
const DISK_FULL_RETRY_MAX: Duration = Duration::from_millis(500);

/// Messages one channel's full disk refused: the pump holds them (they are
/// in no queue) and puts them to that channel again until it takes them.
struct Refused<C> {
    name: Arc<str>,
    channel: Arc<C>,
    msgs: Vec<Message>,
}

/// The pump's signals, lent to the retry of refused puts so it can follow
/// channel changes and exit while it waits.
struct Signals<'a> {
    control: &'a mut watch_cell::Receiver<Control>,
    applied: &'a watch_cell::Sender<u64>,
}

/// The switches the topic flips and the pump obeys. Channel changes are
/// signalled through the same signal without changing a field.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Control {
    /// The daemon has loaded its metadata; the pump may deliver.
    pub(crate) started: bool,
    /// The pump reads neither source while set.
    pub(crate) paused: bool,
    /// The pump returns at its next step.
    pub(crate) exiting: bool,
}

/// A channel as the pump sees it: its name (for logs) and the channel.
pub(crate) type Snapshot<C> = Arc<Vec<(Arc<str>, Arc<C>)>>;

/// The channels of a topic, sorted by name. The list is also the snapshot
/// the pump copies out: a change copies it only while the pump still holds
/// the old one, and a topic with one channel keeps one small list instead
/// of a map and a list.
pub(crate) struct ChannelSet<C> {
    channels: Snapshot<C>,
    /// Incremented on every change, so a deleter can wait until the pump
    /// holds a snapshot at least this new.
    pub(crate) version: u64,
}

impl<C> ChannelSet<C> {
    fn new() -> Self {
        ChannelSet {
            channels: Arc::new(Vec::new()),
            version: 0,
        }
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.channels.binary_search_by(|(n, _)| (**n).cmp(name))
    }

    /// The channel `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<C>> {
        self.find(name).ok().map(|i| &self.channels[i].1)
    }

    /// Every channel, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Arc<C>)> {
        self.channels.iter().map(|(name, c)| (&**name, c))
    }

    /// How many channels there are.
    pub(crate) fn len(&self) -> usize {
        self.channels.len()
    }

    /// Adds `channel` as `name` (which must be new).
    pub(crate) fn insert(&mut self, name: &str, channel: Arc<C>) {
        if let Err(at) = self.find(name) {
            Arc::make_mut(&mut self.channels).insert(at, (Arc::from(name), channel));
            self.version += 1;
        }
    }

    /// Removes and returns the channel `name`.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Arc<C>> {
        let at = self.find(name).ok()?;
        self.version += 1;
        Some(Arc::make_mut(&mut self.channels).remove(at).1)
    }

    /// Removes every channel.
    pub(crate) fn take_all(&mut self) -> Vec<(Arc<str>, Arc<C>)> {
        self.version += 1;
        let all = std::mem::take(&mut self.channels);
        Arc::try_unwrap(all).unwrap_or_else(|shared| (*shared).clone())
    }
}

/// What a topic and its pump share.
pub(crate) struct Shared<C> {
    /// The topic name, for logs and the channel factory.
    pub(crate) name: String,
    /// Messages published into memory.
    pub(crate) memory: MemQueue,
    /// Where messages go when memory is full.
    pub(crate) backend: Arc<dyn BackendQueue>,
    /// The topic's channels.
    pub(crate) channels: Mutex<ChannelSet<C>>,
    /// A channel's put failed for a reason other than a full disk (an
    /// fsync error): what it was given may not be stored, so from then on
    /// the backend's reads are never committed in this life and a restart
    /// replays them (at least once) rather than losing them.
    pub(crate) put_failed: AtomicBool,
}

impl<C> Shared<C> {
    pub(crate) fn new(name: &str, mem_queue_size: usize, backend: Arc<dyn BackendQueue>) -> Self {
        Shared {
            name: name.to_owned(),
            memory: MemQueue::new(mem_queue_size),
            backend,
            channels: Mutex::new(ChannelSet::new()),
            put_failed: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock_channels(&self) -> MutexGuard<'_, ChannelSet<C>> {
        // Each critical section updates the map and its snapshot together
        // without calling out, so a poisoned lock still guards a whole state.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> (u64, Snapshot<C>) {
        let set = self.lock_channels();
        (set.version, set.channels.clone())
    }
}

/// The pump task. `applied` reports the newest channel-set version the pump
/// no longer delivers to anything older than (`u64::MAX` once it is gone).
pub(crate) async fn run<C: TopicSink>(
    shared: Arc<Shared<C>>,
    mut control: watch_cell::Receiver<Control>,
    applied: watch_cell::Sender<u64>,
) {
    if wait_for_start(&shared, &mut control, &applied).await {
        pump(&shared, &mut control, &applied).await;
    }
    applied.send_replace(u64::MAX);
    tracing::info!(topic = %shared.name, "topic message pump closed");
}

/// Waits until the topic is started (`true`) or exits (`false`), taking
/// every other signal without acting on it.
async fn wait_for_start<C>(
    shared: &Shared<C>,
    control: &mut watch_cell::Receiver<Control>,
    applied: &watch_cell::Sender<u64>,
) -> bool {
    loop {
        let state = control.borrow_and_update();
        if state.exiting {
            return false;
        }
        if state.started {
            return true;
        }
        // Holding no snapshot yet, the pump cannot deliver to a removed
        // channel, so every channel change counts as applied.
        applied.send_replace(shared.lock_channels().version);
        if control.changed().await.is_err() {
            return false;
        }
    }
}

/// The started pump: selects on the signals, the memory queue and the
/// backend until told to exit.
async fn pump<C: TopicSink>(
    shared: &Shared<C>,
    control: &mut watch_cell::Receiver<Control>,
    applied: &watch_cell::Sender<u64>,
) {
    let mut channels: Snapshot<C> = Arc::new(Vec::new());
    let mut paused = false;
    let mut refresh = true;
    let mut backend_open = true;
    // Alternates which source wins when both have a message, so a full
    // memory queue cannot starve the backend (Go's select picks at random).
    let mut backend_first = false;
    loop {
        if refresh || control.has_changed() {
            let state = control.borrow_and_update();
            if state.exiting {
                return;
            }
            paused = state.paused;
            let (version, snapshot) = shared.snapshot();
            channels = snapshot;
            applied.send_replace(version);
            refresh = false;
        }
        // With no channels, or paused, read neither source: messages wait
        // at the topic.
        let reading = !paused && !channels.is_empty();
        backend_first = !backend_first;
        // `biased` so a signal that arrived together with a message wins:
        // a paused pump takes nothing more.
        let next = tokio::select! {
            biased;
            changed = control.changed() => {
                if changed.is_err() {
                    return;
                }
                refresh = true;
                None
            }
            record = shared.backend.read(), if reading && backend_open && backend_first => {
                Some(Err(record))
            }
            msgs = shared.memory.pop_many(BATCH_MAX), if reading => Some(Ok(msgs)),
            record = shared.backend.read(), if reading && backend_open && !backend_first => {
                Some(Err(record))
            }
        };
        let mut signals = Signals {
            control: &mut *control,
            applied,
        };
        match next {
            None => {}
            Some(Ok(msgs)) => {
                let refused =
                    deliver_batch(&shared.name, &shared.put_failed, &channels, msgs).await;
                if !refused.is_empty() {
                    Box::pin(retry_refused(shared, &mut signals, refused)).await;
                    // The retry may have taken signals: look at them again.
                    refresh = true;
                }
            }
            // Boxed, so the kilobyte a backend batch's delivery needs is not
            // part of every idle topic's task.
            Some(Err(record)) => {
                let (open, retried) =
                    Box::pin(on_record(shared, &channels, record, &mut signals)).await;
                backend_open = open;
                refresh |= retried;
            }
        }
    }
}

/// Handles one backend read; returns whether the backend is still open,
/// and whether refused puts were retried (the retry takes signals).
async fn on_record<C: TopicSink>(
    shared: &Shared<C>,
    channels: &[(Arc<str>, Arc<C>)],
    record: Result<bytes::Bytes, QueueError>,
    signals: &mut Signals<'_>,
) -> (bool, bool) {
    let mut retried = false;
    match record {
        Ok(bytes) => {
            // Take what else is ready now too (bounded), so channels that
            // store to disk write the batch at once instead of one message
            // per write.
            let mut batch = Vec::with_capacity(BATCH_MAX);
            let mut next = Some(bytes);
            while let Some(bytes) = next.take() {
                match Message::from_record(bytes) {
                    Ok(msg) => batch.push(msg),
                    Err(error) => {
                        tracing::error!(topic = %shared.name, %error, "skipping corrupt backend record");
                    }
                }
                if batch.len() < BATCH_MAX {
                    next = shared.backend.try_read().ok().flatten();
                }
            }
            let refused = deliver_batch(&shared.name, &shared.put_failed, channels, batch).await;
            if !refused.is_empty() {
                retry_refused(shared, signals, refused).await;
                retried = true;
            }
            // Every channel now holds the batch (or a record was skipped):
            // only now may the backend forget it, so a crash in between
            // replays it rather than losing it (a no-op for backends that
            // count a record consumed when read). Not after a channel failed
            // to store a put: that batch must come back after a restart.
            if !shared.put_failed.load(Ordering::Acquire) {
                shared.backend.commit_reads();
            }
        }
        Err(QueueError::Closed) => {
            tracing::debug!(topic = %shared.name, "topic backend closed; reading memory only");
            return (false, retried);
        }
        Err(error) => {
            tracing::error!(topic = %shared.name, %error, "topic backend read failed");
            tokio::time::sleep(BACKEND_ERROR_BACKOFF).await;
        }
    }
    (true, retried)
}

/// Puts messages that full disks refused to their channels again, waiting
/// between tries (doubling from [`DISK_FULL_RETRY_MIN`] to
/// [`DISK_FULL_RETRY_MAX`]), until every channel took its share. Nothing is
/// dropped: a channel deleted meanwhile no longer needs its share, and when
/// the topic exits (close lifts the daemon's disk bound first) a last try
/// is made and what is still refused goes back to the topic's backend.
async fn retry_refused<C: TopicSink>(
    shared: &Shared<C>,
    signals: &mut Signals<'_>,
    mut refused: Vec<Refused<C>>,
) {
    let held: usize = refused.iter().map(|r| r.msgs.len()).sum();
    tracing::warn!(
        topic = %shared.name,
        messages = held,
        "channel disk full: holding messages at the topic until the channel takes them"
    );
    let mut wait = DISK_FULL_RETRY_MIN;
    let mut exiting = false;
    while !refused.is_empty() {
        if !exiting {
            tokio::select! {
                changed = signals.control.changed() => {
                    exiting = changed.is_err() || signals.control.borrow_and_update().exiting;
                    // Follow channel changes, so a deleter is not kept
                    // waiting: a deleted channel's share is dropped with it.
                    let (version, snapshot) = shared.snapshot();
                    refused.retain(|r| snapshot.iter().any(|(_, c)| Arc::ptr_eq(c, &r.channel)));
                    signals.applied.send_replace(version);
                    if !exiting {
                        continue;
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
        let mut still = Vec::new();
        for r in refused {
            let Refused {
                name,
                channel,
                msgs,
            } = r;
            let msgs = put_again(&shared.name, &shared.put_failed, &name, &channel, msgs).await;
            if !msgs.is_empty() {
                still.push(Refused {
                    name,
                    channel,
                    msgs,
                });
            }
        }
        refused = still;
        if exiting {
            break;
        }
        wait = (wait * 2).min(DISK_FULL_RETRY_MAX);
    }
    if refused.is_empty() {
        tracing::info!(topic = %shared.name, messages = held, "channel disk has room again: held messages delivered");
        return;
    }
    // Exiting with a disk still full: back to the topic's queue (a restart
    // delivers them again, to every channel: at least once).
    let records: Vec<bytes::Bytes> = refused
        .iter()
        .flat_map(|r| r.msgs.iter().map(Message::to_record))
        .collect();
    let count = records.len();
    if let Err(error) = shared.backend.put_many(records).await {
        tracing::error!(topic = %shared.name, messages = count, %error, "cannot keep messages a full disk refused at exit; they are lost");
    }
}

/// Puts refused messages to `channel` again (deferred ones with their
/// delay); returns those a full disk refused again.
async fn put_again<C: TopicSink>(
    topic: &str,
    failed: &AtomicBool,
    name: &str,
    channel: &Arc<C>,
    msgs: Vec<Message>,
) -> Vec<Message> {
    let mut left = Vec::new();
    if msgs.iter().all(|m| m.deferred.is_none()) {
        match channel.put_many(msgs).await {
            Ok(()) => {}
            Err(mut error) if error.is_disk_full() => left = error.take_unstored(),
            Err(error) => put_failed(topic, name, failed, &error),
        }
        return left;
    }
    let mut msgs = msgs.into_iter();
    while let Some(msg) = msgs.next() {
        let result = match msg.deferred {
            Some(delay) => channel.put_deferred(msg, delay).await,
            None => channel.put(msg).await,
        };
        match result {
            Ok(()) => {}
            Err(mut error) if error.is_disk_full() => {
                left.extend(error.take_unstored());
                left.extend(msgs);
                break;
            }
            Err(error) => put_failed(topic, name, failed, &error),
        }
    }
    left
}

/// Puts `msg` into every channel: the first gets the message itself, the
/// others clones sharing its body bytes. Returns what full disks refused.
async fn deliver<C: TopicSink>(
    topic: &str,
    failed: &AtomicBool,
    channels: &[(Arc<str>, Arc<C>)],
    msg: Message,
) -> Vec<Refused<C>> {
    let mut refused = Vec::new();
    let Some((first, rest)) = channels.split_first() else {
        // Unreachable: the pump reads only while it has channels.
        tracing::error!(topic, id = %msg.id, "message taken with no channel; dropped");
        return refused;
    };
    for (name, channel) in rest {
        refused.extend(put_one(topic, failed, name, channel, msg.clone()).await);
    }
    refused.extend(put_one(topic, failed, &first.0, &first.1, msg).await);
    refused
}

/// Puts a batch (from the memory queue or the backend) into every channel,
/// one `put_many` each, as [`deliver`] does for one message; deferred
/// messages (DPUBs, and backend records written when no memory was free) go
/// one by one to `put_deferred`, ahead of the rest.
async fn deliver_batch<C: TopicSink>(
    topic: &str,
    failed: &AtomicBool,
    channels: &[(Arc<str>, Arc<C>)],
    mut batch: Vec<Message>,
) -> Vec<Refused<C>> {
    let mut refused = Vec::new();
    if batch.iter().any(|m| m.deferred.is_some()) {
        let deferred;
        (deferred, batch) = batch.into_iter().partition(|m| m.deferred.is_some());
        for msg in deferred {
            refused.extend(deliver(topic, failed, channels, msg).await);
        }
    }
    if batch.len() <= 1 {
        if let Some(msg) = batch.into_iter().next() {
            refused.extend(deliver(topic, failed, channels, msg).await);
        }
        return refused;
    }
    let Some((first, rest)) = channels.split_first() else {
        tracing::error!(
            topic,
            count = batch.len(),
            "messages taken with no channel; dropped"
        );
        return refused;
    };
    for (name, channel) in rest {
        let result = channel.put_many(batch.clone()).await;
        refused.extend(refusal(topic, failed, name, channel, result));
    }
    let result = first.1.put_many(batch).await;
    refused.extend(refusal(topic, failed, &first.0, &first.1, result));
    refused
}

async fn put_one<C: TopicSink>(
    topic: &str,
    failed: &AtomicBool,
    name: &Arc<str>,
    channel: &Arc<C>,
    msg: Message,
) -> Option<Refused<C>> {
    let result = match msg.deferred {
        Some(delay) => channel.put_deferred(msg, delay).await,
        None => channel.put(msg).await,
    };
    refusal(topic, failed, name, channel, result)
}

/// What a put's failure leaves the pump to hold: the messages a full disk
/// refused; any other failure is logged (the channel is closing or broken).
fn refusal<C>(
    topic: &str,
    failed: &AtomicBool,
    name: &Arc<str>,
    channel: &Arc<C>,
    result: Result<(), crate::SinkError>,
) -> Option<Refused<C>> {
    match result {
        Ok(()) => None,
        Err(mut error) if error.is_disk_full() => {
            let msgs = error.take_unstored();
            (!msgs.is_empty()).then(|| Refused {
                name: name.clone(),
                channel: channel.clone(),
                msgs,
            })
        }
        Err(error) => {
            put_failed(topic, name, failed, &error);
            None
        }
    }
}

/// A channel's put failed for a reason other than a full disk: logs it and
/// sets `failed`, which stops the pump committing the backend's reads.
fn put_failed(topic: &str, channel: &str, failed: &AtomicBool, error: &crate::SinkError) {
    if !failed.swap(true, Ordering::AcqRel) {
        tracing::error!(topic, channel, %error,
            "channel put failed; the topic's reads are no longer committed, so a restart replays them");
    } else {
        tracing::error!(topic, channel, %error, "channel put failed");
    }
}
