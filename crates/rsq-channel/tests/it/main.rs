//! Integration tests of the async `Channel`, on tokio's paused clock.
#![allow(clippy::unwrap_used)]

mod dead_letters;
mod delivery;
mod durable;
mod lifecycle;
mod timing;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rsq_channel::{Channel, ChannelConfig, Consumer, SystemClock};
use rsq_codec::{Message, MessageId};
use rsq_diskqueue::{BackendQueue, MemoryQueue};

/// One second.
pub const SEC: Duration = Duration::from_secs(1);

/// The id of test message `n`.
pub fn id(n: u64) -> MessageId {
    MessageId(format!("{n:016x}").as_bytes().try_into().unwrap())
}

/// The `n` of a test message id.
pub fn num(id: &MessageId) -> u64 {
    u64::from_str_radix(std::str::from_utf8(&id.0).unwrap(), 16).unwrap()
}

/// Test message `n`.
pub fn msg(n: u64) -> Message {
    Message::new(id(n), 0, Bytes::from(format!("body {n}")))
}

/// A channel on a perfect in-memory backend, returned with that backend.
pub fn channel(config: ChannelConfig) -> (Arc<Channel>, Arc<MemoryQueue>) {
    let backend = Arc::new(MemoryQueue::unbounded());
    let ch = Channel::new(
        "t",
        "c",
        config,
        Arc::clone(&backend) as Arc<dyn BackendQueue>,
        Arc::new(SystemClock),
    );
    (ch, backend)
}

/// The next message for `consumer` within `within`, or `None`.
pub async fn next(consumer: &mut Consumer, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, consumer.recv())
        .await
        .ok()
        .flatten()
}

/// Everything `consumer` receives until nothing arrives for a second.
pub async fn drain(consumer: &mut Consumer) -> Vec<u64> {
    let mut got = Vec::new();
    while let Some(m) = next(consumer, SEC).await {
        got.push(num(&m.id));
    }
    got
}
