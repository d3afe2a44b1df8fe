//! What a channel knows about one consumer: its RDY window and counters.

use std::time::Duration;

/// The channel's bookkeeping for one subscribed consumer.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerState {
    /// The consumer's in-flight timeout (negotiated in IDENTIFY, else the channel's).
    pub msg_timeout: Duration,
    /// The RDY count: the most messages it may hold in flight at once.
    pub rdy: u64,
    /// Messages it holds in flight now.
    pub in_flight: u64,
    /// Messages delivered to it.
    pub message_count: u64,
    /// Messages it finished.
    pub finish_count: u64,
    /// Messages it requeued with REQ.
    pub requeue_count: u64,
    /// Whether it has an entry in the channel's ready queue.
    pub queued: bool,
}

impl ConsumerState {
    /// A consumer that has not yet sent RDY.
    pub fn new(msg_timeout: Duration) -> Self {
        ConsumerState {
            msg_timeout,
            rdy: 0,
            in_flight: 0,
            message_count: 0,
            finish_count: 0,
            requeue_count: 0,
            queued: false,
        }
    }

    /// RDY is a window on the in-flight count, not a credit: the consumer
    /// may take a message while it holds fewer than `rdy`.
    pub fn is_ready(&self) -> bool {
        self.rdy > 0 && self.in_flight < self.rdy
    }
}
