//! The one error type of rsq-topic ([`TopicError`]), and the error a sink
//! (one of its channels) hands back to it ([`SinkError`]).

use std::fmt;

use rsq_codec::Message;
use rsq_diskqueue::QueueError;

/// Why a sink (one of the topic's channels) refused a put, close or delete.
///
/// The topic does not know what a channel is made of, so this wraps whatever
/// the implementor's own error is: build it with [`SinkError::new`] from
/// any `std::error::Error + Send + Sync` value, a `String` or a `&str`. It
/// displays as the wrapped error and forwards its `source`.
///
/// ```
/// use rsq_topic::SinkError;
///
/// let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
/// let err = SinkError::new(io);
/// assert_eq!(err.to_string(), "disk full");
/// // The implementor gets its own error back.
/// let back = err.into_inner().downcast::<std::io::Error>().unwrap();
/// assert_eq!(back.kind(), std::io::ErrorKind::StorageFull);
/// assert_eq!(SinkError::new("closed").to_string(), "closed");
/// ```
pub struct SinkError(
    Box<dyn std::error::Error + Send + Sync + 'static>,
    /// With [`SinkError::disk_full`]: the messages the channel did not
    /// store, which the pump keeps and puts again.
    Option<Vec<Message>>,
);

impl SinkError {
    /// Wraps an implementor's error (or a message string).
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        SinkError(error.into(), None)
    }

    /// The channel's disk is full: it stored none of `unstored` (of a
    /// batch, the others went to memory). The pump keeps them and puts them
    /// to this channel again after a back-off, never dropping them.
    pub fn disk_full(
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
        unstored: Vec<Message>,
    ) -> Self {
        SinkError(error.into(), Some(unstored))
    }

    /// Whether this is a full disk ([`SinkError::disk_full`]).
    pub fn is_disk_full(&self) -> bool {
        self.1.is_some()
    }

    /// Adds `more` to the messages a full disk refused (a batch put that
    /// stopped at the refusal did not store the rest either); other errors
    /// are returned as they are.
    pub fn and_unstored(mut self, more: impl IntoIterator<Item = Message>) -> Self {
        if let Some(unstored) = &mut self.1 {
            unstored.extend(more);
        }
        self
    }

    /// Takes the messages a full disk refused (empty for other errors).
    pub fn take_unstored(&mut self) -> Vec<Message> {
        self.1.take().unwrap_or_default()
    }

    /// The wrapped error, for an implementor that wants its own type back
    /// (`downcast` it).
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.0
    }
}

impl fmt::Debug for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SinkError")
            .field(&self.0)
            .field(&self.1.as_ref().map(Vec::len))
            .finish()
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SinkError {
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
        source: SinkError,
    },
    /// A channel failed to close or delete while the topic was closing or
    /// being deleted.
    #[error("channel {channel:?}: {source}")]
    Channel {
        /// The channel that failed.
        channel: String,
        /// What it reported.
        #[source]
        source: SinkError,
    },
}
