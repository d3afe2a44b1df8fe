//! The contract between a topic or channel and the queue it spills to.

use async_trait::async_trait;
use bytes::Bytes;

use crate::QueueError;

/// Counters a backend reports for `/stats` and for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Records currently stored and not yet read.
    pub depth: u64,
    /// Records dropped because they were found corrupt (CRC mismatch, impossible length).
    pub corrupt_records: u64,
    /// Segment files moved aside as `.bad`.
    pub quarantined_files: u64,
    /// Records dropped on purpose (a discarding in-memory queue that is full).
    pub discarded_records: u64,
}

/// A FIFO of opaque records that a topic or channel overflows into.
///
/// Records come out in the order they went in, each handed out once. All
/// methods take `&self` so one queue can be shared by a writer and a reader
/// task behind an `Arc`.
#[async_trait]
pub trait BackendQueue: Send + Sync + 'static {
    /// Appends one record. On `Ok` the record is accepted; whether it is
    /// already on stable storage depends on the implementation's sync policy
    /// (a disk queue with `sync_every = 1` has fsynced it).
    async fn put(&self, record: Bytes) -> Result<(), QueueError>;

    /// Appends records in order, as one batch: a disk queue writes them with
    /// one append and, when its policy syncs every put, one fsync. If it
    /// fails, a prefix of the batch may be stored.
    async fn put_many(&self, records: Vec<Bytes>) -> Result<(), QueueError> {
        for record in records {
            self.put(record).await?;
        }
        Ok(())
    }

    /// Takes the next record if one is ready, without waiting.
    fn try_read(&self) -> Result<Option<Bytes>, QueueError>;

    /// Waits for the next record.
    ///
    /// Cancel-safe: this future may be dropped at any await point (it is used
    /// inside `tokio::select!`) without losing a record. Returns
    /// [`QueueError::Closed`] once the queue is closed.
    async fn read(&self) -> Result<Bytes, QueueError>;

    /// Marks every record handed out so far as consumed, for queues whose
    /// reads must survive a crash until the reader has stored what it read
    /// elsewhere (see `DiskQueueConfig::explicit_commit`). A no-op for
    /// queues that count a record consumed when it is read.
    fn commit_reads(&self) {}

    /// Marks the `count` oldest records handed out and not yet committed as
    /// consumed, for readers that finish records out of order (a durable
    /// channel commits only its finished prefix). A no-op where
    /// [`BackendQueue::commit_reads`] is.
    fn commit_oldest_reads(&self, count: u64) {
        let _ = count;
    }

    /// Records stored and not yet read.
    fn depth(&self) -> u64;

    /// Counters for stats.
    fn stats(&self) -> BackendStats;

    /// Drops every stored record; the queue stays usable.
    async fn empty(&self) -> Result<(), QueueError>;

    /// Closes the queue and removes everything it stored, files included.
    async fn delete(&self) -> Result<(), QueueError>;

    /// Flushes, syncs and closes; what was stored survives for the next open.
    async fn close(&self) -> Result<(), QueueError>;
}
