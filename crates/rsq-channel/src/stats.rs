//! Counters a channel reports, shaped like nsqd's `/stats` channel entry.

use rsq_diskqueue::BackendStats;

use crate::ClientId;

/// A snapshot of one channel, as nsqd's `/stats` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelStats {
    /// The channel's name.
    pub channel_name: String,
    /// Messages waiting for delivery: memory plus backend (not in flight, not deferred).
    pub depth: u64,
    /// The part of `depth` held by the backend.
    pub backend_depth: u64,
    /// Messages delivered and not yet finished, requeued or timed out.
    pub in_flight_count: u64,
    /// Messages held until a later moment (DPUB, REQ with a delay).
    pub deferred_count: u64,
    /// Messages put into the channel (PUB and DPUB; requeues are not counted again).
    pub message_count: u64,
    /// Messages requeued by REQ or because their consumer disconnected.
    pub requeue_count: u64,
    /// Messages requeued because they stayed in flight past their deadline.
    pub timeout_count: u64,
    /// Messages moved to dead letters: REQueued or timed out on their
    /// `max_attempts`-th delivery.
    pub dead_letter_count: u64,
    /// The attempt limit in force (`0`: none).
    pub max_attempts: u16,
    /// Whether delivery is paused.
    pub paused: bool,
    /// Consumers subscribed.
    pub client_count: u64,
    /// One entry per consumer, by client id.
    pub clients: Vec<ConsumerStats>,
    /// End-to-end latency (publish to FIN) over recent finishes; `None`
    /// when the channel keeps none (no `e2e_percentiles` configured).
    pub e2e_processing_latency: Option<E2eLatency>,
    /// The backend's own counters (depth, corrupt records, quarantined
    /// files), as of the same snapshot.
    pub backend: BackendStats,
}

/// A snapshot of one consumer's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// The consumer's id.
    pub client_id: ClientId,
    /// Its RDY count.
    pub ready_count: u64,
    /// Messages it holds in flight.
    pub in_flight_count: u64,
    /// Messages delivered to it.
    pub message_count: u64,
    /// Messages it finished.
    pub finish_count: u64,
    /// Messages it requeued with REQ.
    pub requeue_count: u64,
}

/// Publish-to-FIN latency percentiles over a window of recent finishes
/// (see [`crate::E2eLatencyWindow`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct E2eLatency {
    /// Finishes the percentiles are computed over.
    pub count: u64,
    /// `(quantile, nanoseconds)` pairs in the configured order, e.g.
    /// `(0.99, 1_200_000)`; values are 0 while `count` is 0.
    pub percentiles: Vec<(f64, u64)>,
}
