//! A disk queue that exists only once something is put into it.
//!
//! A daemon with a topic per tenant holds thousands of topics and channels
//! whose queues never see a record: their messages fit in memory. An open
//! [`DiskQueue`] costs about a kilobyte and a half even when empty, so
//! [`LazyDiskQueue`] keeps only its configuration until the first put
//! opens the real queue. A queue that already has files is opened (and
//! recovered) at once, so nothing on disk waits to be served.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::recovery::Names;
use crate::storage::Storage;
use crate::{BackendQueue, BackendStats, DiskQueue, DiskQueueConfig, QueueError};

/// A [`BackendQueue`] that opens its [`DiskQueue`] on the first put, or at
/// once if the queue has files. Until then it is empty and costs no file,
/// no task and a few hundred bytes.
#[derive(Debug)]
pub struct LazyDiskQueue {
    config: DiskQueueConfig,
    storage: Arc<dyn Storage>,
    queue: OnceLock<DiskQueue>,
    /// Held while opening; `true` once closed or deleted (before opening,
    /// nothing is opened after).
    closed: Mutex<bool>,
    /// Woken when the queue opens or closes, for waiting readers.
    changed: Notify,
}

impl LazyDiskQueue {
    /// The queue `config.name` in `storage`: opened now if it has files,
    /// else on its first put.
    pub fn open(
        config: DiskQueueConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<LazyDiskQueue, QueueError> {
        let (lazy, has_files) = LazyDiskQueue::prepare(config, storage)?;
        if has_files {
            lazy.open_now()?;
        }
        Ok(lazy)
    }

    /// The queue `config.name` in `storage`, not opened, and whether it has
    /// files: then the caller should [`LazyDiskQueue::open_now`] before
    /// serving it, maybe on another thread, since that recovers the files.
    /// Looking costs no IO with a storage that keeps an index of names.
    pub fn prepare(
        config: DiskQueueConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<(LazyDiskQueue, bool), QueueError> {
        config.validate()?;
        let names = Names::new(&config.name);
        let has_files = !storage
            .list_prefix(&names.prefix)
            .map_err(|source| QueueError::Io {
                path: storage.dir().to_path_buf(),
                source,
            })?
            .is_empty();
        let lazy = LazyDiskQueue {
            config,
            storage,
            queue: OnceLock::new(),
            closed: Mutex::new(false),
            changed: Notify::new(),
        };
        Ok((lazy, has_files))
    }

    /// Opens the real queue now, recovering its files, unless it is open
    /// already. Blocking file IO.
    pub fn open_now(&self) -> Result<(), QueueError> {
        self.opened().map(|_| ())
    }

    /// Whether the real queue has been opened.
    pub fn is_open(&self) -> bool {
        self.queue.get().is_some()
    }

    fn closed(&self) -> MutexGuard<'_, bool> {
        // A plain flag: a poisoned lock still holds a whole value.
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The real queue, opening it if needed.
    fn opened(&self) -> Result<&DiskQueue, QueueError> {
        if let Some(queue) = self.queue.get() {
            return Ok(queue);
        }
        {
            let closed = self.closed();
            if *closed {
                return Err(QueueError::Closed);
            }
            if self.queue.get().is_none() {
                let queue =
                    DiskQueue::open_with_storage(self.config.clone(), self.storage.clone())?;
                // Cannot be set already: setting happens only here, under
                // the lock.
                let _ = self.queue.set(queue);
            }
        }
        self.changed.notify_waiters();
        self.queue.get().ok_or(QueueError::Closed)
    }

    /// Marks a never-opened queue closed; `false` if it is open (the caller
    /// then forwards to it).
    fn close_unopened(&self) -> bool {
        let closed = {
            let mut closed = self.closed();
            if self.queue.get().is_some() {
                return false;
            }
            *closed = true;
            true
        };
        self.changed.notify_waiters();
        closed
    }
}

#[async_trait]
impl BackendQueue for LazyDiskQueue {
    async fn put(&self, record: Bytes) -> Result<(), QueueError> {
        self.opened()?.put(record).await
    }

    async fn put_many(&self, records: Vec<Bytes>) -> Result<(), QueueError> {
        self.opened()?.put_many(records).await
    }

    fn try_read(&self) -> Result<Option<Bytes>, QueueError> {
        match self.queue.get() {
            Some(queue) => queue.try_read(),
            None if *self.closed() => Err(QueueError::Closed),
            None => Ok(None),
        }
    }

    async fn read(&self) -> Result<Bytes, QueueError> {
        loop {
            // Registered before the checks, so an open in between wakes us.
            // Nothing is taken before the real queue's own cancel-safe read.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(queue) = self.queue.get() {
                return queue.read().await;
            }
            if *self.closed() {
                return Err(QueueError::Closed);
            }
            changed.await;
        }
    }

    fn commit_reads(&self) {
        if let Some(queue) = self.queue.get() {
            queue.commit_reads();
        }
    }

    fn commit_oldest_reads(&self, count: u64) {
        if let Some(queue) = self.queue.get() {
            queue.commit_oldest_reads(count);
        }
    }

    fn depth(&self) -> u64 {
        self.queue.get().map_or(0, DiskQueue::depth)
    }

    fn stats(&self) -> BackendStats {
        self.queue
            .get()
            .map_or_else(BackendStats::default, DiskQueue::stats)
    }

    async fn empty(&self) -> Result<(), QueueError> {
        match self.queue.get() {
            Some(queue) => queue.empty().await,
            None if *self.closed() => Err(QueueError::Closed),
            None => Ok(()),
        }
    }

    async fn delete(&self) -> Result<(), QueueError> {
        if self.close_unopened() {
            return Ok(());
        }
        match self.queue.get() {
            Some(queue) => queue.delete().await,
            None => Ok(()),
        }
    }

    async fn close(&self) -> Result<(), QueueError> {
        if self.close_unopened() {
            return Ok(());
        }
        match self.queue.get() {
            Some(queue) => queue.close().await,
            None => Ok(()),
        }
    }
}
