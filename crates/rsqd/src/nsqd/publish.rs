//! Publishing: stamping new messages, putting them into their topic, and
//! what a failed or refused publish does to the daemon's health.

use std::sync::atomic::Ordering;

use rsq_codec::Message;
use rsq_diskqueue::LOW_WATER_PERCENT;
use rsq_topic::TopicError;

use super::{Nsqd, lock};
use crate::error::NsqdError;
use rsq_codec::is_ephemeral;

impl Nsqd {
    /// A new message stamped now. Its id is covered by the persisted id
    /// floor before it is returned, so no later run repeats it.
    pub(crate) async fn new_message(&self, body: bytes::Bytes) -> Result<Message, NsqdError> {
        let now = self.clock.unix_nanos();
        let msg = Message::new(self.ids.next(now), now, body);
        self.cover_ids().await?;
        Ok(msg)
    }

    /// New messages for one publish (an MPUB's bodies), stamped with one
    /// reading of the clock; their ids are still distinct and increasing,
    /// and covered by the persisted id floor.
    pub(crate) async fn new_messages(
        &self,
        bodies: Vec<bytes::Bytes>,
    ) -> Result<Vec<Message>, NsqdError> {
        let now = self.clock.unix_nanos();
        let msgs = bodies
            .into_iter()
            .map(|body| Message::new(self.ids.next(now), now, body))
            .collect();
        self.cover_ids().await?;
        Ok(msgs)
    }

    /// `None` when healthy, else the last storage error.
    pub(crate) fn health(&self) -> Option<String> {
        lock(&self.health).clone()
    }

    /// Records the outcome of a storage write for `/ping` and `/stats`
    /// health: an error makes the daemon unhealthy until the next success,
    /// as nsqd's `SetHealth` does.
    fn set_health(&self, err: Option<String>) {
        if err.is_none() && !self.unhealthy.load(Ordering::Relaxed) {
            return;
        }
        let mut health = lock(&self.health);
        self.unhealthy.store(err.is_some(), Ordering::Relaxed);
        *health = err;
    }

    /// Publishes messages to a topic, creating it if needed: one message
    /// with `Topic::put`, more as one all-or-nothing `Topic::put_many`. A
    /// storage failure marks the daemon unhealthy; the next success clears it.
    pub(crate) async fn publish(
        &self,
        topic_name: &str,
        mut msgs: Vec<Message>,
    ) -> Result<(), NsqdError> {
        if self.is_draining() {
            return Err(NsqdError::Draining);
        }
        if let Some(why) = self.disk_full() {
            return Err(NsqdError::DiskFull(why));
        }
        if let Some(group) = self.replicated_for_publish(topic_name).await? {
            // No quorum makes the node unhealthy until a replicated
            // publish succeeds again, so `/ping` says why publishes fail.
            let result = crate::cluster::publish(&group, &msgs).await;
            match &result {
                Ok(()) => self.set_health(None),
                Err(e @ NsqdError::Replication(_)) => {
                    self.set_health(Some(format!("topic {topic_name}: {e}")));
                }
                Err(_) => {}
            }
            return result;
        }
        let topic = self.get_or_create_topic(topic_name).await?;
        let result = match msgs.len() {
            1 => match msgs.pop() {
                Some(msg) => topic.put(msg).await,
                None => Ok(()),
            },
            _ => topic.put_many(msgs).await,
        };
        match result {
            Ok(()) => {
                self.set_health(None);
                Ok(())
            }
            Err(TopicError::Backend(e)) if e.is_disk_full() => Err(NsqdError::DiskFull(
                self.disk_full().unwrap_or_else(|| e.to_string()),
            )),
            Err(e @ TopicError::Backend(_)) => {
                tracing::error!(topic = topic_name, error = %e, "publish failed");
                self.set_health(Some(e.to_string()));
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The group a publish to `topic_name` goes through: the topic's if it
    /// is replicated, or a new one when `--default-replicas` makes every
    /// new (non-ephemeral) topic replicated.
    async fn replicated_for_publish(
        &self,
        topic_name: &str,
    ) -> Result<Option<crate::cluster::GroupHandle>, NsqdError> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        if let Some(group) = cluster.group(topic_name) {
            return Ok(Some(group));
        }
        if self.opts.default_replicas <= 1
            || is_ephemeral(topic_name)
            || self.topic(topic_name).is_some()
        {
            return Ok(None);
        }
        cluster.create(topic_name).await?;
        Ok(cluster.group(topic_name))
    }

    /// `Some(why)` while publishes are refused for a full disk: the bound
    /// was reached (or a write met `ENOSPC`) and usage has not yet fallen to
    /// [`LOW_WATER_PERCENT`] of it. The change of state, either way, is
    /// logged once by the first publish that sees it, never per refusal.
    pub fn disk_full(&self) -> Option<String> {
        let budget = self.disk_budget();
        let full = budget.is_full();
        // A load first: the swap, a write to a line every publisher
        // shares, happens only when the state changed.
        if self.disk_was_full.load(Ordering::Relaxed) != full
            && self.disk_was_full.swap(full, Ordering::Relaxed) != full
        {
            if full {
                tracing::warn!(
                    used = budget.used(),
                    limit = budget.limit(),
                    "disk full: refusing publishes until the disk queues shrink to {LOW_WATER_PERCENT}% of the bound"
                );
            } else {
                tracing::info!(
                    used = budget.used(),
                    "disk no longer full: accepting publishes"
                );
            }
        }
        if !full {
            return None;
        }
        let used = budget.used();
        Some(if budget.is_bounded() {
            format!(
                "disk queues hold {used} bytes of --max-disk-bytes={}; publishing resumes below {LOW_WATER_PERCENT}%",
                budget.limit()
            )
        } else {
            format!("the file system is full (disk queues hold {used} bytes)")
        })
    }
}
