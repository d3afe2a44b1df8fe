//! Many queues in one directory: a shared [`DirIndex`] keeps each queue to
//! its own files, an unchanged queue reopens and closes without writing,
//! a lazy queue opens only at its first put (or at once if it has files),
//! and an idle queue needs no task to get its changes synced.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rsq_diskqueue::{
    BackendQueue, DirIndex, DiskQueue, FsStorage, LazyDiskQueue, MemStorage, QueueError, Storage,
};

use crate::{Gated, config, drain, open_mem, record};

fn open_indexed(name: &str, index: &Arc<DirIndex>) -> DiskQueue {
    let mut c = config(index.dir());
    c.name = name.to_string();
    DiskQueue::open_with_storage(c, Arc::new(FsStorage::with_index(index.clone()))).unwrap()
}

/// The queue's metadata and segment files (not another queue's whose name
/// starts with this one's).
fn files_of(dir: &Path, queue: &str) -> Vec<String> {
    let prefix = format!("{queue}.diskqueue.");
    let ours = |name: &str| {
        name.strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".dat"))
            .is_some_and(|rest| rest == "meta" || rest.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| ours(n))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn queues_sharing_an_index_keep_to_their_own_files() {
    let dir = tempfile::tempdir().unwrap();
    // Names that prefix each other's file names.
    let queues = ["a", "a.diskqueue.b", "a:c", "ab"];
    let index = DirIndex::load(dir.path()).unwrap();
    for (n, name) in queues.iter().enumerate() {
        let q = open_indexed(name, &index);
        for id in 0..(10 * (n as u64 + 1)) {
            q.put(record(id, 100)).await.unwrap();
        }
        q.close().await.unwrap();
    }
    // A new index, as after a restart, sees what the first one wrote.
    let index = DirIndex::load(dir.path()).unwrap();
    let listed = FsStorage::with_index(index.clone()).list().unwrap();
    assert_eq!(listed.len(), std::fs::read_dir(dir.path()).unwrap().count());
    for (n, name) in queues.iter().enumerate() {
        let q = open_indexed(name, &index);
        assert_eq!(q.depth(), 10 * (n as u64 + 1), "{name}");
        if *name == "a" {
            q.delete().await.unwrap();
        } else {
            q.close().await.unwrap();
        }
    }
    assert!(files_of(dir.path(), "a").is_empty());
    let storage = FsStorage::with_index(index.clone());
    assert!(
        !storage
            .list_prefix("a.diskqueue.")
            .unwrap()
            .iter()
            .any(|n| n.starts_with("a.diskqueue.0") || n == "a.diskqueue.meta.dat")
    );
    assert_eq!(
        storage.list_prefix("ab.diskqueue.").unwrap().len(),
        files_of(dir.path(), "ab").len()
    );
    for (n, name) in queues.iter().enumerate().skip(1) {
        let q = open_indexed(name, &index);
        assert_eq!(drain(&q).len() as u64, 10 * (n as u64 + 1), "{name}");
        q.close().await.unwrap();
    }
}

#[tokio::test]
async fn an_unchanged_queue_reopens_and_closes_without_writing() {
    let mem = Arc::new(MemStorage::new());
    let q = open_mem(config(Path::new("mem")), &mem);
    for id in 0..20 {
        q.put(record(id, 100)).await.unwrap();
    }
    assert_eq!(drain(&q).len(), 20);
    for id in 20..30 {
        q.put(record(id, 100)).await.unwrap();
    }
    q.close().await.unwrap();
    for round in 0..3 {
        let changes = Arc::new(AtomicU64::new(0));
        let counted = changes.clone();
        let counting = Gated::new(mem.clone(), move || {
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        let q = DiskQueue::open_with_storage(config(Path::new("mem")), Arc::new(counting)).unwrap();
        assert_eq!(q.depth(), 10);
        q.close().await.unwrap();
        assert_eq!(changes.load(Ordering::Relaxed), 0, "round {round}");
    }
    // A fresh queue that never held anything leaves no file at all.
    let empty = Arc::new(MemStorage::new());
    let mut c = config(Path::new("mem"));
    c.name = "empty".into();
    let q = open_mem(c, &empty);
    q.close().await.unwrap();
    assert!(empty.names().is_empty(), "{:?}", empty.names());
}

/// The depth a crash now would leave, if the metadata file exists.
fn depth_on_disk(mem: &MemStorage) -> Option<u64> {
    mem.contents("t:c.diskqueue.meta.dat")?;
    let crashed = Arc::new(mem.crashed_copy(|_, synced, _| synced));
    Some(open_mem(config(Path::new("mem")), &crashed).depth())
}

#[tokio::test(start_paused = true)]
async fn changes_are_synced_by_the_timer_after_idling() {
    let mem = Arc::new(MemStorage::new());
    let mut c = config(Path::new("mem"));
    c.sync_every = 0;
    c.sync_timeout = Duration::from_secs(2);
    let q = DiskQueue::open_with_storage(c, mem.clone() as Arc<dyn Storage>).unwrap();
    for round in 1..=3u64 {
        q.put(record(round, 100)).await.unwrap();
        assert_ne!(depth_on_disk(&mem), Some(round), "synced before the timer");
        // Long idle between rounds: the sync task of the last change has
        // ended, and this change must start a new one.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(depth_on_disk(&mem), Some(round), "round {round}");
    }
    q.close().await.unwrap();
}

fn lazy(mem: &Arc<MemStorage>) -> LazyDiskQueue {
    LazyDiskQueue::open(config(Path::new("mem")), mem.clone() as Arc<dyn Storage>).unwrap()
}

#[tokio::test]
async fn a_lazy_queue_opens_at_its_first_put_and_wakes_its_reader() {
    let mem = Arc::new(MemStorage::new());
    let q = Arc::new(lazy(&mem));
    assert!(!q.is_open());
    assert_eq!((q.depth(), q.try_read().unwrap()), (0, None));
    q.commit_reads();
    q.empty().await.unwrap();
    assert!(!q.is_open() && mem.names().is_empty());
    let reader = tokio::spawn({
        let q = q.clone();
        async move { crate::id_of(&q.read().await.unwrap()) }
    });
    tokio::task::yield_now().await;
    q.put(record(7, 100)).await.unwrap();
    assert!(q.is_open());
    assert_eq!(reader.await.unwrap(), 7);
    q.put_many(vec![record(8, 10), record(9, 10)])
        .await
        .unwrap();
    assert_eq!(q.depth(), 2);
    q.close().await.unwrap();
    assert_eq!(drain(&lazy(&mem)), vec![8, 9], "reopened");
}

#[tokio::test]
async fn a_lazy_queue_with_files_opens_at_once() {
    let mem = Arc::new(MemStorage::new());
    let q = open_mem(config(Path::new("mem")), &mem);
    for id in 0..5 {
        q.put(record(id, 100)).await.unwrap();
    }
    q.close().await.unwrap();
    let q = lazy(&mem);
    assert!(q.is_open());
    assert_eq!(q.depth(), 5);
    assert_eq!(q.stats().depth, 5);
}

#[tokio::test]
async fn an_unopened_lazy_queue_closes_and_deletes_without_files() {
    for delete in [false, true] {
        let mem = Arc::new(MemStorage::new());
        let q = Arc::new(lazy(&mem));
        let reader = tokio::spawn({
            let q = q.clone();
            async move { q.read().await }
        });
        tokio::task::yield_now().await;
        if delete {
            q.delete().await.unwrap();
        } else {
            q.close().await.unwrap();
        }
        assert!(matches!(reader.await.unwrap(), Err(QueueError::Closed)));
        assert!(matches!(q.put(record(1, 1)).await, Err(QueueError::Closed)));
        assert!(matches!(q.try_read(), Err(QueueError::Closed)));
        assert!(matches!(q.empty().await, Err(QueueError::Closed)));
        assert!(!q.is_open());
        assert!(mem.names().is_empty(), "{:?}", mem.names());
    }
}
