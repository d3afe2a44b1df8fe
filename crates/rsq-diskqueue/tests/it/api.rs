//! The public API on a real directory: order, rolling, reopen, limits,
//! empty, delete, close, and cancel-safe reads.

use std::sync::Arc;
use std::time::Duration;

use rsq_diskqueue::{BackendQueue, DiskQueue, DiskQueueConfig, MemStorage, Offload, QueueError};

use crate::{config, drain, id_of, open_mem, record};

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".diskqueue.0"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn order_rolling_reopen_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let q = DiskQueue::open(config(dir.path())).unwrap();
    for id in 0..50 {
        q.put(record(id, 100)).await.unwrap();
    }
    assert_eq!(q.depth(), 50);
    q.close().await.unwrap();
    // 116-byte records in 1000-byte segments: 8 per file, 7 files.
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 7, "{files:?}");
    assert_eq!(files[0], "t:c.diskqueue.000000.dat");
    assert!(dir.path().join("t:c.diskqueue.meta.dat").exists());

    let q = DiskQueue::open(config(dir.path())).unwrap();
    assert_eq!(q.depth(), 50);
    let first: Vec<u64> = (0..20)
        .map(|_| id_of(&q.try_read().unwrap().unwrap()))
        .collect();
    assert_eq!(first, (0..20).collect::<Vec<_>>());
    q.close().await.unwrap();
    // Fully read segments are removed once metadata no longer needs them.
    assert_eq!(segment_files(dir.path()).len(), 5);

    let q = DiskQueue::open(config(dir.path())).unwrap();
    assert_eq!(q.depth(), 30);
    assert_eq!(drain(&q), (20..50).collect::<Vec<_>>());
    assert_eq!(q.depth(), 0);
    q.put(record(99, 10)).await.unwrap();
    assert_eq!(drain(&q), vec![99]);
    q.close().await.unwrap();
    assert!(matches!(q.put(record(1, 1)).await, Err(QueueError::Closed)));
    assert!(matches!(q.try_read(), Err(QueueError::Closed)));
}

#[tokio::test]
async fn record_size_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let q = DiskQueue::open(config(dir.path())).unwrap();
    let err = q
        .put(bytes::Bytes::from_static(b"short"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::RecordSize {
                len: 5,
                min: 8,
                max: 4096
            }
        ),
        "{err}"
    );
    let err = q.put(record(1, 5000)).await.unwrap_err();
    assert!(matches!(err, QueueError::RecordSize { len: 5008, .. }));
    // A record bigger than a segment gets a segment of its own.
    q.put(record(2, 3000)).await.unwrap();
    q.put(record(3, 3000)).await.unwrap();
    assert_eq!(drain(&q), vec![2, 3]);
    let mut bad = config(dir.path());
    bad.min_record_size = 10_000;
    assert!(matches!(
        DiskQueue::open(bad),
        Err(QueueError::InvalidConfig { .. })
    ));
}

#[tokio::test]
async fn empty_and_delete_remove_files() {
    empty_and_delete(Offload::BlockingPool).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inline_empty_and_delete_remove_files() {
    empty_and_delete(Offload::Inline).await;
}

async fn empty_and_delete(offload: Offload) {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &std::path::Path| DiskQueueConfig {
        offload,
        ..config(dir)
    };
    let q = DiskQueue::open(config(dir.path())).unwrap();
    for id in 0..30 {
        q.put(record(id, 100)).await.unwrap();
    }
    q.sync().await.unwrap();
    q.empty().await.unwrap();
    assert_eq!(q.depth(), 0);
    assert_eq!(q.try_read().unwrap(), None);
    assert!(segment_files(dir.path()).is_empty());
    q.put(record(100, 10)).await.unwrap();
    q.close().await.unwrap();
    let q = DiskQueue::open(config(dir.path())).unwrap();
    assert_eq!(drain(&q), vec![100]);
    q.put(record(101, 10)).await.unwrap();
    q.delete().await.unwrap();
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    assert!(matches!(q.put(record(1, 1)).await, Err(QueueError::Closed)));
}

#[tokio::test(start_paused = true)]
async fn read_waits_and_cancelling_it_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = Arc::new(DiskQueue::open(config(dir.path())).unwrap());
    for _ in 0..3 {
        tokio::select! {
            _ = q.read() => panic!("nothing to read yet"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let reader = tokio::spawn({
        let q = q.clone();
        async move {
            let mut ids = Vec::new();
            for _ in 0..100 {
                ids.push(id_of(&q.read().await.unwrap()));
            }
            ids
        }
    });
    for id in 0..100 {
        q.put(record(id, 50)).await.unwrap();
        if id % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(reader.await.unwrap(), (0..100).collect::<Vec<_>>());
    // Racing read against a timer many times never drops a record.
    for id in 100..200 {
        q.put(record(id, 50)).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 100 {
        tokio::select! {
            r = q.read() => got.push(id_of(&r.unwrap())),
            _ = tokio::task::yield_now() => {}
        }
    }
    assert_eq!(got, (100..200).collect::<Vec<_>>());
    let closer = tokio::spawn({
        let q = q.clone();
        async move { q.read().await }
    });
    tokio::task::yield_now().await;
    q.close().await.unwrap();
    assert!(matches!(closer.await.unwrap(), Err(QueueError::Closed)));
}

#[tokio::test(start_paused = true)]
async fn sync_timeout_syncs_in_the_background() {
    let storage = Arc::new(MemStorage::new());
    let mut c = config(std::path::Path::new("/mem"));
    c.sync_timeout = Duration::from_secs(2);
    let q = open_mem(c.clone(), &storage);
    q.put(record(1, 60)).await.unwrap();
    let lost = Arc::new(storage.crashed_copy(|_, synced, _| synced));
    assert_eq!(open_mem(c.clone(), &lost).depth(), 0, "not synced yet");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kept = Arc::new(storage.crashed_copy(|_, synced, _| synced));
    assert_eq!(drain(&open_mem(c, &kept)), vec![1]);
    drop(q);
}

#[tokio::test]
async fn interleaved_reads_follow_writes_across_flushes_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_bytes_per_file = 64 << 10;
    let q = DiskQueue::open(c.clone()).unwrap();
    let mut next_read = 0;
    // 30k records of ~300 bytes: several 1 MiB write-buffer flushes and
    // ~140 segment rolls, with the reader sometimes in memory, sometimes on
    // disk, sometimes behind by a whole segment.
    for id in 0..30_000u64 {
        q.put(record(id, 300)).await.unwrap();
        if id % 3 == 0 || id % 5000 > 4000 {
            let r = q.try_read().unwrap().unwrap();
            assert_eq!(id_of(&r), next_read);
            next_read += 1;
        }
    }
    q.close().await.unwrap();
    let q = DiskQueue::open(c).unwrap();
    assert_eq!(q.depth(), 30_000 - next_read);
    assert_eq!(drain(&q), (next_read..30_000).collect::<Vec<_>>());
    q.close().await.unwrap();
    assert!(segment_files(dir.path()).len() <= 1);
}

/// With `sync_every = 1` the write segment is filled with synced zeros
/// ahead of the records (so each put's fsync leaves the size alone);
/// recovery after a crash and a clean close both cut the zeros off.
#[tokio::test]
async fn zeros_written_ahead_are_cut_by_recovery_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.sync_every = 1;
    c.max_bytes_per_file = 1 << 20;
    let segment = dir.path().join("t:c.diskqueue.000000.dat");
    let len = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    let q = DiskQueue::open(c.clone()).unwrap();
    for id in 0..5 {
        q.put(record(id, 100)).await.unwrap();
    }
    assert_eq!(len(&segment), 1 << 20, "zeros written ahead");
    drop(q); // like a crash: no close

    let q = DiskQueue::open(c.clone()).unwrap();
    assert_eq!(len(&segment), 5 * 116, "recovery cut the zeros");
    assert_eq!(q.depth(), 5);
    q.put(record(5, 100)).await.unwrap();
    assert_eq!(len(&segment), 1 << 20);
    q.close().await.unwrap();
    assert_eq!(len(&segment), 6 * 116, "close cut the zeros");
    let q = DiskQueue::open(c).unwrap();
    assert_eq!(drain(&q), (0..6).collect::<Vec<_>>());
}
