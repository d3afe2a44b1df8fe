//! The sink contract: what a topic needs from the things its pump fans
//! messages out to, and how it makes them.
//!
//! A topic's channels are sinks to it: it reaches each only through
//! [`TopicSink`] and creates them through a [`SinkFactory`], so this crate
//! does not depend on rsq-channel. The daemon implements both for the real
//! channel, and tests put a recording sink in its place.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rsq_codec::Message;

use crate::{SinkError, TopicError};

/// What a topic needs from one of its channels: somewhere to put messages,
/// and to close or delete.
///
/// The topic's pump calls `put` or `put_deferred` once per message per
/// channel, never concurrently for the same topic. Implementations should
/// not wait for consumers: nsqd's channel put goes to memory or overflows to
/// its own backend, and a slow put here stalls every channel of the topic.
#[async_trait]
pub trait TopicSink: Send + Sync + 'static {
    /// Accepts a message for immediate delivery.
    async fn put(&self, msg: Message) -> Result<(), SinkError>;

    /// Accepts a batch for immediate delivery, in order. The pump hands
    /// over what it read from the backend in one go, so a channel that
    /// stores to disk can do it with one write; by default, one put each.
    ///
    /// When the disk is full the error must carry every message not stored
    /// ([`SinkError::disk_full`]), so the pump can put them again.
    async fn put_many(&self, msgs: Vec<Message>) -> Result<(), SinkError> {
        let mut msgs = msgs.into_iter();
        while let Some(msg) = msgs.next() {
            if let Err(error) = self.put(msg).await {
                return Err(error.and_unstored(msgs));
            }
        }
        Ok(())
    }

    /// Accepts a message that becomes visible to consumers after `delay`
    /// (a DPUB). `msg.deferred` is `Some(delay)` too.
    async fn put_deferred(&self, msg: Message, delay: Duration) -> Result<(), SinkError>;

    /// The topic is shutting down: flush and close, keeping what is stored.
    async fn close(&self) -> Result<(), SinkError>;

    /// The channel has been removed from its topic: drop what it holds,
    /// disconnect its clients and remove its files.
    async fn delete(&self) -> Result<(), SinkError>;
}

/// Creates a topic's channels as sinks (the daemon opens the channel's backend and
/// wires it to its clients here).
///
/// Called with no topic lock held, one creation at a time per topic (so
/// two creators never open the same files), and only before the topic
/// begins to close: it may wait for IO, and should keep blocking file IO
/// off the runtime's threads (the daemon opens queues on tokio's blocking
/// pool). It must not call back into the topic.
#[async_trait]
pub trait SinkFactory<C>: Send + Sync + 'static {
    /// A new channel `channel` of topic `topic`. Failures are reported as
    /// [`TopicError::ChannelCreate`] (or [`TopicError::Backend`] when opening
    /// the channel's queue failed).
    async fn create(&self, topic: &str, channel: &str) -> Result<Arc<C>, TopicError>;
}

/// A plain function is a factory that creates without waiting.
#[async_trait]
impl<C, F> SinkFactory<C> for F
where
    C: Send + Sync + 'static,
    F: Fn(&str, &str) -> Result<Arc<C>, TopicError> + Send + Sync + 'static,
{
    async fn create(&self, topic: &str, channel: &str) -> Result<Arc<C>, TopicError> {
        self(topic, channel)
    }
}
