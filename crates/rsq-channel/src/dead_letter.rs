//! Where a channel sends messages that used up their attempts.
//!
//! The channel knows nothing of topics (rsq-channel does not depend on
//! rsq-topic or the daemon), so whoever builds a channel with a
//! `max_attempts` limit gives it a [`DeadLetterSink`]: the daemon's
//! publishes to the topic's dead-letter topic. The channel's driver task
//! takes each dead letter from [`crate::ChannelState::poll_dead_letter`]
//! and awaits the sink, one at a time, beside its timeouts and backend
//! reads (which a slow sink does not hold up); the message counts as
//! finished (and, under explicit commit, its backend read as committable)
//! only once the sink returned `Ok`, so a sink that stores durably makes
//! the move durable.

use async_trait::async_trait;
use rsq_codec::Message;

use crate::ChannelError;

/// Receives a channel's dead letters, one at a time, in order.
#[async_trait]
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Stores `msg`, a message REQueued or timed out on its last allowed
    /// delivery (its `attempts` says how many it had). Returns once it is
    /// stored as durably as the sink promises; an error makes the channel
    /// keep the message and try again later (or, at shutdown, write it
    /// back to its own backend).
    async fn publish(&self, msg: Message) -> Result<(), ChannelError>;
}
