//! The read side: the reader's window over the segment being read, and
//! `try_read`/`read`, which take records from memory while they are still
//! pending and from their segment file once written. Reading never waits
//! for the writer: it holds only the reader lock across its IO.

use std::io;

use bytes::Bytes;
use tracing::error;

use super::DiskQueue;
use crate::QueueError;
use crate::ledger::{Ledger, Pos, ReadStep};
use crate::record::{Decoded, HEADER_LEN, decode};
use crate::recovery::{Names, RecordLimits};
use crate::storage::Storage;

/// Bytes the reader fetches from a segment at once.
const READ_CHUNK_BYTES: usize = 256 << 10;

// One fetch always holds a whole header, so a record's length is known
// after at most one more read.
const _: () = assert!(READ_CHUNK_BYTES >= HEADER_LEN);

/// The reader's own state: a window of the segment being read.
#[derive(Debug, Default)]
pub(super) struct ReadSide {
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
        limits: RecordLimits,
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

impl DiskQueue {
    /// [`BackendQueue::try_read`](crate::BackendQueue::try_read): the next record, from memory while it
    /// is pending, else from its segment.
    pub(super) fn take_next(&self) -> Result<Option<Bytes>, QueueError> {
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

    /// [`BackendQueue::read`](crate::BackendQueue::read): waits for the next record.
    pub(super) async fn wait_next(&self) -> Result<Bytes, QueueError> {
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
            if let Some(record) = self.take_next()? {
                return Ok(record);
            }
            tokio::select! {
                // A fixed order, so a simulation replays the same way.
                biased;
                _ = notified => {}
                _ = pressure => {}
            }
        }
    }

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
