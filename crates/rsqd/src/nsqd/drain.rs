//! Drain mode (`PUT /config/drain`, `--sigterm-mode=drain`): publishes are
//! refused while consumers are served, until nothing is left to deliver.

use std::sync::atomic::Ordering;

use super::Nsqd;

/// How often a draining daemon looks whether everything is delivered.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// How often a draining daemon logs what is still left.
const DRAIN_REPORT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a draining daemon still waits for: messages in topics that have
/// channels, and messages in channels, in flight or deferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainLeft {
    /// Messages in topics with at least one channel, not yet in a channel.
    pub topic_messages: u64,
    /// Messages in channels (memory and disk), in flight or deferred.
    pub channel_messages: u64,
}

impl DrainLeft {
    /// Nothing is left to deliver.
    pub fn is_empty(&self) -> bool {
        self.topic_messages == 0 && self.channel_messages == 0
    }
}

impl Nsqd {
    /// Whether drain mode is on.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Turns drain mode on or off. While on, every publish is refused
    /// ([`crate::NsqdError::Draining`]) and consumers are served as usual;
    /// [`Nsqd::drained`] resolves once nothing is left to deliver.
    pub(crate) fn set_draining(&self, on: bool) {
        if self.draining.swap(on, Ordering::AcqRel) != on {
            tracing::warn!(
                draining = on,
                "{}",
                if on {
                    "drain mode on: refusing publishes, serving consumers until every channel is empty"
                } else {
                    "drain mode off: accepting publishes again"
                }
            );
            self.drain_changed.notify_waiters();
        }
    }

    /// What is left to deliver (see [`DrainLeft`]); topics without channels
    /// do not count, as they have nowhere to drain to.
    pub(crate) fn drain_left(&self) -> DrainLeft {
        let mut left = DrainLeft::default();
        for topic in self.topics() {
            let channels = topic.channels();
            if channels.is_empty() {
                continue;
            }
            left.topic_messages += topic.stats().depth;
            for (_, channel) in channels {
                let cs = channel.stats();
                left.channel_messages += cs.depth + cs.in_flight_count + cs.deferred_count;
            }
        }
        left
    }

    /// Resolves once drain mode is on and nothing is left to deliver;
    /// turning drain mode off meanwhile starts the wait over. Then logs,
    /// at warn level, every topic without channels that still holds
    /// messages (they stay on disk).
    pub(crate) async fn drained(&self) {
        loop {
            let changed = self.drain_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.is_draining() {
                changed.await;
                continue;
            }
            if self.wait_until_drained().await {
                self.log_undrainable();
                tracing::info!("drained: every channel is empty");
                return;
            }
        }
    }

    /// Looks every [`DRAIN_CHECK`] until nothing is left (true) or drain
    /// mode is turned off (false), logging what is left every
    /// [`DRAIN_REPORT`].
    async fn wait_until_drained(&self) -> bool {
        let mut last_report = tokio::time::Instant::now();
        while self.is_draining() {
            let left = self.drain_left();
            if left.is_empty() {
                return true;
            }
            if last_report.elapsed() >= DRAIN_REPORT {
                tracing::info!(
                    topic_messages = left.topic_messages,
                    channel_messages = left.channel_messages,
                    "draining"
                );
                last_report = tokio::time::Instant::now();
            }
            tokio::time::sleep(DRAIN_CHECK).await;
        }
        false
    }

    /// Logs every topic without channels that still holds messages.
    fn log_undrainable(&self) {
        for topic in self.topics() {
            let depth = topic.stats().depth;
            if depth > 0 && topic.channels().is_empty() {
                tracing::warn!(
                    topic = topic.name(),
                    depth,
                    "topic has no channel to drain to; its messages stay on disk"
                );
            }
        }
    }
}
