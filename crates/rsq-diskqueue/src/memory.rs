//! A backend that lives in memory only, for ephemeral topics and channels.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::{BackendQueue, BackendStats, QueueError};

/// An in-memory [`BackendQueue`]: never touches disk, loses everything on exit.
///
/// With a capacity, records beyond it are discarded and counted, which is how
/// nsqd treats ephemeral topics and channels (overflow past the memory queue
/// is dropped silently). Without one it keeps everything, which tests use as
/// a model of a perfect disk.
///
/// ```
/// use bytes::Bytes;
/// use rsq_diskqueue::{BackendQueue, MemoryQueue};
///
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// runtime.block_on(async {
///     let ephemeral = MemoryQueue::discarding(1);
///     ephemeral.put(Bytes::from_static(b"kept")).await.unwrap();
///     ephemeral.put(Bytes::from_static(b"dropped")).await.unwrap();
///     assert_eq!(ephemeral.depth(), 1);
///     assert_eq!(ephemeral.stats().discarded_records, 1);
///     assert_eq!(ephemeral.read().await.unwrap(), "kept");
/// });
/// ```
#[derive(Debug)]
pub struct MemoryQueue {
    state: Mutex<State>,
    readable: Notify,
    capacity: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    records: VecDeque<Bytes>,
    discarded: u64,
    closed: bool,
}

impl MemoryQueue {
    /// A queue that keeps every record.
    pub fn unbounded() -> Self {
        Self::with_capacity(None)
    }

    /// A queue that keeps at most `capacity` records and discards the rest;
    /// `0` discards everything, as nsqd's ephemeral backend does.
    pub fn discarding(capacity: usize) -> Self {
        Self::with_capacity(Some(capacity))
    }

    fn with_capacity(capacity: Option<usize>) -> Self {
        MemoryQueue {
            state: Mutex::new(State::default()),
            readable: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves the deque itself consistent
        // (every operation is a single push, pop or clear), so recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl BackendQueue for MemoryQueue {
    async fn put(&self, record: Bytes) -> Result<(), QueueError> {
        let mut state = self.lock();
        if state.closed {
            return Err(QueueError::Closed);
        }
        if self.capacity.is_some_and(|cap| state.records.len() >= cap) {
            state.discarded += 1;
            return Ok(());
        }
        state.records.push_back(record);
        drop(state);
        self.readable.notify_one();
        Ok(())
    }

    fn try_read(&self) -> Result<Option<Bytes>, QueueError> {
        let mut state = self.lock();
        match state.records.pop_front() {
            Some(record) => Ok(Some(record)),
            None if state.closed => Err(QueueError::Closed),
            None => Ok(None),
        }
    }

    async fn read(&self) -> Result<Bytes, QueueError> {
        loop {
            // Register interest before checking, so a put between the check
            // and the await still wakes us. Nothing is taken until the
            // synchronous `try_read`, which is why dropping this future is safe.
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(record) = self.try_read()? {
                return Ok(record);
            }
            notified.await;
        }
    }

    fn depth(&self) -> u64 {
        self.lock().records.len() as u64
    }

    fn stats(&self) -> BackendStats {
        let state = self.lock();
        BackendStats {
            depth: state.records.len() as u64,
            discarded_records: state.discarded,
            ..BackendStats::default()
        }
    }

    async fn empty(&self) -> Result<(), QueueError> {
        self.lock().records.clear();
        Ok(())
    }

    async fn delete(&self) -> Result<(), QueueError> {
        let mut state = self.lock();
        state.records.clear();
        state.closed = true;
        drop(state);
        self.readable.notify_waiters();
        Ok(())
    }

    async fn close(&self) -> Result<(), QueueError> {
        self.lock().closed = true;
        self.readable.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn rec(i: u8) -> Bytes {
        Bytes::from(vec![i; 3])
    }

    #[tokio::test]
    async fn keeps_order_and_depth() {
        let q = MemoryQueue::unbounded();
        for i in 0..5 {
            q.put(rec(i)).await.unwrap();
        }
        assert_eq!(q.depth(), 5);
        for i in 0..5 {
            assert_eq!(q.try_read().unwrap(), Some(rec(i)));
        }
        assert_eq!(q.try_read().unwrap(), None);
        assert_eq!(q.stats(), BackendStats::default());
    }

    #[tokio::test]
    async fn discarding_counts_what_it_drops() {
        let q = MemoryQueue::discarding(2);
        for i in 0..5 {
            q.put(rec(i)).await.unwrap();
        }
        let stats = q.stats();
        assert_eq!((stats.depth, stats.discarded_records), (2, 3));
        let none = MemoryQueue::discarding(0);
        none.put(rec(1)).await.unwrap();
        assert_eq!(none.depth(), 0);
    }

    #[tokio::test]
    async fn empty_close_and_delete() {
        let q = MemoryQueue::unbounded();
        q.put(rec(1)).await.unwrap();
        q.empty().await.unwrap();
        assert_eq!(q.depth(), 0);
        q.put(rec(2)).await.unwrap();
        q.close().await.unwrap();
        assert!(matches!(q.put(rec(3)).await, Err(QueueError::Closed)));
        // What was stored before close can still be drained.
        assert_eq!(q.try_read().unwrap(), Some(rec(2)));
        assert!(matches!(q.try_read(), Err(QueueError::Closed)));
        let d = MemoryQueue::unbounded();
        d.put(rec(1)).await.unwrap();
        d.delete().await.unwrap();
        assert!(matches!(d.read().await, Err(QueueError::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn read_waits_and_cancelling_it_loses_nothing() {
        let q = Arc::new(MemoryQueue::unbounded());
        // A read cancelled by a timeout takes nothing.
        tokio::select! {
            _ = q.read() => panic!("nothing to read yet"),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        let reader = tokio::spawn({
            let q = q.clone();
            async move { q.read().await.unwrap() }
        });
        tokio::task::yield_now().await;
        q.put(rec(7)).await.unwrap();
        assert_eq!(reader.await.unwrap(), rec(7));
        q.put(rec(8)).await.unwrap();
        assert_eq!(q.read().await.unwrap(), rec(8));
    }
}
