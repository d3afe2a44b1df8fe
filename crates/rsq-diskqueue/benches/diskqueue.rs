//! Disk queue throughput: puts with nsqd's default sync policy and with
//! `sync_every = 1` (one publisher, then 8 concurrent publishers sharing
//! fsyncs), and reads of a backlog from disk. Files live under the target
//! directory, not /tmp, which may be a tmpfs where fsync costs nothing.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_diskqueue::{BackendQueue, DiskQueue, DiskQueueConfig};

fn report(what: &str, size: usize, count: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let msgs = count as f64 / secs;
    let mb = msgs * size as f64 / 1e6;
    println!(
        "rsq-diskqueue {what} {size}B: {msgs:.0} msgs/s, {mb:.1} MB/s ({count} records in {secs:.2} s)"
    );
}

fn config(dir: &std::path::Path, sync_every: u64) -> DiskQueueConfig {
    let mut c = DiskQueueConfig::new("bench", dir);
    c.sync_every = sync_every;
    c
}

async fn put_for(q: &DiskQueue, payload: &Bytes, max: u64, budget: Duration) -> (u64, Duration) {
    let start = Instant::now();
    let mut n = 0;
    while n < max && start.elapsed() < budget {
        q.put(payload.clone()).await.unwrap();
        n += 1;
    }
    (n, start.elapsed())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = env!("CARGO_TARGET_TMPDIR");
    runtime.block_on(async {
        for size in [100usize, 1024] {
            let payload = Bytes::from(vec![0xa5u8; size]);

            // Default sync policy, then read the backlog back from disk.
            let dir = tempfile::tempdir_in(base).unwrap();
            let q = DiskQueue::open(config(dir.path(), 2500)).unwrap();
            let (n, t) = put_for(&q, &payload, 1_000_000, Duration::from_millis(1500)).await;
            report("put sync-every=2500", size, n, t);
            q.close().await.unwrap();
            let q = DiskQueue::open(config(dir.path(), 2500)).unwrap();
            let start = Instant::now();
            let mut read = 0u64;
            while q.try_read().unwrap().is_some() {
                read += 1;
            }
            report("read from disk", size, read, start.elapsed());
            q.close().await.unwrap();

            // Every put durable before it returns, one publisher.
            let dir = tempfile::tempdir_in(base).unwrap();
            let q = DiskQueue::open(config(dir.path(), 1)).unwrap();
            let (n, t) = put_for(&q, &payload, 100_000, Duration::from_millis(1500)).await;
            report("put sync-every=1, 1 publisher", size, n, t);
            q.close().await.unwrap();

            // Eight publishers each waiting for their put: group commit.
            let dir = tempfile::tempdir_in(base).unwrap();
            let q = Arc::new(DiskQueue::open(config(dir.path(), 1)).unwrap());
            let start = Instant::now();
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let q = q.clone();
                    let payload = payload.clone();
                    tokio::spawn(async move {
                        put_for(&q, &payload, 100_000, Duration::from_millis(1500))
                            .await
                            .0
                    })
                })
                .collect();
            let mut n = 0;
            for t in tasks {
                n += t.await.unwrap();
            }
            report("put sync-every=1, 8 publishers", size, n, start.elapsed());
            q.close().await.unwrap();
        }
    });
}
