//! The channel's driver task: it does only what needs waiting. It sleeps
//! until the state's next deadline (`poll_timeout`), or until the backend
//! has a record while the state has room for one, woken early by a
//! `Notify` when an operation creates an earlier deadline, room to read or
//! a dead letter to send.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_codec::Message;

use super::{Inner, Shared};

/// How long the driver waits before reading again after a backend read error.
const BACKEND_RETRY_DELAY: Duration = Duration::from_millis(100);

/// What the sleeping driver waits for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Armed {
    /// The state's next deadline, when it has one.
    deadline: Option<Instant>,
    /// How many records it reads once the backend has one; 0: it does not
    /// wait on the backend.
    backend_room: usize,
}

impl Shared {
    /// Wakes the driver if a change gave it something sooner to do than what
    /// it sleeps on.
    pub(super) fn nudge(&self, inner: &mut Inner) {
        let Some(armed) = inner.armed else {
            return;
        };
        let earlier = match (inner.state.poll_timeout(), armed.deadline) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let backend = armed.backend_room == 0 && self.backend_room(inner) > 0;
        if earlier || backend || self.has_dead_letters(inner) {
            inner.armed = None;
            self.wake.notify_one();
        }
    }

    /// How many records the driver may read from the backend now.
    pub(super) fn backend_room(&self, inner: &Inner) -> usize {
        match inner.backend_closed {
            true => 0,
            false => inner.state.backend_room(),
        }
    }

    /// Marks the channel exiting, closes consumers, waits for the driver and
    /// takes every message out. `None` if it was already stopped.
    pub(super) async fn stop(&self) -> Option<(Vec<Message>, Vec<Bytes>)> {
        let (messages, driver) = {
            let mut inner = self.lock();
            if inner.exiting && inner.driver.is_none() {
                return None;
            }
            inner.exiting = true;
            for (_, outlet) in inner.outlets.drain() {
                outlet.close();
            }
            (inner.state.drain(self.clock.now()), inner.driver.take())
        };
        self.wake.notify_one();
        if let Some(driver) = driver
            && let Err(e) = driver.await
        {
            tracing::error!(channel = %self.name, error = %e, "channel driver failed");
        }
        let orphans = std::mem::take(&mut self.lock().orphans);
        Some((messages, orphans))
    }
}

/// The driver: fires deadlines and reads the backend, sleeping in between.
pub(super) async fn drive(shared: Arc<Shared>) {
    // One timer, made at the first deadline and reset after: a channel
    // that never has one (no consumer, nothing deferred) carries none.
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let step = {
            let mut inner = shared.lock();
            if inner.exiting {
                return;
            }
            inner.state.handle_timeout(shared.clock.now());
            shared.pump(&mut inner);
            match shared.take_dead_letter(&mut inner) {
                Some(msg) => Err(msg),
                None => {
                    let armed = Armed {
                        deadline: inner.state.poll_timeout(),
                        backend_room: shared.backend_room(&inner),
                    };
                    inner.armed = Some(armed);
                    Ok(armed)
                }
            }
        };
        let armed = match step {
            Ok(armed) => armed,
            Err(msg) => {
                // Awake, not armed: nothing needs to wake it meanwhile.
                shared.send_dead_letter(msg).await;
                continue;
            }
        };
        let sleep = async {
            match armed.deadline {
                Some(deadline) => {
                    let at = tokio::time::Instant::from_std(deadline);
                    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    timer.as_mut().reset(at);
                    timer.as_mut().await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = sleep => {}
            read = shared.backend.read(), if armed.backend_room > 0 => {
                if shared.read_batch(read, armed.backend_room) {
                    // Boxed: rare, and not worth a timer in every idle task.
                    Box::pin(tokio::time::sleep(BACKEND_RETRY_DELAY)).await;
                }
            }
        }
        shared.lock().armed = None;
    }
}
