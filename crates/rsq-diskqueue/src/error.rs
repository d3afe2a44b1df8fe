//! The one error type of rsq-diskqueue.

/// Everything a backend queue can fail with.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue was closed or deleted; no more puts or reads.
    #[error("queue is closed")]
    Closed,
    /// A record is smaller or larger than the queue accepts.
    #[error("record of {len} bytes outside the accepted range {min}..={max}")]
    RecordSize {
        /// Size of the rejected record.
        len: usize,
        /// Smallest accepted size.
        min: usize,
        /// Largest accepted size.
        max: usize,
    },
    /// The queue's configuration cannot work (for example a maximum record
    /// size below the minimum).
    #[error("invalid disk queue configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// The shared [`crate::DiskBudget`] has no room for the records
    /// (`--max-disk-bytes`), or the file system is full: nothing was
    /// stored. A refusal, not a failure: retry once space is freed.
    #[error(
        "disk full: {bytes} bytes do not fit (disk budget {used} of {limit} bytes used; 0 = unbounded)"
    )]
    Full {
        /// Bytes the refused records take in their segment.
        bytes: u64,
        /// Bytes the budget counted when it refused.
        used: u64,
        /// The budget's bound (`0`: none, the file system filled).
        limit: u64,
    },
    /// A file holds bytes that cannot be read as records, somewhere other
    /// than a torn tail: nothing was changed, the owner decides what to do.
    #[error("damaged log file {file}: {why}")]
    Damaged {
        /// The damaged file.
        file: std::path::PathBuf,
        /// What was found.
        why: String,
    },
    /// The file system failed.
    #[error("io error on {path}: {source}")]
    Io {
        /// The file or directory being accessed.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl QueueError {
    /// Whether this is a full disk: the budget refused ([`QueueError::Full`])
    /// or a write met `ENOSPC`. Callers treat it as "retry later", never as
    /// a reason to drop a record.
    pub fn is_disk_full(&self) -> bool {
        match self {
            QueueError::Full { .. } => true,
            QueueError::Io { source, .. } => crate::budget::is_out_of_space(source),
            _ => false,
        }
    }
}
