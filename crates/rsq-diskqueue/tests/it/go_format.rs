//! Taking over Go nsqd's go-diskqueue files and handing them back.
//!
//! The fixture is a data directory the real Go nsqd v1.3.0 wrote
//! (`testdata/go-nsqd-1.3.0-data`, the repository's copy of
//! `shared/fixtures/`, described in `testdata/README.md`). An
//! independent reader of Go's format here says what each queue holds
//! unread; a takeover must serve exactly that, in order, byte for byte
//! (timestamps, attempts and ids included), and so must the queue after a
//! crash at any step of the conversion, and after a downgrade and a second
//! takeover.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rsq_diskqueue::{
    BackendQueue, DiskQueue, DiskQueueConfig, MemStorage, Storage, downgrade,
    downgrade_with_storage,
};

use crate::{Gated, Rng, record};

/// nsqd's message header: timestamp, attempts, id.
const MESSAGE_HEADER_LEN: usize = 26;

/// Every queue Go nsqd left in the fixture.
const QUEUES: [&str; 6] = [
    "payments",
    "payments:ledger",
    "payments:archive",
    "signups",
    "signups:welcome",
    "lonely",
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/go-nsqd-1.3.0-data")
}

/// The fixture copied into memory. A missing fixture fails the test (it is
/// part of the repository), so these tests never pass without checking
/// anything.
fn fixture_in_memory() -> MemStorage {
    let dir = fixture();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the Go nsqd fixture must be at {} (testdata/ in the repository, a copy of shared/fixtures/): {e}",
            dir.display()
        )
    });
    let storage = MemStorage::new();
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        storage.set_contents(&name, std::fs::read(entry.path()).unwrap());
    }
    assert!(
        !storage.names().is_empty(),
        "the Go nsqd fixture at {} is empty",
        dir.display()
    );
    storage
}

/// rsqd's configuration for a queue: nsqd's record limits.
fn nsqd_config(name: &str, dir: &Path) -> DiskQueueConfig {
    let mut c = DiskQueueConfig::new(name, dir);
    c.min_record_size = MESSAGE_HEADER_LEN;
    c.max_record_size = 1024 * 1024 + MESSAGE_HEADER_LEN;
    c
}

/// What Go's reader would hand out: records from the read position to the
/// write position, reading files before the write file to their end.
fn go_unread(storage: &MemStorage, queue: &str) -> Vec<Vec<u8>> {
    let meta = storage
        .contents(&format!("{queue}.diskqueue.meta.dat"))
        .unwrap();
    let text = String::from_utf8(meta).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "Go metadata {text:?}");
    let pos = |line: &str| -> (u64, u64) {
        let (f, o) = line.split_once(',').unwrap();
        (f.parse().unwrap(), o.parse().unwrap())
    };
    let (read, write) = (pos(lines[1]), pos(lines[2]));
    let mut out = Vec::new();
    for file in read.0..=write.0 {
        let Some(bytes) = storage.contents(&format!("{queue}.diskqueue.{file:06}.dat")) else {
            continue;
        };
        let mut at = if file == read.0 { read.1 as usize } else { 0 };
        let end = if file == write.0 {
            write.1 as usize
        } else {
            bytes.len()
        };
        while at < end {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            out.push(bytes[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
        assert_eq!(at, end, "{queue} file {file}: records do not end at {end}");
    }
    let depth: usize = lines[0].parse().unwrap();
    assert_eq!(out.len(), depth, "{queue}: Go's depth");
    out
}

/// Opens a queue over `storage` and reads everything, committing nothing
/// else: the payloads in order.
fn drain_payloads(config: DiskQueueConfig, storage: Arc<dyn Storage>) -> Vec<Vec<u8>> {
    let q = DiskQueue::open_with_storage(config, storage).unwrap();
    let mut out = Vec::new();
    while let Some(r) = q.try_read().unwrap() {
        out.push(r.to_vec());
    }
    out
}

#[test]
fn fixture_is_taken_over_exactly() {
    let go = fixture_in_memory();
    let dir = tempfile::tempdir().unwrap();
    for name in go.names() {
        std::fs::write(dir.path().join(&name), go.contents(&name).unwrap()).unwrap();
    }
    let mut total = 0;
    for queue in QUEUES {
        let expected = go_unread(&go, queue);
        let q = DiskQueue::open(nsqd_config(queue, dir.path())).unwrap();
        assert_eq!(q.depth(), expected.len() as u64, "{queue} depth");
        let mut got = Vec::new();
        while let Some(r) = q.try_read().unwrap() {
            got.push(r.to_vec());
        }
        assert_eq!(got, expected, "{queue}: records differ from Go's");
        assert_eq!(q.stats().quarantined_files, 0);
        total += got.len();
    }
    assert_eq!(total, 1804 + 2504 + 300 + 40);
    // Nothing of Go's format is left to be served twice.
    for name in std::fs::read_dir(dir.path()).unwrap() {
        let name = name.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.ends_with(".takeover") && !name.ends_with(".bad"),
            "left behind: {name}"
        );
        if name.ends_with(".meta.dat") {
            let meta = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            assert!(meta.starts_with("rsq-diskqueue"), "{name} is {meta:?}");
        }
    }
}

/// A storage that stops working after `changes` changes, as a process
/// killed at that point would, and the count of changes it has left.
fn interrupted(inner: Arc<MemStorage>, changes: u64) -> (Arc<Gated>, Arc<AtomicU64>) {
    let left = Arc::new(AtomicU64::new(changes));
    let gate = {
        let left = left.clone();
        move || {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .map(drop)
                .map_err(|_| std::io::Error::other("killed"))
        }
    };
    (Arc::new(Gated::new(inner, gate)), left)
}

/// Runs `step` on a fresh copy of `start` interrupted after 0, 1, 2, ...
/// changes until it completes; after each interruption, a crashed copy
/// (unsynced bytes cut at random) must serve exactly `expected`.
fn interrupt_at_every_change(
    start: &MemStorage,
    config: &DiskQueueConfig,
    expected: &[Vec<u8>],
    step: &dyn Fn(Arc<dyn Storage>) -> bool,
) -> u64 {
    let mut rng = Rng(7);
    for changes in 0..10_000 {
        let mem = Arc::new(start.crashed_copy(|_, _, len| len));
        let (storage, left) = interrupted(mem.clone(), changes);
        let completed = step(storage) && left.load(Ordering::Relaxed) > 0;
        if completed {
            return changes;
        }
        let crashed = mem
            .crashed_copy(|_, synced, len| synced + rng.below((len - synced + 1) as u64) as usize);
        let got = drain_payloads(config.clone(), Arc::new(crashed));
        assert_eq!(
            got, expected,
            "killed after {changes} changes: records lost or served twice"
        );
    }
    panic!("the step never completed");
}

#[test]
fn takeover_killed_at_any_change_keeps_go_files_or_converted_ones() {
    let go = fixture_in_memory();
    for queue in ["payments:ledger", "lonely", "signups:welcome"] {
        let expected = go_unread(&go, queue);
        let mut config = nsqd_config(queue, Path::new("/mem"));
        // Several converted segments, so renames can be interrupted too.
        config.max_bytes_per_file = 100_000;
        let changes = interrupt_at_every_change(&go, &config, &expected, &|s| {
            DiskQueue::open_with_storage(config.clone(), s).is_ok()
        });
        eprintln!("{queue}: takeover completes after {changes} changes");
    }
}

/// Downgrades, then checks the files follow go-diskqueue's layout exactly;
/// returns what Go's reader finds.
fn downgraded(storage: &MemStorage, config: &DiskQueueConfig) -> Vec<Vec<u8>> {
    let unread = go_unread(storage, &config.name);
    for name in storage.names() {
        assert!(
            !name.ends_with(".downgrade") && !name.ends_with(".takeover"),
            "{name} left behind"
        );
        if let Some(bytes) = name
            .strip_prefix(&format!("{}.diskqueue.", config.name))
            .filter(|n| n.ends_with(".dat") && !n.starts_with("meta"))
            .and_then(|_| storage.contents(&name))
        {
            // Whole records of [u32 size][payload], rolled before the bound.
            let mut at = 0;
            while at < bytes.len() {
                let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
                assert!(at == 0 || at + 4 + len <= config.max_bytes_per_file as usize);
                at += 4 + len;
            }
            assert_eq!(at, bytes.len(), "{name} does not end on a record");
        }
    }
    unread
}

#[test]
fn downgrade_then_takeover_round_trips_the_fixture() {
    let go = fixture_in_memory();
    let dir = tempfile::tempdir().unwrap();
    for name in go.names() {
        std::fs::write(dir.path().join(&name), go.contents(&name).unwrap()).unwrap();
    }
    for queue in QUEUES {
        let expected = go_unread(&go, queue);
        let config = nsqd_config(queue, dir.path());
        drop(DiskQueue::open(config.clone()).unwrap());
        let n = downgrade(&config, &|b| b).unwrap();
        assert_eq!(n, expected.len() as u64);
        // Running it again finds Go's format and leaves it.
        assert_eq!(downgrade(&config, &|b| b).unwrap(), n);
        let mem = MemStorage::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            mem.set_contents(&name, std::fs::read(entry.path()).unwrap());
        }
        assert_eq!(downgraded(&mem, &config), expected, "{queue}");
        let back = drain_payloads(config.clone(), Arc::new(mem));
        assert_eq!(back, expected, "{queue} after downgrade and takeover");
    }
}

#[test]
fn downgrade_killed_at_any_change_keeps_one_format() {
    let storage = Arc::new(MemStorage::new());
    let mut config = crate::config(Path::new("/mem"));
    config.max_bytes_per_file = 2000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let expected: Vec<Vec<u8>> = runtime.block_on(async {
        let q = DiskQueue::open_with_storage(config.clone(), storage.clone()).unwrap();
        for id in 0..60 {
            q.put(record(id, 40 + id as usize)).await.unwrap();
        }
        for _ in 0..7 {
            q.try_read().unwrap();
        }
        q.close().await.unwrap();
        (7..60)
            .map(|id| record(id, 40 + id as usize).to_vec())
            .collect()
    });
    let tag = |b: Bytes| -> Bytes { b };
    let changes = interrupt_at_every_change(&storage, &config, &expected, &|s| {
        downgrade_with_storage(&config, s, &tag).is_ok()
    });
    assert!(changes > 5, "downgrade made only {changes} changes");
    downgrade_with_storage(&config, storage.clone(), &tag).unwrap();
    assert_eq!(downgraded(&storage, &config), expected);
}

#[test]
fn foreign_segment_is_quarantined_whole() {
    // One Go record is shorter than the rsq record its first bytes
    // announce, so it looks like a torn first record: it must be moved
    // aside, not cut.
    let payload = vec![7u8; 40];
    let mut go_segment = (payload.len() as u32).to_be_bytes().to_vec();
    go_segment.extend_from_slice(&payload);
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
    for bytes in [go_segment, garbage] {
        let storage = Arc::new(MemStorage::new());
        let name = "t:c.diskqueue.000000.dat";
        storage.set_contents(name, bytes.clone());
        let config = crate::config(Path::new("/mem"));
        let q = DiskQueue::open_with_storage(config, storage.clone()).unwrap();
        assert_eq!(q.depth(), 0);
        assert_eq!(q.stats().quarantined_files, 1);
        assert_eq!(storage.contents(&format!("{name}.bad")), Some(bytes));
        assert_eq!(storage.contents(name), None);
    }
}
