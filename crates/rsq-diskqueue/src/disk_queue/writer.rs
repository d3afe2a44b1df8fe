//! The write side: what the holder of the writer lock does. It writes
//! pending records to their segments in gathered calls, writes zeros ahead
//! when every put is synced, fsyncs, finishes a segment before the next gets
//! data, and on a full sync writes the metadata file and does the owed
//! cleanup (removing read segments, moving damaged ones aside).

use std::io;
use std::sync::Arc;

use tracing::error;

use super::Inner;
use crate::QueueError;
use crate::ledger::{Cleanup, Pending, Pos};
use crate::record;

/// Pending record bytes that make a put write them to the file even when no
/// sync is due. The put that crosses it waits for the write, so it is large
/// enough for that wait to be rare (256 KiB cost a third of MPUB throughput
/// on the nsq bench), and small enough that the pending records stay a
/// minor part of the daemon's memory.
pub(super) const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// The most bytes gathered into one write call.
const WRITE_CHUNK_BYTES: usize = 256 << 10;

// Pending records are written once they pass WRITE_BUFFER_BYTES, in calls
// of at most WRITE_CHUNK_BYTES, so the scratch buffer never doubles what is
// pending.
const _: () = assert!(WRITE_CHUNK_BYTES <= WRITE_BUFFER_BYTES);
// A chunk holds at least one record header, so every call makes progress.
const _: () = assert!(WRITE_CHUNK_BYTES >= record::HEADER_LEN);

/// What a sync does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SyncKind {
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
pub(super) struct WriteSide {
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

impl WriteSide {
    /// The writer after an open: `file` holds records up to `end` and is
    /// `len` bytes long.
    pub(super) fn resume(file: u64, end: u64, len: u64) -> WriteSide {
        WriteSide {
            open_file: Some(file),
            end,
            allocated: len,
            buf: Vec::new(),
        }
    }

    /// Forgets the segment last written to, so the next write starts from
    /// what the file system says.
    pub(super) fn forget_file(&mut self) {
        self.open_file = None;
        self.end = 0;
        self.allocated = 0;
    }
}

impl Inner {
    /// Syncs as `kind` says with the writer lock held (taken with
    /// `lock().await`), unless `covering` names a put that is already
    /// flushed or synced that far. The IO runs where
    /// [`Offload`](super::Offload) says.
    pub(super) async fn sync(
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
        self.offload("sync", move || inner.sync_blocking(&mut guard, kind))
            .await
    }

    /// Syncs a segment, ignoring one that is gone (quarantined or removed).
    fn sync_file(&self, file: u64) -> Result<(), QueueError> {
        let name = self.names.segment(file);
        match self.storage.sync(&name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io_error(&name, e)),
            _ => Ok(()),
        }
    }

    /// The sync itself, in the caller's thread: what every sync, empty,
    /// group-commit round and open runs, whichever [`Offload`](super::Offload)
    /// the queue has.
    pub(super) fn sync_blocking(
        &self,
        ws: &mut WriteSide,
        kind: SyncKind,
    ) -> Result<(), QueueError> {
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
            ws.forget_file();
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
        self.clean_up(cleanup, meta.read.file)
    }

    /// Does the cleanup a metadata write allowed: removes fully read
    /// segments below `read_file` (the position the file now holds; later
    /// ones stay owed) and moves damaged segments aside.
    fn clean_up(&self, cleanup: Cleanup, read_file: u64) -> Result<(), QueueError> {
        let (now, later): (Vec<u64>, Vec<u64>) =
            cleanup.delete.into_iter().partition(|&f| f < read_file);
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
            let start = ws.buf.len();
            ws.buf.extend_from_slice(&entry.header);
            ws.buf.extend_from_slice(&entry.payload);
            record::debug_check_encoded(
                &ws.buf[start..],
                entry.payload.len(),
                self.limits.min,
                self.limits.max,
            );
        }
        self.storage.write_at(name, offset, &ws.buf)?;
        // One huge record may have grown the buffer: give that back.
        ws.buf.clear();
        ws.buf.shrink_to(WRITE_CHUNK_BYTES);
        Ok(())
    }

    /// Writes pending records to their files, one write per run of records
    /// in the same file, finishing each file before moving to the next so a
    /// completed segment is always durable before a later one has data.
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
