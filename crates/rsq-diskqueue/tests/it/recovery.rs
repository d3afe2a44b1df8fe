//! Recovery cases the `diskqueue_recovery` fuzz target found: metadata whose
//! positions lie past a segment's real end, and segment numbers far apart
//! (a stray `…999999999999.dat`). Each builds the files by hand in
//! `MemStorage`, opens, drains, puts, closes and reopens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rsq_diskqueue::{BackendQueue, MemStorage, Storage};

use crate::{config, drain, open_mem, record};

const META: &str = "t:c.diskqueue.meta.dat";
/// Far enough from 0 that anything walking the numbers in between would
/// never finish.
const FAR: u64 = 999_999_999_999;

fn segment(n: u64) -> String {
    format!("t:c.diskqueue.{n:06}.dat")
}

/// One record as it is stored: u32 length, u32 CRC32 of length and
/// payload, payload.
fn stored(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(payload);
    let mut out = len.to_vec();
    out.extend_from_slice(&hasher.finalize().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A segment holding the records with these ids.
fn segment_of(ids: std::ops::Range<u64>) -> Vec<u8> {
    ids.flat_map(|id| stored(&record(id, 20))).collect()
}

/// Metadata in the real format with a correct CRC line.
fn metadata(read: (u64, u64), write: (u64, u64), counts: &[(u64, u64)]) -> Vec<u8> {
    let mut text = format!(
        "rsq-diskqueue 1\nread {} {}\nwrite {} {}\ncounts",
        read.0, read.1, write.0, write.1
    );
    for (file, count) in counts {
        text.push_str(&format!(" {file}:{count}"));
    }
    text.push('\n');
    let crc = crc32fast::hash(text.as_bytes());
    format!("{text}crc {crc:08x}\n").into_bytes()
}

/// Puts `ids`, closes, reopens and checks they all come back in order.
async fn puts_survive_reopen(storage: &Arc<MemStorage>, ids: std::ops::Range<u64>) {
    let q = open_mem(config(std::path::Path::new("/mem")), storage);
    assert_eq!(
        drain(&q),
        Vec::<u64>::new(),
        "queue not empty before the puts"
    );
    for id in ids.clone() {
        q.put(record(id, 20)).await.unwrap();
    }
    q.close().await.unwrap();
    drop(q);
    let q = open_mem(config(std::path::Path::new("/mem")), storage);
    assert_eq!(drain(&q), ids.collect::<Vec<_>>());
    assert_eq!(q.depth(), 0);
    q.close().await.unwrap();
}

/// Fuzz case `crash-write-offset-past-file-end`: valid metadata says read
/// at 8 and write at 13823 in segment 0, which is empty. Recovery used to
/// set the write offset to 8, past the file's end, so records put
/// afterwards were stored after 8 bytes that are no record: a reopen that
/// has to scan the segment (metadata lost) lost them all.
#[tokio::test]
async fn metadata_past_an_empty_segment_loses_no_puts() {
    let storage = Arc::new(MemStorage::new());
    storage.set_contents(META, metadata((0, 8), (0, 13823), &[]));
    storage.set_contents(&segment(0), Vec::new());
    puts_survive_reopen(&storage, 0..5).await;
    // The segment holds exactly the records, from offset 0: a full scan
    // (metadata gone) finds them all too.
    assert_eq!(storage.contents(&segment(0)), Some(segment_of(0..5)));
    storage.remove(META).unwrap();
    let q = open_mem(config(std::path::Path::new("/mem")), &storage);
    assert_eq!(drain(&q), (0..5).collect::<Vec<_>>());
}

/// The read file is shorter than the read position while records follow
/// in a later segment: reading starts at the short file's end, keeps the
/// later records and appends after them.
#[tokio::test]
async fn read_position_past_a_short_segment_is_clamped() {
    let storage = Arc::new(MemStorage::new());
    let first = segment_of(0..2);
    storage.set_contents(META, metadata((0, 500), (1, 0), &[(0, 3)]));
    storage.set_contents(&segment(0), first);
    storage.set_contents(&segment(1), segment_of(2..4));
    let q = open_mem(config(std::path::Path::new("/mem")), &storage);
    assert_eq!(drain(&q), vec![2, 3]);
    q.close().await.unwrap();
    drop(q);
    puts_survive_reopen(&storage, 4..9).await;
}

/// Two segments `FAR` numbers apart, opened with each kind of metadata.
async fn far_apart_segments(meta: Option<Vec<u8>>) {
    let storage = Arc::new(MemStorage::new());
    storage.set_contents(&segment(0), segment_of(0..3));
    storage.set_contents(&segment(FAR), segment_of(3..6));
    if let Some(meta) = meta {
        storage.set_contents(META, meta);
    }
    let started = Instant::now();
    let q = open_mem(config(std::path::Path::new("/mem")), &storage);
    assert_eq!(q.depth(), 6);
    assert_eq!(drain(&q), (0..6).collect::<Vec<_>>());
    q.close().await.unwrap();
    drop(q);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "recovery and reading took {:?}: cost grows with the gap between segment numbers",
        started.elapsed()
    );
    assert!(
        storage.contents(&segment(0)).is_none(),
        "segment 0 was read and should be removed"
    );
    // Puts after the far segment go to it or later, never to a reused name.
    puts_survive_reopen(&storage, 6..40).await;
    let names = storage.names();
    assert!(
        names
            .iter()
            .filter_map(|n| n.strip_prefix("t:c.diskqueue."))
            .filter_map(|n| n.strip_suffix(".dat"))
            .filter_map(|n| n.parse::<u64>().ok())
            .all(|n| n >= FAR),
        "a segment below the far one was created: {names:?}"
    );
}

#[tokio::test]
async fn far_apart_segments_without_metadata() {
    far_apart_segments(None).await;
}

#[tokio::test]
async fn far_apart_segments_with_damaged_metadata() {
    far_apart_segments(Some(Vec::new())).await;
}

#[tokio::test]
async fn far_apart_segments_with_metadata_covering_both() {
    let far_len = segment_of(3..6).len() as u64;
    far_apart_segments(Some(metadata((0, 0), (FAR, far_len), &[(0, 3), (FAR, 3)]))).await;
}

#[tokio::test]
async fn far_apart_segments_found_in_the_tail() {
    // Metadata written before the far segment existed: it is found by the
    // tail scan.
    let len = segment_of(0..3).len() as u64;
    far_apart_segments(Some(metadata((0, 0), (0, len), &[(0, 3)]))).await;
}

#[tokio::test]
async fn far_apart_segments_with_a_missing_one_between() {
    // Metadata counts records in a segment that is gone, between the two.
    let far_len = segment_of(3..6).len() as u64;
    let storage_meta = metadata((0, 0), (FAR, far_len), &[(0, 3), (FAR / 2, 4), (FAR, 3)]);
    let storage = Arc::new(MemStorage::new());
    storage.set_contents(&segment(0), segment_of(0..3));
    storage.set_contents(&segment(FAR), segment_of(3..6));
    storage.set_contents(META, storage_meta);
    let q = open_mem(config(std::path::Path::new("/mem")), &storage);
    assert_eq!(drain(&q), (0..6).collect::<Vec<_>>());
    assert_eq!(q.stats().corrupt_records, 4);
    q.close().await.unwrap();
    drop(q);
    puts_survive_reopen(&storage, 6..10).await;
}

#[tokio::test]
async fn segment_number_out_of_range_is_quarantined() {
    let storage = Arc::new(MemStorage::new());
    storage.set_contents(&segment(0), segment_of(0..3));
    storage.set_contents(&segment(u64::MAX), segment_of(3..6));
    let q = open_mem(config(std::path::Path::new("/mem")), &storage);
    assert_eq!(q.stats().quarantined_files, 1);
    assert!(storage.contents(&segment(u64::MAX)).is_none());
    assert_eq!(
        storage.contents(&format!("{}.bad", segment(u64::MAX))),
        Some(segment_of(3..6)),
        "the stray file is kept, aside"
    );
    assert_eq!(drain(&q), (0..3).collect::<Vec<_>>());
    q.close().await.unwrap();
    drop(q);
    puts_survive_reopen(&storage, 6..10).await;
}

/// Emptying a queue whose segments are far apart owes only the segments
/// that exist.
#[tokio::test]
async fn empty_with_far_apart_segments() {
    let storage = Arc::new(MemStorage::new());
    storage.set_contents(&segment(0), segment_of(0..3));
    storage.set_contents(&segment(FAR), segment_of(3..6));
    let q = open_mem(config(std::path::Path::new("/mem")), &storage);
    assert_eq!(q.try_read().unwrap().map(|r| crate::id_of(&r)), Some(0));
    q.empty().await.unwrap();
    assert_eq!(q.depth(), 0);
    q.close().await.unwrap();
    drop(q);
    assert!(storage.contents(&segment(0)).is_none());
    assert!(storage.contents(&segment(FAR)).is_none());
    puts_survive_reopen(&storage, 6..10).await;
}
