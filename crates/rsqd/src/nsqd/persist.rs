//! The daemon's side of `nsqd.dat`: recreating topics from it at start,
//! and giving [`crate::metadata::persist::MetadataWriter`] what to write.

use std::sync::atomic::Ordering;

use rsq_codec::is_ephemeral;

use super::Nsqd;
use crate::channel_handle::DaemonTopic;
use crate::metadata::journal::Change;
use crate::metadata::{self, ChannelMetadata, Metadata, MetadataError, TopicMetadata};
use crate::options::VERSION;

/// A topic's channels as `nsqd.dat` lists them: sorted, without ephemeral ones.
fn durable_channels(topic: &DaemonTopic) -> Vec<ChannelMetadata> {
    topic
        .channels()
        .into_iter()
        .filter(|(name, _)| !is_ephemeral(name))
        .map(|(name, c)| ChannelMetadata {
            name,
            paused: c.is_paused(),
            max_attempts: c.own_max_attempts(),
        })
        .collect()
}

impl Nsqd {
    /// Recreates topics and channels from `nsqd.dat`, then starts them.
    pub async fn load_metadata(&self) -> anyhow::Result<()> {
        self.loading.store(true, Ordering::SeqCst);
        self.resume_ids().await?;
        let meta = metadata::load(&*self.world.storage)?;
        for t in &meta.topics {
            self.recreate_topic(t).await;
        }
        self.loading.store(false, Ordering::SeqCst);
        for topic in self.topics() {
            topic.start();
        }
        Ok(self.persist_metadata().await?)
    }

    /// Recreates one topic of `nsqd.dat` with its channels, pauses and
    /// limits; what cannot be recreated is logged and skipped.
    async fn recreate_topic(&self, t: &TopicMetadata) {
        if !rsq_codec::is_valid_name(&t.name) {
            tracing::warn!(topic = %t.name, "skipping topic with invalid name in metadata");
            return;
        }
        let topic = match self.get_or_create_topic(&t.name).await {
            Ok(topic) => topic,
            Err(e) => {
                tracing::error!(topic = %t.name, error = %e, "cannot recreate topic");
                return;
            }
        };
        if t.paused {
            topic.pause();
        }
        for c in &t.channels {
            if !rsq_codec::is_valid_name(&c.name) {
                tracing::warn!(channel = %c.name, "skipping channel with invalid name in metadata");
                continue;
            }
            match topic.get_or_create_channel(&c.name).await {
                Ok((chan, _)) => {
                    if c.paused {
                        chan.pause();
                    }
                    if let Some(max_attempts) = c.max_attempts {
                        chan.set_max_attempts(max_attempts);
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %t.name, channel = %c.name, error = %e, "cannot recreate channel")
                }
            }
        }
    }

    /// Writes `nsqd.dat` from the current topics and channels, and returns
    /// once a write that began after this call has finished (group commit:
    /// see [`crate::metadata::persist::MetadataWriter::write`]).
    pub(crate) async fn persist_metadata(&self) -> Result<(), MetadataError> {
        self.write_metadata(false).await
    }

    /// One write; `last` is the shutdown's.
    pub(super) async fn write_metadata(&self, last: bool) -> Result<(), MetadataError> {
        if self.loading.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.metadata
            .write(
                last,
                || self.snapshot_metadata(),
                |name| self.topic_change(name),
            )
            .await
            .map(|_| ())
    }

    /// The journal line for topic `name` as it is now: its whole entry, or
    /// its deletion when it is gone or ephemeral.
    fn topic_change(&self, name: &str) -> Change {
        match self.topic(name).filter(|t| !t.is_ephemeral()) {
            Some(t) => Change::Topic {
                name: name.to_string(),
                paused: t.is_paused(),
                channels: durable_channels(&t),
            },
            None => Change::DeleteTopic {
                name: name.to_string(),
            },
        }
    }

    /// Records that topic `topic`'s entry (its pause, its channels and
    /// theirs) changed, before the change is written.
    pub(crate) fn mark_changed(&self, topic: &str) {
        // An ephemeral topic is never in `nsqd.dat`.
        if !is_ephemeral(topic) {
            self.metadata.mark_changed(topic);
        }
    }

    /// Records a change to the topic and channel list (create, delete).
    /// Under `--durable` it returns once `nsqd.dat` or its journal holds
    /// the change, so an acknowledged create survives a crash. Otherwise, as
    /// nsqd's `Notify` does, the write happens in the background and the
    /// request does not wait: a crash within one metadata write of the
    /// change (milliseconds) may forget it. A forgotten topic's or
    /// channel's queue files stay on disk and are served again once it is
    /// created again. A failed write is logged and never fails the request,
    /// which already took effect.
    pub(crate) async fn metadata_changed(&self) {
        if self.opts.durable {
            return self.persist_metadata_logged().await;
        }
        let Some(this) = self.this.upgrade() else {
            return;
        };
        tokio::spawn(async move { this.persist_metadata_logged().await });
    }

    /// Writes `nsqd.dat` and waits, logging instead of failing: a pause or
    /// unpause is persisted before it is acknowledged, as nsqd does, so a
    /// crash never (un)pauses a topic behind the operator's back.
    pub(crate) async fn persist_metadata_logged(&self) {
        if let Err(e) = self.persist_metadata().await {
            tracing::error!(error = %e, "cannot write metadata");
        }
    }

    /// The whole `nsqd.dat` as it is now: every durable topic.
    fn snapshot_metadata(&self) -> Metadata {
        let topics = self
            .topics()
            .into_iter()
            .filter(|t| !t.is_ephemeral())
            .map(|t| TopicMetadata {
                name: t.name().to_string(),
                paused: t.is_paused(),
                channels: durable_channels(&t),
            })
            .collect();
        Metadata {
            topics,
            version: VERSION.to_string(),
        }
    }
}
