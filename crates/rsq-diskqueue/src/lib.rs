//! rsq-diskqueue: where a topic or channel keeps what does not fit in memory.
//!
#![doc = include_str!("../README.md")]
//!
//! ## What is in it
//!
//! [`BackendQueue`] is the interface topics and channels use; [`MemoryQueue`]
//! is the implementation for ephemeral topics and channels, which never touch
//! disk; [`DiskQueue`] is nsqd's diskqueue: segment files of CRC32-checked
//! records, a metadata file replaced atomically, nsqd's `sync-every` /
//! `sync-timeout` policy, and recovery from crashes and damage at open;
//! [`LazyDiskQueue`] opens one only when the first record arrives. File
//! access goes through the small [`Storage`] trait, with a real directory
//! ([`FsStorage`]) and an in-memory one that simulates crashes exactly
//! ([`MemStorage`]). [`write_atomically`] is the one atomic whole-file
//! replacement (temporary file, fsync, rename, directory fsync), public so
//! the daemon's own state files use it too. [`RecordLog`] is the same
//! records as an append-only, segmented log read back whole at open: where
//! a replicated topic keeps its consensus log. This crate knows nothing about
//! messages: records are opaque bytes.

mod atomic_file;
mod audit;
mod backend;
mod budget;
mod commit_stats;
mod disk_queue;
mod error;
mod go_format;
mod lazy;
mod ledger;
mod memory;
mod metadata;
mod record;
mod record_log;
mod recovery;
mod storage;

pub use atomic_file::write_atomically;
pub use audit::check_recovery_kept_records;
pub use backend::{BackendQueue, BackendStats};
pub use budget::{DiskBudget, LOW_WATER_PERCENT};
pub use commit_stats::{
    COMMIT_LATENCY_BOUNDS_MICROS, COMMIT_RECORDS_BOUNDS, CommitSnapshot, CommitStats,
};
pub use disk_queue::{DiskQueue, DiskQueueConfig, Offload};
pub use error::QueueError;
pub use go_format::{downgrade, downgrade_with_storage};
pub use lazy::LazyDiskQueue;
pub use memory::MemoryQueue;
pub use record_log::{LogRecord, RecordLog, RecordLogConfig};
pub use storage::{DirIndex, FsStorage, MemStorage, Storage};
