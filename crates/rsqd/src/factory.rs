//! Opening the queues behind topics and channels.
//!
//! One place decides how a topic's or channel's backend is made from the
//! options: a disk queue named as nsqd names it (with `--durable`'s sync
//! and commit policy), or a discarding memory queue for `#ephemeral`
//! names; and how a channel is configured. No queue recovery runs on a
//! runtime thread: a queue with files is opened on tokio's blocking pool.

use std::sync::{Arc, Weak};

use rsq_channel::{Channel, ChannelConfig};
use rsq_codec::is_ephemeral;
use rsq_diskqueue::{
    BackendQueue, CommitSnapshot, CommitStats, DiskBudget, DiskQueueConfig, LazyDiskQueue,
    MemoryQueue,
};
use rsq_topic::{SinkError, SinkFactory, TopicError};

use crate::channel_handle::ChannelHandle;
use crate::dead_letter::{self, ChannelLimit};
use crate::nsqd::Nsqd;
use crate::options::Options;
use crate::world::World;

/// The disk queue configuration of the queue `queue_name` (`topic` or
/// `topic:channel`, as nsqd names them) in `data_path`: its segment size,
/// and record sizes from a bare message header up to a header and a
/// `max_msg_size` body, as nsqd gives go-diskqueue. The daemon adds its
/// sync policy; `rsqd downgrade` uses it as it is, so it reads each queue
/// with the limits the daemon wrote it under.
pub fn disk_queue_config(
    queue_name: &str,
    data_path: &std::path::Path,
    max_msg_size: u64,
    max_bytes_per_file: u64,
) -> DiskQueueConfig {
    let mut config = DiskQueueConfig::new(queue_name, data_path);
    config.max_bytes_per_file = max_bytes_per_file;
    config.min_record_size = rsq_codec::MESSAGE_HEADER_LEN;
    config.max_record_size = usize::try_from(max_msg_size)
        .unwrap_or(usize::MAX)
        .saturating_add(rsq_codec::MESSAGE_HEADER_LEN);
    config
}

/// Opens topic and channel queues.
pub(crate) struct Factory {
    opts: Arc<Options>,
    /// The clock, the data dir (shared by every queue: its index of file
    /// names means opening a queue does not list the directory, and one
    /// storage with one cache of open files costs less than one per queue)
    /// and where blocking IO runs.
    world: World,
    /// Every `--durable` queue's group commits, counted together.
    commit_stats: Arc<CommitStats>,
    /// The bytes of every queue's segment files (`--max-disk-bytes`).
    budget: Arc<DiskBudget>,
    /// The daemon, for channels' dead-letter publishes (no cycle).
    nsqd: Weak<Nsqd>,
}

impl Factory {
    /// A factory for the daemon `nsqd`, opening queues in `world`.
    pub(crate) fn new(opts: Arc<Options>, world: World, nsqd: Weak<Nsqd>) -> Self {
        Factory {
            commit_stats: Arc::new(CommitStats::new()),
            budget: Arc::new(DiskBudget::new(opts.max_disk_bytes)),
            opts,
            world,
            nsqd,
        }
    }

    /// The shared byte count of every queue's segment files.
    pub(crate) fn budget(&self) -> &DiskBudget {
        &self.budget
    }

    /// Every `--durable` queue's group commits, counted together.
    pub(crate) fn commit_stats(&self) -> CommitSnapshot {
        self.commit_stats.snapshot()
    }

    /// Opens the backend for a topic or channel queue: a disk queue named
    /// as nsqd names it, or a discarding memory queue for ephemeral ones.
    /// A disk queue that has files is recovered where the world runs
    /// blocking IO (tokio's blocking pool for the real one), since that
    /// reads (and may rewrite) them; one without is only
    /// prepared, which costs no IO (the storage's index says it has none).
    pub(crate) async fn open_backend(
        &self,
        queue_name: &str,
        ephemeral: bool,
    ) -> Result<Arc<dyn BackendQueue>, rsq_diskqueue::QueueError> {
        if ephemeral {
            return Ok(Arc::new(MemoryQueue::discarding(0)));
        }
        let opts = &self.opts;
        let mut config = disk_queue_config(
            queue_name,
            &opts.data_path,
            opts.max_msg_size,
            opts.max_bytes_per_file,
        );
        config.sync_every = opts.sync_every;
        config.sync_timeout = opts.sync_timeout;
        config.disk_budget = Some(self.budget.clone());
        config.offload = self.world.offload;
        if opts.durable {
            config.sync_every = 1;
            // The topic's pump commits after its channels stored a batch; a
            // channel commits its finished prefix (see rsq-channel's
            // `BackendReads`), so in-flight messages survive a crash.
            config.explicit_commit = true;
            config.commit_stats = Some(self.commit_stats.clone());
        }
        // Lazy: a queue that never overflows memory costs no open queue.
        let (queue, has_files) = LazyDiskQueue::prepare(config, self.world.storage.clone())?;
        if !has_files {
            return Ok(Arc::new(queue));
        }
        let path = opts.data_path.clone();
        let queue = self
            .world
            .offload
            .run(move || queue.open_now().map(|()| queue))
            .await
            .map_err(|e| rsq_diskqueue::QueueError::Io {
                path,
                source: std::io::Error::other(e),
            })??;
        Ok(Arc::new(queue))
    }
}

#[async_trait::async_trait]
impl SinkFactory<ChannelHandle> for Factory {
    async fn create(&self, topic: &str, channel: &str) -> Result<Arc<ChannelHandle>, TopicError> {
        let ephemeral = is_ephemeral(channel);
        let backend = self
            .open_backend(&format!("{topic}:{channel}"), ephemeral)
            .await
            .map_err(|e| TopicError::ChannelCreate {
                channel: channel.to_string(),
                source: SinkError::new(e),
            })?;
        let config = ChannelConfig {
            mem_queue_size: self.opts.effective_mem_queue_size(),
            msg_timeout: self.opts.msg_timeout,
            max_msg_timeout: self.opts.max_msg_timeout,
            max_req_timeout: self.opts.max_req_timeout,
            max_rdy_count: self.opts.max_rdy_count,
            ephemeral,
            commit_backend_reads: self.opts.durable && !ephemeral,
            e2e_percentiles: self.opts.e2e_processing_latency_percentile.clone(),
            e2e_window: self.opts.e2e_processing_latency_window_time,
            max_attempts: self.opts.max_attempts,
            max_consumers: self.opts.max_channel_consumers,
        };
        // A dead-letter topic's channels have no sink, hence no limit.
        let sink = (!dead_letter::is_dead_letter_topic(topic)).then(|| {
            Arc::new(dead_letter::Publisher::new(
                self.nsqd.clone(),
                topic,
                channel,
            )) as Arc<dyn rsq_channel::DeadLetterSink>
        });
        let chan = Channel::with_dead_letters(
            topic,
            channel,
            config,
            backend,
            self.world.clock.clone(),
            sink,
        );
        Ok(Arc::new(ChannelHandle(chan, ChannelLimit::default())))
    }
}
