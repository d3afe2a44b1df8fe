//! The queue from a connection's reader (`session.rs`) to its writer
//! (`writer.rs`): frames to send, settings, the subscription, flushes.
//!
//! Both halves run in one task (`duplex.rs`), which polls the writer after
//! every poll of the reader. So a push needs no wake-up: the writer looks
//! at the queue in the same turn of the task. Waking the writer's waker
//! from the reader, as a channel does, would wake the running task itself,
//! and tokio sends a task that woke itself to the back of the run queue and
//! wakes a parked worker to steal it: one futex wake-up and two context
//! switches per answer at light load, which is what this queue removes.
//! The queue is under a mutex only because a task's future must be `Send`;
//! both ends are in one task, so it is never contended.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use tokio::sync::Notify;

use super::writer::Outbound;

/// Entries the session may queue for the writer before it stops reading
/// the client's commands: a client that sends and never reads its
/// answers is held back, as nsqd's blocking write holds it, instead of
/// growing the queue without end. A batch already read finishes first, so
/// the queue holds at most this plus one read's answers.
pub const OUTBOUND_MAX: usize = 1024;

/// The queue from the session to the writer, counted against
/// [`OUTBOUND_MAX`]. Both ends must be polled inside one
/// [`duplex::run`](super::duplex::run), reader before writer.
pub fn outbound() -> (OutboundTx, OutboundRx) {
    let queue = Arc::new(Queue::default());
    (
        OutboundTx {
            queue: queue.clone(),
        },
        OutboundRx { queue },
    )
}

#[derive(Default)]
struct Queue {
    entries: Mutex<Entries>,
    /// Signalled when the writer takes an entry from a full queue.
    drained: Notify,
}

#[derive(Default)]
struct Entries {
    items: VecDeque<Outbound>,
    /// The session's end is gone: the writer sees the end after the items.
    sender_gone: bool,
    /// The writer's end is gone: sends fail.
    receiver_gone: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Each critical section is one push, pop or flag write.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The session's end of [`outbound`].
pub struct OutboundTx {
    queue: Arc<Queue>,
}

impl OutboundTx {
    /// Queues `outbound`, waking nobody (see the module doc); an error
    /// means the writer is gone, which the session learns through `done`.
    pub fn send(&self, outbound: Outbound) -> Result<(), ()> {
        let mut entries = self.queue.lock();
        if entries.receiver_gone {
            return Err(());
        }
        entries.items.push_back(outbound);
        Ok(())
    }

    /// Whether the queue holds [`OUTBOUND_MAX`] entries or more.
    pub fn is_full(&self) -> bool {
        self.queue.lock().items.len() >= OUTBOUND_MAX
    }

    /// Waits until the queue is below [`OUTBOUND_MAX`]. Cancel-safe.
    pub async fn drained(&self) {
        while self.is_full() {
            // `notify_one` keeps a permit when nobody waits, so a take
            // between the check and this await still wakes us.
            self.queue.drained.notified().await;
        }
    }
}

impl Drop for OutboundTx {
    fn drop(&mut self) {
        self.queue.lock().sender_gone = true;
    }
}

/// The writer's end of [`outbound`].
pub struct OutboundRx {
    queue: Arc<Queue>,
}

impl OutboundRx {
    /// The next entry, `None` once the session is gone and the queue is
    /// empty. Cancel-safe. Pending registers no waker: only the session
    /// pushes, and the duplex polls the writer after every poll of the
    /// session, so a push is seen in the same turn of the task.
    pub async fn recv(&mut self) -> Option<Outbound> {
        std::future::poll_fn(|_| {
            let mut entries = self.queue.lock();
            let was_full = entries.items.len() >= OUTBOUND_MAX;
            match entries.items.pop_front() {
                Some(next) => {
                    drop(entries);
                    if was_full {
                        self.queue.drained.notify_one();
                    }
                    Poll::Ready(Some(next))
                }
                None if entries.sender_gone => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl OutboundRx {
    /// The next entry if it is a frame, without waiting: what the writer
    /// gathers into one write.
    pub fn try_frame(&mut self) -> Option<bytes::Bytes> {
        let mut entries = self.queue.lock();
        let was_full = entries.items.len() >= OUTBOUND_MAX;
        let frame = match entries.items.pop_front() {
            Some(Outbound::Frame(frame)) => frame,
            Some(other) => {
                entries.items.push_front(other);
                return None;
            }
            None => return None,
        };
        drop(entries);
        if was_full {
            self.queue.drained.notify_one();
        }
        Some(frame)
    }
}

impl Drop for OutboundRx {
    fn drop(&mut self) {
        self.queue.lock().receiver_gone = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_leave_in_order_and_the_end_follows_them() {
        let (tx, mut rx) = outbound();
        assert!(tx.send(Outbound::Flush).is_ok());
        assert!(tx.send(Outbound::Close).is_ok());
        drop(tx);
        assert!(matches!(rx.recv().await, Some(Outbound::Flush)));
        assert!(matches!(rx.recv().await, Some(Outbound::Close)));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn frames_are_taken_up_to_the_first_other_entry() {
        let (tx, mut rx) = outbound();
        for entry in [
            Outbound::Frame(bytes::Bytes::from_static(b"a")),
            Outbound::Frame(bytes::Bytes::from_static(b"b")),
            Outbound::Flush,
            Outbound::Frame(bytes::Bytes::from_static(b"c")),
        ] {
            assert!(tx.send(entry).is_ok());
        }
        assert_eq!(rx.try_frame().as_deref(), Some(&b"a"[..]));
        assert_eq!(rx.try_frame().as_deref(), Some(&b"b"[..]));
        assert!(rx.try_frame().is_none(), "a flush is not a frame");
        assert!(matches!(rx.recv().await, Some(Outbound::Flush)));
        assert_eq!(rx.try_frame().as_deref(), Some(&b"c"[..]));
    }

    #[tokio::test]
    async fn a_full_queue_drains_below_its_bound_and_a_gone_writer_refuses() {
        let (tx, mut rx) = outbound();
        for _ in 0..OUTBOUND_MAX {
            assert!(tx.send(Outbound::Flush).is_ok());
        }
        assert!(tx.is_full());
        assert!(rx.recv().await.is_some());
        // The take left a permit: the wait returns at once.
        tx.drained().await;
        assert!(!tx.is_full());
        drop(rx);
        assert!(tx.send(Outbound::Flush).is_err());
    }
}
