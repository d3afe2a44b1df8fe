//! Benchmark: fan-out throughput of put → pump → channel put, with 1, 10
//! and 100 channels and 100-byte messages, into a channel that only counts.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rsq_codec::{Message, MessageId};
use rsq_diskqueue::MemoryQueue;
use rsq_topic::{SinkError, Topic, TopicConfig, TopicError, TopicSink};
use tokio::sync::Notify;

/// Counts puts across all channels and wakes the bench when it hits `target`.
struct Tally {
    delivered: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

struct CountingChannel(Arc<Tally>);

impl CountingChannel {
    fn count(&self) -> Result<(), SinkError> {
        let tally = &self.0;
        let n = tally.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if n == tally.target.load(Ordering::Relaxed) {
            tally.done.notify_one();
        }
        Ok(())
    }
}

#[async_trait]
impl TopicSink for CountingChannel {
    async fn put(&self, _msg: Message) -> Result<(), SinkError> {
        self.count()
    }
    async fn put_deferred(&self, _msg: Message, _delay: Duration) -> Result<(), SinkError> {
        self.count()
    }
    async fn close(&self) -> Result<(), SinkError> {
        Ok(())
    }
    async fn delete(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

async fn fan_out(channels: usize, messages: u64) -> Duration {
    let tally = Arc::new(Tally {
        delivered: AtomicU64::new(0),
        target: AtomicU64::new(messages * channels as u64),
        done: Notify::new(),
    });
    let factory = {
        let tally = tally.clone();
        move |_: &str, _: &str| -> Result<Arc<CountingChannel>, TopicError> {
            Ok(Arc::new(CountingChannel(tally.clone())))
        }
    };
    let topic = Topic::new(
        "bench",
        TopicConfig::default(),
        Arc::new(MemoryQueue::unbounded()),
        Arc::new(factory),
    );
    for c in 0..channels {
        topic
            .get_or_create_channel(&format!("c{c}"))
            .await
            .expect("channel");
    }
    topic.start();
    let body = Bytes::from(vec![b'x'; 100]);
    let start = Instant::now();
    for n in 0..messages {
        let mut id = [b'0'; 16];
        id[..8].copy_from_slice(&n.to_be_bytes());
        let msg = Message::new(MessageId(id), n as i64, body.clone());
        topic.put(msg).await.expect("put");
    }
    tally.done.notified().await;
    let elapsed = start.elapsed();
    assert_eq!(
        tally.delivered.load(Ordering::Relaxed),
        messages * channels as u64
    );
    topic.close().await.expect("close");
    elapsed
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (channels, messages) in [(1usize, 2_000_000u64), (10, 600_000), (100, 100_000)] {
        // Warm up, then measure.
        runtime.block_on(fan_out(channels, messages / 10));
        let elapsed = runtime.block_on(fan_out(channels, messages));
        let secs = elapsed.as_secs_f64();
        let msgs = messages as f64 / secs;
        let puts = msgs * channels as f64;
        println!(
            "rsq-topic fan-out {channels} channel(s), 100B: {:.2} M msgs/s published, {:.2} M channel puts/s ({messages} msgs in {:.2} s)",
            msgs / 1e6,
            puts / 1e6,
            secs
        );
    }
}
