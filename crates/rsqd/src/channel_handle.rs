//! The real channel as a topic's pump sees it.
//!
//! rsq-topic knows channels only through its sink trait, so it can be
//! tested with a recording sink; this is the one implementation the daemon
//! gives it: an `rsq_channel::Channel` with its own dead-letter limit.

use std::sync::Arc;

use async_trait::async_trait;
use rsq_channel::Channel;
use rsq_codec::Message;
use rsq_topic::{SinkError, Topic, TopicSink};

use crate::dead_letter::ChannelLimit;

/// A topic as the daemon holds it.
pub type DaemonTopic = Topic<ChannelHandle>;

/// The real channel, as seen by a topic's pump, with its own attempt
/// limit if it was given one (see `dead_letter.rs`).
pub struct ChannelHandle(pub Arc<Channel>, pub(crate) ChannelLimit);

impl std::ops::Deref for ChannelHandle {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.0
    }
}

#[async_trait]
impl TopicSink for ChannelHandle {
    async fn put(&self, msg: Message) -> Result<(), SinkError> {
        self.0.put(msg).await.map_err(sink_error)
    }

    async fn put_many(&self, msgs: Vec<Message>) -> Result<(), SinkError> {
        self.0.put_many(msgs).await.map_err(sink_error)
    }

    async fn put_deferred(
        &self,
        msg: Message,
        delay: std::time::Duration,
    ) -> Result<(), SinkError> {
        self.0.put_deferred(msg, delay).await.map_err(sink_error)
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.0.close().await.map_err(SinkError::new)
    }

    async fn delete(&self) -> Result<(), SinkError> {
        self.0.delete().await.map_err(SinkError::new)
    }
}

/// A channel's error as its topic's pump sees it: a full disk hands back
/// the messages it did not store, for the pump to put again.
fn sink_error(error: rsq_channel::ChannelError) -> SinkError {
    match error {
        rsq_channel::ChannelError::DiskFull { unstored, source } => {
            SinkError::disk_full(source, unstored)
        }
        other => SinkError::new(other),
    }
}
