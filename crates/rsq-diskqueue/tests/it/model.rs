//! Model-based property test: random puts, reads, syncs, reopens, empties
//! and crashes against a plain in-memory model. A crash keeps every synced
//! byte and a random prefix of the unsynced ones ([`MemStorage::crashed_copy`]).
//! Checked: nothing synced is lost, order is kept, nothing is invented, a
//! record is only delivered again if its read was not yet synced, and depth
//! matches (after every step). Run with each [`Offload`].

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rsq_diskqueue::{BackendQueue, DiskQueue, MemStorage, Offload, check_recovery_kept_records};

use crate::{Rng, config, id_of, open_mem, record, runtime_for};

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    Read(u8),
    Sync,
    Reopen,
    Crash(u64),
    Empty,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..300).prop_map(Op::Put),
        5 => (1u8..6).prop_map(Op::Read),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        2 => any::<u64>().prop_map(Op::Crash),
        1 => Just(Op::Empty),
    ]
}

/// What the queue must hold: `log[read_upto..]` unread, in order.
#[derive(Debug, Default)]
struct Model {
    log: Vec<u64>,
    read_upto: usize,
    /// Puts before this index are synced and must survive a crash.
    synced_upto: usize,
    /// Reads before this index are synced and must not come back.
    durable_read: usize,
    next_id: u64,
}

impl Model {
    fn all_durable(&mut self) {
        self.synced_upto = self.log.len();
        self.durable_read = self.read_upto;
    }

    /// After a crash and reopen: the queue holds a run of the log that
    /// starts no later than the first unread record and no earlier than the
    /// first whose read was not synced, and ends no earlier than the last
    /// synced put. The model becomes that run, its first record read.
    fn check_recovered(&mut self, q: &DiskQueue) -> Result<(), TestCaseError> {
        let depth = q.depth() as usize;
        if depth == 0 {
            prop_assert!(
                self.synced_upto <= self.read_upto,
                "synced unread records lost: synced {} read {}",
                self.synced_upto,
                self.read_upto
            );
            self.log.truncate(self.read_upto);
        } else {
            let first = id_of(&q.try_read().unwrap().unwrap());
            let a = self.log.iter().position(|&id| id == first);
            prop_assert!(a.is_some(), "record {} invented", first);
            let a = a.unwrap_or(0);
            let b = a + depth;
            prop_assert!(b <= self.log.len(), "more records than were put");
            prop_assert!(a <= self.read_upto, "unread record before {} lost", first);
            prop_assert!(
                a >= self.durable_read,
                "record {} came back after a synced read",
                first
            );
            prop_assert!(
                b >= self.synced_upto,
                "synced record lost: kept {} of {}",
                b,
                self.synced_upto
            );
            self.log.truncate(b);
            self.read_upto = a + 1;
            self.durable_read = a;
        }
        self.synced_upto = self.log.len();
        Ok(())
    }
}

fn run(
    ops: Vec<Op>,
    sync_every_put: bool,
    max_bytes_per_file: u64,
    offload: Offload,
) -> Result<(), TestCaseError> {
    runtime_for(offload).block_on(async move {
        let mut c = config(std::path::Path::new("/mem"));
        c.offload = offload;
        c.sync_every = if sync_every_put { 1 } else { u64::MAX };
        c.sync_timeout = Duration::from_secs(3600);
        c.max_bytes_per_file = max_bytes_per_file;
        let mut storage = Arc::new(MemStorage::new());
        let mut q = open_mem(c.clone(), &storage);
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Put(len) => {
                    let id = m.next_id;
                    m.next_id += 1;
                    q.put(record(id, len)).await.unwrap();
                    m.log.push(id);
                    if sync_every_put {
                        m.synced_upto = m.log.len();
                    }
                }
                Op::Read(n) => {
                    for _ in 0..n {
                        match q.try_read().unwrap() {
                            Some(r) => {
                                prop_assert_eq!(Some(&id_of(&r)), m.log.get(m.read_upto));
                                m.read_upto += 1;
                            }
                            None => prop_assert_eq!(m.read_upto, m.log.len()),
                        }
                    }
                }
                Op::Sync => {
                    q.sync().await.unwrap();
                    m.all_durable();
                }
                Op::Reopen => {
                    q.close().await.unwrap();
                    q = open_mem(c.clone(), &storage);
                    m.all_durable();
                }
                Op::Empty => {
                    q.empty().await.unwrap();
                    m.read_upto = m.log.len();
                    m.all_durable();
                }
                Op::Crash(seed) => {
                    let mut rng = Rng(seed);
                    let crashed = storage.crashed_copy(|_, synced, len| {
                        synced + rng.below((len - synced + 1) as u64) as usize
                    });
                    storage = Arc::new(crashed);
                    let before = storage.crashed_copy(|_, _, len| len);
                    q = open_mem(c.clone(), &storage);
                    let kept = check_recovery_kept_records(
                        &before,
                        &storage,
                        "t:c",
                        c.min_record_size,
                        c.max_record_size,
                    );
                    prop_assert!(kept.is_ok(), "{:?}", kept);
                    m.check_recovered(&q)?;
                }
            }
            prop_assert_eq!(
                q.depth() as usize,
                m.log.len() - m.read_upto,
                "depth after {:?}",
                op
            );
        }
        q.close().await.unwrap();
        let q = open_mem(c, &storage);
        let mut rest = Vec::new();
        while let Some(r) = q.try_read().unwrap() {
            rest.push(id_of(&r));
        }
        prop_assert_eq!(&rest[..], &m.log[m.read_upto..]);
        prop_assert_eq!(q.stats().corrupt_records, 0);
        Ok(())
    })
}

fn cases() -> u32 {
    if std::env::var("RSQ_LONG_TESTS").is_ok() {
        2000
    } else {
        64
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn disk_queue_matches_model(
        ops in proptest::collection::vec(op(), 1..80),
        sync_every_put in any::<bool>(),
        max_bytes_per_file in prop_oneof![Just(300u64), Just(1000), Just(1 << 20)],
    ) {
        run(ops, sync_every_put, max_bytes_per_file, Offload::BlockingPool)?;
    }

    /// The same model with the IO inline, on a current-thread runtime with
    /// paused time: how the simulation runs a queue.
    #[test]
    fn inline_disk_queue_matches_model(
        ops in proptest::collection::vec(op(), 1..80),
        sync_every_put in any::<bool>(),
        max_bytes_per_file in prop_oneof![Just(300u64), Just(1000), Just(1 << 20)],
    ) {
        run(ops, sync_every_put, max_bytes_per_file, Offload::Inline)?;
    }
}
