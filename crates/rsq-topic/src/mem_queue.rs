//! The topic's bounded in-memory message queue, bounded by `mem-queue-size`.
//!
//! It models nsqd's buffered Go channel `memoryMsgChan`: puts never wait (a
//! full queue sends the caller to the backend), and with a capacity of zero
//! it behaves like an unbuffered channel, which accepts a message only while
//! the pump is waiting to receive one.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use rsq_codec::Message;
use tokio::sync::Notify;

/// A FIFO of messages with a fixed capacity, read by one pump.
#[derive(Debug)]
pub(crate) struct MemQueue {
    state: Mutex<State>,
    readable: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Message>,
    /// The pump is parked in [`MemQueue::pop`] on an empty queue; a
    /// zero-capacity queue takes one message then (the Go rendezvous).
    pump_waiting: bool,
}

impl MemQueue {
    /// An empty queue holding at most `capacity` messages.
    pub(crate) fn new(capacity: usize) -> Self {
        MemQueue {
            state: Mutex::new(State::default()),
            readable: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a single push, pop, drain or flag write,
        // so a panic elsewhere cannot leave the state half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `msg` if there is room, or gives it back.
    ///
    /// `handoff` allows the zero-capacity rendezvous: with capacity 0 the
    /// message is taken only if the pump is waiting on an empty queue.
    pub(crate) fn try_push(&self, msg: Message, handoff: bool) -> Result<(), Message> {
        let mut state = self.lock();
        let room = if self.capacity == 0 {
            handoff && state.pump_waiting && state.messages.is_empty()
        } else {
            state.messages.len() < self.capacity
        };
        if !room {
            return Err(msg);
        }
        state.messages.push_back(msg);
        state.pump_waiting = false;
        drop(state);
        self.readable.notify_one();
        Ok(())
    }

    /// Appends every message if all of them fit, or gives them all back.
    pub(crate) fn try_push_all(&self, msgs: Vec<Message>) -> Result<(), Vec<Message>> {
        let mut state = self.lock();
        if self.capacity.saturating_sub(state.messages.len()) < msgs.len() {
            return Err(msgs);
        }
        state.messages.extend(msgs);
        drop(state);
        self.readable.notify_one();
        Ok(())
    }

    /// Waits for and takes the next message.
    #[cfg(test)]
    pub(crate) async fn pop(&self) -> Message {
        let mut batch = self.pop_many(1).await;
        debug_assert_eq!(batch.len(), 1);
        batch.swap_remove(0)
    }

    /// Waits for a message, then takes it and every one queued behind it,
    /// up to `max` (at least one), oldest first: the pump hands a burst to
    /// its channels in one put each.
    ///
    /// Cancel-safe: messages are removed only in the same synchronous step
    /// that returns them, so dropping this future (inside `select!`) loses
    /// nothing.
    pub(crate) async fn pop_many(&self, max: usize) -> Vec<Message> {
        let _waiting = WaitingGuard(self);
        loop {
            // Register before checking, so a push between the check and the
            // await still wakes us.
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.messages.is_empty() {
                    state.pump_waiting = false;
                    let n = state.messages.len().min(max.max(1));
                    return state.messages.drain(..n).collect();
                }
                state.pump_waiting = true;
            }
            notified.await;
        }
    }

    /// Takes every queued message, oldest first.
    pub(crate) fn drain(&self) -> Vec<Message> {
        self.lock().messages.drain(..).collect()
    }

    /// Messages queued.
    pub(crate) fn len(&self) -> usize {
        self.lock().messages.len()
    }
}

/// Clears `pump_waiting` when the pump stops waiting, whether `pop` returned
/// or was dropped by `select!`.
struct WaitingGuard<'a>(&'a MemQueue);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().pump_waiting = false;
    }
}

#[cfg(test)]
mod tests;
