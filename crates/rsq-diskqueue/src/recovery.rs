//! Opening a queue's files after a clean stop or a crash.
//!
//! With valid metadata, only the tail written after the last metadata sync is
//! scanned: whole records there are kept (their puts may have been synced).
//! Metadata that points past a segment's end is corrected and written back
//! before the queue opens, so later writes never sit behind stale
//! positions. With missing or damaged metadata every segment is scanned. Metadata in
//! go-diskqueue's format is taken over first (`go_format`).
//!
//! **Recovery never destroys data it cannot read.** Bytes after the last
//! whole record of a segment are cut off only when they are zeros (written
//! ahead by a durable queue) or one torn record: a segment that already
//! holds a whole record, followed by no more non-zero bytes than the largest
//! record the writer could have left half-written. Anything else that does
//! not parse (a segment whose first record does not parse, unreadable bytes
//! longer than one record, a foreign format) moves the whole segment aside
//! as `.bad`, logged at error level and counted in `BackendStats`. The only
//! segments removed are those metadata says were fully read.
//!
//! Every decision is logged; nothing here panics or loops without moving to
//! a later file. Work is proportional to the segments that exist (and those
//! metadata names), never to the numbers between them: a stray
//! `…999999999999.dat` costs one scan, not a walk over the gap.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use tracing::{error, info, warn};

use crate::go_format;
use crate::ledger::{Ledger, Pos};
use crate::metadata::QueueMeta;
use crate::record::{Decoded, HEADER_LEN, decode};
use crate::storage::Storage;

/// Bytes recovery reads from a segment at once.
const SCAN_CHUNK: usize = 1 << 20;

// A scan's read always holds a whole header.
const _: () = assert!(SCAN_CHUNK >= HEADER_LEN);

/// Highest segment number accepted at open. Larger numbers (a stray file, a
/// damaged metadata field) are moved aside or ignored, leaving 2^32 numbers
/// of headroom above any accepted segment: a queue (or a takeover, which
/// numbers its output above every existing segment) can roll that many
/// times and still never reach a number the next open would reject, and
/// `file + 1` never overflows.
pub(crate) const MAX_SEGMENT: u64 = (u64::MAX >> 1) - (1 << 32);

// 2^32 rolls from the highest accepted segment stay below the top bit, so
// `file + 1` cannot overflow anywhere a segment number is computed.
const _: () = assert!(MAX_SEGMENT + (1 << 32) < u64::MAX);

/// How a queue's files are named: `<name>.diskqueue.NNNNNN.dat` for
/// segments, `<name>.diskqueue.meta.dat` for metadata, `.bad` appended to a
/// quarantined segment.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub prefix: String,
}

impl Names {
    pub fn new(queue: &str) -> Self {
        Names {
            prefix: format!("{queue}.diskqueue."),
        }
    }

    pub fn segment(&self, file: u64) -> String {
        format!("{}{file:06}.dat", self.prefix)
    }

    pub fn meta(&self) -> String {
        format!("{}meta.dat", self.prefix)
    }

    pub fn bad(&self, file: u64) -> String {
        format!("{}.bad", self.segment(file))
    }

    /// The segment number if `name` is one of this queue's segments.
    pub fn parse_segment(&self, name: &str) -> Option<u64> {
        let digits = name.strip_prefix(&self.prefix)?.strip_suffix(".dat")?;
        if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// The payload sizes a queue accepts (its config's `min_record_size..=
/// max_record_size`): puts outside them are refused, and reading and
/// recovery take a length outside them for damage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordLimits {
    /// Smallest payload, in bytes.
    pub min: usize,
    /// Largest payload, in bytes (at most `u32::MAX`, the length field's
    /// range; `DiskQueueConfig::validate` checks it).
    pub max: usize,
}

#[derive(Debug)]
pub(crate) struct Scan {
    /// End of the last whole record.
    pub end: u64,
    /// Whole records from the scan start to `end`.
    pub records: u64,
    /// File length.
    pub size: u64,
}

/// Reads a segment from `from` and counts whole records.
fn scan(storage: &dyn Storage, name: &str, from: u64, limits: RecordLimits) -> io::Result<Scan> {
    scan_records(storage, name, from, limits, &mut |_| Ok(()))
}

/// Reads a segment from `from` up to the first byte that is not a whole
/// record, giving each record's payload to `visit`.
pub(crate) fn scan_records(
    storage: &dyn Storage,
    name: &str,
    from: u64,
    limits: RecordLimits,
    visit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Scan> {
    let size = storage.len(name)?.unwrap_or(0);
    let mut buf = Vec::new();
    let mut buf_start = from;
    let mut at = from;
    let mut records = 0;
    let stopped = |end, records| Scan { end, records, size };
    loop {
        let skip = (at - buf_start) as usize;
        let needed = match decode(&buf[skip..], limits.min, limits.max) {
            Decoded::Record { total } => {
                visit(&buf[skip + HEADER_LEN..skip + total])?;
                at += total as u64;
                records += 1;
                continue;
            }
            Decoded::Corrupt(_) => return Ok(stopped(at, records)),
            Decoded::Incomplete { needed } => needed,
        };
        if at == size || at + needed as u64 > size {
            return Ok(stopped(at, records));
        }
        let want = needed.max(SCAN_CHUNK).min((size - at) as usize);
        buf.resize(want, 0);
        let n = storage.read_at(name, at, &mut buf)?;
        buf.truncate(n);
        buf_start = at;
        if n < needed {
            // The file shrank under us; the rest is a tail to judge.
            return Ok(stopped(at, records));
        }
    }
}

/// Where the last non-zero byte of `name` at or after `from` ends: `from`
/// when everything there is zeros. Reads backwards from the end, so a tail
/// of garbage answers after one chunk and zeros cost one pass.
pub(crate) fn data_end(storage: &dyn Storage, name: &str, from: u64, size: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; SCAN_CHUNK];
    let mut hi = size;
    while hi > from {
        let lo = hi.saturating_sub(SCAN_CHUNK as u64).max(from);
        let chunk = &mut buf[..(hi - lo) as usize];
        let n = storage.read_at(name, lo, chunk)?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b != 0) {
            return Ok(lo + i as u64 + 1);
        }
        hi = lo;
    }
    Ok(from)
}

/// Whether the bytes of `name` from `end` (the end of its last whole
/// record, `whole` of them before it in the file) to `size` may be cut: they
/// are zeros, or at most one record's worth of non-zero bytes
/// (`max_record` with its header) after at least one whole record.
/// Anything else is not a torn tail, and cutting it could destroy data.
pub(crate) fn is_torn_tail(
    storage: &dyn Storage,
    name: &str,
    end: u64,
    size: u64,
    whole: bool,
    max_record: u64,
) -> io::Result<bool> {
    let data = data_end(storage, name, end, size)?;
    Ok(data == end || whole && data - end <= max_record)
}

/// What recovery does with a segment a scan could not read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The rest is zeros or one torn record: cut it off at the scan's end.
    Cut,
    /// The rest is damage or a foreign format: move the segment aside whole.
    Quarantine,
}

/// Decides what to do with the bytes after `found.end`, where a scan that
/// started at `from` stopped. A cut is allowed only at the end of the chain
/// of whole records from the file's start, so a scan started at a wrong
/// offset (metadata that does not match the file) never cuts into records.
fn judge(
    storage: &dyn Storage,
    name: &str,
    from: u64,
    found: &Scan,
    limits: RecordLimits,
) -> io::Result<Verdict> {
    let chain_end = if from == 0 {
        found.end
    } else {
        scan(storage, name, 0, limits)?.end
    };
    let max_record = (HEADER_LEN + limits.max) as u64;
    let torn = chain_end == found.end
        && is_torn_tail(
            storage,
            name,
            found.end,
            found.size,
            found.end > 0,
            max_record,
        )?;
    Ok(if torn {
        Verdict::Cut
    } else {
        Verdict::Quarantine
    })
}

/// Moves a segment aside whole as `.bad`.
fn quarantine(storage: &dyn Storage, names: &Names, file: u64, why: &str) -> io::Result<()> {
    let bad = names.bad(file);
    error!(queue = %names.prefix, file = %bad, why, "unreadable segment moved aside whole; its records are not served");
    storage.rename(&names.segment(file), &bad)
}

/// Outcome of opening: the ledger plus what recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub ledger: Ledger,
    /// The files already say what recovery decided (nothing was there, or
    /// the metadata file holds the recovered state and nothing waits to be
    /// removed): opening need not write. So reopening thousands of cleanly
    /// closed queues costs no fsync.
    pub persisted: bool,
}

/// Reads metadata and segments and builds the ledger, repairing files as it
/// goes (cutting torn tails, quarantining unreadable segments, removing
/// segments already read), after taking over go-diskqueue's files if the
/// metadata is Go nsqd's.
pub(crate) fn recover(
    storage: &dyn Storage,
    names: &Names,
    limits: RecordLimits,
    max_bytes_per_file: u64,
) -> io::Result<Recovered> {
    let taken = go_format::take_over(storage, names, limits, max_bytes_per_file)?;
    let mut files = BTreeSet::new();
    let mut stray = 0;
    for name in storage.list_prefix(&names.prefix)? {
        match names.parse_segment(&name) {
            Some(file) if file <= MAX_SEGMENT => {
                files.insert(file);
            }
            Some(_) => {
                // No queue numbers its segments this high: not ours to read.
                error!(queue = %names.prefix, file = %name, "segment number out of range; moved aside as .bad");
                storage.rename(&name, &format!("{name}.bad"))?;
                stray += 1;
            }
            None => {}
        }
    }
    let meta_bytes = read_meta(storage, names)?;
    let meta = meta_bytes.as_deref().map(QueueMeta::decode);
    let ledger = match meta {
        None if files.is_empty() => Ledger::default(),
        None => {
            warn!(queue = %names.prefix, "no metadata file; recovering by scanning every segment");
            full_scan(storage, names, limits, &files)?
        }
        Some(Err(why)) => {
            error!(queue = %names.prefix, %why, "metadata file is damaged; recovering by scanning every segment (records already read may be delivered again)");
            full_scan(storage, names, limits, &files)?
        }
        Some(Ok(meta)) => match check(&meta) {
            Ok(()) => from_metadata(storage, names, limits, &files, meta)?,
            Err(why) => {
                error!(queue = %names.prefix, %why, "metadata is inconsistent; recovering by scanning every segment");
                full_scan(storage, names, limits, &files)?
            }
        },
    };
    let mut ledger = ledger;
    ledger.quarantined_files += stray + taken.quarantined;
    if meta_bytes.as_deref() == Some(&ledger.meta_snapshot().encode()[..]) {
        ledger.meta_dirty = false;
    }
    let persisted = !ledger.needs_sync();
    Ok(Recovered { ledger, persisted })
}

/// The metadata file's bytes, if it exists.
pub(crate) fn read_meta(storage: &dyn Storage, names: &Names) -> io::Result<Option<Vec<u8>>> {
    let meta_name = names.meta();
    let Some(len) = storage.len(&meta_name)? else {
        return Ok(None);
    };
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
    let n = storage.read_at(&meta_name, 0, &mut bytes)?;
    bytes.truncate(n);
    Ok(Some(bytes))
}

/// Whether metadata that decoded is consistent enough to trust.
pub(crate) fn check(meta: &QueueMeta) -> Result<(), String> {
    if meta.read > meta.write {
        return Err(format!(
            "read {:?} is past write {:?}",
            meta.read, meta.write
        ));
    }
    if meta.write.file > MAX_SEGMENT {
        return Err(format!("segment number {} out of range", meta.write.file));
    }
    if meta
        .counts
        .keys()
        .any(|&f| f < meta.read.file || f > meta.write.file)
    {
        return Err("counts for segments outside read..=write".into());
    }
    Ok(())
}

/// Builds the ledger from valid metadata: removes segments already read,
/// checks every segment the metadata covers against it (rescanning one that
/// is gone or shorter than it says), then scans the tail written after the
/// metadata was.
fn from_metadata(
    storage: &dyn Storage,
    names: &Names,
    limits: RecordLimits,
    files: &BTreeSet<u64>,
    meta: QueueMeta,
) -> io::Result<Ledger> {
    let mut rebuild = Rebuild {
        storage,
        names,
        limits,
        read: meta.read,
        write: meta.write,
        counts: meta.counts,
        ends: BTreeMap::new(),
        corrupt: 0,
        quarantined: 0,
        corrected: false,
    };
    // Segments before the read position were fully read; their removal was
    // owed when the process stopped.
    for &file in files.range(..rebuild.read.file) {
        storage.remove(&names.segment(file))?;
    }
    // The segments metadata covers: those that exist, those it counts
    // records in, and the read and write files. Numbers in between that
    // never held a segment get no entry, so a gap between segment numbers
    // costs nothing.
    let (read_file, write_file) = (rebuild.read.file, rebuild.write.file);
    let mut covered: BTreeSet<u64> = files.range(read_file..=write_file).copied().collect();
    covered.extend(rebuild.counts.keys().copied());
    covered.extend([read_file, write_file]);
    for file in covered {
        rebuild.check_covered(file)?;
    }
    // The tail: records written after the last metadata sync, in the write
    // file past the recorded position and in any later segments.
    let tail_files: Vec<u64> = std::iter::once(rebuild.write.file)
        .chain(files.range(rebuild.write.file + 1..).copied())
        .collect();
    for file in tail_files {
        rebuild.scan_tail(file)?;
    }
    let corrected = rebuild.corrected;
    let mut ledger = Ledger::recovered(rebuild.read, rebuild.write, rebuild.counts, rebuild.ends);
    ledger.corrupt_records = rebuild.corrupt;
    ledger.quarantined_files = rebuild.quarantined;
    if corrected {
        // Metadata pointed past a segment's end. Its corrected positions
        // are written before anything else is: new records will go where
        // the old metadata says data already was, and once the segment
        // grows past that again (a durable queue writes zeros ahead) the
        // stale positions would be believed and those records skipped.
        storage.write_atomic(&names.meta(), &ledger.meta_snapshot().encode())?;
    }
    Ok(ledger)
}

/// The ledger's parts while [`from_metadata`] rebuilds them.
struct Rebuild<'a> {
    storage: &'a dyn Storage,
    names: &'a Names,
    limits: RecordLimits,
    read: Pos,
    write: Pos,
    counts: BTreeMap<u64, u64>,
    ends: BTreeMap<u64, u64>,
    /// Records metadata counted that are gone.
    corrupt: u64,
    /// Segments moved aside.
    quarantined: u64,
    /// A position metadata claimed was past a segment's end and was moved
    /// back: the metadata file must be rewritten.
    corrected: bool,
}

impl Rebuild<'_> {
    /// Checks a segment metadata covers: kept as it is when it is as long
    /// as metadata says, else rescanned.
    fn check_covered(&mut self, file: u64) -> io::Result<()> {
        let name = self.names.segment(file);
        let is_write_file = file == self.write.file;
        let size = self.storage.len(&name)?;
        if file == self.read.file
            && let Some(size) = size.filter(|&size| size < self.read.offset)
        {
            // Cut below the read position: read from its end, so reading
            // never starts past the data (nor past the write position).
            error!(queue = %self.names.prefix, file, size, offset = self.read.offset, "segment is shorter than the read position; reading from its end");
            self.read.offset = size;
            self.corrected = true;
        }
        let start = if file == self.read.file {
            self.read.offset
        } else {
            0
        };
        let expected = if is_write_file {
            self.write.offset
        } else {
            start
        };
        match size {
            Some(size) if size >= expected => {
                if !is_write_file {
                    self.ends.insert(file, size);
                }
            }
            None if expected == 0 && !self.counts.contains_key(&file) => {
                // Nothing was ever written there (a fresh write file, or a
                // segment skipped by an earlier quarantine).
                if !is_write_file {
                    self.ends.insert(file, 0);
                }
            }
            _ => self.rescan_short(file, &name, size, start, is_write_file)?,
        }
        Ok(())
    }

    /// A segment that is gone or shorter than metadata says: rescans what
    /// is left of it from `start`, which is within the file (the read
    /// offset was clamped), so everything derived from the scan is too.
    fn rescan_short(
        &mut self,
        file: u64,
        name: &str,
        size: Option<u64>,
        start: u64,
        is_write_file: bool,
    ) -> io::Result<()> {
        self.corrected = true;
        let counted = self.counts.remove(&file).unwrap_or(0);
        let (found, usable) = match size {
            None => (0, Some(start)),
            Some(_) => self.rescan(file, name, start)?,
        };
        let lost = counted.saturating_sub(found);
        if lost > 0 || size.is_none() && file == self.read.file && self.read.offset > 0 {
            error!(queue = %self.names.prefix, file, lost, "segment missing or shorter than metadata says; its records are lost");
        }
        self.corrupt += lost;
        if found > 0 {
            self.counts.insert(file, found);
        }
        match usable {
            // Never recreate a file name at a non-zero offset, nor
            // write after a quarantined one.
            Some(end) if is_write_file && size.is_some() => self.write.offset = end,
            Some(end) if !is_write_file => {
                self.ends.insert(file, end);
            }
            end => {
                self.ends.insert(file, end.unwrap_or(0));
                if is_write_file {
                    self.write = Pos::new(file + 1, 0);
                }
            }
        }
        Ok(())
    }

    /// Scans an existing short segment from `start`: the whole records
    /// found and where they end, with a torn tail cut; `(0, None)` when the
    /// segment had to be moved aside.
    fn rescan(&mut self, file: u64, name: &str, start: u64) -> io::Result<(u64, Option<u64>)> {
        let scanned = scan(self.storage, name, start, self.limits)?;
        if scanned.end == scanned.size {
            return Ok((scanned.records, Some(scanned.end)));
        }
        if judge(self.storage, name, start, &scanned, self.limits)? == Verdict::Cut {
            self.storage.truncate(name, scanned.end)?;
            return Ok((scanned.records, Some(scanned.end)));
        }
        quarantine(
            self.storage,
            self.names,
            file,
            "damage in a segment shorter than metadata says",
        )?;
        self.quarantined += 1;
        Ok((0, None))
    }

    /// Scans a tail segment (the write file past the recorded position, or
    /// a later one) for records written after the last metadata sync.
    fn scan_tail(&mut self, file: u64) -> io::Result<()> {
        let queue = &self.names.prefix;
        let name = self.names.segment(file);
        if self.storage.len(&name)?.is_none() {
            return Ok(());
        }
        if file != self.write.file {
            // Numbers between the two files never held a segment: no entry.
            self.ends.insert(self.write.file, self.write.offset);
            self.write = Pos::new(file, 0);
        }
        let found = scan(self.storage, &name, self.write.offset, self.limits)?;
        if found.end < found.size {
            let verdict = judge(self.storage, &name, self.write.offset, &found, self.limits)?;
            if verdict == Verdict::Quarantine {
                quarantine(
                    self.storage,
                    self.names,
                    file,
                    "unreadable bytes after the last metadata sync",
                )?;
                let moved = self.counts.remove(&file).unwrap_or(0) + found.records;
                self.corrupt += moved;
                self.quarantined += 1;
                self.ends.insert(file, 0);
                self.write = Pos::new(file + 1, 0);
                return Ok(());
            }
            warn!(queue = %queue, file, bytes = found.size - found.end, "cutting a torn tail after a crash");
            self.storage.truncate(&name, found.end)?;
        }
        if found.records > 0 {
            info!(queue = %queue, file, records = found.records, "recovered records written after the last metadata sync");
            *self.counts.entry(file).or_default() += found.records;
        }
        self.write.offset = found.end;
        Ok(())
    }
}

fn full_scan(
    storage: &dyn Storage,
    names: &Names,
    limits: RecordLimits,
    files: &BTreeSet<u64>,
) -> io::Result<Ledger> {
    let queue = &names.prefix;
    let (Some(&first), Some(&last)) = (files.first(), files.last()) else {
        return Ok(Ledger::default());
    };
    let mut counts = BTreeMap::new();
    let mut ends = BTreeMap::new();
    let mut corrupt = 0;
    let mut quarantined = 0;
    let mut write = Pos::new(first, 0);
    // Only the segments that exist: numbers between them get no entry.
    for &file in files {
        let name = names.segment(file);
        let found = scan(storage, &name, 0, limits)?;
        if found.end < found.size {
            if judge(storage, &name, 0, &found, limits)? == Verdict::Quarantine {
                quarantine(storage, names, file, "unreadable bytes in a segment")?;
                corrupt += found.records;
                quarantined += 1;
                ends.insert(file, 0);
                if file == last {
                    write = Pos::new(file + 1, 0);
                }
                continue;
            }
            warn!(queue = %queue, file, bytes = found.size - found.end, "cutting a torn tail");
            storage.truncate(&name, found.end)?;
        }
        if found.records > 0 {
            counts.insert(file, found.records);
        }
        if file == last {
            write = Pos::new(file, found.end);
        } else {
            ends.insert(file, found.end);
        }
    }
    let mut ledger = Ledger::recovered(Pos::new(first, 0), write, counts, ends);
    ledger.corrupt_records = corrupt;
    ledger.quarantined_files = quarantined;
    ledger.meta_dirty = true;
    Ok(ledger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let names = Names::new("topic:chan");
        assert_eq!(names.segment(7), "topic:chan.diskqueue.000007.dat");
        assert_eq!(names.meta(), "topic:chan.diskqueue.meta.dat");
        assert_eq!(
            names.parse_segment(&names.segment(1_234_567)),
            Some(1_234_567)
        );
        assert_eq!(names.parse_segment(&names.meta()), None);
        assert_eq!(names.parse_segment(&names.bad(3)), None);
        assert_eq!(Names::new("topic").parse_segment(&names.segment(1)), None);
    }
}
