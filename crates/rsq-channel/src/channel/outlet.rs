//! A consumer's end of the channel: the [`Consumer`] handle its
//! connection reads, and the outlet under the channel lock where delivered
//! messages wait for it.
//!
//! Delivery appends to the outlet while the channel lock is held anyway;
//! the consumer takes the whole queue in one swap per wake-up, so a batch
//! costs one lock and one wake, not one per message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use rsq_codec::Message;

use super::Shared;
use crate::ClientId;

/// A subscribed consumer's end of the channel: the messages delivered to it.
///
/// Each message [`Consumer::recv`] yields is already in flight for this
/// consumer, attempts incremented; at most its RDY count are outstanding.
/// Delivery appends to the consumer's outlet under the channel lock, which
/// the channel holds anyway; the consumer takes everything queued there in
/// one swap per wake-up, so a batch costs one lock and one wake, not one
/// per message. Dropping it unsubscribes, requeueing what it holds.
pub struct Consumer {
    client: ClientId,
    shared: Arc<Shared>,
    /// Taken from the outlet in one go, handed out one by one.
    taken: VecDeque<Message>,
    open: Arc<AtomicBool>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("client", &self.client)
            .field("channel", &self.shared.name)
            .field("taken", &self.taken.len())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// The handle for a consumer just added with its outlet; `open` is
    /// shared with that outlet.
    pub(super) fn new(client: ClientId, shared: Arc<Shared>, open: Arc<AtomicBool>) -> Consumer {
        Consumer {
            client,
            shared,
            taken: VecDeque::new(),
            open,
        }
    }

    /// The client id it was subscribed with.
    pub fn client_id(&self) -> ClientId {
        self.client
    }

    /// The next message delivered to this consumer. `None` once the consumer
    /// was removed or the channel closed, emptied of consumers or deleted.
    ///
    /// Cancel-safe: dropping the future loses no message.
    pub async fn recv(&mut self) -> Option<Message> {
        if self.taken.is_empty() {
            let (shared, client, taken) = (&self.shared, self.client, &mut self.taken);
            std::future::poll_fn(|cx| shared.poll_take(client, taken, Some(cx))).await?;
        }
        self.hand_out()
    }

    /// A message already delivered to this consumer, without waiting; lets
    /// the connection batch every queued message into one write.
    pub fn try_recv(&mut self) -> Option<Message> {
        if self.taken.is_empty() {
            let _ = self.shared.poll_take(self.client, &mut self.taken, None);
        }
        self.hand_out()
    }

    fn hand_out(&mut self) -> Option<Message> {
        // What was taken before the consumer was removed has already been
        // requeued; handing it out would deliver it twice.
        if !self.open.load(Ordering::Acquire) {
            self.taken.clear();
            return None;
        }
        self.taken.pop_front()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.open.load(Ordering::Acquire) {
            let mut inner = self.shared.lock();
            self.shared.remove_consumer(&mut inner, self.client);
        }
    }
}
/// Where delivered messages wait for their consumer to take them; at most
/// its RDY count, as each is in flight.
pub(super) struct Outlet {
    queue: VecDeque<Message>,
    /// The consumer waiting for the queue to fill, if it is.
    waker: Option<Waker>,
    open: Arc<AtomicBool>,
}

impl Outlet {
    /// An empty outlet for a consumer; `open` is shared with its handle.
    pub(super) fn new(open: Arc<AtomicBool>) -> Outlet {
        Outlet {
            queue: VecDeque::new(),
            waker: None,
            open,
        }
    }

    /// Queues a delivered message, waking the consumer if it waits.
    pub(super) fn push(&mut self, msg: Message) {
        self.queue.push_back(msg);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// The consumer is removed: its handle hands out nothing more.
    pub(super) fn close(self) {
        self.open.store(false, Ordering::Release);
        if let Some(waker) = self.waker {
            waker.wake();
        }
    }
}

impl Shared {
    /// Moves everything queued for `client` into `taken` (empty on entry).
    /// `Pending` (with `cx`'s waker kept) when nothing is queued; `None`
    /// once the consumer is gone.
    pub(super) fn poll_take(
        &self,
        client: ClientId,
        taken: &mut VecDeque<Message>,
        cx: Option<&mut Context<'_>>,
    ) -> Poll<Option<()>> {
        debug_assert!(
            taken.is_empty(),
            "taken before the last batch was handed out"
        );
        let mut inner = self.lock();
        let Some(outlet) = inner.outlets.get_mut(&client) else {
            return Poll::Ready(None);
        };
        if outlet.queue.is_empty() {
            if let Some(cx) = cx
                && !outlet
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
            {
                outlet.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        std::mem::swap(&mut outlet.queue, taken);
        Poll::Ready(Some(()))
    }
}
