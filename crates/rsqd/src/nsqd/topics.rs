//! The topic registry: finding, creating and deleting topics and channels,
//! and telling lookupd and `nsqd.dat` about it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rsq_codec::is_ephemeral;
use rsq_topic::{Topic, TopicConfig, TopicError};

use super::{Nsqd, lock};
use crate::channel_handle::{ChannelHandle, DaemonTopic};
use crate::error::NsqdError;

/// A creator's place in the line for one topic name: the name's entry in
/// `Nsqd::creating`, removed by the last creator to leave it, on every
/// path (a creator whose future is dropped included).
struct CreationTurn<'a> {
    nsqd: &'a Nsqd,
    name: &'a str,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> CreationTurn<'a> {
    fn take(nsqd: &'a Nsqd, name: &'a str) -> Self {
        let turn = lock(&nsqd.creating)
            .entry(name.to_string())
            .or_default()
            .clone();
        CreationTurn { nsqd, name, turn }
    }
}

impl Drop for CreationTurn<'_> {
    fn drop(&mut self) {
        let mut creating = lock(&self.nsqd.creating);
        // The map holds one reference and this turn another: no one else
        // waits for the name.
        if Arc::strong_count(&self.turn) == 2 {
            creating.remove(self.name);
        }
    }
}

impl Nsqd {
    /// All topics, sorted by name.
    pub(crate) fn topics(&self) -> Vec<Arc<DaemonTopic>> {
        let mut topics: Vec<_> = lock(&self.topics).values().cloned().collect();
        topics.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        topics
    }

    /// How many topics exist.
    pub(crate) fn topic_count(&self) -> u64 {
        lock(&self.topics).len() as u64
    }

    /// The topic named `name`, if it exists.
    pub(crate) fn topic(&self, name: &str) -> Option<Arc<DaemonTopic>> {
        lock(&self.topics).get(name).cloned()
    }

    /// Finds or creates a topic; a new one is started at once unless
    /// metadata is still loading, and metadata is written.
    ///
    /// Creators of one name take turns (two concurrent first publishes, or
    /// a PUB racing a SUB, must not both open a disk queue on the same
    /// files); creators of different names do not wait for each other, and
    /// no lock is held while the queue is recovered or `nsqd.dat` written.
    pub(crate) async fn get_or_create_topic(
        &self,
        name: &str,
    ) -> Result<Arc<DaemonTopic>, NsqdError> {
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        if self.is_exiting() {
            return Err(NsqdError::Exiting);
        }
        // A replicated topic has a local topic only where it is led.
        if let (Some(cluster), Some(group)) = (self.cluster(), self.replicated(name))
            && let Some(why) = cluster.refuse_consumers(&group)
        {
            return Err(NsqdError::NotLeader(why));
        }
        let turn = CreationTurn::take(self, name);
        let created = {
            let _turn = turn.turn.lock().await;
            self.create_topic(name).await
        };
        drop(turn);
        let (topic, new) = created?;
        if new && !self.loading.load(Ordering::SeqCst) {
            topic.start();
            self.mark_changed(name);
            self.metadata_changed().await;
        }
        Ok(topic)
    }

    /// Creates topic `name` unless it exists (another creator may have
    /// finished first); says whether it made it.
    async fn create_topic(&self, name: &str) -> Result<(Arc<DaemonTopic>, bool), NsqdError> {
        if let Some(topic) = self.topic(name) {
            return Ok((topic, false));
        }
        let backend = self.factory.open_backend(name, is_ephemeral(name)).await?;
        let topic = Topic::new(
            name,
            TopicConfig {
                mem_queue_size: self.opts.effective_mem_queue_size(),
                backend_only: self.opts.durable,
            },
            backend,
            self.factory.clone(),
        );
        lock(&self.topics).insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, "TOPIC created");
        if let Some(peers) = self.lookup() {
            peers.register(name, None);
        }
        Ok((topic, true))
    }

    /// Finds or creates a channel (and its topic), writing metadata if anything was created.
    pub async fn get_or_create_channel(
        &self,
        topic_name: &str,
        channel_name: &str,
    ) -> Result<(Arc<DaemonTopic>, Arc<ChannelHandle>), NsqdError> {
        let topic = self.get_or_create_topic(topic_name).await?;
        let (channel, created) = topic.get_or_create_channel(channel_name).await?;
        if let Some(group) = self.replicated(topic_name) {
            crate::cluster::channel_created(&group, channel_name);
        }
        if created {
            tracing::info!(
                topic = topic_name,
                channel = channel_name,
                "CHANNEL created"
            );
            if let Some(peers) = self.lookup() {
                peers.register(topic_name, Some(channel_name));
            }
            self.mark_changed(topic_name);
            self.metadata_changed().await;
        }
        Ok((topic, channel))
    }

    /// Deletes a topic with its channels and files.
    pub(crate) async fn delete_topic(&self, name: &str) -> Result<(), NsqdError> {
        let topic = lock(&self.topics)
            .remove(name)
            .ok_or(NsqdError::TopicNotFound)?;
        tracing::info!(topic = name, "TOPIC deleting");
        if let Some(peers) = self.lookup() {
            for (channel, _) in topic.channels() {
                peers.unregister(name, Some(&channel));
            }
            peers.unregister(name, None);
        }
        self.mark_changed(name);
        topic.delete().await?;
        self.metadata_changed().await;
        Ok(())
    }

    /// Deletes one channel; an ephemeral topic left without channels goes too.
    pub(crate) async fn delete_channel(
        &self,
        topic_name: &str,
        channel: &str,
    ) -> Result<(), NsqdError> {
        let topic = self.topic(topic_name).ok_or(NsqdError::TopicNotFound)?;
        let topic_now_empty = topic.delete_channel(channel).await.map_err(|e| match e {
            TopicError::ChannelNotFound(_) => NsqdError::ChannelNotFound,
            other => NsqdError::Topic(other),
        })?;
        tracing::info!(topic = topic_name, channel, "CHANNEL deleted");
        if let Some(peers) = self.lookup() {
            peers.unregister(topic_name, Some(channel));
        }
        if topic_now_empty {
            let _ = self.delete_topic(topic_name).await;
        } else {
            self.mark_changed(topic_name);
            self.metadata_changed().await;
        }
        Ok(())
    }
}
