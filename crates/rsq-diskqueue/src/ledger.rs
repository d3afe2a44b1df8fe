//! The disk queue's bookkeeping as a plain struct: where reading and writing
//! stand, how many unread records each segment holds, which records are
//! still only in memory, and what cleanup the next sync owes.
//!
//! It does no IO and never blocks; the driver in `disk_queue.rs` asks it what
//! to do (`next_read`, `pending_snapshot`, `meta_snapshot`), does the IO
//! without holding it, and reports back (`handle_*`). Positions are the
//! truth about what is left to read; counts and depth are derived stats that
//! recovery and quarantine keep exact. `check_invariants` says what
//! "consistent" means and runs after every change in debug builds; counter
//! arithmetic that cannot underflow is asserted, not saturated.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use tracing::warn;

use crate::metadata::QueueMeta;
use crate::record::HEADER_LEN;

/// A byte position in the queue: segment file number and offset within it.
/// Ordered by file, then offset, which is the order records were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub(crate) struct Pos {
    /// Segment file number.
    pub file: u64,
    /// Byte offset inside the segment.
    pub offset: u64,
}

impl Pos {
    pub fn new(file: u64, offset: u64) -> Self {
        Pos { file, offset }
    }
}

/// A record accepted by `put` whose bytes are not yet written to its file.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// Where the record goes.
    pub pos: Pos,
    /// The record's header (length and CRC).
    pub header: [u8; HEADER_LEN],
    /// The payload, as the put gave it (shared, not copied).
    pub payload: Bytes,
    /// The put's sequence number; a sync covering it makes the put durable.
    pub seq: u64,
}

impl Pending {
    /// Bytes the record takes in its file.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// What the reader should do next.
#[derive(Debug)]
pub(crate) enum ReadStep {
    /// Nothing to read now.
    Empty,
    /// The queue is closed.
    Closed,
    /// A record served from memory; positions are already advanced.
    Ready(Bytes),
    /// Read the record at `pos` from its file, not past `limit`, then report
    /// with [`Ledger::handle_disk_record`] or [`Ledger::handle_bad_segment`].
    Disk {
        /// Where the record starts.
        pos: Pos,
        /// Bytes of the file known written; a record past it is damage.
        limit: u64,
        /// Ledger generation, so a report after `empty` is ignored.
        generation: u64,
    },
}

/// File cleanup owed once metadata no longer points at those files.
#[derive(Debug, Default)]
pub(crate) struct Cleanup {
    /// Fully read segments to remove.
    pub delete: Vec<u64>,
    /// Damaged segments to rename to `.bad`.
    pub quarantine: Vec<u64>,
}

/// The disk queue's positions and counters.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Next record to hand out.
    pub read: Pos,
    /// Where the next record will be written (includes pending records).
    pub write: Pos,
    /// Everything before this is written to its file (not necessarily synced).
    pub flushed: Pos,
    /// Unread records per segment.
    counts: BTreeMap<u64, u64>,
    /// Final length of every segment before `write.file` that is still to
    /// be read. Sparse: numbers that never held a segment have no entry, so
    /// a gap between segment numbers costs nothing (see `Ledger::next_file`).
    ends: BTreeMap<u64, u64>,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    depth: u64,
    put_seq: u64,
    /// Highest put sequence number written to its file.
    pub flushed_seq: u64,
    /// Highest put sequence number known synced.
    pub synced_seq: u64,
    /// Puts since the last data sync.
    pub writes_since_sync: u64,
    /// Reads since the last metadata write.
    pub reads_since_sync: u64,
    /// Metadata on disk is behind the ledger.
    pub meta_dirty: bool,
    cleanup: Cleanup,
    /// Records dropped as corrupt or missing.
    pub corrupt_records: u64,
    /// Segments moved aside as `.bad`.
    pub quarantined_files: u64,
    /// No more puts or reads.
    pub closed: bool,
    /// Bumped by `empty`, so in-progress reads of old files are discarded.
    pub generation: u64,
    /// Reads count as consumed only once `commit_reads` says so.
    pub explicit_commit: bool,
    /// With `explicit_commit`: where each record handed out since the last
    /// commit starts. Metadata never claims them read, so a crash replays
    /// them (at least once) instead of losing them.
    uncommitted: VecDeque<Pos>,
    /// Bytes each segment file takes (records written or pending), as the
    /// shared disk budget counts them; an entry goes when its file does.
    sizes: BTreeMap<u64, u64>,
    /// Set by the queue while its disk budget is under pressure: a reader
    /// that catches up with the writer moves the writer to a fresh segment,
    /// so the read one is removed (its bytes given back) instead of staying
    /// until it fills up to `max_bytes_per_file`.
    pub roll_when_drained: bool,
    /// Records read before they reached their file need not be written
    /// when the queue rolls drained (no explicit commit, no put waiting for
    /// its fsync), so a full file system does not keep them in memory.
    pub drop_read_pending: bool,
}

impl Ledger {
    /// A ledger as recovery found the files.
    pub fn recovered(
        read: Pos,
        write: Pos,
        counts: BTreeMap<u64, u64>,
        ends: BTreeMap<u64, u64>,
    ) -> Self {
        let depth = counts.values().sum();
        let read = if read > write {
            warn!(
                ?read,
                ?write,
                "recovered read position is past the write position; reading from the write position"
            );
            write
        } else {
            read
        };
        Ledger {
            read,
            write,
            flushed: write,
            counts,
            ends,
            depth,
            ..Ledger::default()
        }
    }

    /// Records stored and not yet read.
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Sequence number of the latest put.
    pub fn last_put_seq(&self) -> u64 {
        self.put_seq
    }

    /// Bytes accepted but not yet written to files.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Whether a sync would change anything on disk.
    pub fn needs_sync(&self) -> bool {
        self.writes_since_sync > 0
            || self.reads_since_sync > 0
            || self.meta_dirty
            || !self.pending.is_empty()
            || !self.cleanup.delete.is_empty()
            || !self.cleanup.quarantine.is_empty()
    }

    /// Accepts an encoded record, rolling to a new segment first if it would
    /// push the current one past `max_bytes_per_file`. Returns its sequence.
    /// Panics if `header` does not state `payload`'s length (it comes from
    /// `record::header`).
    pub fn handle_put(
        &mut self,
        header: [u8; HEADER_LEN],
        payload: Bytes,
        max_bytes_per_file: u64,
    ) -> u64 {
        // The pair check at the ledger's door, on in release (O(1)): the
        // header that will be written states this payload's length.
        let stated = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        assert!(
            u32::try_from(payload.len()) == Ok(stated),
            "record header states {stated} bytes for a payload of {}",
            payload.len()
        );
        let len = (HEADER_LEN + payload.len()) as u64;
        if self.write.offset > 0 && self.write.offset + len > max_bytes_per_file {
            self.ends.insert(self.write.file, self.write.offset);
            self.write = Pos::new(self.write.file + 1, 0);
        }
        self.put_seq += 1;
        self.pending.push_back(Pending {
            pos: self.write,
            header,
            payload,
            seq: self.put_seq,
        });
        self.pending_bytes += len as usize;
        *self.sizes.entry(self.write.file).or_default() += len;
        self.write.offset += len;
        *self.counts.entry(self.write.file).or_default() += 1;
        self.depth += 1;
        self.writes_since_sync += 1;
        self.debug_check();
        self.put_seq
    }

    /// The records to write next, in order.
    pub fn pending_snapshot(&self) -> Vec<Pending> {
        self.pending.iter().cloned().collect()
    }

    /// Every record up to `seq` is written to its file, which now ends at
    /// `end`.
    pub fn handle_flushed(&mut self, seq: u64, end: Pos) {
        while self.pending.front().is_some_and(|p| p.seq <= seq) {
            if let Some(p) = self.pending.pop_front() {
                self.pending_bytes -= p.len();
            }
        }
        self.flushed = self.flushed.max(end);
        if self.pending.is_empty() {
            // Everything accepted is in its file: after a roll when drained
            // the write position is a fresh segment nothing was written to.
            self.flushed = self.flushed.max(self.write);
        }
        self.flushed_seq = self.flushed_seq.max(seq);
        self.debug_check();
    }

    /// Everything up to put `seq` is synced.
    pub fn handle_synced(&mut self, seq: u64) {
        assert!(seq <= self.put_seq, "synced put {seq} was never made");
        self.synced_seq = self.synced_seq.max(seq);
        self.writes_since_sync = self.put_seq - self.synced_seq;
    }

    /// Decides the next read step, serving from memory when the record has
    /// not reached its file yet. Every loop iteration either returns or moves
    /// the read position to a later file, so it ends.
    pub fn next_read(&mut self) -> ReadStep {
        loop {
            if self.closed {
                return ReadStep::Closed;
            }
            if self.read >= self.write {
                if self.depth != 0 {
                    warn!(
                        depth = self.depth,
                        "read caught up with write but depth was not zero; resetting depth"
                    );
                    self.depth = 0;
                    self.counts.clear();
                }
                if self.roll_when_drained && self.write.offset > 0 && self.read == self.write {
                    self.roll_drained();
                }
                return ReadStep::Empty;
            }
            if let Some(&end) = self.ends.get(&self.read.file)
                && self.read.offset >= end
            {
                self.finish_file();
                continue;
            }
            if let Ok(i) = self.pending.binary_search_by(|p| p.pos.cmp(&self.read)) {
                let pending = &self.pending[i];
                let (len, payload) = (pending.len() as u64, pending.payload.clone());
                self.advance(len);
                return ReadStep::Ready(payload);
            }
            let limit = if self.read.file < self.flushed.file {
                self.ends.get(&self.read.file).copied().unwrap_or(u64::MAX)
            } else if self.read.file == self.flushed.file && self.read.offset < self.flushed.offset
            {
                self.flushed.offset
            } else {
                // Not on disk and not in memory: the bookkeeping lost track.
                // Skip to the write position rather than spin.
                warn!(read = ?self.read, write = ?self.write, "read position points at nothing; skipping to the write position");
                self.jump_read_to_write();
                continue;
            };
            return ReadStep::Disk {
                pos: self.read,
                limit,
                generation: self.generation,
            };
        }
    }

    /// The segment reading moves to after `file`: the next one the ledger
    /// knows of (it has an end or holds counted records), else the write
    /// file. Numbers that never held a segment are skipped in one step, so
    /// moving on costs O(log segments) however far apart the numbers are.
    fn next_file(&self, file: u64) -> u64 {
        let after = |m: &BTreeMap<u64, u64>| {
            file.checked_add(1)
                .and_then(|from| m.range(from..).next().map(|(&f, _)| f))
        };
        [after(&self.ends), after(&self.counts)]
            .into_iter()
            .flatten()
            .fold(self.write.file, u64::min)
    }

    /// The segments from `from` up to (not including) the write file that
    /// may exist: every one the ledger knows of, plus `from` itself.
    fn known_files_before_write(&self, from: u64) -> Vec<u64> {
        let to = self.write.file;
        if from >= to {
            return Vec::new();
        }
        let mut files: Vec<u64> = std::iter::once(from)
            .chain(self.ends.range(from..to).map(|(&f, _)| f))
            .chain(self.counts.range(from..to).map(|(&f, _)| f))
            .collect();
        files.sort_unstable();
        files.dedup();
        files
    }

    /// Everything written was read: the writer moves to a fresh segment
    /// and the read one is owed for deletion, like any fully read segment.
    fn roll_drained(&mut self) {
        let file = self.write.file;
        self.ends.insert(file, self.write.offset);
        self.write = Pos::new(file + 1, 0);
        if self.drop_read_pending && !self.pending.is_empty() {
            // Every pending record was read: none has to reach its file.
            self.pending.clear();
            self.pending_bytes = 0;
            self.flushed_seq = self.put_seq;
        }
        if self.pending.is_empty() {
            self.flushed = self.flushed.max(self.write);
        }
        self.finish_file();
    }

    /// Records the size of segment `file` as found at open.
    pub fn set_file_size(&mut self, file: u64, len: u64) {
        self.sizes.insert(file, len);
    }

    /// Segment `file` is gone (removed, moved aside or missing): the bytes
    /// it was counted for, to give back to the budget.
    pub fn forget_file(&mut self, file: u64) -> u64 {
        self.sizes.remove(&file).unwrap_or(0)
    }

    /// Every segment is gone (the queue was deleted): the bytes to give back.
    pub fn forget_all_files(&mut self) -> u64 {
        std::mem::take(&mut self.sizes).into_values().sum()
    }

    /// Bytes counted for every segment the queue has.
    pub fn counted_bytes(&self) -> u64 {
        self.sizes.values().sum()
    }

    /// Whether the next full sync owes file cleanup.
    pub fn owes_cleanup(&self) -> bool {
        !self.cleanup.delete.is_empty() || !self.cleanup.quarantine.is_empty()
    }

    fn jump_read_to_write(&mut self) {
        for file in self.known_files_before_write(self.read.file) {
            self.ends.remove(&file);
            self.cleanup.delete.push(file);
        }
        self.counts.clear();
        self.depth = 0;
        self.read = self.write;
        self.meta_dirty = true;
    }

    fn advance(&mut self, total: u64) {
        if self.explicit_commit {
            self.uncommitted.push_back(self.read);
        }
        self.read.offset += total;
        match self.counts.get_mut(&self.read.file) {
            Some(count) if *count > 0 => {
                *count -= 1;
                // depth is the sum of the counts, so at least this one.
                self.depth -= 1;
            }
            _ => warn!(
                file = self.read.file,
                "read a record its segment had not counted; depth unchanged"
            ),
        }
        self.reads_since_sync += 1;
        self.meta_dirty = true;
        self.debug_check();
    }

    fn finish_file(&mut self) {
        let file = self.read.file;
        if let Some(left) = self.counts.remove(&file).filter(|&c| c > 0) {
            warn!(
                file,
                left, "segment ended with records still counted; correcting depth"
            );
            self.depth -= left;
        }
        self.ends.remove(&file);
        self.cleanup.delete.push(file);
        self.read = Pos::new(self.next_file(file), 0);
        self.meta_dirty = true;
    }

    /// The record at `pos` was read from disk and is `total` bytes long.
    /// Returns false if the ledger moved on meanwhile (the queue was
    /// emptied), in which case the record must not be handed out.
    pub fn handle_disk_record(&mut self, generation: u64, pos: Pos, total: u64) -> bool {
        if generation != self.generation || pos != self.read || self.closed {
            return false;
        }
        self.advance(total);
        true
    }

    /// The read segment `file` is damaged (`quarantine`) or missing: drop its
    /// unread records and skip to the next segment. Returns how many records
    /// were dropped.
    pub fn handle_bad_segment(&mut self, generation: u64, file: u64, quarantine: bool) -> u64 {
        if generation != self.generation || file != self.read.file {
            return 0;
        }
        let dropped = self.counts.remove(&file).unwrap_or(0);
        self.depth -= dropped;
        self.corrupt_records += dropped;
        if file == self.write.file {
            // The writer is still appending here: move it on so the damaged
            // file is never written after its quarantine.
            self.ends.insert(file, self.write.offset);
            self.write = Pos::new(file + 1, 0);
        }
        self.ends.remove(&file);
        // Records already handed out from the damaged file cannot be
        // replayed, but they stay among the uncommitted reads: the consumer
        // counts them, and its next `commit_oldest(n)` means them first.
        // Dropping them here made that commit cover records read later and
        // still in flight, which a crash then lost.
        if quarantine {
            self.quarantined_files += 1;
            self.cleanup.quarantine.push(file);
        }
        self.read = Pos::new(self.next_file(file), 0);
        self.meta_dirty = true;
        self.debug_check();
        dropped
    }

    /// Positions and counts as they stand on disk: what the metadata file
    /// may claim once everything flushed so far is synced. Records read from
    /// memory before reaching their file are not yet read as far as the disk
    /// knows, so a crash may hand them out again (at least once).
    pub fn meta_snapshot(&self) -> QueueMeta {
        let oldest_uncommitted = self.uncommitted.front().copied().unwrap_or(self.read);
        let read = self.read.min(oldest_uncommitted).min(self.flushed);
        let write = self.flushed;
        let mut unread_pending: BTreeMap<u64, u64> = BTreeMap::new();
        for p in self.pending.iter().filter(|p| p.pos >= self.read) {
            *unread_pending.entry(p.pos.file).or_default() += 1;
        }
        let mut counts: BTreeMap<u64, u64> = self
            .counts
            .iter()
            .filter(|&(&file, _)| file >= read.file && file <= write.file)
            .map(|(&file, &count)| {
                // A pending record is counted from its put until it is read.
                let pending = unread_pending.get(&file).copied().unwrap_or(0);
                assert!(
                    pending <= count,
                    "segment {file}: {pending} pending of {count} counted"
                );
                (file, count - pending)
            })
            .collect();
        // Handed out but not committed: still unread as far as disk knows.
        for p in self.uncommitted.iter().filter(|p| **p < self.flushed) {
            *counts.entry(p.file).or_default() += 1;
        }
        counts.retain(|_, count| *count > 0);
        QueueMeta {
            read,
            write,
            counts,
        }
    }

    /// Marks every record handed out so far as consumed: the next metadata
    /// write may claim them read.
    pub fn commit_reads(&mut self) {
        if !self.uncommitted.is_empty() {
            self.uncommitted.clear();
            self.meta_dirty = true;
        }
    }

    /// Marks the `count` oldest handed-out records as consumed.
    pub fn commit_oldest(&mut self, count: u64) {
        for _ in 0..count {
            if self.uncommitted.pop_front().is_none() {
                break;
            }
        }
        if count > 0 {
            self.meta_dirty = true;
        }
        self.debug_check();
    }

    /// In debug builds, [`Ledger::check_invariants`]; nothing in release.
    /// Run after each change, so the disk queue's tests and fuzz targets
    /// check every step.
    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// Panics unless the bookkeeping is consistent: positions ordered,
    /// depth the sum of the per-segment counts, counts only for segments
    /// still to read, sequence numbers ordered, and (when short enough to
    /// look at) pending records and handed-out reads in order.
    pub fn check_invariants(&self) {
        assert!(
            self.read <= self.write,
            "read {:?} past write {:?}",
            self.read,
            self.write
        );
        assert!(self.flushed <= self.write, "flushed past write");
        assert_eq!(
            self.depth,
            self.counts.values().sum::<u64>(),
            "depth is not the sum of counts"
        );
        if let (Some((&first, _)), Some((&last, _))) =
            (self.counts.first_key_value(), self.counts.last_key_value())
        {
            assert!(
                first >= self.read.file,
                "counts for segment {first}, read before"
            );
            assert!(
                last <= self.write.file,
                "counts for segment {last}, past the write file"
            );
        }
        assert!(self.synced_seq <= self.put_seq, "synced a put never made");
        assert!(self.flushed_seq <= self.put_seq, "flushed a put never made");
        assert!(
            self.explicit_commit || self.uncommitted.is_empty(),
            "uncommitted reads without explicit commit"
        );
        if let Some(last) = self.uncommitted.back() {
            assert!(
                *last < self.read,
                "a read handed out at {last:?} is not behind the reader"
            );
        }
        const LOOK: usize = 256;
        if self.pending.len() <= LOOK {
            let bytes: usize = self.pending.iter().map(Pending::len).sum();
            assert_eq!(bytes, self.pending_bytes, "pending bytes");
            assert!(
                self.pending
                    .iter()
                    .zip(self.pending.iter().skip(1))
                    .all(|(a, b)| a.pos < b.pos && a.seq < b.seq),
                "pending records out of order"
            );
        }
        if self.uncommitted.len() <= LOOK {
            assert!(
                self.uncommitted
                    .iter()
                    .zip(self.uncommitted.iter().skip(1))
                    .all(|(a, b)| a < b),
                "handed-out reads out of order"
            );
        }
    }

    /// Takes the cleanup owed so far.
    pub fn take_cleanup(&mut self) -> Cleanup {
        std::mem::take(&mut self.cleanup)
    }

    /// Gives back deletions that metadata still pointed at.
    pub fn defer_deletes(&mut self, files: Vec<u64>) {
        self.cleanup.delete.extend(files);
    }

    /// Drops every record: all segments up to the write file are owed for
    /// deletion and reading and writing restart in a fresh file number, so no
    /// file name is ever reused.
    pub fn handle_empty(&mut self) {
        let first = self.read.file.min(self.flushed.file);
        let fresh = Pos::new(self.write.file + 1, 0);
        // Every segment that may exist from `first` on: files read past are
        // already owed for deletion, the rest are known to the ledger.
        let mut owed = self.known_files_before_write(first);
        owed.extend([self.read.file, self.flushed.file, self.write.file]);
        owed.retain(|&f| f >= first);
        owed.sort_unstable();
        owed.dedup();
        self.cleanup.delete.extend(owed);
        self.pending.clear();
        self.pending_bytes = 0;
        self.counts.clear();
        self.ends.clear();
        self.uncommitted.clear();
        self.depth = 0;
        self.read = fresh;
        self.write = fresh;
        self.flushed = fresh;
        self.flushed_seq = self.put_seq;
        self.synced_seq = self.put_seq;
        self.generation += 1;
        self.meta_dirty = true;
        self.debug_check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::header;

    fn put(ledger: &mut Ledger, payload: &[u8]) -> u64 {
        ledger.handle_put(header(payload), Bytes::copy_from_slice(payload), 40)
    }

    #[test]
    fn rolls_before_exceeding_max_bytes() {
        let mut l = Ledger::default();
        put(&mut l, &[1; 12]); // 20 bytes
        put(&mut l, &[2; 12]); // 40 bytes: fits exactly
        put(&mut l, &[3; 12]); // would be 60: rolls
        assert_eq!(l.write, Pos::new(1, 20));
        assert_eq!(l.depth(), 3);
        assert_eq!(l.meta_snapshot().counts.len(), 0, "nothing flushed yet");
    }

    #[test]
    fn serves_pending_records_from_memory_in_order() {
        let mut l = Ledger::default();
        for i in 0..3u8 {
            put(&mut l, &[i; 12]);
        }
        for i in 0..3u8 {
            match l.next_read() {
                ReadStep::Ready(b) => assert_eq!(&b[..], &[i; 12]),
                other => panic!("expected record, got {other:?}"),
            }
        }
        assert!(matches!(l.next_read(), ReadStep::Empty));
        assert_eq!(l.depth(), 0);
        // Read from memory before the flush: the disk still sees them unread.
        let meta = l.meta_snapshot();
        assert_eq!(meta.read, Pos::new(0, 0));
        // Segment 0 was fully read; it is owed for deletion.
        assert_eq!(l.take_cleanup().delete, vec![0]);
    }

    #[test]
    fn flushed_records_are_read_from_disk_up_to_the_flushed_limit() {
        let mut l = Ledger::default();
        let s1 = put(&mut l, &[1; 12]);
        put(&mut l, &[2; 12]);
        l.handle_flushed(s1, Pos::new(0, 20));
        match l.next_read() {
            ReadStep::Disk {
                pos,
                limit,
                generation,
            } => {
                assert_eq!((pos, limit), (Pos::new(0, 0), 20));
                assert!(l.handle_disk_record(generation, pos, 20));
            }
            other => panic!("expected disk read, got {other:?}"),
        }
        assert!(matches!(l.next_read(), ReadStep::Ready(_)));
        let meta = l.meta_snapshot();
        assert_eq!((meta.read, meta.write), (Pos::new(0, 20), Pos::new(0, 20)));
        assert!(meta.counts.is_empty());
    }

    #[test]
    fn bad_write_segment_moves_the_writer_on() {
        let mut l = Ledger::default();
        let s = put(&mut l, &[1; 12]);
        put(&mut l, &[2; 12]);
        l.handle_flushed(s + 1, Pos::new(0, 40));
        let ReadStep::Disk { generation, .. } = l.next_read() else {
            panic!("expected disk read")
        };
        assert_eq!(l.handle_bad_segment(generation, 0, true), 2);
        assert_eq!((l.read, l.write), (Pos::new(1, 0), Pos::new(1, 0)));
        assert_eq!(
            (l.corrupt_records, l.quarantined_files, l.depth()),
            (2, 1, 0)
        );
        put(&mut l, &[3; 12]);
        assert!(matches!(l.next_read(), ReadStep::Ready(b) if b[0] == 3));
    }

    #[test]
    fn finishing_a_file_skips_numbers_that_never_held_a_segment() {
        const FAR: u64 = 1 << 60;
        let ends = BTreeMap::from([(0, 20), (7, 20)]);
        let counts = BTreeMap::from([(0, 1), (7, 1), (FAR, 1)]);
        let mut l = Ledger::recovered(Pos::new(0, 0), Pos::new(FAR, 20), counts, ends);
        for file in [0, 7, FAR] {
            let ReadStep::Disk {
                pos, generation, ..
            } = l.next_read()
            else {
                panic!("expected a disk read in segment {file}")
            };
            assert_eq!(pos, Pos::new(file, 0));
            assert!(l.handle_disk_record(generation, pos, 20));
        }
        assert!(matches!(l.next_read(), ReadStep::Empty));
        assert_eq!(l.take_cleanup().delete, vec![0, 7]);
        // Jumping or emptying owes only the known segments too.
        l.handle_empty();
        assert_eq!(l.take_cleanup().delete, vec![FAR]);
        assert_eq!(l.write, Pos::new(FAR + 1, 0));
    }

    #[test]
    fn a_bad_segment_skips_to_the_next_known_one() {
        const FAR: u64 = 1 << 60;
        let ends = BTreeMap::from([(3, 40)]);
        let counts = BTreeMap::from([(3, 2), (FAR, 1)]);
        let mut l = Ledger::recovered(Pos::new(3, 0), Pos::new(FAR, 20), counts, ends);
        let ReadStep::Disk { generation, .. } = l.next_read() else {
            panic!("expected a disk read")
        };
        assert_eq!(l.handle_bad_segment(generation, 3, true), 2);
        assert_eq!(l.read, Pos::new(FAR, 0));
        assert_eq!(l.depth(), 1);
    }

    #[test]
    fn empty_restarts_in_a_fresh_file() {
        let mut l = Ledger::default();
        put(&mut l, &[1; 30]);
        put(&mut l, &[1; 30]);
        l.handle_empty();
        assert_eq!(
            (l.read, l.write, l.depth()),
            (Pos::new(2, 0), Pos::new(2, 0), 0)
        );
        assert_eq!(l.take_cleanup().delete, vec![0, 1]);
        assert!(matches!(l.next_read(), ReadStep::Empty));
    }
}
