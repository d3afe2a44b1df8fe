//! `sync_every = 1` queues (group commit, explicit commit, the eager
//! metadata writer), each test run with both [`Offload`]s: on the blocking
//! pool as a daemon runs them, and inline on a current-thread runtime with
//! paused time as the simulation does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rsq_diskqueue::{
    BackendQueue, CommitStats, DiskQueue, DiskQueueConfig, MemStorage, Offload, Storage,
};

use crate::{Gated, config, drain, id_of, open_mem, record};

/// The test config on `dir` with every put synced and IO where `offload`
/// says.
fn durable(dir: &std::path::Path, offload: Offload) -> DiskQueueConfig {
    DiskQueueConfig {
        sync_every: 1,
        offload,
        ..config(dir)
    }
}

#[tokio::test]
async fn sync_every_one_makes_each_put_durable() {
    each_put_durable(Offload::BlockingPool).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inline_sync_every_one_makes_each_put_durable() {
    each_put_durable(Offload::Inline).await;
}

async fn each_put_durable(offload: Offload) {
    let storage = Arc::new(MemStorage::new());
    let mut c = durable(std::path::Path::new("/mem"), offload);
    c.sync_timeout = Duration::from_secs(3600);
    let q = open_mem(c.clone(), &storage);
    for id in 0..40 {
        q.put(record(id, 60)).await.unwrap();
    }
    // Crash losing every unsynced byte.
    let crashed = Arc::new(storage.crashed_copy(|_, synced, _| synced));
    let q2 = open_mem(c, &crashed);
    assert_eq!(q2.depth(), 40);
    assert_eq!(drain(&q2), (0..40).collect::<Vec<_>>());
    drop(q);
}

#[tokio::test]
async fn group_commits_are_counted_in_the_configured_stats() {
    commits_counted(Offload::BlockingPool).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inline_group_commits_are_counted_in_the_configured_stats() {
    commits_counted(Offload::Inline).await;
}

async fn commits_counted(offload: Offload) {
    let storage = Arc::new(MemStorage::new());
    let stats = Arc::new(CommitStats::new());
    let mut c = durable(std::path::Path::new("/mem"), offload);
    c.commit_stats = Some(stats.clone());
    let q = open_mem(c, &storage);
    for id in 0..5 {
        q.put(record(id, 60)).await.unwrap();
    }
    q.put_many((5..8).map(|id| record(id, 60)).collect())
        .await
        .unwrap();
    let s = stats.snapshot();
    // One put at a time: each commit covers what was pending, all 8 records.
    assert!((1..=6).contains(&s.commits()), "{s:?}");
    assert_eq!(s.records_sum, 8, "{s:?}");
    assert_eq!(s.records_buckets.iter().sum::<u64>(), s.commits());
    drop(q);
}

/// Eight publishers putting at once; every record is counted in exactly
/// one commit. Returns the number of commits.
async fn concurrent_puts(q: Arc<DiskQueue>, stats: &CommitStats) -> u64 {
    let mut tasks = Vec::new();
    for p in 0..8u64 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                q.put(record(p * 1000 + i, 20)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    q.close().await.unwrap();
    let s = stats.snapshot();
    assert_eq!(s.records_sum, 400, "{s:?}");
    assert!((1..=400).contains(&s.commits()), "{s:?}");
    s.commits()
}

/// Every publisher's records, in its order, among `ids`.
fn check_publishers(ids: &[u64]) {
    assert_eq!(ids.len(), 400);
    for p in 0..8u64 {
        let mine: Vec<u64> = ids.iter().copied().filter(|id| id / 1000 == p).collect();
        assert_eq!(
            mine,
            (0..50).map(|i| p * 1000 + i).collect::<Vec<_>>(),
            "publisher {p} order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_synced_puts_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(CommitStats::new());
    let mut c = durable(dir.path(), Offload::BlockingPool);
    c.max_bytes_per_file = 1 << 20;
    c.commit_stats = Some(stats.clone());
    let q = Arc::new(DiskQueue::open(c.clone()).unwrap());
    concurrent_puts(q, &stats).await;
    check_publishers(&drain(&DiskQueue::open(c).unwrap()));
}

/// Inline, the publishers take turns at running a commit round in their own
/// tasks, on one thread: nothing deadlocks, nothing is lost, and rounds are
/// shared.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inline_concurrent_synced_puts_share_fsyncs() {
    let storage = Arc::new(MemStorage::new());
    let stats = Arc::new(CommitStats::new());
    let mut c = durable(std::path::Path::new("/mem"), Offload::Inline);
    c.max_bytes_per_file = 1 << 20;
    c.commit_stats = Some(stats.clone());
    let q = Arc::new(open_mem(c.clone(), &storage));
    let commits = concurrent_puts(q, &stats).await;
    // Each put yields once before its round, so the others join it.
    assert!(commits < 400, "no fsync was shared");
    check_publishers(&drain(&open_mem(c, &storage)));
}

/// With explicit commit, a record handed out but not committed is read
/// again after a reopen, while committed ones are gone; files holding
/// uncommitted records are not deleted.
#[tokio::test]
async fn explicit_commit_replays_uncommitted_reads() {
    replays_uncommitted(Offload::BlockingPool).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inline_explicit_commit_replays_uncommitted_reads() {
    replays_uncommitted(Offload::Inline).await;
}

async fn replays_uncommitted(offload: Offload) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = durable(dir.path(), offload);
    cfg.explicit_commit = true;
    let q = DiskQueue::open(cfg.clone()).unwrap();
    for id in 0..30 {
        q.put(record(id, 100)).await.unwrap();
    }
    let first: Vec<u64> = (0..10)
        .map(|_| id_of(&q.try_read().unwrap().unwrap()))
        .collect();
    assert_eq!(first, (0..10).collect::<Vec<_>>());
    q.commit_reads();
    // Read across several 1000-byte segments without committing.
    for _ in 0..15 {
        q.try_read().unwrap().unwrap();
    }
    q.close().await.unwrap();

    let q = DiskQueue::open(cfg.clone()).unwrap();
    assert_eq!(q.depth(), 20);
    assert_eq!(drain(&q), (10..30).collect::<Vec<_>>());
    q.commit_reads();
    q.close().await.unwrap();
    let q = DiskQueue::open(cfg).unwrap();
    assert_eq!(q.depth(), 0);
    assert!(drain(&q).is_empty());
}

/// A batch goes in whole and in order, with one sync for the batch when
/// every put must be durable; a bad record rejects the batch before any is stored.
#[tokio::test]
async fn put_many_stores_a_batch_in_order() {
    batch_in_order(Offload::BlockingPool).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inline_put_many_stores_a_batch_in_order() {
    batch_in_order(Offload::Inline).await;
}

async fn batch_in_order(offload: Offload) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable(dir.path(), offload);
    let q = DiskQueue::open(cfg.clone()).unwrap();
    q.put_many((0..50).map(|id| record(id, 40)).collect())
        .await
        .unwrap();
    let too_big = bytes::Bytes::from(vec![0u8; 5000]);
    assert!(q.put_many(vec![record(99, 40), too_big]).await.is_err());
    assert_eq!(q.depth(), 50);
    // Synced on return: visible after a crash-like drop and reopen.
    drop(q);
    let q = DiskQueue::open(cfg).unwrap();
    assert_eq!(drain(&q), (0..50).collect::<Vec<_>>());
}

/// With explicit commit and `sync_every = 1` (a `--durable` queue) a
/// commit reaches the metadata file without waiting for the timer, written
/// off the put path (a blocking-pool thread, or inline a task): after a
/// crash only what was read and not committed comes back, nothing is lost,
/// and the segments already read are removed at the next open (or by the
/// timer's sync) because durable metadata no longer points at them.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn committed_reads_reach_metadata_without_the_timer() {
    eager_metadata(Offload::BlockingPool).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inline_committed_reads_reach_metadata_without_the_timer() {
    eager_metadata(Offload::Inline).await;
}

async fn eager_metadata(offload: Offload) {
    let storage = Arc::new(MemStorage::new());
    let mut c = durable(std::path::Path::new("/mem"), offload);
    c.explicit_commit = true;
    // Far beyond the test: only the eager write can persist the commit.
    c.sync_timeout = Duration::from_secs(3600);
    let q = open_mem(c.clone(), &storage);
    // 116-byte records in 1000-byte segments: 8 per file.
    for id in 0..30 {
        q.put(record(id, 100)).await.unwrap();
    }
    let read: Vec<u64> = (0..20)
        .map(|_| id_of(&q.try_read().unwrap().unwrap()))
        .collect();
    assert_eq!(read, (0..20).collect::<Vec<_>>());

    // Not committed: a crash hands every read record out again.
    let crashed = Arc::new(storage.crashed_copy(|_, synced, _| synced));
    assert_eq!(
        drain(&open_mem(c.clone(), &crashed)),
        (0..30).collect::<Vec<_>>()
    );

    q.commit_oldest_reads(15);
    let meta = "t:c.diskqueue.meta.dat";
    let before = storage.contents(meta);
    // The writer runs on its own; wait for its write (bounded).
    for _ in 0..500 {
        if storage.contents(meta) != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let crashed = Arc::new(storage.crashed_copy(|_, synced, _| synced));
    let replay = open_mem(c.clone(), &crashed);
    assert_eq!(drain(&replay), (15..30).collect::<Vec<_>>());
    assert!(
        !crashed.names().iter().any(|n| n.ends_with("000000.dat")),
        "a fully read segment survived the reopen: {:?}",
        crashed.names()
    );
    drop(q);
}

/// A commit round that fails answers every put it covered with the error,
/// at once: none is left waiting, in either mode.
#[tokio::test]
async fn a_failed_commit_answers_every_waiting_put() {
    failed_commit(Offload::BlockingPool).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inline_a_failed_commit_answers_every_waiting_put() {
    failed_commit(Offload::Inline).await;
}

async fn failed_commit(offload: Offload) {
    let mem = Arc::new(MemStorage::new());
    let failing = Arc::new(AtomicBool::new(false));
    let gate = {
        let failing = failing.clone();
        move || {
            if failing.load(Ordering::SeqCst) {
                Err(std::io::Error::other("the disk is gone"))
            } else {
                Ok(())
            }
        }
    };
    let storage: Arc<dyn Storage> = Arc::new(Gated::new(mem.clone(), gate));
    let c = durable(std::path::Path::new("/mem"), offload);
    let q = Arc::new(DiskQueue::open_with_storage(c.clone(), storage).unwrap());
    q.put(record(0, 20)).await.unwrap();
    failing.store(true, Ordering::SeqCst);
    let puts: Vec<_> = (1..5)
        .map(|id| {
            let q = q.clone();
            tokio::spawn(async move { q.put(record(id, 20)).await })
        })
        .collect();
    for put in puts {
        let answer = tokio::time::timeout(Duration::from_secs(10), put).await;
        assert!(matches!(answer, Ok(Ok(Err(_)))), "{answer:?}");
    }
    // What was acknowledged survives.
    let crashed = Arc::new(mem.crashed_copy(|_, synced, _| synced));
    assert_eq!(drain(&open_mem(c, &crashed)).first(), Some(&0));
}
