//! go-diskqueue v1.1.0's files, as Go nsqd writes them: taking a queue over
//! from Go nsqd at open ([`take_over`]), and handing it back
//! ([`downgrade`]).
//!
//! Go's segments share rsq's names (`<name>.diskqueue.NNNNNN.dat`) but hold
//! `[u32 BE size][payload]` records with no checksum, and its metadata is
//! the text `depth\nreadFileNum,readPos\nwriteFileNum,writePos\n`. Which
//! format a queue is in is decided by its metadata file alone, and a
//! conversion switches that file in one atomic replacement:
//!
//! 1. the converted records are written to fresh segment numbers, above
//!    every existing one, under a staging suffix (`.takeover` or
//!    `.downgrade`) that neither reader takes for a segment, and fsynced;
//!    a source segment with bytes the conversion could not read is first
//!    copied whole to `.bad`;
//! 2. the metadata file is replaced by the new format's, pointing at the new
//!    numbers: this is the commit;
//! 3. the staged files are renamed to their segment names and the old
//!    segments (all below the new read position) removed.
//!
//! A crash before step 2 leaves the old format whole, and its staged files
//! are removed at the next open; after it, the next open (or downgrade)
//! finishes step 3 ([`settle_staged`]). So a kill at any moment leaves the
//! old files or the converted ones, never neither, and never both served.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{error, info, warn};

use crate::ledger::Pos;
use crate::metadata::QueueMeta;
use crate::record;
use crate::recovery::{self, MAX_SEGMENT, Names, RecordLimits, is_torn_tail, read_meta};
use crate::storage::{FsStorage, Storage};
use crate::{DiskQueueConfig, QueueError};

/// Suffix of rsq segments a takeover is writing.
const TAKEOVER: &str = ".takeover";
/// Suffix of Go segments a downgrade is writing.
const DOWNGRADE: &str = ".downgrade";
/// Go's record header: the payload size.
const GO_HEADER_LEN: usize = 4;
/// Staged output is appended in writes of about this size.
const STAGE_WRITE_BYTES: usize = 1 << 20;
/// Names tried for a `.bad` copy before giving up (an existing `.bad` with
/// other content is never overwritten).
const MAX_BAD_NAMES: u32 = 100;

/// go-diskqueue's metadata file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GoMeta {
    /// Unread records, as Go counted them.
    pub depth: i64,
    /// Next record to read.
    pub read: Pos,
    /// Where the next record will be written.
    pub write: Pos,
}

impl GoMeta {
    /// Parses `depth\nreadFileNum,readPos\nwriteFileNum,writePos\n`.
    pub fn decode(bytes: &[u8]) -> Option<GoMeta> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.strip_suffix('\n')?.split('\n');
        let depth = lines.next()?.trim().parse().ok()?;
        let mut pos = || -> Option<Pos> {
            let (file, offset) = lines.next()?.split_once(',')?;
            Some(Pos::new(
                file.trim().parse().ok()?,
                offset.trim().parse().ok()?,
            ))
        };
        let (read, write) = (pos()?, pos()?);
        if lines.next().is_some() || read > write || write.file > MAX_SEGMENT {
            return None;
        }
        Some(GoMeta { depth, read, write })
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{}\n{},{}\n{},{}\n",
            self.depth, self.read.file, self.read.offset, self.write.file, self.write.offset
        )
        .into_bytes()
    }
}

/// The format a queue's metadata file is in.
#[derive(Debug)]
enum Format {
    /// rsq's own (it decodes, CRC line and all).
    Rsq,
    /// go-diskqueue's.
    Go(GoMeta),
}

fn format(storage: &dyn Storage, names: &Names) -> io::Result<Option<Format>> {
    let Some(bytes) = read_meta(storage, names)? else {
        return Ok(None);
    };
    if QueueMeta::decode(&bytes).is_ok() {
        return Ok(Some(Format::Rsq));
    }
    Ok(GoMeta::decode(&bytes).map(Format::Go))
}

/// Finishes a committed conversion and removes an uncommitted one's staged
/// files, as the metadata's format says; with Go's metadata, also removes
/// the segments Go has fully read. Nothing is done for damaged metadata.
fn settle_staged(storage: &dyn Storage, names: &Names, format: &Format) -> io::Result<()> {
    let (finish, undo) = match format {
        Format::Rsq => (TAKEOVER, DOWNGRADE),
        Format::Go(_) => (DOWNGRADE, TAKEOVER),
    };
    for name in storage.list_prefix(&names.prefix)? {
        if let Some(segment) = staged_segment(names, &name, finish) {
            storage.rename(&name, segment)?;
        } else if staged_segment(names, &name, undo).is_some() {
            // A copy of records the current format still holds.
            storage.remove(&name)?;
        } else if let (Format::Go(meta), Some(file)) = (format, names.parse_segment(&name))
            && file < meta.read.file
        {
            storage.remove(&name)?;
        }
    }
    Ok(())
}

/// The segment name `name` stages, if it is one of this queue's staged
/// files with `suffix`.
fn staged_segment<'a>(names: &Names, name: &'a str, suffix: &str) -> Option<&'a str> {
    let segment = name.strip_suffix(suffix)?;
    names.parse_segment(segment).map(|_| segment)
}

/// Segment numbers present, in order.
fn segments(storage: &dyn Storage, names: &Names) -> io::Result<BTreeSet<u64>> {
    Ok(storage
        .list_prefix(&names.prefix)?
        .iter()
        .filter_map(|name| names.parse_segment(name))
        .filter(|&file| file <= MAX_SEGMENT)
        .collect())
}

/// The segment number a conversion's output starts at: above every
/// existing segment and the write file, or `None` if that is past what the
/// next open accepts.
fn first_free(files: &BTreeSet<u64>, write_file: u64) -> Option<u64> {
    let first = files.last().copied().unwrap_or(0).max(write_file) + 1;
    (first <= MAX_SEGMENT).then_some(first)
}

/// Where staged records go: numbered segments under a staging suffix,
/// rolled as both writers roll (before a record that would take a non-empty
/// file past the bound).
struct Stage<'a> {
    storage: &'a dyn Storage,
    names: &'a Names,
    suffix: &'static str,
    max_bytes_per_file: u64,
    first: u64,
    file: u64,
    size: u64,
    buf: Vec<u8>,
    counts: BTreeMap<u64, u64>,
    records: u64,
}

impl<'a> Stage<'a> {
    fn new(
        storage: &'a dyn Storage,
        names: &'a Names,
        suffix: &'static str,
        max_bytes_per_file: u64,
        first: u64,
    ) -> Self {
        Stage {
            storage,
            names,
            suffix,
            max_bytes_per_file,
            first,
            file: first,
            size: 0,
            buf: Vec::new(),
            counts: BTreeMap::new(),
            records: 0,
        }
    }

    fn name(&self, file: u64) -> String {
        format!("{}{}", self.names.segment(file), self.suffix)
    }

    fn push(&mut self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        let len = (header.len() + payload.len()) as u64;
        if self.size > 0 && self.size + len > self.max_bytes_per_file {
            self.finish_file()?;
            self.file += 1;
            self.size = 0;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(header);
        self.buf.extend_from_slice(payload);
        if self.suffix == TAKEOVER {
            // An rsq record: decoded back before its first write, as the
            // queue's writer does (Go's records carry no checksum to check).
            record::debug_check_encoded(
                &self.buf[start..],
                payload.len(),
                0,
                record::PAYLOAD_LEN_MAX,
            );
        }
        if self.buf.len() >= STAGE_WRITE_BYTES {
            self.storage.append(&self.name(self.file), &self.buf)?;
            self.buf.clear();
        }
        self.size += len;
        self.records += 1;
        *self.counts.entry(self.file).or_default() += 1;
        Ok(())
    }

    fn finish_file(&mut self) -> io::Result<()> {
        let name = self.name(self.file);
        if !self.buf.is_empty() {
            self.storage.append(&name, &self.buf)?;
            self.buf.clear();
        }
        if self.size > 0 {
            self.storage.sync(&name)?;
        }
        Ok(())
    }

    /// Makes every staged file durable; returns where reading and writing
    /// of the converted queue start.
    fn finish(mut self) -> io::Result<(Pos, Pos, BTreeMap<u64, u64>, u64)> {
        self.finish_file()?;
        let read = Pos::new(self.first, 0);
        let write = Pos::new(self.file, self.size);
        Ok((read, write, self.counts, self.records))
    }
}

/// Copies a segment whole to a `.bad` name that holds nothing else, so the
/// copy survives the source's removal after the commit.
fn copy_aside(storage: &dyn Storage, names: &Names, file: u64, bytes: &[u8]) -> io::Result<()> {
    let base = names.bad(file);
    for k in 0..MAX_BAD_NAMES {
        let name = if k == 0 {
            base.clone()
        } else {
            format!("{base}.{k}")
        };
        match storage.len(&name)? {
            None => {
                storage.write_atomic(&name, bytes)?;
                error!(queue = %names.prefix, file = %name, "Go segment has bytes that are no record; copied aside whole, its readable records are taken over");
                return Ok(());
            }
            Some(len) if len == bytes.len() as u64 => {
                let mut existing = vec![0; bytes.len()];
                storage.read_at(&name, 0, &mut existing)?;
                if existing == bytes {
                    return Ok(());
                }
            }
            Some(_) => {}
        }
    }
    Err(io::Error::other(format!(
        "no free name for a copy of {}",
        names.segment(file)
    )))
}

/// What a takeover did, for the queue's stats.
#[derive(Debug, Default)]
pub(crate) struct TakenOver {
    /// Go segments copied aside as `.bad`.
    pub quarantined: u64,
}

/// If the queue's metadata is go-diskqueue's, converts the queue to rsq's
/// format in place (see the module docs); in any case settles what an
/// interrupted conversion left.
pub(crate) fn take_over(
    storage: &dyn Storage,
    names: &Names,
    limits: RecordLimits,
    max_bytes_per_file: u64,
) -> io::Result<TakenOver> {
    let mut report = TakenOver::default();
    let go = match format(storage, names)? {
        None => return Ok(report),
        Some(Format::Rsq) => {
            settle_staged(storage, names, &Format::Rsq)?;
            return Ok(report);
        }
        Some(Format::Go(go)) => go,
    };
    settle_staged(storage, names, &Format::Go(go))?;
    let files = segments(storage, names)?;
    let Some(first) = first_free(&files, go.write.file) else {
        error!(queue = %names.prefix, "Go segment numbers leave no room to take the queue over; its files are left as they are");
        return Ok(report);
    };
    let mut stage = Stage::new(storage, names, TAKEOVER, max_bytes_per_file, first);
    for &file in files.range(go.read.file..) {
        let name = names.segment(file);
        // A name with extra leading zeros parses as the same number; Go
        // never writes one, so it is left alone.
        let Some(size) = storage.len(&name)? else {
            continue;
        };
        let mut bytes = vec![0; usize::try_from(size).unwrap_or(0)];
        let n = storage.read_at(&name, 0, &mut bytes)?;
        bytes.truncate(n);
        let start = if file == go.read.file {
            usize::try_from(go.read.offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len())
        } else {
            0
        };
        let end = convert_go_segment(&bytes, start, limits, &mut stage)?;
        let max_record = (GO_HEADER_LEN + limits.max) as u64;
        if end < bytes.len()
            && !is_torn_tail(storage, &name, end as u64, n as u64, end > 0, max_record)?
        {
            copy_aside(storage, names, file, &bytes)?;
            report.quarantined += 1;
        }
    }
    let (read, write, counts, records) = stage.finish()?;
    let depth = u64::try_from(go.depth).ok();
    if depth != Some(records) {
        warn!(queue = %names.prefix, go_depth = go.depth, records, "Go's metadata counted a different number of unread records than its segments hold; serving what they hold");
    }
    let meta = QueueMeta {
        read,
        write,
        counts,
    };
    storage.write_atomic(&names.meta(), &meta.encode())?;
    settle_staged(storage, names, &Format::Rsq)?;
    info!(queue = %names.prefix.trim_end_matches(".diskqueue."), records, quarantined = report.quarantined, "took over Go nsqd's disk queue");
    Ok(report)
}

/// Stages every whole Go record of `bytes` from `start`; returns where the
/// last one ends.
fn convert_go_segment(
    bytes: &[u8],
    start: usize,
    limits: RecordLimits,
    stage: &mut Stage<'_>,
) -> io::Result<usize> {
    let mut at = start;
    while let Some(header) = bytes.get(at..at + GO_HEADER_LEN) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len < limits.min || len > limits.max {
            break;
        }
        let body = at + GO_HEADER_LEN;
        let Some(payload) = bytes.get(body..body + len) else {
            break;
        };
        stage.push(&record::header(payload), payload)?;
        at = body + len;
    }
    Ok(at)
}

/// Rewrites the queue `config.name` in `config.data_path` into go-diskqueue
/// v1.1.0's format, so Go nsqd serves its unread records; returns how many.
///
/// `payload` maps each unread record to the message Go nsqd should find
/// (rsqd strips its deferral tag there). The queue must not be open.
/// Records a durable reader had not committed are unread, so they are
/// handed back too. A queue already in Go's format is only settled (a
/// second run after an interrupted one finishes the job); a queue with no
/// files gets none. Crash-safe: an interruption at any point leaves the
/// queue in one format or the other, never neither (see the module docs).
pub fn downgrade(
    config: &DiskQueueConfig,
    payload: &dyn Fn(Bytes) -> Bytes,
) -> Result<u64, QueueError> {
    config.validate()?;
    let storage = FsStorage::new(&config.data_path).map_err(|source| QueueError::Io {
        path: config.data_path.clone(),
        source,
    })?;
    downgrade_with_storage(config, Arc::new(storage), payload)
}

/// Like [`downgrade`] but on any [`Storage`]; tests use
/// [`crate::MemStorage`] to interrupt it at every step.
pub fn downgrade_with_storage(
    config: &DiskQueueConfig,
    storage: Arc<dyn Storage>,
    payload: &dyn Fn(Bytes) -> Bytes,
) -> Result<u64, QueueError> {
    config.validate()?;
    let io_error = |source| QueueError::Io {
        path: storage.dir().to_path_buf(),
        source,
    };
    downgrade_files(config, &*storage, payload).map_err(io_error)
}

fn downgrade_files(
    config: &DiskQueueConfig,
    storage: &dyn Storage,
    payload: &dyn Fn(Bytes) -> Bytes,
) -> io::Result<u64> {
    let names = Names::new(&config.name);
    let limits = RecordLimits {
        min: config.min_record_size,
        max: config.max_record_size,
    };
    match format(storage, &names)? {
        Some(Format::Go(go)) => {
            settle_staged(storage, &names, &Format::Go(go))?;
            return Ok(u64::try_from(go.depth).unwrap_or(0));
        }
        None if segments(storage, &names)?.is_empty() => return Ok(0),
        _ => {}
    }
    // Recovery leaves every segment from the read position whole records
    // to its end (torn tails cut, damage moved aside) and persists nothing
    // a crash here could regret.
    let ledger = recovery::recover(storage, &names, limits, config.max_bytes_per_file)?.ledger;
    let (read, write) = (ledger.read, ledger.write);
    let files = segments(storage, &names)?;
    let first = first_free(&files, write.file)
        .ok_or_else(|| io::Error::other("segment numbers leave no room for Go's files"))?;
    let mut stage = Stage::new(storage, &names, DOWNGRADE, config.max_bytes_per_file, first);
    for &file in files.range(read.file..=write.file) {
        let name = names.segment(file);
        let start = if file == read.file { read.offset } else { 0 };
        let mut failed = Ok(());
        let mut visit = |record: &[u8]| {
            let message = payload(Bytes::copy_from_slice(record));
            match u32::try_from(message.len()) {
                Ok(len) => stage.push(&len.to_be_bytes(), &message),
                Err(_) => {
                    failed = Err(io::Error::other("a record does not fit Go's size field"));
                    Ok(())
                }
            }
        };
        let scanned = recovery::scan_records(storage, &name, start, limits, &mut visit)?;
        failed?;
        if scanned.end != scanned.size {
            return Err(io::Error::other(format!(
                "{name} holds bytes after {} that are no record; recovery should have moved it aside",
                scanned.end
            )));
        }
    }
    let (read, write, _, records) = stage.finish()?;
    if records != ledger.depth() {
        warn!(queue = %names.prefix, depth = ledger.depth(), records, "handed back a different number of records than the queue counted");
    }
    let go = GoMeta {
        depth: i64::try_from(records).unwrap_or(i64::MAX),
        read,
        write,
    };
    storage.write_atomic(&names.meta(), &go.encode())?;
    settle_staged(storage, &names, &Format::Go(go))?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_meta_round_trips_and_rejects_rsq_and_damage() {
        let meta = GoMeta::decode(b"1804\n1,55832\n7,12690\n");
        assert_eq!(
            meta,
            Some(GoMeta {
                depth: 1804,
                read: Pos::new(1, 55832),
                write: Pos::new(7, 12690)
            })
        );
        let meta = meta.unwrap_or_else(|| unreachable!());
        assert_eq!(GoMeta::decode(&meta.encode()), Some(meta));
        for bad in [
            &b""[..],
            b"1804\n1,55832\n7,12690",
            b"1804\n1,55832\n",
            b"x\n1,2\n3,4\n",
            b"1\n5,0\n4,0\n",
            b"1\n1,2\n3,4\nextra\n",
            &QueueMeta::default().encode(),
        ] {
            assert_eq!(GoMeta::decode(bad), None, "{bad:?}");
        }
    }
}
