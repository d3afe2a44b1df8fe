//! Throughput of put, deliver and FIN through one channel in-process.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_channel::{Channel, ChannelConfig, Clock, SystemClock};
use rsq_codec::{Message, MessageId};
use rsq_diskqueue::{BackendQueue, MemoryQueue};
use tokio::sync::Notify;

const MESSAGES: u64 = 1_000_000;

fn id(n: u64) -> MessageId {
    let mut bytes = [b'0'; 16];
    let hex = format!("{n:016x}");
    bytes.copy_from_slice(hex.as_bytes());
    MessageId(bytes)
}

/// Publishes `MESSAGES` while `consumers` tasks receive and FIN them;
/// `e2e` turns on end-to-end latency percentiles.
async fn run(consumers: u64, rdy: u64, e2e: bool) -> Duration {
    let backend: Arc<dyn BackendQueue> = Arc::new(MemoryQueue::unbounded());
    let ch = Channel::new(
        "bench",
        "ch",
        ChannelConfig {
            e2e_percentiles: if e2e {
                vec![0.99, 0.95, 0.5]
            } else {
                Vec::new()
            },
            ..ChannelConfig::default()
        },
        backend,
        Arc::new(SystemClock),
    );
    let body = Bytes::from(vec![b'x'; 100]);
    let finished = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for client in 0..consumers {
        let mut c = ch.add_consumer(client, Duration::from_secs(60)).unwrap();
        ch.set_ready(client, rdy);
        let ch = ch.clone();
        let finished = Arc::clone(&finished);
        let all_done = Arc::clone(&all_done);
        tasks.push(tokio::spawn(async move {
            // Each consumer takes whatever share it gets, until the channel closes.
            while let Some(m) = c.recv().await {
                ch.finish(client, &m.id).unwrap();
                if finished.fetch_add(1, Ordering::Relaxed) + 1 == MESSAGES {
                    all_done.notify_one();
                }
            }
        }));
    }
    let start = Instant::now();
    let mut stamp = SystemClock.unix_nanos();
    for n in 0..MESSAGES {
        ch.put(Message::new(id(n), stamp, body.clone()))
            .await
            .unwrap();
        if n % 256 == 0 {
            tokio::task::yield_now().await;
            stamp = SystemClock.unix_nanos();
        }
    }
    all_done.notified().await;
    let took = start.elapsed();
    ch.close().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(ch.stats().timeout_count, 0);
    took
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (consumers, rdy, e2e) in [
        (1, 1, false),
        (1, 100, false),
        (8, 100, false),
        (8, 100, true),
    ] {
        let took = rt.block_on(run(consumers, rdy, e2e));
        let rate = MESSAGES as f64 / took.as_secs_f64();
        let e2e = if e2e { ", e2e 3 percentiles" } else { "" };
        println!(
            "rsq-channel put+deliver+FIN 100B, {consumers} consumer(s), RDY {rdy}{e2e}: {:.2} M msgs/s ({MESSAGES} msgs in {:.2} s)",
            rate / 1e6,
            took.as_secs_f64()
        );
    }
}
