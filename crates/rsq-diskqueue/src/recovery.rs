//! Opening a queue's files after a clean stop or a crash.
//!
//! With valid metadata, only the tail written after the last metadata sync is
//! scanned: whole records there are kept (their puts may have been synced),
//! a torn last record is cut off. With missing or damaged metadata every
//! segment is scanned. A segment with a bad record before its end is moved
//! aside as `.bad`. Every decision is logged; nothing here panics or loops
//! without moving to a later file. Work is proportional to the segments that
//! exist (and those metadata names), never to the numbers between them: a
//! stray `…999999999999.dat` costs one scan, not a walk over the gap.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use tracing::{error, info, warn};

use crate::ledger::{Ledger, Pos};
use crate::metadata::Metadata;
use crate::record::{decode, Decoded};
use crate::storage::Storage;

const SCAN_CHUNK: usize = 1 << 20;

/// Highest segment number the queue uses. Larger numbers (a stray file, a
/// damaged metadata field) are ignored, so `file + 1` never overflows and a
/// new segment name is always free.
pub(crate) const MAX_SEGMENT: u64 = u64::MAX >> 1;

/// How a queue's files are named: `<name>.diskqueue.NNNNNN.dat` for
/// segments, `<name>.diskqueue.meta.dat` for metadata, `.bad` appended to a
/// quarantined segment.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
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

/// Record size limits used to tell records from damage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub min: usize,
    pub max: usize,
}

/// Why a scan stopped before the end of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The last record is cut short.
    Torn,
    /// A record's length or checksum is wrong.
    Corrupt,
}

#[derive(Debug)]
struct Scan {
    /// End of the last whole record.
    end: u64,
    /// Whole records from the scan start to `end`.
    records: u64,
    /// File length.
    size: u64,
    stop: Option<Stop>,
}

/// Reads a segment from `from` and counts whole records.
fn scan(storage: &dyn Storage, name: &str, from: u64, limits: Limits) -> io::Result<Scan> {
    let size = storage.len(name)?.unwrap_or(0);
    let mut buf = Vec::new();
    let mut buf_start = from;
    let mut at = from;
    let mut records = 0;
    loop {
        let skip = (at - buf_start) as usize;
        let needed = match decode(&buf[skip..], limits.min, limits.max) {
            Decoded::Record { total } => {
                at += total as u64;
                records += 1;
                continue;
            }
            Decoded::Corrupt(_) => {
                let stop = Some(Stop::Corrupt);
                return Ok(Scan {
                    end: at,
                    records,
                    size,
                    stop,
                });
            }
            Decoded::Incomplete { needed } => needed,
        };
        if at == size {
            return Ok(Scan {
                end: at,
                records,
                size,
                stop: None,
            });
        }
        if at + needed as u64 > size {
            let stop = Some(Stop::Torn);
            return Ok(Scan {
                end: at,
                records,
                size,
                stop,
            });
        }
        let want = needed.max(SCAN_CHUNK).min((size - at) as usize);
        buf.resize(want, 0);
        let n = storage.read_at(name, at, &mut buf)?;
        buf.truncate(n);
        buf_start = at;
        if n < needed {
            // The file shrank under us; treat the rest as torn.
            let stop = Some(Stop::Torn);
            return Ok(Scan {
                end: at,
                records,
                size,
                stop,
            });
        }
    }
}

/// Outcome of opening: the ledger plus what recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub ledger: Ledger,
}

/// Reads metadata and segments and builds the ledger, repairing files as it
/// goes (truncating torn tails, quarantining bad segments, removing segments
/// already read).
pub(crate) fn recover(
    storage: &dyn Storage,
    names: &Names,
    limits: Limits,
) -> io::Result<Recovered> {
    let mut files = BTreeSet::new();
    let mut stray = 0;
    for name in storage.list()? {
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
    let meta_name = names.meta();
    let meta = match storage.len(&meta_name)? {
        None => None,
        Some(len) => {
            let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
            let n = storage.read_at(&meta_name, 0, &mut bytes)?;
            bytes.truncate(n);
            Some(Metadata::decode(&bytes))
        }
    };
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
    ledger.quarantined_files += stray;
    Ok(Recovered { ledger })
}

fn check(meta: &Metadata) -> Result<(), String> {
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

fn from_metadata(
    storage: &dyn Storage,
    names: &Names,
    limits: Limits,
    files: &BTreeSet<u64>,
    meta: Metadata,
) -> io::Result<Ledger> {
    let queue = &names.prefix;
    let mut counts = meta.counts;
    let mut ends = BTreeMap::new();
    let mut corrupt = 0;
    let mut read = meta.read;
    let mut write = meta.write;
    // Segments before the read position were fully read; their removal was
    // owed when the process stopped.
    for &file in files.range(..read.file) {
        storage.remove(&names.segment(file))?;
    }
    // The segments metadata covers: those that exist, those it counts
    // records in, and the read and write files. Numbers in between that
    // never held a segment get no entry, so a gap between segment numbers
    // costs nothing.
    let mut covered: BTreeSet<u64> = files.range(read.file..=write.file).copied().collect();
    covered.extend(counts.keys().copied());
    covered.extend([read.file, write.file]);
    for file in covered {
        let name = names.segment(file);
        let is_write_file = file == write.file;
        let size = storage.len(&name)?;
        if file == read.file {
            if let Some(size) = size.filter(|&size| size < read.offset) {
                // Cut below the read position: read from its end, so reading
                // never starts past the data (nor past the write position).
                error!(queue = %queue, file, size, offset = read.offset, "segment is shorter than the read position; reading from its end");
                read.offset = size;
            }
        }
        let start = if file == read.file { read.offset } else { 0 };
        let expected = if is_write_file { write.offset } else { start };
        match size {
            Some(size) if size >= expected => {
                if !is_write_file {
                    ends.insert(file, size);
                }
            }
            None if expected == 0 && !counts.contains_key(&file) => {
                // Nothing was ever written there (a fresh write file, or a
                // segment skipped by an earlier quarantine).
                if !is_write_file {
                    ends.insert(file, 0);
                }
            }
            _ => {
                // The segment is gone or shorter than metadata says: rescan
                // what is left of it. `start` is within the file (the read
                // offset was clamped above), so everything derived from the
                // scan is too.
                let (found, usable) = match size {
                    None => (0, start),
                    Some(_) => {
                        let scanned = scan(storage, &name, start, limits)?;
                        (scanned.records, scanned.end)
                    }
                };
                let lost = counts
                    .get(&file)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(found);
                if lost > 0 || size.is_none() && file == read.file && read.offset > 0 {
                    error!(queue = %queue, file, lost, "segment missing or shorter than metadata says; its records are lost");
                }
                corrupt += lost;
                if found > 0 {
                    counts.insert(file, found);
                } else {
                    counts.remove(&file);
                }
                if let Some(size) = size {
                    if size > usable {
                        storage.truncate(&name, usable)?;
                    }
                }
                if is_write_file {
                    write.offset = usable;
                    if size.is_none() {
                        // Never recreate a file name at a non-zero offset.
                        ends.insert(file, usable);
                        write = Pos::new(file + 1, 0);
                    }
                } else {
                    ends.insert(file, usable);
                }
            }
        }
    }
    // The tail: records written after the last metadata sync, in the write
    // file past the recorded position and in any later segments.
    let tail_files: Vec<u64> = std::iter::once(write.file)
        .chain(files.range(write.file + 1..).copied())
        .collect();
    for (i, &file) in tail_files.iter().enumerate() {
        let name = names.segment(file);
        if storage.len(&name)?.is_none() {
            continue;
        }
        if file != write.file {
            // Numbers between the two files never held a segment: no entry.
            ends.insert(write.file, write.offset);
            write = Pos::new(file, 0);
        }
        let found = scan(storage, &name, write.offset, limits)?;
        if found.records > 0 {
            info!(queue = %queue, file, records = found.records, "recovered records written after the last metadata sync");
            *counts.entry(file).or_default() += found.records;
        }
        if found.end < found.size {
            let is_last = i + 1 == tail_files.len();
            if is_last {
                warn!(queue = %queue, file, bytes = found.size - found.end, "truncating a torn tail after a crash");
            } else {
                error!(queue = %queue, file, bytes = found.size - found.end, "segment has damage before the next segment; truncating it");
            }
            storage.truncate(&name, found.end)?;
        }
        write.offset = found.end;
    }
    let mut ledger = Ledger::recovered(read, write, counts, ends);
    ledger.corrupt_records = corrupt;
    Ok(ledger)
}

fn full_scan(
    storage: &dyn Storage,
    names: &Names,
    limits: Limits,
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
        if found.records > 0 {
            counts.insert(file, found.records);
        }
        match found.stop {
            None => {}
            Some(_) if file == last => {
                warn!(queue = %queue, file, bytes = found.size - found.end, "truncating a torn tail");
                storage.truncate(&name, found.end)?;
            }
            Some(stop) => {
                let dropped = found.records + 1;
                error!(queue = %queue, file, at = found.end, ?stop, dropped, "damaged segment moved aside as .bad");
                storage.rename(&name, &names.bad(file))?;
                counts.remove(&file);
                corrupt += dropped;
                quarantined += 1;
                ends.insert(file, 0);
                continue;
            }
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
