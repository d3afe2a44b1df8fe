//! go-diskqueue v1.1.0's files, as Go nsqd writes them: taking a queue over
//! from Go nsqd at open, and handing it back with [`downgrade`].

use bytes::Bytes;

use crate::{DiskQueueConfig, QueueError};

/// Rewrites the queue `config.name` in `config.data_path` into go-diskqueue
/// v1.1.0's format, so Go nsqd serves its unread records; returns how many.
///
/// `payload` maps each unread record to the message Go nsqd should find
/// (rsqd strips its deferral tag there). The queue must not be open. A
/// queue already in Go's format is left as it is (a second run after an
/// interrupted one finishes the job). Crash-safe: an interruption at any
/// point leaves the queue in one format or the other, never neither.
pub fn downgrade(
    config: &DiskQueueConfig,
    payload: &dyn Fn(Bytes) -> Bytes,
) -> Result<u64, QueueError> {
    let _ = (config, payload);
    Err(QueueError::InvalidConfig {
        reason: "downgrade is not built yet".into(),
    })
}
