//! The durable [`BackendQueue`]: segment files of CRC32-checked records, a
//! metadata file, nsqd's sync policy, and crash recovery at open.
//!
//! Three locks, each with one job, and none held across another's IO:
//! - the ledger (`std::sync::Mutex<Ledger>`) holds positions and counters and
//!   is only held for bookkeeping, never across IO;
//! - the writer (`tokio::sync::Mutex<WriteSide>`) serialises writing records
//!   to files, fsync and metadata writes; its IO runs on the blocking pool;
//! - the reader (`std::sync::Mutex<ReadSide>`) serialises reading segments.
//!
//! A put only appends its encoded record to the ledger's pending list and
//! returns, unless the sync policy or the write buffer size asks for IO. The
//! reader takes records that have not reached their file yet straight from
//! that list, so reading never waits for the writer and the writer never
//! waits for the reader.
//!
//! With `sync_every = 1` a put asks the committer for its sequence number
//! and waits for `committed` to cover it. The committer is one blocking-pool
//! thread that runs only while puts wait: it writes and fsyncs everything
//! pending, publishes the synced sequence (waking every covered put at once)
//! and goes round again while newer puts wait, so concurrent puts share one
//! write and one fsync (group commit) with no hand-off between them. It does
//! no metadata write: metadata only says where reading stands. The sync
//! task writes it on its timer and, with explicit commit, a second thread
//! (the eager metadata writer) soon after each commit, so a crash replays
//! little.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{debug, error};

use crate::budget::DiskBudget;
use crate::commit_stats::CommitStats;
use crate::ledger::{Ledger, Pending, Pos, ReadStep};
use crate::metadata::Metadata;
use crate::record::{self, Decoded, HEADER_LEN, decode};
use crate::recovery::{Limits, Names, recover};
use crate::storage::{FsStorage, Storage};
use crate::{BackendQueue, BackendStats, QueueError};

/// Pending record bytes that make a put write them to the file even when no
/// sync is due. The put that crosses it waits for the write, so it is large
/// enough for that wait to be rare (256 KiB cost a third of MPUB throughput
/// on the nsq bench), and small enough that the pending records stay a
/// minor part of the daemon's memory.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// The most bytes gathered into one write call.
const WRITE_CHUNK_BYTES: usize = 256 << 10;

/// The eager metadata writer's pause after each write (see
/// `Inner::request_meta_write`). It bounds how often a durable queue writes
/// its metadata, so a crash replays at most this long of commits plus one
/// write, and the writes' fsyncs take little from the puts' group commits
/// (durable pubsub without a pause: 13 % fewer publishes and 19 % fewer
/// deliveries; with 10 ms: within the run-to-run spread, 3-10 %).
const EAGER_META_GAP: Duration = Duration::from_millis(10);

/// Bytes the reader fetches from a segment at once.
const READ_CHUNK_BYTES: usize = 256 << 10;

/// How a disk queue is named, where it lives and how it syncs. Field names
/// follow nsqd's flags.
#[derive(Debug, Clone)]
pub struct DiskQueueConfig {
    /// Queue name: the topic name, or `topic:channel` for a channel. Files
    /// are `<name>.diskqueue.NNNNNN.dat` and `<name>.diskqueue.meta.dat`.
    pub name: String,
    /// Directory holding the files (nsqd's `--data-path`); created if missing.
    pub data_path: PathBuf,
    /// A segment is rolled before a record would take it past this size
    /// (`--max-bytes-per-file`). A single larger record gets a file of its own.
    pub max_bytes_per_file: u64,
    /// Smallest record accepted, in bytes.
    pub min_record_size: usize,
    /// Largest record accepted, in bytes (at most `u32::MAX`).
    pub max_record_size: usize,
    /// fsync after this many puts (`--sync-every`). With `1` every put
    /// returns only once its data is durable (concurrent puts share one
    /// fsync), and the metadata (read position) is written by
    /// `sync_timeout`, or, with `explicit_commit`, soon after each commit:
    /// a crash may replay records read since, never lose one. With more, the put that reaches the count hands the fsync
    /// to the sync task and returns (outside a runtime it syncs itself).
    /// Reads count too: this many reads ask the sync task to persist the
    /// read position. `0` syncs by `sync_timeout` (and close) only.
    pub sync_every: u64,
    /// fsync at least this often when anything changed (`--sync-timeout`).
    pub sync_timeout: Duration,
    /// When set, a record handed out by `read`/`try_read` counts as consumed
    /// only after [`BackendQueue::commit_reads`]; until then metadata keeps
    /// it unread, so a crash replays it. A topic's durable pump commits after
    /// every channel has stored the message.
    pub explicit_commit: bool,
    /// Where a `sync_every = 1` queue counts its group commits (latency and
    /// records covered); shared by the queues of one daemon. `None` counts
    /// nothing.
    pub commit_stats: Option<Arc<CommitStats>>,
    /// The byte budget shared by every queue of the data dir
    /// (`--max-disk-bytes`): a put that does not fit is refused with
    /// [`QueueError::Full`], and removed segments give their bytes back.
    /// `None` counts nothing.
    pub disk_budget: Option<Arc<DiskBudget>>,
}

impl DiskQueueConfig {
    /// nsqd's defaults: 100 MiB segments, records of 0 to 1 MiB + 26 bytes
    /// (nsqd's `max-msg-size` plus the message header), sync every 2500 puts
    /// or 2 s.
    pub fn new(name: impl Into<String>, data_path: impl Into<PathBuf>) -> Self {
        DiskQueueConfig {
            name: name.into(),
            data_path: data_path.into(),
            max_bytes_per_file: 100 * 1024 * 1024,
            min_record_size: 0,
            max_record_size: 1024 * 1024 + 26,
            sync_every: 2500,
            sync_timeout: Duration::from_secs(2),
            explicit_commit: false,
            commit_stats: None,
            disk_budget: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), QueueError> {
        let reason = if self.name.is_empty() {
            "empty queue name"
        } else if self.name.contains('/') {
            "queue name contains '/'"
        } else if self.min_record_size > self.max_record_size {
            "min_record_size is above max_record_size"
        } else if self.max_record_size > u32::MAX as usize {
            "max_record_size does not fit the 32-bit length field"
        } else if self.max_bytes_per_file == 0 {
            "max_bytes_per_file is zero"
        } else if self.sync_timeout.is_zero() {
            "sync_timeout is zero"
        } else {
            return Ok(());
        };
        Err(QueueError::InvalidConfig {
            reason: reason.to_string(),
        })
    }
}

/// What a sync does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SyncKind {
    /// Write pending records to their files.
    Flush,
    /// Flush, then fsync the write file.
    Data,
    /// Data, then write metadata and do owed file cleanup.
    Full,
}

/// Zeros written ahead of the data at a time when every put is synced.
const PREALLOCATE_BYTES: u64 = 1 << 20;

/// The writer's own state, owned by whoever holds the writer lock.
#[derive(Debug, Default)]
struct WriteSide {
    /// The segment last written to; synced (and cut to its data) before
    /// moving to the next.
    open_file: Option<u64>,
    /// End of the records written to `open_file`.
    end: u64,
    /// Length of `open_file`: `end`, or more when zeros were written ahead.
    allocated: u64,
    /// Scratch space to write a run of records with one call.
    buf: Vec<u8>,
}

/// The reader's own state: a window of the segment being read.
#[derive(Debug, Default)]
struct ReadSide {
    buf: Vec<u8>,
    buf_file: u64,
    buf_start: u64,
}

enum DiskRead {
    Record { payload: Bytes, total: u64 },
    Bad(String),
    Missing,
}

impl ReadSide {
    fn cached(&self, pos: Pos) -> Option<&[u8]> {
        if self.buf_file != pos.file || pos.offset < self.buf_start {
            return None;
        }
        let skip = usize::try_from(pos.offset - self.buf_start).ok()?;
        self.buf.get(skip..).filter(|rest| !rest.is_empty())
    }

    /// Reads the record at `pos`, never past `limit`. Bytes before `limit`
    /// never change once written and file numbers are never reused, so the
    /// window stays valid.
    /// The segment's name is formatted only when the window misses: most
    /// records are read from memory.
    fn read(
        &mut self,
        storage: &dyn Storage,
        names: &Names,
        pos: Pos,
        limit: u64,
        limits: Limits,
    ) -> io::Result<DiskRead> {
        let mut needed = HEADER_LEN;
        for _ in 0..3 {
            if let Some(window) = self.cached(pos) {
                match decode(window, limits.min, limits.max) {
                    Decoded::Record { total } => {
                        let payload = Bytes::copy_from_slice(&window[HEADER_LEN..total]);
                        let total = total as u64;
                        return Ok(DiskRead::Record { payload, total });
                    }
                    Decoded::Corrupt(why) => return Ok(DiskRead::Bad(why.to_string())),
                    Decoded::Incomplete { needed: n } => needed = n,
                }
            }
            let available = limit.saturating_sub(pos.offset);
            if (needed as u64) > available {
                return Ok(DiskRead::Bad(format!(
                    "record of {needed} bytes runs past the end of written data"
                )));
            }
            let want = (needed.max(READ_CHUNK_BYTES) as u64).min(available) as usize;
            self.buf.resize(want, 0);
            let n = match storage.read_at(&names.segment(pos.file), pos.offset, &mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DiskRead::Missing),
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            };
            self.buf.truncate(n);
            self.buf_file = pos.file;
            self.buf_start = pos.offset;
            if n < needed {
                return Ok(DiskRead::Bad(format!(
                    "segment ends {n} bytes into a record"
                )));
            }
        }
        Ok(DiskRead::Bad("record could not be decoded".into()))
    }
}

/// What the committer has done, read by waiting puts.
#[derive(Debug, Clone, Default)]
struct Committed {
    /// Every put up to this sequence is durable.
    synced: u64,
    /// Every put up to this sequence that is not synced got an error.
    failed_upto: u64,
    /// The last failure: path, kind and message (an `io::Error` cannot be
    /// cloned to each waiter).
    error: Option<(PathBuf, io::ErrorKind, String)>,
}

impl Committed {
    /// `Some` once put `seq` is durable (`Ok`) or failed.
    fn outcome(&self, seq: u64) -> Option<Result<(), QueueError>> {
        if self.synced >= seq {
            return Some(Ok(()));
        }
        if self.failed_upto >= seq {
            let (path, kind, message) = self
                .error
                .clone()
                .unwrap_or_else(|| (PathBuf::new(), io::ErrorKind::Other, "sync failed".into()));
            return Some(Err(QueueError::Io {
                path,
                source: io::Error::new(kind, message),
            }));
        }
        None
    }
}

/// The committer's work list.
#[derive(Debug, Default)]
struct CommitRequest {
    /// Highest put sequence a put waits to see synced.
    wanted: u64,
    /// A committer thread is running and will look at `wanted` again.
    running: bool,
}

#[derive(Debug)]
struct Inner {
    config: DiskQueueConfig,
    names: Names,
    limits: Limits,
    storage: Arc<dyn Storage>,
    ledger: Mutex<Ledger>,
    writer: Arc<tokio::sync::Mutex<WriteSide>>,
    reader: Mutex<ReadSide>,
    readable: Notify,
    /// Asks the sync task to sync now.
    sync_wanted: Arc<Notify>,
    /// A sync task runs and will look at the ledger again: set by the
    /// [`LedgerGuard`] that left the ledger unsynced and spawned it, cleared
    /// by the task (ledger locked) when it finds nothing to sync and ends.
    sync_armed: AtomicBool,
    /// Where sync tasks run: the runtime the queue was opened in. Without
    /// one, syncs happen only by `sync_every` and on close.
    runtime: Option<tokio::runtime::Handle>,
    /// This queue, for the sync tasks it spawns (which must not keep it
    /// alive).
    this: std::sync::Weak<Inner>,
    /// What waiting `sync_every = 1` puts ask the committer for.
    commit: Mutex<CommitRequest>,
    /// The committer's progress.
    committed: Mutex<Committed>,
    /// Woken (all waiters) whenever `committed` changes. A mutex and a
    /// `Notify` rather than a `watch`, whose eight-way notifier would cost
    /// every idle queue a few hundred bytes.
    committed_changed: Notify,
    /// Version of the snapshot the metadata file holds; held across the
    /// file's write (and by nothing else), so an older snapshot is never
    /// written over a newer one.
    meta_written: Mutex<u64>,
    /// Versions handed out to metadata snapshots.
    meta_taken: AtomicU64,
    /// The eager metadata writer's state (see `request_meta_write`).
    meta_wanted: Mutex<EagerMeta>,
}

/// Whether a committed read waits for the eager metadata writer, and
/// whether that writer runs.
#[derive(Debug, Default)]
struct EagerMeta {
    wanted: bool,
    running: bool,
}

/// A durable, file-backed [`BackendQueue`] (nsqd's diskqueue).
///
/// Open it with [`DiskQueue::open`]; close it with [`BackendQueue::close`]
/// so pending records and the read position are synced. Dropping it without
/// closing is like a crash: what was not synced may be lost, and records
/// read since the last sync may be delivered again on the next open.
#[derive(Debug)]
pub struct DiskQueue {
    inner: Arc<Inner>,
}

impl DiskQueue {
    /// Opens (or creates) the queue `config.name` in `config.data_path`,
    /// recovering from whatever state a crash left.
    ///
    /// Does blocking file IO. When called inside a tokio runtime, each
    /// change is synced `sync_timeout` later by a task that runs only while
    /// there are changes; outside one, syncs happen only by `sync_every`
    /// and on close.
    pub fn open(config: DiskQueueConfig) -> Result<DiskQueue, QueueError> {
        config.validate()?;
        let storage = FsStorage::new(&config.data_path).map_err(|source| QueueError::Io {
            path: config.data_path.clone(),
            source,
        })?;
        Self::open_with_storage(config, Arc::new(storage))
    }

    /// Like [`DiskQueue::open`] but on any [`Storage`]; tests use
    /// [`crate::MemStorage`] to simulate crashes exactly.
    /// `config.data_path` is then only used in error messages.
    pub fn open_with_storage(
        config: DiskQueueConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<DiskQueue, QueueError> {
        config.validate()?;
        let names = Names::new(&config.name);
        let limits = Limits {
            min: config.min_record_size,
            max: config.max_record_size,
        };
        let recovered =
            recover(&*storage, &names, limits, config.max_bytes_per_file).map_err(|source| {
                QueueError::Io {
                    path: storage.dir().to_path_buf(),
                    source,
                }
            })?;
        let mut ledger = recovered.ledger;
        ledger.explicit_commit = config.explicit_commit;
        ledger.drop_read_pending = !config.explicit_commit && config.sync_every != 1;
        if let Some(budget) = &config.disk_budget {
            // What recovery left on disk counts, whatever the bound says.
            let names_found =
                storage
                    .list_prefix(&names.prefix)
                    .map_err(|source| QueueError::Io {
                        path: storage.dir().to_path_buf(),
                        source,
                    })?;
            let mut found = 0;
            for name in names_found {
                let Some(file) = names.parse_segment(&name) else {
                    continue;
                };
                if let Ok(Some(len)) = storage.len(&name) {
                    ledger.set_file_size(file, len);
                    found += len;
                }
            }
            budget.count_existing(found);
        }
        let mut write_side = WriteSide::default();
        let write_name = names.segment(ledger.write.file);
        if let Ok(Some(len)) = storage.len(&write_name) {
            // Recovery cut any zeros written ahead, so this is the data end.
            write_side.open_file = Some(ledger.write.file);
            write_side.end = ledger.write.offset;
            write_side.allocated = len;
        }
        debug!(queue = %config.name, depth = ledger.depth(), read = ?ledger.read, write = ?ledger.write, "disk queue opened");
        let inner = Arc::new_cyclic(|this| Inner {
            config,
            names,
            limits,
            storage,
            ledger: Mutex::new(ledger),
            writer: Arc::new(tokio::sync::Mutex::new(WriteSide::default())),
            reader: Mutex::new(ReadSide::default()),
            readable: Notify::new(),
            sync_wanted: Arc::new(Notify::new()),
            sync_armed: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::try_current().ok(),
            this: this.clone(),
            commit: Mutex::new(CommitRequest::default()),
            committed: Mutex::new(Committed::default()),
            committed_changed: Notify::new(),
            meta_written: Mutex::new(0),
            meta_taken: AtomicU64::new(0),
            meta_wanted: Mutex::new(EagerMeta::default()),
        });
        // Persist what recovery decided before anything else happens, unless
        // the files already say it. A new queue has nothing to persist: it
        // gets its metadata file with its first sync (a crash before that
        // leaves segments without metadata, which recovery scans), so
        // creating a topic or channel costs no fsync, and neither does
        // reopening a cleanly closed queue.
        if !recovered.persisted {
            inner.sync_blocking(&mut write_side, SyncKind::Full)?;
        }
        if let Ok(mut slot) = inner.writer.try_lock() {
            *slot = write_side;
        }
        Ok(DiskQueue { inner })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// Bytes this queue's segment files are counted for in its
    /// [`DiskBudget`] (records written or accepted and not yet written).
    pub fn counted_bytes(&self) -> u64 {
        self.inner.ledger().counted_bytes()
    }

    /// Writes pending records, fsyncs them and writes metadata now, whatever
    /// the sync policy says.
    pub async fn sync(&self) -> Result<(), QueueError> {
        self.inner.clone().sync(SyncKind::Full, None).await
    }
}

/// The task that syncs a queue `sync_timeout` after it changed, and
/// whenever asked, for as long as it keeps changing. It is spawned by the
/// change that leaves a synced ledger unsynced and ends once a look finds
/// nothing to sync, so an idle queue has no task and no timer.
async fn sync_task(weak: std::sync::Weak<Inner>, wanted: Arc<Notify>, timeout: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(timeout) => {}
            _ = wanted.notified() => {}
        }
        let Some(inner) = weak.upgrade() else { return };
        {
            let ledger = inner.ledger();
            if ledger.closed || !ledger.needs_sync() {
                // Cleared with the ledger locked: a change after this spawns
                // a new task.
                inner.sync_armed.store(false, Ordering::Release);
                return;
            }
        }
        if let Err(e) = inner.clone().sync(SyncKind::Full, None).await {
            error!(queue = %inner.config.name, error = %e, "periodic disk queue sync failed");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the sync task see the queue is gone and end.
        self.sync_wanted.notify_one();
    }
}

/// The locked ledger. Dropping it starts a sync task if the ledger now
/// holds anything unsynced and none runs, so no change waits for a sync
/// that is not scheduled, whichever path made it.
struct LedgerGuard<'a> {
    ledger: MutexGuard<'a, Ledger>,
    inner: &'a Inner,
}

impl std::ops::Deref for LedgerGuard<'_> {
    type Target = Ledger;
    fn deref(&self) -> &Ledger {
        &self.ledger
    }
}

impl std::ops::DerefMut for LedgerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }
}

impl Drop for LedgerGuard<'_> {
    fn drop(&mut self) {
        let inner = self.inner;
        let Some(runtime) = &inner.runtime else {
            return;
        };
        if !inner.sync_armed.load(Ordering::Relaxed)
            && !self.ledger.closed
            && self.ledger.needs_sync()
            && !inner.sync_armed.swap(true, Ordering::AcqRel)
        {
            runtime.spawn(sync_task(
                inner.this.clone(),
                inner.sync_wanted.clone(),
                inner.config.sync_timeout,
            ));
        }
    }
}

impl Inner {
    fn ledger(&self) -> LedgerGuard<'_> {
        // Every ledger method leaves it consistent before it could panic, so
        // a poisoned lock is still usable.
        LedgerGuard {
            ledger: self.ledger.lock().unwrap_or_else(|e| e.into_inner()),
            inner: self,
        }
    }

    fn commit_request(&self) -> MutexGuard<'_, CommitRequest> {
        self.commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn committed(&self) -> MutexGuard<'_, Committed> {
        // Each update is one field assignment: a poisoned lock is consistent.
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells waiting puts how far syncing got.
    fn publish_synced(&self) {
        let synced = self.ledger().synced_seq;
        let changed = {
            let mut c = self.committed();
            let changed = synced > c.synced;
            c.synced = c.synced.max(synced);
            changed
        };
        if changed {
            self.committed_changed.notify_waiters();
        }
    }

    /// Makes put `seq` durable: asks the committer for it (starting one if
    /// none runs) and waits until it is synced or failed.
    async fn commit(self: &Arc<Self>, seq: u64) -> Result<(), QueueError> {
        let start = {
            let mut request = self.commit_request();
            request.wanted = request.wanted.max(seq);
            !std::mem::replace(&mut request.running, true)
        };
        if start {
            let inner = self.clone();
            tokio::task::spawn_blocking(move || inner.run_committer());
        }
        loop {
            // Registered before the check, so a change between the two
            // still wakes this put.
            let changed = self.committed_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(outcome) = self.committed().outcome(seq) {
                return outcome;
            }
            changed.await;
        }
    }

    /// The committer: writes and fsyncs everything pending, publishes, and
    /// goes round again until no put waits for more. Puts that arrive during
    /// an fsync are all covered by the next one.
    fn run_committer(&self) {
        /// Lets a later put start a new committer even if this one panics.
        struct Running<'a>(&'a Inner);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.commit_request().running = false;
                }
            }
        }
        let _running = Running(self);
        loop {
            {
                let mut request = self.commit_request();
                let done = {
                    let ledger = self.ledger();
                    ledger.synced_seq.max(self.committed().failed_upto)
                };
                if request.wanted <= done {
                    request.running = false;
                    return;
                }
            }
            let mut ws = self.writer.blocking_lock();
            let (target, synced) = {
                let ledger = self.ledger();
                (ledger.last_put_seq(), ledger.synced_seq)
            };
            let started = std::time::Instant::now();
            let result = self.sync_blocking(&mut ws, SyncKind::Data);
            drop(ws);
            if let (Ok(()), Some(stats)) = (&result, &self.config.commit_stats)
                && target > synced
            {
                stats.record(started.elapsed(), target - synced);
            }
            if result.is_ok() {
                self.publish_synced();
            }
            if let Err(e) = result {
                error!(queue = %self.config.name, error = %e, "disk queue commit failed");
                let error = match &e {
                    QueueError::Io { path, source } => {
                        (path.clone(), source.kind(), source.to_string())
                    }
                    other => (PathBuf::new(), io::ErrorKind::Other, other.to_string()),
                };
                {
                    let mut c = self.committed();
                    c.failed_upto = c.failed_upto.max(target);
                    c.error = Some(error);
                }
                self.committed_changed.notify_waiters();
            }
        }
    }

    /// A version for a snapshot taken now. Called with the ledger locked, so
    /// versions follow the order of the states they describe.
    fn meta_version(&self) -> u64 {
        self.meta_taken.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Writes a metadata snapshot unless a newer one is already in the file.
    fn store_meta(&self, version: u64, meta: &Metadata) -> Result<(), QueueError> {
        let mut written = self.meta_written.lock().unwrap_or_else(|e| e.into_inner());
        if version <= *written {
            return Ok(());
        }
        let name = self.names.meta();
        self.storage
            .write_atomic(&name, &meta.encode())
            .map_err(|e| self.io_error(&name, e))?;
        *written = version;
        Ok(())
    }

    fn eager_meta(&self) -> MutexGuard<'_, EagerMeta> {
        self.meta_wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Under `--durable` (explicit commit, every put synced): asks for the
    /// committed read position to be written to the metadata file now, so a
    /// crash replays only what was committed during the last write and the
    /// pause after it ([`EAGER_META_GAP`]). One blocking-pool thread writes,
    /// off the put path, and goes round again while commits arrive, so
    /// writes coalesce and never queue up.
    fn request_meta_write(self: &Arc<Self>) {
        if !(self.config.explicit_commit && self.config.sync_every == 1) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let start = {
            let mut eager = self.eager_meta();
            eager.wanted = true;
            !std::mem::replace(&mut eager.running, true)
        };
        if start {
            let inner = self.clone();
            tokio::task::spawn_blocking(move || inner.run_meta_writer());
        }
    }

    fn run_meta_writer(&self) {
        loop {
            {
                let mut eager = self.eager_meta();
                if !std::mem::take(&mut eager.wanted) {
                    eager.running = false;
                    return;
                }
            }
            // Every put is synced in the same writer-lock hold that flushed
            // it, so with the lock held nothing is flushed and unsynced: the
            // snapshot never points past fsynced data.
            let snapshot = {
                let _ws = self.writer.blocking_lock();
                let ledger = self.ledger();
                (!ledger.closed).then(|| (self.meta_version(), ledger.meta_snapshot()))
            };
            let Some((version, meta)) = snapshot else {
                self.eager_meta().running = false;
                return;
            };
            if let Err(e) = self.store_meta(version, &meta) {
                error!(queue = %self.config.name, error = %e, "writing the committed read position failed; the periodic sync retries");
            }
            // Commits arriving meanwhile are covered by the next write.
            std::thread::sleep(EAGER_META_GAP);
        }
    }

    /// Gives `bytes` of removed segments back to the disk budget.
    fn give_back(&self, bytes: u64) {
        if let Some(budget) = &self.config.disk_budget {
            budget.release(bytes);
        }
    }

    fn io_error(&self, name: &str, source: io::Error) -> QueueError {
        if crate::budget::is_out_of_space(&source)
            && let Some(budget) = &self.config.disk_budget
        {
            budget.note_enospc();
        }
        QueueError::Io {
            path: self.storage.dir().join(name),
            source,
        }
    }

    async fn sync(
        self: Arc<Self>,
        kind: SyncKind,
        covering: Option<u64>,
    ) -> Result<(), QueueError> {
        let mut guard = self.writer.clone().lock_owned().await;
        if let Some(seq) = covering {
            let ledger = self.ledger();
            let done = match kind {
                SyncKind::Flush => ledger.flushed_seq >= seq,
                SyncKind::Data | SyncKind::Full => ledger.synced_seq >= seq,
            };
            if done {
                return Ok(());
            }
        }
        let inner = self.clone();
        tokio::task::spawn_blocking(move || inner.sync_blocking(&mut guard, kind))
            .await
            .map_err(|e| QueueError::Io {
                path: self.storage.dir().to_path_buf(),
                source: io::Error::other(format!("sync task failed: {e}")),
            })?
    }

    /// Syncs a segment, ignoring one that is gone (quarantined or removed).
    fn sync_file(&self, file: u64) -> Result<(), QueueError> {
        let name = self.names.segment(file);
        match self.storage.sync(&name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io_error(&name, e)),
            _ => Ok(()),
        }
    }

    fn sync_blocking(&self, ws: &mut WriteSide, kind: SyncKind) -> Result<(), QueueError> {
        let entries = {
            let ledger = self.ledger();
            // Nothing changed since the metadata file was written: a full
            // sync (the periodic one, or close's) would write the same
            // bytes again. Closing still cuts zeros written ahead.
            let zeros_ahead = ledger.closed && ws.allocated > ws.end;
            if kind == SyncKind::Full && !ledger.needs_sync() && !zeros_ahead {
                return Ok(());
            }
            ledger.pending_snapshot()
        };
        self.write_entries(ws, &entries)?;
        if kind == SyncKind::Flush {
            return Ok(());
        }
        let (seq, closed, rolled_past) = {
            let ledger = self.ledger();
            // A queue that rolled drained moved past the segment last
            // written without writing to it again: everything in it was
            // read (and, without explicit commit, consumed), so it needs no
            // fsync, and one may fail for good on a full file system.
            let rolled_past =
                ledger.drop_read_pending && ws.open_file.is_some_and(|f| f < ledger.flushed.file);
            (ledger.flushed_seq, ledger.closed, rolled_past)
        };
        if rolled_past {
            ws.open_file = None;
            ws.end = 0;
            ws.allocated = 0;
        } else if let Some(file) = ws.open_file {
            if closed {
                // A cleanly closed queue leaves no zeros written ahead.
                self.finish_segment(ws, file)?;
            } else {
                self.sync_file(file)?;
            }
        }
        {
            let mut ledger = self.ledger();
            ledger.handle_synced(seq);
            if kind == SyncKind::Data {
                ledger.meta_dirty = true;
            }
        }
        // The committer publishes a data sync itself, once it has counted
        // the commit, so a put that returned is in the commit stats.
        if kind != SyncKind::Data {
            self.publish_synced();
        }
        if kind != SyncKind::Full {
            return Ok(());
        }
        // Taken only now: a write or fsync that failed above leaves the
        // cleanup owed for the next sync instead of forgetting it.
        let (version, meta, cleanup) = {
            let mut ledger = self.ledger();
            ledger.reads_since_sync = 0;
            ledger.meta_dirty = false;
            let cleanup = ledger.take_cleanup();
            (self.meta_version(), ledger.meta_snapshot(), cleanup)
        };
        if let Err(e) = self.store_meta(version, &meta) {
            let mut ledger = self.ledger();
            ledger.meta_dirty = true;
            ledger.defer_deletes(cleanup.delete);
            return Err(e);
        }
        let (now, later): (Vec<u64>, Vec<u64>) = cleanup
            .delete
            .into_iter()
            .partition(|&f| f < meta.read.file);
        if !later.is_empty() {
            self.ledger().defer_deletes(later);
        }
        for file in now {
            let name = self.names.segment(file);
            self.storage
                .remove(&name)
                .map_err(|e| self.io_error(&name, e))?;
            let freed = self.ledger().forget_file(file);
            self.give_back(freed);
        }
        for file in cleanup.quarantine {
            let (name, bad) = (self.names.segment(file), self.names.bad(file));
            match self.storage.rename(&name, &bad) {
                Ok(()) => {
                    error!(queue = %self.config.name, file = %bad, "damaged segment moved aside")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_error(&name, e)),
            }
            // A `.bad` file is no queue file any more: not counted.
            let freed = self.ledger().forget_file(file);
            self.give_back(freed);
        }
        Ok(())
    }

    /// Makes the segment `file` durable as it will stay: cut to its records
    /// if zeros were written ahead (a durable truncate), else synced.
    fn finish_segment(&self, ws: &mut WriteSide, file: u64) -> Result<(), QueueError> {
        if ws.allocated <= ws.end {
            return self.sync_file(file);
        }
        let name = self.names.segment(file);
        match self.storage.truncate(&name, ws.end) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io_error(&name, e)),
            _ => {
                ws.allocated = ws.end;
                Ok(())
            }
        }
    }

    /// When every put is synced, writes and syncs zeros past `end` first, so
    /// the fsyncs after each record's write find the file's size unchanged
    /// and only flush data (on ext4 about a third cheaper than an append's).
    /// Zeros never decode as a record (the CRC covers the length), so
    /// recovery cuts them off like a torn tail.
    fn preallocate(&self, ws: &mut WriteSide, name: &str, end: u64) -> Result<(), QueueError> {
        if self.config.sync_every != 1 || end <= ws.allocated {
            return Ok(());
        }
        let target =
            end.max((ws.allocated + PREALLOCATE_BYTES).min(self.config.max_bytes_per_file));
        let zeros = vec![0u8; usize::try_from(target - ws.allocated).unwrap_or(0)];
        self.storage
            .write_at(name, ws.allocated, &zeros)
            .and_then(|()| self.storage.sync(name))
            .map_err(|e| self.io_error(name, e))?;
        ws.allocated = target;
        Ok(())
    }

    /// Writes pending records to their files, one write per run of records
    /// in the same file, finishing each file before moving to the next so a
    /// completed segment is always durable before a later one has data.
    /// Writes a run of records that follow each other in one segment,
    /// gathered into calls of at most [`WRITE_CHUNK_BYTES`] so the scratch
    /// buffer stays small however long the run.
    fn write_run(&self, ws: &mut WriteSide, name: &str, run: &[Pending]) -> io::Result<()> {
        let Some(first) = run.first() else {
            return Ok(());
        };
        let mut offset = first.pos.offset;
        ws.buf.clear();
        for entry in run {
            if !ws.buf.is_empty() && ws.buf.len() + entry.len() > WRITE_CHUNK_BYTES {
                self.storage.write_at(name, offset, &ws.buf)?;
                offset += ws.buf.len() as u64;
                ws.buf.clear();
            }
            ws.buf.extend_from_slice(&entry.header);
            ws.buf.extend_from_slice(&entry.payload);
        }
        self.storage.write_at(name, offset, &ws.buf)?;
        // One huge record may have grown the buffer: give that back.
        ws.buf.clear();
        ws.buf.shrink_to(WRITE_CHUNK_BYTES);
        Ok(())
    }

    fn write_entries(&self, ws: &mut WriteSide, entries: &[Pending]) -> Result<(), QueueError> {
        for run in entries.chunk_by(|a, b| a.pos.file == b.pos.file) {
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                continue;
            };
            let file = first.pos.file;
            let name = self.names.segment(file);
            if ws.open_file != Some(file) {
                if let Some(previous) = ws.open_file {
                    self.finish_segment(ws, previous)?;
                }
                ws.open_file = Some(file);
                ws.end = first.pos.offset;
                ws.allocated = self
                    .storage
                    .len(&name)
                    .map_err(|e| self.io_error(&name, e))?
                    .unwrap_or(0);
            }
            let end = last.pos.offset + last.len() as u64;
            self.preallocate(ws, &name, end)?;
            if let Err(e) = self.write_run(ws, &name, run) {
                // Cut off a partial write so the file's length keeps matching
                // the ledger; if even that fails, stop accepting records.
                let repaired = match self.storage.len(&name) {
                    Ok(Some(len)) if len > first.pos.offset => {
                        ws.allocated = first.pos.offset;
                        self.storage.truncate(&name, first.pos.offset).is_ok()
                    }
                    Ok(_) => true,
                    Err(_) => false,
                };
                if !repaired {
                    error!(queue = %self.config.name, file = %name, "write failed and could not be undone; closing the queue");
                    self.ledger().closed = true;
                    self.readable.notify_waiters();
                }
                return Err(self.io_error(&name, e));
            }
            ws.end = end;
            self.ledger().handle_flushed(last.seq, Pos::new(file, end));
        }
        Ok(())
    }
}

#[async_trait]
impl BackendQueue for DiskQueue {
    async fn put(&self, record: Bytes) -> Result<(), QueueError> {
        self.put_many(vec![record]).await
    }

    async fn put_many(&self, records: Vec<Bytes>) -> Result<(), QueueError> {
        let inner = &self.inner;
        let (min, max) = (inner.limits.min, inner.limits.max);
        if let Some(bad) = records.iter().find(|r| r.len() < min || r.len() > max) {
            return Err(QueueError::RecordSize {
                len: bad.len(),
                min,
                max,
            });
        }
        let Some(last) = records.len().checked_sub(1) else {
            return Ok(());
        };
        let bytes: u64 = records.iter().map(|r| (HEADER_LEN + r.len()) as u64).sum();

        if let Some(budget) = &inner.config.disk_budget {
            // All or nothing: a refused batch stores no record.
            if !budget.try_reserve(bytes) {
                return Err(QueueError::Full {
                    bytes,
                    used: budget.used(),
                    limit: budget.limit(),
                });
            }
        }
        let headers: Vec<[u8; HEADER_LEN]> = records.iter().map(|r| record::header(r)).collect();
        let (seq, action, wake_sync_task) = {
            let mut ledger = inner.ledger();
            if ledger.closed {
                if let Some(budget) = &inner.config.disk_budget {
                    budget.release(bytes);
                }
                return Err(QueueError::Closed);
            }
            let mut seq = 0;
            for (i, (header, record)) in headers.into_iter().zip(records).enumerate() {
                let s = ledger.handle_put(header, record, inner.config.max_bytes_per_file);
                if i == last {
                    seq = s;
                }
            }
            let every = inner.config.sync_every;
            let sync_due = every > 0 && ledger.writes_since_sync >= every;
            let background = inner.runtime.is_some();
            let action = if inner.config.sync_every == 1 {
                // The put's contract: durable when it returns. The
                // committer does it (see `commit` below).
                None
            } else if sync_due && !background {
                Some(SyncKind::Full)
            } else if ledger.pending_bytes() >= WRITE_BUFFER_BYTES {
                Some(SyncKind::Flush)
            } else {
                None
            };
            // With sync_every = 1 the put syncs its data itself and the
            // metadata (which only says where reading stands) waits for the
            // sync task's timer: waking it here would put a metadata write
            // (three more fsyncs) behind every group commit.
            let wake = sync_due && background && every != 1;
            (seq, action, wake)
        };
        inner.readable.notify_one();
        if wake_sync_task {
            // With sync_every > 1 no put waits for the fsync: the sync task
            // does it, and the write buffer bound pushes back if it lags.
            inner.sync_wanted.notify_one();
        }
        if inner.config.sync_every == 1 {
            return inner.commit(seq).await;
        }
        if let Some(kind) = action {
            match inner.clone().sync(kind, Some(seq)).await {
                // The records are accepted (pending, served from memory)
                // and a later sync writes them; the budget now refuses
                // further puts. Failing here would make the caller put
                // them again: a copy per retry.
                Err(e) if kind == SyncKind::Flush && e.is_disk_full() => {
                    debug!(queue = %inner.config.name, error = %e, "write buffer not flushed: file system full");
                }
                other => other?,
            }
        }
        Ok(())
    }

    fn try_read(&self) -> Result<Option<Bytes>, QueueError> {
        let inner = &*self.inner;
        let mut reader = inner.reader.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let step = {
                let mut ledger = inner.ledger();
                let pressure = inner
                    .config
                    .disk_budget
                    .as_ref()
                    .is_some_and(|b| b.under_pressure());
                ledger.roll_when_drained = pressure;
                let step = ledger.next_read();
                if let ReadStep::Ready(_) = step {
                    self.after_read(&ledger);
                }
                if pressure && ledger.owes_cleanup() {
                    // Give fully read segments back to the budget now, not
                    // at the next timer.
                    inner.sync_wanted.notify_one();
                }
                step
            };
            let (pos, limit, generation) = match step {
                ReadStep::Empty => return Ok(None),
                ReadStep::Closed => return Err(QueueError::Closed),
                ReadStep::Ready(payload) => return Ok(Some(payload)),
                ReadStep::Disk {
                    pos,
                    limit,
                    generation,
                } => (pos, limit, generation),
            };
            let outcome = reader
                .read(&*inner.storage, &inner.names, pos, limit, inner.limits)
                .map_err(|e| inner.io_error(&inner.names.segment(pos.file), e))?;
            match outcome {
                DiskRead::Record { payload, total } => {
                    let mut ledger = inner.ledger();
                    if ledger.handle_disk_record(generation, pos, total) {
                        self.after_read(&ledger);
                        return Ok(Some(payload));
                    }
                }
                DiskRead::Bad(why) => {
                    let dropped = inner
                        .ledger()
                        .handle_bad_segment(generation, pos.file, true);
                    let name = inner.names.segment(pos.file);
                    error!(queue = %inner.config.name, file = %name, offset = pos.offset, %why, dropped, "corrupt record; quarantining the segment and skipping to the next");
                    inner.sync_wanted.notify_one();
                }
                DiskRead::Missing => {
                    let (dropped, freed) = {
                        let mut ledger = inner.ledger();
                        let dropped = ledger.handle_bad_segment(generation, pos.file, false);
                        (dropped, ledger.forget_file(pos.file))
                    };
                    inner.give_back(freed);
                    let name = inner.names.segment(pos.file);
                    error!(queue = %inner.config.name, file = %name, dropped, "segment file is missing; skipping to the next");
                    inner.sync_wanted.notify_one();
                }
            }
        }
    }

    async fn read(&self) -> Result<Bytes, QueueError> {
        loop {
            // Register interest before checking, so a put between the check
            // and the await still wakes us. Nothing is taken until the
            // synchronous `try_read`, which is why dropping this future is safe.
            let notified = self.inner.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A budget turning full wakes drained readers too, so an idle
            // queue gives back the segment it read (`roll_when_drained`).
            // Only under a bound: unbounded, only `ENOSPC` fills it, and
            // the shared notifier would be one more lock per wait.
            let budget = self
                .inner
                .config
                .disk_budget
                .as_ref()
                .filter(|b| b.is_bounded());
            let pressure = async {
                match budget {
                    Some(budget) => {
                        let changed = budget.changed();
                        tokio::pin!(changed);
                        changed.as_mut().enable();
                        changed.await
                    }
                    None => std::future::pending().await,
                }
            };
            if let Some(record) = self.try_read()? {
                return Ok(record);
            }
            tokio::select! {
                _ = notified => {}
                _ = pressure => {}
            }
        }
    }

    fn commit_reads(&self) {
        self.inner.ledger().commit_reads();
        self.inner.request_meta_write();
    }

    fn commit_oldest_reads(&self, count: u64) {
        self.inner.ledger().commit_oldest(count);
        self.inner.request_meta_write();
    }

    fn depth(&self) -> u64 {
        self.inner.ledger().depth()
    }

    fn stats(&self) -> BackendStats {
        let ledger = self.inner.ledger();
        BackendStats {
            depth: ledger.depth(),
            corrupt_records: ledger.corrupt_records,
            quarantined_files: ledger.quarantined_files,
            discarded_records: 0,
        }
    }

    async fn empty(&self) -> Result<(), QueueError> {
        let inner = self.inner.clone();
        let mut guard = inner.writer.clone().lock_owned().await;
        {
            let mut ledger = inner.ledger();
            if ledger.closed {
                return Err(QueueError::Closed);
            }
            ledger.handle_empty();
        }
        guard.open_file = None;
        guard.end = 0;
        guard.allocated = 0;
        let worker = inner.clone();
        tokio::task::spawn_blocking(move || worker.sync_blocking(&mut guard, SyncKind::Full))
            .await
            .map_err(|e| QueueError::Io {
                path: inner.storage.dir().to_path_buf(),
                source: io::Error::other(format!("empty task failed: {e}")),
            })?
    }

    async fn delete(&self) -> Result<(), QueueError> {
        let inner = self.inner.clone();
        inner.ledger().closed = true;
        inner.readable.notify_waiters();
        inner.sync_wanted.notify_one();
        let guard = inner.writer.clone().lock_owned().await;
        let worker = inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            // The eager metadata writer may hold a snapshot taken before the
            // delete: no metadata is written from now on.
            let mut written = worker
                .meta_written
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *written = u64::MAX;
            let names = worker
                .storage
                .list_prefix(&worker.names.prefix)
                .map_err(|e| worker.io_error("", e))?;
            let meta = worker.names.meta();
            for name in names {
                if worker.names.parse_segment(&name).is_some() || name == meta {
                    worker
                        .storage
                        .remove(&name)
                        .map_err(|e| worker.io_error(&name, e))?;
                }
            }
            let freed = worker.ledger().forget_all_files();
            worker.give_back(freed);
            Ok(())
        })
        .await
        .map_err(|e| QueueError::Io {
            path: inner.storage.dir().to_path_buf(),
            source: io::Error::other(format!("delete task failed: {e}")),
        })?
    }

    async fn close(&self) -> Result<(), QueueError> {
        {
            let mut ledger = self.inner.ledger();
            if ledger.closed {
                return Ok(());
            }
            ledger.closed = true;
        }
        self.inner.readable.notify_waiters();
        self.inner.sync_wanted.notify_one();
        self.inner.clone().sync(SyncKind::Full, None).await
    }
}

impl DiskQueue {
    /// Asks for a sync once `sync_every` reads were taken; `ledger` is
    /// held by the read that just moved the position.
    fn after_read(&self, ledger: &Ledger) {
        let every = self.inner.config.sync_every;
        // With `sync_every = 1` only puts sync at once: the read position
        // waits for the sync task's timer. A stale read position after a
        // crash only replays records (at least once), while a metadata write
        // per read would cost three fsyncs each.
        let wanted = every > 1 && ledger.reads_since_sync >= every;
        if wanted {
            self.inner.sync_wanted.notify_one();
        }
    }
}
