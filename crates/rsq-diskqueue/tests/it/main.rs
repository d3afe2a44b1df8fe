//! Integration tests for rsq-diskqueue: the public API on real directories,
//! a model-based property test with simulated crashes, the `sync_every = 1`
//! tests, each in both `Offload` modes, a determinism check of inline runs,
//! corruption handling, and a crash test that SIGKILLs a writer process.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod api;
mod budget;
mod corruption;
mod crash;
mod determinism;
mod durable;
mod go_format;
mod many_queues;
mod model;
mod recovery;

use std::sync::Arc;

use bytes::Bytes;
use rsq_diskqueue::{BackendQueue, DiskQueue, DiskQueueConfig, MemStorage, Offload, Storage};

/// A record that carries its id and checks itself: 8 id bytes, then `len`
/// filler bytes derived from the id.
pub fn record(id: u64, len: usize) -> Bytes {
    let mut v = id.to_be_bytes().to_vec();
    v.extend((0..len).map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8));
    Bytes::from(v)
}

/// The id of a record made by [`record`], panicking if it is not one.
pub fn id_of(payload: &[u8]) -> u64 {
    assert!(payload.len() >= 8, "record too short: {payload:?}");
    let id = u64::from_be_bytes(payload[..8].try_into().unwrap());
    assert_eq!(
        &record(id, payload.len() - 8)[..],
        payload,
        "record {id} damaged"
    );
    id
}

/// A config with small segments for tests.
pub fn config(dir: &std::path::Path) -> DiskQueueConfig {
    let mut c = DiskQueueConfig::new("t:c", dir);
    c.max_bytes_per_file = 1000;
    c.min_record_size = 8;
    c.max_record_size = 4096;
    c
}

/// The runtime a test of `offload` runs on: current-thread either way, with
/// paused time for [`Offload::Inline`], as the simulation runs a queue (no
/// thread at all, timers fired in order as soon as every task waits).
pub fn runtime_for(offload: Offload) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if offload == Offload::Inline {
        builder.start_paused(true);
    }
    builder.build().unwrap()
}

/// Opens a queue on in-memory storage.
pub fn open_mem(config: DiskQueueConfig, storage: &Arc<MemStorage>) -> DiskQueue {
    DiskQueue::open_with_storage(config, storage.clone() as Arc<dyn Storage>).unwrap()
}

/// Reads everything available now, as ids.
pub fn drain(q: &dyn BackendQueue) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Some(r) = q.try_read().unwrap() {
        ids.push(id_of(&r));
    }
    ids
}

/// A small deterministic random generator (splitmix64) for tests.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A storage over `inner` that asks `gate` before every change it forwards
/// (reads pass straight through), so a test can count the changes a step
/// makes, or fail every change from some point on as a killed process would.
pub struct Gated {
    /// The storage changes reach.
    pub inner: Arc<MemStorage>,
    gate: Box<dyn Fn() -> std::io::Result<()> + Send + Sync>,
}

impl Gated {
    /// `inner`, with `gate` asked before each change.
    pub fn new(
        inner: Arc<MemStorage>,
        gate: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Gated {
        Gated {
            inner,
            gate: Box::new(gate),
        }
    }
}

impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Storage for Gated {
    fn dir(&self) -> &std::path::Path {
        self.inner.dir()
    }
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.inner.list()
    }
    fn len(&self, name: &str) -> std::io::Result<Option<u64>> {
        self.inner.len(name)
    }
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(name, offset, buf)
    }
    fn append(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        (self.gate)()?;
        self.inner.append(name, data)
    }
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> std::io::Result<()> {
        (self.gate)()?;
        self.inner.write_at(name, offset, data)
    }
    fn sync(&self, name: &str) -> std::io::Result<()> {
        (self.gate)()?;
        self.inner.sync(name)
    }
    fn truncate(&self, name: &str, len: u64) -> std::io::Result<()> {
        (self.gate)()?;
        self.inner.truncate(name, len)
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        (self.gate)()?;
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        (self.gate)()?;
        self.inner.remove(name)
    }
    fn write_atomic(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        (self.gate)()?;
        self.inner.write_atomic(name, data)
    }
}
