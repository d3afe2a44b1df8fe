//! The one error type of rsq-topic, and the error a channel hands back to it.

use std::fmt;

use rsq_diskqueue::QueueError;

/// Why a channel refused a put, close or delete.
///
/// The topic does not know what a channel is made of, so this wraps whatever
/// the implementor's own error is: build it with [`ChannelError::new`] from
/// any `std::error::Error + Send + Sync` value, a `String` or a `&str`. It
/// displays as the wrapped error and forwards its `source`.
///
/// ```
/// use rsq_topic::ChannelError;
///
/// let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
/// let err = ChannelError::new(io);
/// assert_eq!(err.to_string(), "disk full");
/// // The implementor gets its own error back.
/// let back = err.into_inner().downcast::<std::io::Error>().unwrap();
/// assert_eq!(back.kind(), std::io::ErrorKind::StorageFull);
/// assert_eq!(ChannelError::new("closed").to_string(), "closed");
/// ```
pub struct ChannelError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl ChannelError {
    /// Wraps an implementor's error (or a message string).
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        ChannelError(error.into())
    }

    /// The wrapped error, for an implementor that wants its own type back
    /// (`downcast` it).
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.0
    }
}

impl fmt::Debug for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ChannelError").field(&self.0).finish()
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Everything a topic operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The topic is closing, closed or deleted: it takes no more messages or
    /// channels. The daemon answers a publish with `E_PUB_FAILED`.
    #[error("topic is exiting")]
    Exiting,
    /// No channel of that name exists on this topic.
    #[error("channel {0:?} not found")]
    ChannelNotFound(String),
    /// The backend queue failed (a disk write, or the queue was closed).
    #[error("topic backend: {0}")]
    Backend(#[from] QueueError),
    /// The channel factory could not create a channel.
    #[error("cannot create channel {channel:?}: {source}")]
    ChannelCreate {
        /// The channel being created.
        channel: String,
        /// What the factory reported.
        #[source]
        source: ChannelError,
    },
    /// A channel failed to close or delete while the topic was closing or
    /// being deleted.
    #[error("channel {channel:?}: {source}")]
    Channel {
        /// The channel that failed.
        channel: String,
        /// What it reported.
        #[source]
        source: ChannelError,
    },
}
