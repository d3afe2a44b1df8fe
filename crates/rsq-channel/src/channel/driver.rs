//! The channel's driver task: it does only what needs waiting. It sleeps
//! until the state's next deadline (`poll_timeout`), or until the backend
//! has a record while the state has room for one, woken early by a
//! `Notify` when an operation creates an earlier deadline, room to read or
//! a dead letter to send. A dead letter's publish is one more thing it
//! waits on, polled beside the others, so a slow sink delays only the dead
//! letters behind it, never a timeout or a backend read.

use std::future::Future;
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
    /// Whether it would take a dead letter now: no publish is in flight.
    takes_dead_letters: bool,
}

/// A dead letter's publish and settlement (`outbox.rs`), polled by the
/// driver beside its other waits; one at a time, so they leave in order.
type Publish<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

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
        let dead_letters = armed.takes_dead_letters && self.has_dead_letters(inner);
        if earlier || backend || dead_letters {
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

/// The driver: fires deadlines, reads the backend and publishes dead
/// letters, sleeping in between.
pub(super) async fn drive(shared: Arc<Shared>) {
    // One timer, made at the first deadline and reset after: a channel
    // that never has one (no consumer, nothing deferred) carries none.
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut publish: Option<Publish<'_>> = None;
    loop {
        let armed = {
            let mut inner = shared.lock();
            if inner.exiting {
                break;
            }
            inner.state.handle_timeout(shared.clock.now());
            shared.pump(&mut inner);
            if publish.is_none()
                && let Some(msg) = shared.take_dead_letter(&mut inner)
            {
                publish = Some(Box::pin(shared.send_dead_letter(msg)));
            }
            let armed = Armed {
                deadline: inner.state.poll_timeout(),
                backend_room: shared.backend_room(&inner),
                takes_dead_letters: publish.is_none(),
            };
            inner.armed = Some(armed);
            armed
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
            // In a fixed order, not tokio's random one, so a simulation
            // replays the same way. Each turn re-arms from the state, so
            // none starves: due deadlines first, then the dead letter's
            // publish, then a backend read; a wake-up only re-arms, and
            // one left pending is taken on the next turn.
            biased;
            _ = sleep => {}
            () = settled(&mut publish) => {}
            read = shared.backend.read(), if armed.backend_room > 0 => {
                if shared.read_batch(read, armed.backend_room) {
                    // Boxed: rare, and not worth a timer in every idle task.
                    Box::pin(tokio::time::sleep(BACKEND_RETRY_DELAY)).await;
                }
            }
            _ = shared.wake.notified() => {}
        }
        shared.lock().armed = None;
    }
    // Exiting: the dead letter in flight settles first (published, or kept
    // as a record `close` writes back), so `stop`, which waits for this
    // task, finds it in exactly one place.
    if let Some(publish) = publish {
        publish.await;
    }
}

/// Completes the publish in flight, if there is one, and clears it; never
/// completes when there is none. Cancel-safe: the publish itself stays in
/// `publish` when this future is dropped.
async fn settled(publish: &mut Option<Publish<'_>>) {
    match publish {
        Some(in_flight) => {
            in_flight.as_mut().await;
            *publish = None;
        }
        None => std::future::pending().await,
    }
}
