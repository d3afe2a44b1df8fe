//! [`DiskQueueConfig`]: how a disk queue is named, where its files live,
//! which records it accepts and how it syncs, with the checks that refuse a
//! configuration that cannot work before any file is touched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Offload;
use crate::QueueError;
use crate::budget::DiskBudget;
use crate::commit_stats::CommitStats;
use crate::record;

/// How a disk queue is named, where it lives and how it syncs. Field names
/// follow nsqd's flags.
#[derive(Debug, Clone)]
pub struct DiskQueueConfig {
    /// Queue name: the topic name, or `topic:channel` for a channel. Files
    /// are `<name>.diskqueue.NNNNNN.dat` and `<name>.diskqueue.meta.dat`.
    pub name: String,
    /// Directory holding the files (nsqd's `--data-path`); created if missing.
    pub data_path: PathBuf,
    /// A segment is rolled before a record would take it past this size
    /// (`--max-bytes-per-file`). A single larger record gets a file of its own.
    pub max_bytes_per_file: u64,
    /// Smallest record accepted, in bytes.
    pub min_record_size: usize,
    /// Largest record accepted, in bytes (at most `u32::MAX`).
    pub max_record_size: usize,
    /// fsync after this many puts (`--sync-every`). With `1` every put
    /// returns only once its data is durable (concurrent puts share one
    /// fsync), and the metadata (read position) is written by
    /// `sync_timeout`, or, with `explicit_commit`, soon after each commit:
    /// a crash may replay records read since, never lose one. With more, the put that reaches the count hands the fsync
    /// to the sync task and returns (outside a runtime it syncs itself).
    /// Reads count too: this many reads ask the sync task to persist the
    /// read position. `0` syncs by `sync_timeout` (and close) only.
    pub sync_every: u64,
    /// fsync at least this often when anything changed (`--sync-timeout`).
    pub sync_timeout: Duration,
    /// When set, a record handed out by `read`/`try_read` counts as consumed
    /// only after [`BackendQueue::commit_reads`](crate::BackendQueue::commit_reads); until then metadata keeps
    /// it unread, so a crash replays it. A topic's durable pump commits after
    /// every channel has stored the message.
    pub explicit_commit: bool,
    /// Where a `sync_every = 1` queue counts its group commits (latency and
    /// records covered); shared by the queues of one daemon. `None` counts
    /// nothing.
    pub commit_stats: Option<Arc<CommitStats>>,
    /// The byte budget shared by every queue of the data dir
    /// (`--max-disk-bytes`): a put that does not fit is refused with
    /// [`QueueError::Full`], and removed segments give their bytes back.
    /// `None` counts nothing.
    pub disk_budget: Option<Arc<DiskBudget>>,
    /// Where the blocking file IO runs: tokio's blocking pool (the
    /// default), or inline in the task that asks for it, so a simulation on
    /// a current-thread runtime with paused time is deterministic.
    pub offload: Offload,
}

/// nsqd's default `--max-bytes-per-file`: 100 MiB segments.
const DEFAULT_MAX_BYTES_PER_FILE: u64 = 100 * 1024 * 1024;

/// nsqd's default `--max-msg-size` (1 MiB) plus the 26-byte message header
/// (timestamp, attempts, id) a record carries before the body.
const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024 + 26;

// The default record fits the length field and a default segment, so a
// default queue never gives a record a file of its own.
const _: () = assert!(DEFAULT_MAX_RECORD_SIZE <= record::PAYLOAD_LEN_MAX);
const _: () =
    assert!((record::HEADER_LEN + DEFAULT_MAX_RECORD_SIZE) as u64 <= DEFAULT_MAX_BYTES_PER_FILE);

impl DiskQueueConfig {
    /// nsqd's defaults: 100 MiB segments, records of 0 to 1 MiB + 26 bytes
    /// (nsqd's `max-msg-size` plus the message header), sync every 2500 puts
    /// or 2 s, blocking IO on tokio's blocking pool.
    pub fn new(name: impl Into<String>, data_path: impl Into<PathBuf>) -> Self {
        DiskQueueConfig {
            name: name.into(),
            data_path: data_path.into(),
            max_bytes_per_file: DEFAULT_MAX_BYTES_PER_FILE,
            min_record_size: 0,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            sync_every: 2500,
            sync_timeout: Duration::from_secs(2),
            explicit_commit: false,
            commit_stats: None,
            disk_budget: None,
            offload: Offload::BlockingPool,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), QueueError> {
        let reason = if self.name.is_empty() {
            "empty queue name"
        } else if self.name.contains('/') {
            "queue name contains '/'"
        } else if self.min_record_size > self.max_record_size {
            "min_record_size is above max_record_size"
        } else if self.max_record_size > record::PAYLOAD_LEN_MAX {
            "max_record_size does not fit the 32-bit length field"
        } else if self.max_bytes_per_file == 0 {
            "max_bytes_per_file is zero"
        } else if self.sync_timeout.is_zero() {
            "sync_timeout is zero"
        } else {
            return Ok(());
        };
        Err(QueueError::InvalidConfig {
            reason: reason.to_string(),
        })
    }
}
