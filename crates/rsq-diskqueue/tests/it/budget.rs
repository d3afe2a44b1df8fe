//! The shared disk budget: what it counts is what the segment files hold,
//! a refused put stores nothing, and a drained queue gives its bytes back.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use rsq_diskqueue::{BackendQueue, DiskBudget, DiskQueueConfig, MemStorage, QueueError};

use crate::{config, id_of, open_mem, record};

/// Bytes of the segment files in `storage` (not metadata, not `.bad`).
fn segment_bytes(storage: &MemStorage) -> u64 {
    storage
        .names()
        .into_iter()
        .filter(|n| n.contains(".diskqueue.") && n.ends_with(".dat") && !n.contains(".meta."))
        .map(|n| storage.contents(&n).map_or(0, |c| c.len() as u64))
        .sum()
}

fn budgeted(limit: u64, max_bytes_per_file: u64) -> (DiskQueueConfig, Arc<DiskBudget>) {
    let budget = Arc::new(DiskBudget::new(limit));
    let mut c = config(Path::new("/mem"));
    c.max_bytes_per_file = max_bytes_per_file;
    c.sync_every = 7;
    c.disk_budget = Some(budget.clone());
    (c, budget)
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    PutMany(Vec<usize>),
    Read(usize),
    Sync,
    Empty,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..300).prop_map(Op::Put),
        2 => proptest::collection::vec(0usize..200, 1..6).prop_map(Op::PutMany),
        3 => (1usize..8).prop_map(Op::Read),
        2 => Just(Op::Sync),
        1 => Just(Op::Empty),
        1 => Just(Op::Reopen),
    ]
}

async fn run(ops: Vec<Op>, limit: u64, max_bytes_per_file: u64) -> Result<(), TestCaseError> {
    let storage = Arc::new(MemStorage::new());
    let (mut c, mut budget) = budgeted(limit, max_bytes_per_file);
    let mut q = open_mem(c.clone(), &storage);
    // Accepted and not yet read, in order.
    let mut model = std::collections::VecDeque::new();
    let mut next_id = 0u64;
    for op in ops {
        match op {
            Op::Put(len) => {
                let id = next_id;
                next_id += 1;
                match q.put(record(id, len)).await {
                    Ok(()) => model.push_back(id),
                    Err(e) => prop_assert!(matches!(e, QueueError::Full { .. }), "{e}"),
                }
            }
            Op::PutMany(lens) => {
                let ids: Vec<u64> = (next_id..next_id + lens.len() as u64).collect();
                next_id += lens.len() as u64;
                let records = ids
                    .iter()
                    .zip(&lens)
                    .map(|(&id, &len)| record(id, len))
                    .collect();
                match q.put_many(records).await {
                    Ok(()) => model.extend(ids),
                    Err(e) => prop_assert!(matches!(e, QueueError::Full { .. }), "{e}"),
                }
            }
            Op::Read(n) => {
                for _ in 0..n {
                    match q.try_read().unwrap() {
                        Some(r) => prop_assert_eq!(Some(id_of(&r)), model.pop_front()),
                        None => prop_assert!(model.is_empty()),
                    }
                }
            }
            Op::Sync => {
                q.sync().await.unwrap();
                prop_assert_eq!(budget.used(), segment_bytes(&storage));
                prop_assert_eq!(q.counted_bytes(), budget.used());
            }
            Op::Empty => {
                q.empty().await.unwrap();
                model.clear();
                prop_assert_eq!(budget.used(), segment_bytes(&storage));
            }
            Op::Reopen => {
                q.close().await.unwrap();
                prop_assert_eq!(budget.used(), segment_bytes(&storage));
                // A daemon's budget starts over with the files it finds.
                (c, budget) = budgeted(limit, max_bytes_per_file);
                q = open_mem(c.clone(), &storage);
                prop_assert_eq!(budget.used(), segment_bytes(&storage));
            }
        }
        if limit > 0 {
            // Pending records are counted too, so this holds at every step.
            prop_assert!(budget.used() <= limit, "{} > {limit}", budget.used());
        }
    }
    // Whatever was accepted is all there, in order.
    while let Some(r) = q.try_read().unwrap() {
        prop_assert_eq!(Some(id_of(&r)), model.pop_front());
    }
    prop_assert!(model.is_empty());
    q.sync().await.unwrap();
    prop_assert_eq!(budget.used(), segment_bytes(&storage));
    q.delete().await.unwrap();
    prop_assert_eq!(budget.used(), 0);
    prop_assert_eq!(segment_bytes(&storage), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn counted_bytes_are_the_segment_bytes_on_disk(
        ops in proptest::collection::vec(op(), 1..80),
        limit in prop_oneof![Just(0u64), 500u64..5000],
        max_bytes_per_file in prop_oneof![Just(300u64), Just(1000), Just(1 << 20)],
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops, limit, max_bytes_per_file))?;
    }
}

#[tokio::test]
async fn a_full_queue_that_is_drained_gives_its_bytes_back_and_takes_puts_again() {
    let storage = Arc::new(MemStorage::new());
    // Segments far larger than the bound: only rolling when drained frees.
    let (c, budget) = budgeted(2000, 1 << 20);
    let q = open_mem(c, &storage);
    let mut accepted = 0u64;
    for id in 0..100 {
        match q.put(record(id, 92)).await {
            Ok(()) => accepted += 1,
            Err(QueueError::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(accepted, 2000 / 108, "records of 108 bytes up to the bound");
    assert!(budget.is_full());
    q.sync().await.unwrap();
    for id in 0..accepted {
        assert_eq!(id_of(&q.try_read().unwrap().unwrap()), id);
    }
    assert!(q.try_read().unwrap().is_none());
    q.sync().await.unwrap();
    assert_eq!(budget.used(), 0, "the drained segment was removed");
    assert_eq!(segment_bytes(&storage), 0);
    assert!(!budget.is_full());
    q.put(record(accepted, 92)).await.unwrap();
    assert_eq!(id_of(&q.try_read().unwrap().unwrap()), accepted);
    q.close().await.unwrap();
}

#[tokio::test]
async fn an_explicit_commit_queue_gives_a_drained_segment_back_only_after_the_commit() {
    let storage = Arc::new(MemStorage::new());
    let (mut c, budget) = budgeted(1000, 1 << 20);
    c.explicit_commit = true;
    let q = open_mem(c, &storage);
    while q.put(record(0, 92)).await.is_ok() {}
    q.sync().await.unwrap();
    while q.try_read().unwrap().is_some() {}
    q.sync().await.unwrap();
    assert!(budget.used() > 0, "uncommitted reads keep their segment");
    q.commit_reads();
    q.sync().await.unwrap();
    assert_eq!(budget.used(), 0);
    assert_eq!(segment_bytes(&storage), 0);
    q.close().await.unwrap();
}
