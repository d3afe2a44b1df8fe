//! The one error type of rsq-channel.

use rsq_diskqueue::QueueError;

/// Everything a channel operation can fail with.
///
/// The `Display` texts of [`ChannelError::NotInFlight`] and
/// [`ChannelError::NotOwner`] are nsqd's, so the daemon can send
/// `E_FIN_FAILED FIN <id> failed <error>` unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// FIN, REQ or TOUCH named a message that is not in flight (never
    /// delivered, already finished, requeued or timed out).
    #[error("ID not in flight")]
    NotInFlight,
    /// FIN, REQ or TOUCH came from a consumer other than the one holding the message.
    #[error("client does not own message")]
    NotOwner,
    /// A consumer subscribed twice with the same client id.
    #[error("client {0} already subscribed")]
    ConsumerExists(u64),
    /// A consumer tried to subscribe while `ChannelConfig::max_consumers`
    /// were subscribed already (`--max-channel-consumers`).
    #[error("consumers exceed the limit of {max}")]
    TooManyConsumers {
        /// The limit in force.
        max: usize,
    },
    /// The channel is closed or deleted.
    #[error("exiting")]
    Exiting,
    /// The backend queue failed.
    #[error("backend: {0}")]
    Backend(#[from] QueueError),
    /// The backend's disk is full (`QueueError::is_disk_full`): `unstored`
    /// were not stored anywhere (the rest of a batch went to memory). The
    /// caller keeps them and puts them again later; nothing is lost.
    #[error("backend: {source}")]
    DiskFull {
        /// The messages the channel did not take.
        unstored: Vec<rsq_codec::Message>,
        /// What the backend said.
        #[source]
        source: QueueError,
    },
    /// A [`crate::DeadLetterSink`] could not store a dead letter (its own
    /// error, boxed: the sink is the caller's).
    #[error("dead letter: {0}")]
    DeadLetter(#[source] Box<dyn std::error::Error + Send + Sync>),
}
