//! The put path: a batch is checked against the record size limits and
//! the disk budget, appended to the ledger's pending list, and then made
//! durable (group commit under `sync_every = 1`) or written once the pending
//! bytes pass [`WRITE_BUFFER_BYTES`], as the sync policy says.

use bytes::Bytes;
use tracing::debug;

use super::DiskQueue;
use super::writer::{SyncKind, WRITE_BUFFER_BYTES};
use crate::QueueError;
use crate::record::{self, HEADER_LEN};

impl DiskQueue {
    /// [`BackendQueue::put_many`](crate::BackendQueue::put_many): checks and counts the records, hands
    /// them to the ledger and does the IO the sync policy asks for.
    pub(super) async fn put_records(&self, records: Vec<Bytes>) -> Result<(), QueueError> {
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
}
