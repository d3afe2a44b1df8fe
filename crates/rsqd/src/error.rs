//! The daemon's one error type, in terms the protocol and HTTP API report.

use rsq_topic::TopicError;

/// Why a lookup or creation failed, in terms the HTTP API reports.
#[derive(Debug, thiserror::Error)]
pub enum NsqdError {
    /// The daemon is shutting down.
    #[error("exiting")]
    Exiting,
    /// No such topic.
    #[error("topic not found")]
    TopicNotFound,
    /// No such channel.
    #[error("channel not found")]
    ChannelNotFound,
    /// The topic failed (its backend could not be opened, or it is closing).
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The backend queue could not be opened.
    #[error(transparent)]
    Queue(#[from] rsq_diskqueue::QueueError),
    /// The daemon is draining (`/config/drain`, `--sigterm-mode=drain`):
    /// it takes no new messages. A refusal, not a failure: the client may
    /// publish elsewhere, and its connection stays open.
    #[error("DRAINING: this node is being drained and accepts no new messages")]
    Draining,
    /// The disk queues reached `--max-disk-bytes`, or the file system is
    /// full: nothing of the publish was stored. A refusal like
    /// [`NsqdError::Draining`]: publishing resumes by itself once
    /// consumers bring usage down to the low-water mark.
    #[error("DISK_FULL: {0}")]
    DiskFull(String),
    /// A replicated topic could not take the publish: no quorum of its
    /// replicas stored it in time, or it has no leader. Clients see
    /// `E_PUB_FAILED` and may retry (a retry may duplicate).
    #[error("E_REPLICATION: {0}")]
    Replication(String),
    /// A replicated topic is delivered only by its leader; this member is
    /// not it (the message names the leader).
    #[error("{0}")]
    NotLeader(String),
    /// The id floor (`rsq.idfloor`) could not be written: no id is handed
    /// out that a later run might repeat.
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
}

impl NsqdError {
    /// Whether the daemon refused the request for now (draining, disk
    /// full) rather than failing it: the client's connection stays usable.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            NsqdError::Draining | NsqdError::DiskFull(_) | NsqdError::Replication(_)
        )
    }
}
