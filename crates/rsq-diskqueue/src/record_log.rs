//! An append-only log of records in segment files: the journal a
//! replicated topic's Raft log is kept in.
//!
//! A [`DiskQueue`](crate::DiskQueue) is a FIFO: it reads each record once
//! and forgets it. A consensus log is different: it is read back whole at
//! open, its writer decides when a batch is durable (one fsync for many
//! appends), and old segments are removed only when its owner says they are
//! no longer needed. It uses the same record format (length, CRC32,
//! payload) and the same judgement of what may be cut, so there is one
//! storage engine with one definition of damage.
//!
//! **Nothing it cannot read is destroyed.** At open, bytes after the last
//! whole record of the *last* segment are cut when they are zeros or one
//! torn record (a write a crash interrupted). Anything else that does not
//! parse, in any segment, is [`QueueError::Damaged`]: the files are left as
//! they are, and the owner decides (a replica refuses to run on a log with a
//! hole, since it may have acknowledged what is in the hole).

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use tracing::{info, warn};

use crate::error::QueueError;
use crate::record::{HEADER_LEN, header};
use crate::recovery::{RecordLimits, is_torn_tail, scan_records};
use crate::storage::Storage;

/// Where a log's segments are and how large they grow.
#[derive(Debug, Clone)]
pub struct RecordLogConfig {
    /// File name prefix: segments are `<name>.log.NNNNNNNN.dat`.
    pub name: String,
    /// A segment is rolled once it holds at least this many bytes.
    pub max_segment_bytes: u64,
    /// Largest payload accepted; longer ones are refused at append and
    /// taken for damage at open.
    pub max_record_bytes: usize,
}

/// One record of a log, as read back at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The segment it is in, for [`RecordLog::remove_segments_before`].
    pub segment: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// An append-only segmented log of CRC32-checked records; see the module
/// documentation. Not synchronised: its owner serialises access.
#[derive(Debug)]
pub struct RecordLog {
    storage: Arc<dyn Storage>,
    config: RecordLogConfig,
    /// Oldest segment still kept.
    first: u64,
    /// The segment appends go to.
    current: u64,
    /// Bytes in `current`.
    current_len: u64,
    /// Segments written since their last sync (the current one and, after
    /// a roll, the one before it).
    unsynced: Vec<u64>,
}

impl RecordLog {
    /// Opens the log `config.name` in `storage`, creating it if it has no
    /// segments, and returns it with every record it holds, oldest first.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: RecordLogConfig,
    ) -> Result<(RecordLog, Vec<LogRecord>), QueueError> {
        let io_err = |name: &str, source| io_error(storage.as_ref(), name, source);
        let prefix = segment_prefix(&config.name);
        let mut segments: Vec<u64> = storage
            .list_prefix(&prefix)
            .map_err(|e| io_err(&prefix, e))?
            .iter()
            .filter_map(|name| parse_segment(&prefix, name))
            .collect();
        segments.sort_unstable();
        if let Some(gap) = segments.windows(2).find(|w| w[1] != w[0] + 1) {
            return Err(QueueError::Damaged {
                file: storage.dir().join(segment_name(&config.name, gap[0] + 1)),
                why: "segment missing from the middle of the log".to_string(),
            });
        }
        let limits = RecordLimits {
            min: 0,
            max: config.max_record_bytes,
        };
        let mut records = Vec::new();
        let mut current_len = 0;
        for (i, &segment) in segments.iter().enumerate() {
            let name = segment_name(&config.name, segment);
            let found = scan_records(storage.as_ref(), &name, 0, limits, &mut |payload| {
                records.push(LogRecord {
                    segment,
                    payload: payload.to_vec(),
                });
                Ok(())
            })
            .map_err(|e| io_err(&name, e))?;
            current_len = found.end;
            if found.end == found.size {
                continue;
            }
            let last = i + 1 == segments.len();
            let max_record = (HEADER_LEN + config.max_record_bytes) as u64;
            let torn = last
                && is_torn_tail(
                    storage.as_ref(),
                    &name,
                    found.end,
                    found.size,
                    // A crash may tear the first record of a segment just
                    // rolled to: the name is the log's own, so one
                    // record's worth of bytes is a torn write, not a
                    // foreign file.
                    true,
                    max_record,
                )
                .map_err(|e| io_err(&name, e))?;
            if !torn {
                return Err(QueueError::Damaged {
                    file: storage.dir().join(&name),
                    why: format!(
                        "unreadable bytes at offset {} of {} after {} whole records",
                        found.end, found.size, found.records
                    ),
                });
            }
            warn!(file = %name, at = found.end, size = found.size, "cutting a torn tail after the last whole record of the log");
            storage
                .truncate(&name, found.end)
                .map_err(|e| io_err(&name, e))?;
        }
        let (first, current) = match (segments.first(), segments.last()) {
            (Some(&first), Some(&last)) => (first, last),
            _ => {
                let name = segment_name(&config.name, 0);
                storage
                    .write_atomic(&name, &[])
                    .map_err(|e| io_err(&name, e))?;
                (0, 0)
            }
        };
        info!(log = %config.name, segments = current - first + 1, records = records.len(), "record log opened");
        let log = RecordLog {
            storage,
            config,
            first,
            current,
            current_len,
            unsynced: Vec::new(),
        };
        Ok((log, records))
    }

    /// Appends one record, rolling to a new segment first if the current
    /// one is full. Not durable until [`RecordLog::sync`]; returns the
    /// segment the record went to.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, QueueError> {
        if payload.len() > self.config.max_record_bytes {
            return Err(QueueError::RecordSize {
                len: payload.len(),
                min: 0,
                max: self.config.max_record_bytes,
            });
        }
        if self.current_len >= self.config.max_segment_bytes {
            self.roll()?;
        }
        let name = segment_name(&self.config.name, self.current);
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&header(payload));
        bytes.extend_from_slice(payload);
        self.storage
            .append(&name, &bytes)
            .map_err(|e| io_error(self.storage.as_ref(), &name, e))?;
        self.current_len += bytes.len() as u64;
        if self.unsynced.last() != Some(&self.current) {
            self.unsynced.push(self.current);
        }
        Ok(self.current)
    }

    /// Makes every record appended so far durable: one fsync per segment
    /// written since the last sync (one, unless a batch crossed a roll).
    pub fn sync(&mut self) -> Result<(), QueueError> {
        for &segment in &self.unsynced {
            let name = segment_name(&self.config.name, segment);
            self.storage
                .sync(&name)
                .map_err(|e| io_error(self.storage.as_ref(), &name, e))?;
        }
        self.unsynced.clear();
        Ok(())
    }

    /// Removes every segment before `segment` (never the current one):
    /// for its owner once nothing in them is needed any more.
    pub fn remove_segments_before(&mut self, segment: u64) -> Result<(), QueueError> {
        let until = segment.min(self.current);
        while self.first < until {
            let name = segment_name(&self.config.name, self.first);
            self.storage
                .remove(&name)
                .map_err(|e| io_error(self.storage.as_ref(), &name, e))?;
            self.first += 1;
        }
        Ok(())
    }

    /// The segment appends go to now.
    pub fn current_segment(&self) -> u64 {
        self.current
    }

    /// The oldest segment kept.
    pub fn first_segment(&self) -> u64 {
        self.first
    }

    /// Starts a new segment, durably created, after syncing the full one.
    fn roll(&mut self) -> Result<(), QueueError> {
        self.sync()?;
        let next = self.current + 1;
        let name = segment_name(&self.config.name, next);
        // An atomic write of nothing creates the file and makes its
        // directory entry durable, so a synced record in it cannot vanish
        // with its name.
        self.storage
            .write_atomic(&name, &[])
            .map_err(|e| io_error(self.storage.as_ref(), &name, e))?;
        self.current = next;
        self.current_len = 0;
        Ok(())
    }

    /// The names of the logs in `storage` whose names start with
    /// `prefix`: what a caller that keeps one log per key finds at start.
    pub fn names(storage: &dyn Storage, prefix: &str) -> Result<BTreeSet<String>, QueueError> {
        let files = storage
            .list_prefix(prefix)
            .map_err(|e| io_error(storage, prefix, e))?;
        Ok(files
            .iter()
            .filter_map(|file| {
                let (name, rest) = file.rsplit_once(".log.")?;
                parse_segment("", rest)?;
                Some(name.to_string())
            })
            .collect())
    }
}

fn io_error(storage: &dyn Storage, name: &str, source: io::Error) -> QueueError {
    QueueError::Io {
        path: storage.dir().join(name),
        source,
    }
}

fn segment_prefix(name: &str) -> String {
    format!("{name}.log.")
}

fn segment_name(name: &str, segment: u64) -> String {
    format!("{name}.log.{segment:08}.dat")
}

fn parse_segment(prefix: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(".dat")?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStorage;
    use proptest::prelude::*;

    fn config() -> RecordLogConfig {
        RecordLogConfig {
            name: "t".to_string(),
            max_segment_bytes: 64,
            max_record_bytes: 32,
        }
    }

    fn payloads(records: &[LogRecord]) -> Vec<Vec<u8>> {
        records.iter().map(|r| r.payload.clone()).collect()
    }

    #[test]
    fn records_come_back_in_order_across_rolls() {
        let storage = Arc::new(MemStorage::new());
        let (mut log, none) = RecordLog::open(storage.clone(), config()).expect("open");
        assert!(none.is_empty());
        let written: Vec<Vec<u8>> = (0u8..20).map(|i| vec![i; usize::from(i)]).collect();
        for p in &written {
            log.append(p).expect("append");
        }
        log.sync().expect("sync");
        assert!(log.current_segment() > 0);
        let (_, back) = RecordLog::open(storage, config()).expect("reopen");
        assert_eq!(payloads(&back), written);
    }

    #[test]
    fn a_hole_in_the_middle_is_damage_and_nothing_is_changed() {
        let storage = Arc::new(MemStorage::new());
        let (mut log, _) = RecordLog::open(storage.clone(), config()).expect("open");
        for i in 0u8..20 {
            log.append(&[i; 20]).expect("append");
        }
        log.sync().expect("sync");
        let name = segment_name("t", 1);
        let mut bytes = storage.contents(&name).expect("segment 1");
        bytes[HEADER_LEN + 3] ^= 1;
        storage.set_contents(&name, bytes.clone());
        let before = storage.names();
        let err = RecordLog::open(storage.clone(), config()).expect_err("damaged");
        assert!(matches!(err, QueueError::Damaged { .. }), "{err}");
        assert_eq!(storage.names(), before);
        assert_eq!(storage.contents(&name), Some(bytes));
    }

    #[test]
    fn names_are_the_logs_with_a_prefix() {
        let storage = Arc::new(MemStorage::new());
        for name in ["a.x", "a.y", "b.z"] {
            let config = RecordLogConfig {
                name: name.to_string(),
                ..config()
            };
            let (mut log, _) = RecordLog::open(storage.clone(), config).expect("open");
            for i in 0u8..10 {
                log.append(&[i; 20]).expect("append");
            }
            log.sync().expect("sync");
        }
        storage.set_contents("a.not-a-log.dat", Vec::new());
        let names = RecordLog::names(storage.as_ref(), "a.").expect("names");
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["a.x", "a.y"]);
    }

    #[test]
    fn an_oversized_record_is_refused() {
        let (mut log, _) = RecordLog::open(Arc::new(MemStorage::new()), config()).expect("open");
        assert!(matches!(
            log.append(&[0; 33]),
            Err(QueueError::RecordSize { len: 33, .. })
        ));
    }

    #[test]
    fn removed_segments_are_gone_and_the_rest_reopens() {
        let storage = Arc::new(MemStorage::new());
        let (mut log, _) = RecordLog::open(storage.clone(), config()).expect("open");
        for i in 0u8..20 {
            log.append(&[i; 20]).expect("append");
        }
        log.sync().expect("sync");
        log.remove_segments_before(2).expect("remove");
        assert_eq!(log.first_segment(), 2);
        let (_, back) = RecordLog::open(storage, config()).expect("reopen");
        assert!(back.iter().all(|r| r.segment >= 2));
        assert_eq!(back.last().map(|r| r.payload.clone()), Some(vec![19; 20]));
    }

    proptest! {
        /// After any crash, the log reopens with every synced record, in
        /// order, followed by a prefix of the unsynced ones: never a gap,
        /// never a record that was not written.
        #[test]
        fn a_crash_keeps_what_was_synced_and_a_prefix_of_the_rest(
            batches in proptest::collection::vec(
                (proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 0..6), any::<bool>()),
                0..12,
            ),
            cut_seed in any::<u64>(),
        ) {
            let storage = Arc::new(MemStorage::new());
            let (mut log, _) = RecordLog::open(storage.clone(), config()).expect("open");
            let mut written = Vec::new();
            let mut synced = 0;
            for (batch, sync) in batches {
                for p in batch {
                    log.append(&p).expect("append");
                    written.push(p);
                }
                if sync {
                    log.sync().expect("sync");
                    synced = written.len();
                }
            }
            let mut state = cut_seed;
            let crashed = storage.crashed_copy(|_, synced, len| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                synced + (state >> 33) as usize % (len - synced + 1)
            });
            let (_, back) = RecordLog::open(Arc::new(crashed), config()).expect("reopen after crash");
            let back = payloads(&back);
            prop_assert!(back.len() >= synced, "lost synced records: {} of {}", back.len(), synced);
            prop_assert_eq!(&back[..], &written[..back.len()]);
        }
    }
}
