//! A watch cell: one small `Copy` value shared by a sender and receivers,
//! the latest value and a version in a mutex, plus a `Notify` (no OS
//! signals here). The topic and its pump signal each other through two of
//! these; tokio's `watch` would do the same with an eight-way notifier, a
//! few hundred bytes per topic that thousands of idle topics pay for
//! nothing.
//!
//! Sending never waits. A receiver sees every value's latest state, not
//! every value, as with `watch`. Dropping the sender closes the cell.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The sender dropped: no value will change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// The cell both halves point at.
struct WatchCell<T> {
    state: Mutex<State<T>>,
    changed: Notify,
}

struct State<T> {
    value: T,
    /// Incremented on every send.
    version: u64,
    closed: bool,
}

impl<T> WatchCell<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Every critical section is a plain assignment: never half done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half.
pub(crate) struct Sender<T> {
    cell: Arc<WatchCell<T>>,
}

/// A receiving half: remembers the version it last saw.
#[derive(Clone)]
pub(crate) struct Receiver<T> {
    cell: Arc<WatchCell<T>>,
    seen: u64,
}

/// A cell holding `value`, with its sender and a receiver that has seen it.
pub(crate) fn new<T: Copy>(value: T) -> (Sender<T>, Receiver<T>) {
    let cell = Arc::new(WatchCell {
        state: Mutex::new(State {
            value,
            version: 0,
            closed: false,
        }),
        changed: Notify::new(),
    });
    let receiver = Receiver {
        cell: cell.clone(),
        seen: 0,
    };
    (Sender { cell }, receiver)
}

impl<T: Copy> Sender<T> {
    /// Changes the value if `modify` says it changed it, waking receivers;
    /// returns whether it did.
    pub(crate) fn send_if_modified(&self, modify: impl FnOnce(&mut T) -> bool) -> bool {
        let modified = {
            let mut state = self.cell.state();
            let modified = modify(&mut state.value);
            if modified {
                state.version += 1;
            }
            modified
        };
        if modified {
            self.cell.changed.notify_waiters();
        }
        modified
    }

    /// Changes the value and wakes receivers, even if nothing changed.
    pub(crate) fn send_modify(&self, modify: impl FnOnce(&mut T)) {
        self.send_if_modified(|value| {
            modify(value);
            true
        });
    }

    /// Replaces the value and wakes receivers.
    pub(crate) fn send_replace(&self, value: T) {
        self.send_modify(|v| *v = value);
    }

    /// The current value.
    pub(crate) fn borrow(&self) -> T {
        self.cell.state().value
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.cell.state().closed = true;
        self.cell.changed.notify_waiters();
    }
}

impl<T: Copy> Receiver<T> {
    /// The current value, marked seen.
    pub(crate) fn borrow_and_update(&mut self) -> T {
        let state = self.cell.state();
        self.seen = state.version;
        state.value
    }

    /// Whether a value was sent since this receiver last looked, or the
    /// sender is gone.
    pub(crate) fn has_changed(&self) -> bool {
        let state = self.cell.state();
        state.version != self.seen || state.closed
    }

    /// Waits for a value this receiver has not seen, and marks it seen.
    /// Cancel safe: nothing is marked until it returns.
    pub(crate) async fn changed(&mut self) -> Result<(), Closed> {
        loop {
            let notified = self.cell.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a send in between wakes us.
            notified.as_mut().enable();
            {
                let state = self.cell.state();
                if state.version != self.seen {
                    self.seen = state.version;
                    return Ok(());
                }
                if state.closed {
                    return Err(Closed);
                }
            }
            notified.await;
        }
    }

    /// Waits until the value satisfies `ready`, and returns it.
    pub(crate) async fn wait_for(&mut self, ready: impl Fn(&T) -> bool) -> Result<T, Closed> {
        loop {
            let notified = self.cell.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.cell.state();
                self.seen = state.version;
                if ready(&state.value) {
                    return Ok(state.value);
                }
                if state.closed {
                    return Err(Closed);
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receivers_see_the_latest_value_and_the_close() {
        let (tx, mut rx) = new(0u64);
        assert!(!rx.has_changed());
        tx.send_replace(1);
        tx.send_replace(2);
        assert!(rx.has_changed());
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update(), 2);
        assert!(!tx.send_if_modified(|_| false));
        assert!(!rx.has_changed());
        let mut waiter = rx.clone();
        let wait = tokio::spawn(async move { waiter.wait_for(|v| *v >= 5).await });
        for v in 3..=5 {
            tx.send_replace(v);
            tokio::task::yield_now().await;
        }
        assert_eq!(wait.await.unwrap(), Ok(5));
        assert_eq!(rx.borrow_and_update(), 5);
        drop(tx);
        assert!(rx.has_changed());
        assert_eq!(rx.changed().await, Err(Closed));
        assert_eq!(rx.wait_for(|v| *v > 100).await, Err(Closed));
    }
}
