//! A durable channel over a real disk queue with explicit commit: what is
//! in flight when the process dies is replayed, what was finished is not
//! (beyond the finished records behind the oldest unfinished one).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use rsq_channel::{Channel, ChannelConfig, SystemClock};
use rsq_codec::Message;
use rsq_diskqueue::{BackendQueue, DiskQueue, DiskQueueConfig};

use crate::{SEC, msg, next, num};

pub(crate) fn queue_config(dir: &Path) -> DiskQueueConfig {
    let mut cfg = DiskQueueConfig::new("t:c", dir);
    cfg.sync_every = 1;
    cfg.explicit_commit = true;
    cfg
}

/// What a restart would read: the files as they are now, opened afresh in
/// a copy of the directory (the live queue keeps running).
pub(crate) fn replayed_after_crash(dir: &Path) -> BTreeSet<u64> {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // A metadata write's temporary file may be renamed away meanwhile.
        match std::fs::copy(&path, copy.path().join(path.file_name().unwrap())) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => {
                other.unwrap();
            }
        }
    }
    let q = DiskQueue::open(queue_config(copy.path())).unwrap();
    let mut ids = BTreeSet::new();
    while let Some(record) = q.try_read().unwrap() {
        ids.insert(num(&Message::from_record(record).unwrap().id));
    }
    ids
}

#[tokio::test]
async fn in_flight_messages_survive_a_crash_finished_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let dq = Arc::new(DiskQueue::open(queue_config(dir.path())).unwrap());
    let ch = Channel::new(
        "t",
        "c",
        ChannelConfig {
            mem_queue_size: 0,
            commit_backend_reads: true,
            ..ChannelConfig::default()
        },
        Arc::clone(&dq) as Arc<dyn BackendQueue>,
        Arc::new(SystemClock),
    );
    for n in 1..=3 {
        ch.put(msg(n)).await.unwrap();
    }
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 3);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut c, SEC).await.expect("delivered"));
    }
    got.sort_by_key(|m| num(&m.id));

    // Three in flight: all would come back.
    dq.sync().await.unwrap();
    assert_eq!(replayed_after_crash(dir.path()), BTreeSet::from([1, 2, 3]));

    // 2 finished, 1 still out: nothing may be forgotten yet.
    ch.finish(1, &got[1].id).unwrap();
    dq.sync().await.unwrap();
    assert_eq!(replayed_after_crash(dir.path()), BTreeSet::from([1, 2, 3]));

    // 1 finished too: 1 and 2 are forgotten, 3 (in flight) is kept.
    ch.finish(1, &got[0].id).unwrap();
    dq.sync().await.unwrap();
    assert_eq!(replayed_after_crash(dir.path()), BTreeSet::from([3]));

    ch.finish(1, &got[2].id).unwrap();
    dq.sync().await.unwrap();
    assert!(replayed_after_crash(dir.path()).is_empty());
}
