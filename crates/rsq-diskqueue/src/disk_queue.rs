//! The durable [`BackendQueue`]: segment files of CRC32-checked records, a
//! metadata file, nsqd's sync policy, and crash recovery at open.
//!
//! Three locks, each with one job, and none held across another's IO:
//! - the ledger (`std::sync::Mutex<Ledger>`) holds positions and counters and
//!   is only held for bookkeeping, never across IO;
//! - the writer (`tokio::sync::Mutex<WriteSide>`) serialises writing records
//!   to files, fsync and metadata writes; its IO runs on the blocking pool
//!   (or inline, see below);
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
//!
//! Where that blocking IO runs is [`DiskQueueConfig::offload`], chosen once
//! at open: [`Offload::BlockingPool`] (the default) as above, or
//! [`Offload::Inline`], where a sync, an empty or a delete runs in the
//! caller's task, a `sync_every = 1` put runs the committer's round itself
//! and the eager metadata writer is a tokio task, so a current-thread
//! runtime with paused time runs a queue deterministically (the seam of the
//! simulation, issue 31). Opening and reading do their IO in the caller in
//! both modes.
//!
//! One module per part: `config` (what a queue is told), `offload` (where
//! the blocking IO runs), `put` (the put path), `committer` (group commit),
//! `writer` (the writer lock's IO: records, zeros ahead, fsync, cleanup),
//! `meta_writer` (versioned metadata writes and the eager writer),
//! `read_side` (reading) and `sync_task` (the background sync and the ledger
//! guard that starts it). This file holds the shared state, opening, and the
//! [`BackendQueue`] implementation.

mod committer;
mod config;
mod meta_writer;
mod offload;
mod put;
mod read_side;
mod sync_task;
mod writer;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tracing::debug;

pub use config::DiskQueueConfig;
pub use offload::Offload;

use crate::ledger::Ledger;
use crate::recovery::{Names, RecordLimits, recover};
use crate::storage::{FsStorage, Storage};
use crate::{BackendQueue, BackendStats, QueueError};
use committer::{CommitRequest, Committed};
use meta_writer::EagerMeta;
use read_side::ReadSide;
use writer::{SyncKind, WriteSide};

/// Everything a queue is: its configuration and storage, the three locks,
/// and the state the committer, the metadata writer and the sync task
/// share. The submodules each add the methods of their part.
#[derive(Debug)]
struct Inner {
    config: DiskQueueConfig,
    names: Names,
    limits: RecordLimits,
    storage: Arc<dyn Storage>,
    ledger: Mutex<Ledger>,
    writer: Arc<tokio::sync::Mutex<WriteSide>>,
    reader: Mutex<ReadSide>,
    readable: Notify,
    /// Asks the sync task to sync now.
    sync_wanted: Arc<Notify>,
    /// A sync task runs and will look at the ledger again: set by the
    /// [`LedgerGuard`](sync_task::LedgerGuard) that left the ledger unsynced
    /// and spawned it, cleared by the task (ledger locked) when it finds
    /// nothing to sync and ends.
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
        let limits = RecordLimits {
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
        let write_name = names.segment(ledger.write.file);
        let mut write_side = match storage.len(&write_name) {
            // Recovery cut any zeros written ahead, so this is the data end.
            Ok(Some(len)) => WriteSide::resume(ledger.write.file, ledger.write.offset, len),
            _ => WriteSide::default(),
        };
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
    /// [`DiskBudget`](crate::DiskBudget) (records written or accepted and not yet written).
    pub fn counted_bytes(&self) -> u64 {
        self.inner.ledger().counted_bytes()
    }

    /// Writes pending records, fsyncs them and writes metadata now, whatever
    /// the sync policy says.
    pub async fn sync(&self) -> Result<(), QueueError> {
        self.inner.clone().sync(SyncKind::Full, None).await
    }
}

impl Inner {
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
}

#[async_trait]
impl BackendQueue for DiskQueue {
    async fn put(&self, record: Bytes) -> Result<(), QueueError> {
        self.put_many(vec![record]).await
    }

    async fn put_many(&self, records: Vec<Bytes>) -> Result<(), QueueError> {
        self.put_records(records).await
    }

    fn try_read(&self) -> Result<Option<Bytes>, QueueError> {
        self.take_next()
    }

    async fn read(&self) -> Result<Bytes, QueueError> {
        self.wait_next().await
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
        guard.forget_file();
        let worker = inner.clone();
        inner
            .offload("empty", move || {
                worker.sync_blocking(&mut guard, SyncKind::Full)
            })
            .await
    }

    async fn delete(&self) -> Result<(), QueueError> {
        let inner = self.inner.clone();
        inner.ledger().closed = true;
        inner.readable.notify_waiters();
        inner.sync_wanted.notify_one();
        let guard = inner.writer.clone().lock_owned().await;
        let worker = inner.clone();
        inner
            .offload("delete", move || {
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
