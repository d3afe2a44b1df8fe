//! The knobs of one channel, with nsqd's defaults.

use std::time::Duration;

/// Identifies a consumer (one subscribed connection) within a channel.
pub type ClientId = u64;

/// How a channel buffers, times out and caps its messages.
///
/// `Default` gives nsqd v1.3's defaults for a durable channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    /// Fresh messages kept in memory before overflowing to the backend
    /// (`--mem-queue-size`); `0` sends every fresh message to the backend.
    pub mem_queue_size: usize,
    /// In-flight timeout for consumers that did not negotiate their own (`--msg-timeout`).
    pub msg_timeout: Duration,
    /// Longest a message may stay in flight from its delivery, however often
    /// it is touched (`--max-msg-timeout`).
    pub max_msg_timeout: Duration,
    /// Longest REQ delay; longer delays are clamped to it (`--max-req-timeout`).
    pub max_req_timeout: Duration,
    /// Largest RDY count a consumer may hold; larger counts are clamped to it (`--max-rdy-count`).
    pub max_rdy_count: u64,
    /// A `#ephemeral` channel: memory only, removed when its last consumer leaves.
    pub ephemeral: bool,
    /// The backend keeps records read as unread until committed (a durable
    /// daemon's channel): commit only the finished prefix, so a crash
    /// replays messages in flight instead of losing them.
    pub commit_backend_reads: bool,
    /// Quantiles of publish-to-FIN latency to report, each in `(0, 1]`
    /// (`--e2e-processing-latency-percentile`); empty (the default) keeps
    /// no latencies at all.
    pub e2e_percentiles: Vec<f64>,
    /// The span of finishes the percentiles cover: between half of it and
    /// all of it (`--e2e-processing-latency-window-time`).
    pub e2e_window: Duration,
    /// Deliveries a message gets before a REQ or timeout of its last one
    /// moves it to dead letters instead of requeueing it (`--max-attempts`,
    /// or the channel's own `max_attempts`); `0`, the default, never does,
    /// as nsqd.
    pub max_attempts: u16,
    /// Most consumers subscribed at once (`--max-channel-consumers`); `0`,
    /// the default, is no limit. A subscription past it fails with
    /// [`ChannelError::TooManyConsumers`](crate::ChannelError::TooManyConsumers).
    pub max_consumers: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            mem_queue_size: 10_000,
            msg_timeout: Duration::from_secs(60),
            max_msg_timeout: Duration::from_secs(15 * 60),
            max_req_timeout: Duration::from_secs(60 * 60),
            max_rdy_count: 2500,
            ephemeral: false,
            commit_backend_reads: false,
            e2e_percentiles: Vec::new(),
            e2e_window: Duration::from_secs(10 * 60),
            max_attempts: 0,
            max_consumers: 0,
        }
    }
}
