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
