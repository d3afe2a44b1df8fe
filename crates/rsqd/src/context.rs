//! The daemon's shared state: options, topics, clients and health.
//!
//! Both servers (TCP and HTTP) hold an `Arc<Nsqd>` and go through it to find
//! or create topics and channels, so the rules for creation, ephemeral
//! removal and metadata persistence live in one place.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use async_trait::async_trait;
use rsq_channel::{Channel, ChannelConfig, Clock};
use rsq_codec::{IdGenerator, Message, is_ephemeral};
use rsq_diskqueue::{
    BackendQueue, CommitSnapshot, CommitStats, DirIndex, DiskBudget, DiskQueueConfig, FsStorage,
    LOW_WATER_PERCENT, LazyDiskQueue, MemoryQueue,
};
use rsq_topic::{SinkError, SinkFactory, Topic, TopicConfig, TopicError, TopicSink};

use crate::auth::AuthClient;
use crate::client::ClientInfo;
use crate::dead_letter::{self, ChannelLimit};
use crate::lookup::{LookupConfig, LookupPeers, PeerIdentity, Snapshot};
use crate::metadata::{self, ChannelMetadata, Metadata, TopicMetadata, journal};
use crate::options::{Options, VERSION};

/// A topic as the daemon holds it.
pub type DaemonTopic = Topic<ChannelHandle>;

/// The real channel, as seen by a topic's pump, with its own attempt
/// limit if it was given one (see `dead_letter.rs`).
pub struct ChannelHandle(pub Arc<Channel>, pub(crate) ChannelLimit);

impl std::ops::Deref for ChannelHandle {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.0
    }
}

#[async_trait]
impl TopicSink for ChannelHandle {
    async fn put(&self, msg: Message) -> Result<(), SinkError> {
        self.0.put(msg).await.map_err(sink_error)
    }

    async fn put_many(&self, msgs: Vec<Message>) -> Result<(), SinkError> {
        self.0.put_many(msgs).await.map_err(sink_error)
    }

    async fn put_deferred(
        &self,
        msg: Message,
        delay: std::time::Duration,
    ) -> Result<(), SinkError> {
        self.0.put_deferred(msg, delay).await.map_err(sink_error)
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.0.close().await.map_err(SinkError::new)
    }

    async fn delete(&self) -> Result<(), SinkError> {
        self.0.delete().await.map_err(SinkError::new)
    }
}

/// A channel's error as its topic's pump sees it: a full disk hands back
/// the messages it did not store, for the pump to put again.
fn sink_error(error: rsq_channel::ChannelError) -> SinkError {
    match error {
        rsq_channel::ChannelError::DiskFull { unstored, source } => {
            SinkError::disk_full(source, unstored)
        }
        other => SinkError::new(other),
    }
}

/// The disk queue configuration of the queue `queue_name` (`topic` or
/// `topic:channel`, as nsqd names them) in `data_path`: its segment size,
/// and record sizes from a bare message header up to a header and a
/// `max_msg_size` body, as nsqd gives go-diskqueue. The daemon adds its
/// sync policy; `rsqd downgrade` uses it as it is, so it reads each queue
/// with the limits the daemon wrote it under.
pub fn disk_queue_config(
    queue_name: &str,
    data_path: &std::path::Path,
    max_msg_size: u64,
    max_bytes_per_file: u64,
) -> DiskQueueConfig {
    let mut config = DiskQueueConfig::new(queue_name, data_path);
    config.max_bytes_per_file = max_bytes_per_file;
    config.min_record_size = rsq_codec::MESSAGE_HEADER_LEN;
    config.max_record_size = usize::try_from(max_msg_size)
        .unwrap_or(usize::MAX)
        .saturating_add(rsq_codec::MESSAGE_HEADER_LEN);
    config
}

/// Opens topic and channel queues.
struct Factory {
    opts: Arc<Options>,
    clock: Arc<dyn Clock>,
    /// The data dir, shared by every queue: its index of file names means
    /// opening a queue does not list the directory, and one storage (with
    /// one cache of open files) costs less than one per queue.
    storage: Arc<FsStorage>,
    /// Every `--durable` queue's group commits, counted together.
    commit_stats: Arc<CommitStats>,
    /// The bytes of every queue's segment files (`--max-disk-bytes`).
    budget: Arc<DiskBudget>,
    /// The daemon, for channels' dead-letter publishes (no cycle).
    nsqd: Weak<Nsqd>,
}

impl Factory {
    /// Opens the backend for a topic or channel queue: a disk queue named
    /// as nsqd names it, or a discarding memory queue for ephemeral ones.
    /// A disk queue that has files is recovered on tokio's blocking pool,
    /// since that reads (and may rewrite) them; one without is only
    /// prepared, which costs no IO (the storage's index says it has none).
    async fn open_backend(
        &self,
        queue_name: &str,
        ephemeral: bool,
    ) -> Result<Arc<dyn BackendQueue>, rsq_diskqueue::QueueError> {
        if ephemeral {
            return Ok(Arc::new(MemoryQueue::discarding(0)));
        }
        let opts = &self.opts;
        let mut config = disk_queue_config(
            queue_name,
            &opts.data_path,
            opts.max_msg_size,
            opts.max_bytes_per_file,
        );
        config.sync_every = opts.sync_every;
        config.sync_timeout = opts.sync_timeout;
        config.disk_budget = Some(self.budget.clone());
        if opts.durable {
            config.sync_every = 1;
            // The topic's pump commits after its channels stored a batch; a
            // channel commits its finished prefix (see rsq-channel's
            // `BackendReads`), so in-flight messages survive a crash.
            config.explicit_commit = true;
            config.commit_stats = Some(self.commit_stats.clone());
        }
        // Lazy: a queue that never overflows memory costs no open queue.
        let (queue, has_files) = LazyDiskQueue::prepare(config, self.storage.clone())?;
        if !has_files {
            return Ok(Arc::new(queue));
        }
        let path = opts.data_path.clone();
        let queue = tokio::task::spawn_blocking(move || queue.open_now().map(|()| queue))
            .await
            .map_err(|e| rsq_diskqueue::QueueError::Io {
                path,
                source: std::io::Error::other(e),
            })??;
        Ok(Arc::new(queue))
    }
}

#[async_trait::async_trait]
impl SinkFactory<ChannelHandle> for Factory {
    async fn create(&self, topic: &str, channel: &str) -> Result<Arc<ChannelHandle>, TopicError> {
        let ephemeral = is_ephemeral(channel);
        let backend = self
            .open_backend(&format!("{topic}:{channel}"), ephemeral)
            .await
            .map_err(|e| TopicError::ChannelCreate {
                channel: channel.to_string(),
                source: SinkError::new(e),
            })?;
        let config = ChannelConfig {
            mem_queue_size: self.opts.effective_mem_queue_size(),
            msg_timeout: self.opts.msg_timeout,
            max_msg_timeout: self.opts.max_msg_timeout,
            max_req_timeout: self.opts.max_req_timeout,
            max_rdy_count: self.opts.max_rdy_count,
            ephemeral,
            commit_backend_reads: self.opts.durable && !ephemeral,
            e2e_percentiles: self.opts.e2e_processing_latency_percentile.clone(),
            e2e_window: self.opts.e2e_processing_latency_window_time,
            max_attempts: self.opts.max_attempts,
            max_consumers: 0,
        };
        // A dead-letter topic's channels have no sink, hence no limit.
        let sink = (!dead_letter::is_dead_letter_topic(topic)).then(|| {
            Arc::new(dead_letter::Publisher::new(
                self.nsqd.clone(),
                topic,
                channel,
            )) as Arc<dyn rsq_channel::DeadLetterSink>
        });
        let chan =
            Channel::with_dead_letters(topic, channel, config, backend, self.clock.clone(), sink);
        Ok(Arc::new(ChannelHandle(chan, ChannelLimit::default())))
    }
}

/// Why a lookup or creation failed, in terms the HTTP API reports.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The daemon is shutting down.
    #[error("exiting")]
    Exiting,
    /// No such topic.
    #[error("topic not found")]
    TopicNotFound,
    /// No such channel.
    #[error("channel not found")]
    ChannelNotFound,
    /// The topic failed (its backend could not be opened, or it is closing).
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The backend queue could not be opened.
    #[error(transparent)]
    Queue(#[from] rsq_diskqueue::QueueError),
    /// The daemon is draining (`/config/drain`, `--sigterm-mode=drain`):
    /// it takes no new messages. A refusal, not a failure: the client may
    /// publish elsewhere, and its connection stays open.
    #[error("DRAINING: this node is being drained and accepts no new messages")]
    Draining,
    /// The disk queues reached `--max-disk-bytes`, or the file system is
    /// full: nothing of the publish was stored. A refusal like
    /// [`ContextError::Draining`]: publishing resumes by itself once
    /// consumers bring usage down to the low-water mark.
    #[error("DISK_FULL: {0}")]
    DiskFull(String),
}

impl ContextError {
    /// Whether the daemon refused the request for now (draining, disk
    /// full) rather than failing it: the client's connection stays usable.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ContextError::Draining | ContextError::DiskFull(_))
    }
}

/// Topics closed at once at shutdown.
const CLOSE_PARALLELISM: usize = 64;

/// How often a draining daemon looks whether everything is delivered.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// How often a draining daemon logs what is still left.
const DRAIN_REPORT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a draining daemon still waits for: messages in topics that have
/// channels, and messages in channels, in flight or deferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainLeft {
    /// Messages in topics with at least one channel, not yet in a channel.
    pub topic_messages: u64,
    /// Messages in channels (memory and disk), in flight or deferred.
    pub channel_messages: u64,
}

impl DrainLeft {
    /// Nothing is left to deliver.
    pub fn is_empty(&self) -> bool {
        self.topic_messages == 0 && self.channel_messages == 0
    }
}

/// The daemon.
pub struct Nsqd {
    /// The options it was started with.
    pub(crate) opts: Arc<Options>,
    /// All time is read here.
    pub(crate) clock: Arc<dyn Clock>,
    /// Start time, seconds since the epoch.
    pub(crate) start_time: i64,
    ids: IdGenerator,
    /// By name; hashed, as every publish looks its topic up here.
    topics: Mutex<HashMap<String, Arc<DaemonTopic>>>,
    clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    next_client_id: AtomicU64,
    loading: AtomicBool,
    exiting: AtomicBool,
    health: Mutex<Option<String>>,
    /// Mirrors `health.is_some()`, so a healthy publish takes no lock.
    unhealthy: AtomicBool,
    /// Drain mode: publishes are refused until it is turned off.
    draining: AtomicBool,
    /// Woken when drain mode is turned on or off.
    drain_changed: tokio::sync::Notify,
    factory: Arc<Factory>,
    /// `nsqd.dat` writes, one at a time and group-committed.
    metadata: MetadataWrites,
    topic_create: tokio::sync::Mutex<()>,
    /// The lookupd connections, set by [`Nsqd::start_lookup`].
    lookup: OnceLock<LookupPeers>,
    /// The client of the auth servers, for AUTH.
    pub(crate) auth: AuthClient,
    /// This daemon, for the lookupd snapshot closure (no cycle).
    this: Weak<Nsqd>,
}

/// Where `nsqd.dat` writing stands.
#[derive(Debug, Default)]
struct MetadataWrites {
    /// Changes counted so far; each write covers all counted before it began.
    requested: AtomicU64,
    /// Held across a write, so writes run one at a time.
    written: tokio::sync::Mutex<Written>,
    /// Topics whose entry changed since the last write (marked before the
    /// change is counted in `requested`).
    dirty: Mutex<BTreeSet<String>>,
}

/// What the last `nsqd.dat` write covered.
#[derive(Debug, Default)]
struct Written {
    /// Every change counted up to this one is in the file.
    upto: u64,
    /// The shutdown's final write happened: no more writes.
    closed: bool,
    /// `nsqd.dat` was written whole since start, and every write since
    /// succeeded: the journal holds every change after it.
    journal_ok: bool,
    /// Changes in the journal since the last whole write.
    journaled: usize,
}

/// A topic's channels as `nsqd.dat` lists them: sorted, without ephemeral ones.
fn durable_channels(topic: &DaemonTopic) -> Vec<ChannelMetadata> {
    topic
        .channels()
        .into_iter()
        .filter(|(name, _)| !is_ephemeral(name))
        .map(|(name, c)| ChannelMetadata {
            name,
            paused: c.is_paused(),
            max_attempts: c.own_max_attempts(),
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map operation that cannot
    // leave the map half-updated, so a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Nsqd {
    /// Creates the daemon state; [`Nsqd::load_metadata`] then recreates topics.
    pub fn new(opts: Options, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Nsqd>> {
        let files = DirIndex::load(&opts.data_path).map_err(|e| {
            anyhow::anyhow!("cannot read data path {}: {e}", opts.data_path.display())
        })?;
        let auth = AuthClient::new(&opts)?;
        let opts = Arc::new(opts);
        let node_id = opts.effective_node_id();
        Ok(Arc::new_cyclic(|this| Nsqd {
            factory: Arc::new(Factory {
                opts: opts.clone(),
                clock: clock.clone(),
                storage: Arc::new(FsStorage::with_index(files)),
                commit_stats: Arc::new(CommitStats::new()),
                budget: Arc::new(DiskBudget::new(opts.max_disk_bytes)),
                nsqd: this.clone(),
            }),
            start_time: clock.unix_nanos() / 1_000_000_000,
            ids: IdGenerator::new(node_id),
            opts,
            clock,
            topics: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            next_client_id: AtomicU64::new(1),
            loading: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            health: Mutex::new(None),
            unhealthy: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_changed: tokio::sync::Notify::new(),
            metadata: MetadataWrites::default(),
            topic_create: tokio::sync::Mutex::new(()),
            lookup: OnceLock::new(),
            auth,
            this: this.clone(),
        }))
    }

    /// Starts registering with the configured lookupds, announcing the
    /// broadcast ports (see [`crate::run`]). Call once, after metadata is
    /// loaded.
    pub fn start_lookup(&self) {
        let identity = PeerIdentity {
            version: VERSION.to_string(),
            tcp_port: self.opts.broadcast_tcp_port,
            http_port: self.opts.broadcast_http_port,
            hostname: crate::options::hostname(),
            broadcast_address: self.opts.effective_broadcast_address(),
        };
        let this = self.this.clone();
        let snapshot: Snapshot = Arc::new(move || {
            this.upgrade()
                .map(|ctx| ctx.lookup_snapshot())
                .unwrap_or_default()
        });
        let peers = self
            .lookup
            .get_or_init(|| LookupPeers::new(identity, LookupConfig::default(), snapshot));
        peers.set_addresses(&self.opts.lookupd_tcp_address);
    }

    /// The lookupd peers, once started.
    pub(crate) fn lookup(&self) -> Option<&LookupPeers> {
        self.lookup.get()
    }

    /// Closes the lookupd connections (they then forget this daemon).
    pub(crate) async fn stop_lookup(&self) {
        if let Some(peers) = self.lookup.get() {
            peers.shutdown().await;
        }
    }

    /// Every topic with its channels, for (re)registering with lookupds.
    fn lookup_snapshot(&self) -> Vec<(String, Vec<String>)> {
        self.topics()
            .into_iter()
            .map(|t| {
                let channels = t.channels().into_iter().map(|(name, _)| name).collect();
                (t.name().to_string(), channels)
            })
            .collect()
    }

    /// A new message stamped now.
    pub(crate) fn new_message(&self, body: bytes::Bytes) -> Message {
        let now = self.clock.unix_nanos();
        Message::new(self.ids.next(now), now, body)
    }

    /// New messages for one publish (an MPUB's bodies), stamped with one
    /// reading of the clock; their ids are still distinct and increasing.
    pub(crate) fn new_messages(&self, bodies: Vec<bytes::Bytes>) -> Vec<Message> {
        let now = self.clock.unix_nanos();
        bodies
            .into_iter()
            .map(|body| Message::new(self.ids.next(now), now, body))
            .collect()
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::SeqCst)
    }

    /// `None` when healthy, else the last storage error.
    pub(crate) fn health(&self) -> Option<String> {
        lock(&self.health).clone()
    }

    /// Records the outcome of a storage write for `/ping` and `/stats`
    /// health: an error makes the daemon unhealthy until the next success,
    /// as nsqd's `SetHealth` does.
    fn set_health(&self, err: Option<String>) {
        if err.is_none() && !self.unhealthy.load(Ordering::Relaxed) {
            return;
        }
        let mut health = lock(&self.health);
        self.unhealthy.store(err.is_some(), Ordering::Relaxed);
        *health = err;
    }

    /// Publishes messages to a topic, creating it if needed: one message
    /// with `Topic::put`, more as one all-or-nothing `Topic::put_many`. A
    /// storage failure marks the daemon unhealthy; the next success clears it.
    pub(crate) async fn publish(
        &self,
        topic_name: &str,
        mut msgs: Vec<Message>,
    ) -> Result<(), ContextError> {
        if self.is_draining() {
            return Err(ContextError::Draining);
        }
        if let Some(why) = self.disk_full() {
            return Err(ContextError::DiskFull(why));
        }
        let topic = self.get_or_create_topic(topic_name).await?;
        let result = match msgs.len() {
            1 => match msgs.pop() {
                Some(msg) => topic.put(msg).await,
                None => Ok(()),
            },
            _ => topic.put_many(msgs).await,
        };
        match result {
            Ok(()) => {
                self.set_health(None);
                Ok(())
            }
            Err(TopicError::Backend(e)) if e.is_disk_full() => {
                tracing::debug!(topic = topic_name, error = %e, "publish refused: disk full");
                Err(ContextError::DiskFull(
                    self.disk_full().unwrap_or_else(|| e.to_string()),
                ))
            }
            Err(e @ TopicError::Backend(_)) => {
                tracing::error!(topic = topic_name, error = %e, "publish failed");
                self.set_health(Some(e.to_string()));
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The shared byte count of every queue's segment files, with the
    /// `--max-disk-bytes` bound.
    pub fn disk_budget(&self) -> &DiskBudget {
        &self.factory.budget
    }

    /// `Some(why)` while publishes are refused for a full disk: the bound
    /// was reached (or a write met `ENOSPC`) and usage has not yet fallen to
    /// [`LOW_WATER_PERCENT`] of it.
    pub fn disk_full(&self) -> Option<String> {
        let budget = self.disk_budget();
        if !budget.is_full() {
            return None;
        }
        let used = budget.used();
        Some(if budget.is_bounded() {
            format!(
                "disk queues hold {used} bytes of --max-disk-bytes={}; publishing resumes below {LOW_WATER_PERCENT}%",
                budget.limit()
            )
        } else {
            format!("the file system is full (disk queues hold {used} bytes)")
        })
    }

    /// Whether drain mode is on.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Turns drain mode on or off. While on, every publish is refused
    /// ([`ContextError::Draining`]) and consumers are served as usual;
    /// [`Nsqd::drained`] resolves once nothing is left to deliver.
    pub(crate) fn set_draining(&self, on: bool) {
        if self.draining.swap(on, Ordering::AcqRel) != on {
            tracing::warn!(
                draining = on,
                "{}",
                if on {
                    "drain mode on: refusing publishes, serving consumers until every channel is empty"
                } else {
                    "drain mode off: accepting publishes again"
                }
            );
            self.drain_changed.notify_waiters();
        }
    }

    /// What is left to deliver (see [`DrainLeft`]); topics without channels
    /// do not count, as they have nowhere to drain to.
    pub(crate) fn drain_left(&self) -> DrainLeft {
        let mut left = DrainLeft::default();
        for topic in self.topics() {
            let channels = topic.channels();
            if channels.is_empty() {
                continue;
            }
            left.topic_messages += topic.stats().depth;
            for (_, channel) in channels {
                let cs = channel.stats();
                left.channel_messages += cs.depth + cs.in_flight_count + cs.deferred_count;
            }
        }
        left
    }

    /// Resolves once drain mode is on and nothing is left to deliver;
    /// turning drain mode off meanwhile starts the wait over. Then logs,
    /// at warn level, every topic without channels that still holds
    /// messages (they stay on disk).
    pub(crate) async fn drained(&self) {
        loop {
            let changed = self.drain_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.is_draining() {
                changed.await;
                continue;
            }
            let mut last_report = tokio::time::Instant::now();
            while self.is_draining() {
                let left = self.drain_left();
                if left.is_empty() {
                    for topic in self.topics() {
                        let depth = topic.stats().depth;
                        if depth > 0 && topic.channels().is_empty() {
                            tracing::warn!(
                                topic = topic.name(),
                                depth,
                                "topic has no channel to drain to; its messages stay on disk"
                            );
                        }
                    }
                    tracing::info!("drained: every channel is empty");
                    return;
                }
                if last_report.elapsed() >= DRAIN_REPORT {
                    tracing::info!(
                        topic_messages = left.topic_messages,
                        channel_messages = left.channel_messages,
                        "draining"
                    );
                    last_report = tokio::time::Instant::now();
                }
                tokio::time::sleep(DRAIN_CHECK).await;
            }
        }
    }

    /// Recreates topics and channels from `nsqd.dat`, then starts them.
    pub async fn load_metadata(&self) -> anyhow::Result<()> {
        self.loading.store(true, Ordering::SeqCst);
        let meta = metadata::load(&self.opts.data_path)?;
        for t in &meta.topics {
            if !rsq_codec::is_valid_name(&t.name) {
                tracing::warn!(topic = %t.name, "skipping topic with invalid name in metadata");
                continue;
            }
            let topic = match self.get_or_create_topic(&t.name).await {
                Ok(topic) => topic,
                Err(e) => {
                    tracing::error!(topic = %t.name, error = %e, "cannot recreate topic");
                    continue;
                }
            };
            if t.paused {
                topic.pause();
            }
            for c in &t.channels {
                if !rsq_codec::is_valid_name(&c.name) {
                    tracing::warn!(channel = %c.name, "skipping channel with invalid name in metadata");
                    continue;
                }
                match topic.get_or_create_channel(&c.name).await {
                    Ok((chan, _)) => {
                        if c.paused {
                            chan.pause();
                        }
                        if let Some(max_attempts) = c.max_attempts {
                            chan.set_max_attempts(max_attempts);
                        }
                    }
                    Err(e) => {
                        tracing::error!(topic = %t.name, channel = %c.name, error = %e, "cannot recreate channel")
                    }
                }
            }
        }
        self.loading.store(false, Ordering::SeqCst);
        for topic in self.topics() {
            topic.start();
        }
        self.persist_metadata().await
    }

    /// Writes `nsqd.dat` from the current topics and channels, and returns
    /// once a write that began after this call has finished.
    ///
    /// Group commit: callers that arrive while a write runs wait for the
    /// next one, which covers them all, so N concurrent changes cost one or
    /// two writes, not N. After the shutdown's final write, nothing is
    /// written (the topic map is being emptied).
    pub(crate) async fn persist_metadata(&self) -> anyhow::Result<()> {
        self.write_metadata(false).await
    }

    async fn write_metadata(&self, last: bool) -> anyhow::Result<()> {
        if self.loading.load(Ordering::SeqCst) {
            return Ok(());
        }
        let want = self.metadata.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut written = self.metadata.written.lock().await;
        // The shutdown's write is whole even when a journal append that
        // began after it was counted already covers its changes.
        if (written.upto >= want && !last) || written.closed {
            return Ok(());
        }
        // Every request counted so far changed state before counting, so
        // a snapshot taken now covers it.
        let upto = self.metadata.requested.load(Ordering::SeqCst);
        let dirty = std::mem::take(&mut *lock(&self.metadata.dirty));
        let data_path = self.opts.data_path.clone();
        // A whole write costs time in proportion to every topic; a journal
        // append, to the topics that changed. So whole writes happen only at
        // start, shutdown and every `COMPACT_AFTER` changes.
        let whole =
            last || !written.journal_ok || written.journaled + dirty.len() > journal::COMPACT_AFTER;
        // Until this write succeeds, what the files say is unknown (an
        // append may be torn): a failure makes the next write a whole one.
        written.journal_ok = false;
        if whole {
            let meta = self.snapshot_metadata();
            tokio::task::spawn_blocking(move || metadata::save(&data_path, &meta)).await??;
            written.journaled = 0;
        } else if !dirty.is_empty() {
            let changes: Vec<journal::Change> =
                dirty.iter().map(|name| self.topic_change(name)).collect();
            written.journaled += changes.len();
            tokio::task::spawn_blocking(move || journal::append(&data_path, &changes)).await??;
        }
        written.journal_ok = true;
        written.upto = upto;
        written.closed = last;
        Ok(())
    }

    /// The journal line for topic `name` as it is now: its whole entry, or
    /// its deletion when it is gone or ephemeral.
    fn topic_change(&self, name: &str) -> journal::Change {
        match self.topic(name).filter(|t| !t.is_ephemeral()) {
            Some(t) => journal::Change::Topic {
                name: name.to_string(),
                paused: t.is_paused(),
                channels: durable_channels(&t),
            },
            None => journal::Change::DeleteTopic {
                name: name.to_string(),
            },
        }
    }

    /// Records that topic `topic`'s entry (its pause, its channels and
    /// theirs) changed, before the change is written.
    pub(crate) fn mark_changed(&self, topic: &str) {
        // An ephemeral topic is never in `nsqd.dat`.
        if !is_ephemeral(topic) {
            lock(&self.metadata.dirty).insert(topic.to_string());
        }
    }

    /// Records a change to the topic and channel list (create, delete).
    /// Under `--durable` it returns once `nsqd.dat` or its journal holds
    /// the change, so an acknowledged create survives a crash. Otherwise, as
    /// nsqd's `Notify` does, the write happens in the background and the
    /// request does not wait: a crash within one metadata write of the
    /// change (milliseconds) may forget it. A forgotten topic's or
    /// channel's queue files stay on disk and are served again once it is
    /// created again. A failed write is logged and never fails the request,
    /// which already took effect.
    pub(crate) async fn metadata_changed(&self) {
        if self.opts.durable {
            return self.persist_metadata_logged().await;
        }
        let Some(this) = self.this.upgrade() else {
            return;
        };
        tokio::spawn(async move { this.persist_metadata_logged().await });
    }

    /// Writes `nsqd.dat` and waits, logging instead of failing: a pause or
    /// unpause is persisted before it is acknowledged, as nsqd does, so a
    /// crash never (un)pauses a topic behind the operator's back.
    pub(crate) async fn persist_metadata_logged(&self) {
        if let Err(e) = self.persist_metadata().await {
            tracing::error!(error = %e, "cannot write metadata");
        }
    }

    fn snapshot_metadata(&self) -> Metadata {
        let topics = self
            .topics()
            .into_iter()
            .filter(|t| !t.is_ephemeral())
            .map(|t| TopicMetadata {
                name: t.name().to_string(),
                paused: t.is_paused(),
                channels: durable_channels(&t),
            })
            .collect();
        Metadata {
            topics,
            version: VERSION.to_string(),
        }
    }

    /// All topics, sorted by name.
    pub(crate) fn topics(&self) -> Vec<Arc<DaemonTopic>> {
        let mut topics: Vec<_> = lock(&self.topics).values().cloned().collect();
        topics.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        topics
    }

    /// The group commits of every `--durable` queue, counted together
    /// (all zero without `--durable`).
    pub(crate) fn commit_stats(&self) -> CommitSnapshot {
        self.factory.commit_stats.snapshot()
    }

    /// How many topics exist.
    pub(crate) fn topic_count(&self) -> u64 {
        lock(&self.topics).len() as u64
    }

    /// The topic named `name`, if it exists.
    pub(crate) fn topic(&self, name: &str) -> Option<Arc<DaemonTopic>> {
        lock(&self.topics).get(name).cloned()
    }

    /// Finds or creates a topic; a new one is started at once unless
    /// metadata is still loading, and metadata is written.
    pub(crate) async fn get_or_create_topic(
        &self,
        name: &str,
    ) -> Result<Arc<DaemonTopic>, ContextError> {
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        if self.is_exiting() {
            return Err(ContextError::Exiting);
        }
        // One creator at a time: two concurrent first publishes (or a PUB
        // racing a SUB) must not both open a disk queue on the same files.
        let _creating = self.topic_create.lock().await;
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        let backend = self.factory.open_backend(name, is_ephemeral(name)).await?;
        let topic = Topic::new(
            name,
            TopicConfig {
                mem_queue_size: self.opts.effective_mem_queue_size(),
                backend_only: self.opts.durable,
            },
            backend,
            self.factory.clone(),
        );
        lock(&self.topics).insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, "TOPIC created");
        if let Some(peers) = self.lookup() {
            peers.register(name, None);
        }
        if !self.loading.load(Ordering::SeqCst) {
            topic.start();
            self.mark_changed(name);
            self.metadata_changed().await;
        }
        Ok(topic)
    }

    /// Finds or creates a channel (and its topic), writing metadata if anything was created.
    pub async fn get_or_create_channel(
        &self,
        topic_name: &str,
        channel_name: &str,
    ) -> Result<(Arc<DaemonTopic>, Arc<ChannelHandle>), ContextError> {
        let topic = self.get_or_create_topic(topic_name).await?;
        let (channel, created) = topic.get_or_create_channel(channel_name).await?;
        if created {
            tracing::info!(
                topic = topic_name,
                channel = channel_name,
                "CHANNEL created"
            );
            if let Some(peers) = self.lookup() {
                peers.register(topic_name, Some(channel_name));
            }
            self.mark_changed(topic_name);
            self.metadata_changed().await;
        }
        Ok((topic, channel))
    }

    /// Deletes a topic with its channels and files.
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<(), ContextError> {
        let topic = lock(&self.topics)
            .remove(name)
            .ok_or(ContextError::TopicNotFound)?;
        tracing::info!(topic = name, "TOPIC deleting");
        if let Some(peers) = self.lookup() {
            for (channel, _) in topic.channels() {
                peers.unregister(name, Some(&channel));
            }
            peers.unregister(name, None);
        }
        self.mark_changed(name);
        topic.delete().await?;
        self.metadata_changed().await;
        Ok(())
    }

    /// Deletes one channel; an ephemeral topic left without channels goes too.
    pub(crate) async fn delete_channel(
        &self,
        topic_name: &str,
        channel: &str,
    ) -> Result<(), ContextError> {
        let topic = self.topic(topic_name).ok_or(ContextError::TopicNotFound)?;
        let topic_now_empty = topic.delete_channel(channel).await.map_err(|e| match e {
            TopicError::ChannelNotFound(_) => ContextError::ChannelNotFound,
            other => ContextError::Topic(other),
        })?;
        tracing::info!(topic = topic_name, channel, "CHANNEL deleted");
        if let Some(peers) = self.lookup() {
            peers.unregister(topic_name, Some(channel));
        }
        if topic_now_empty {
            let _ = self.delete_topic(topic_name).await;
        } else {
            self.mark_changed(topic_name);
            self.metadata_changed().await;
        }
        Ok(())
    }

    /// A new TCP client's id and registration for stats.
    pub(crate) fn register_client(&self, info: Arc<ClientInfo>) {
        lock(&self.clients).insert(info.id, info);
    }

    /// The next client id.
    pub(crate) fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets a disconnected client.
    pub(crate) fn unregister_client(&self, id: u64) {
        lock(&self.clients).remove(&id);
    }

    /// Every connected client.
    pub(crate) fn clients(&self) -> Vec<Arc<ClientInfo>> {
        let mut clients: Vec<_> = lock(&self.clients).values().cloned().collect();
        clients.sort_by_key(|c| c.id);
        clients
    }

    /// Shutdown: refuse new work, close every topic (flushing memory,
    /// in-flight and deferred messages to disk), write metadata.
    pub async fn shutdown(&self) {
        self.exiting.store(true, Ordering::SeqCst);
        // What memory holds must reach disk whatever the bound says.
        self.disk_budget().lift();
        if let Err(e) = self.write_metadata(true).await {
            tracing::error!(error = %e, "cannot write metadata at shutdown");
        }
        let topics: Vec<_> = std::mem::take(&mut *lock(&self.topics))
            .into_values()
            .collect();
        // Several at once: each close mostly waits for its pump and channel
        // tasks to finish, so a hundred thousand one after the other take
        // seconds for nothing.
        let mut closing = tokio::task::JoinSet::new();
        let mut topics = topics.into_iter();
        loop {
            while closing.len() < CLOSE_PARALLELISM {
                let Some(topic) = topics.next() else { break };
                closing.spawn(async move {
                    if let Err(e) = topic.close().await {
                        tracing::error!(topic = topic.name(), error = %e, "closing topic");
                    }
                });
            }
            match closing.join_next().await {
                Some(Err(e)) => tracing::error!(error = %e, "topic close task failed"),
                Some(Ok(())) => {}
                None => break,
            }
        }
        tracing::info!("all topics closed");
    }
}
