//! The driver's part in dead letters: taking each one from the state
//! machine's outbox and publishing it to the channel's [`DeadLetterSink`].
//!
//! The driver polls one publish at a time beside its other waits
//! (`driver.rs`), so timeouts and backend reads go on while a sink is slow.
//! A dead letter is out of the state machine from the moment it is taken
//! until the sink answers, held only by that publish future; on exit the
//! driver finishes it before returning, and `stop` waits for the driver, so
//! it is never in two places nor in none: published, or
//! given back to the outbox (a failure while running), or kept as an
//! orphan record that `close` writes back to the backend (a failure once
//! the channel is exiting). Its backend read counts as finished only after
//! the sink returned `Ok`.

use std::time::Duration;

use rsq_codec::Message;

use super::{Inner, Shared};

/// How long the driver waits before trying a failed dead letter again.
const DEAD_LETTER_RETRY_DELAY: Duration = Duration::from_millis(100);

impl Shared {
    /// Whether the driver has dead letters to send.
    pub(super) fn has_dead_letters(&self, inner: &Inner) -> bool {
        self.dead_letters.is_some() && inner.state.dead_letter_depth() > 0
    }

    /// The next dead letter to send, when there is a sink.
    pub(super) fn take_dead_letter(&self, inner: &mut Inner) -> Option<Message> {
        self.dead_letters.as_ref()?;
        inner.state.poll_dead_letter()
    }

    /// Sends one dead letter and settles it (see the module docs); after a
    /// failure it waits [`DEAD_LETTER_RETRY_DELAY`] before returning, so the
    /// driver takes the next one no sooner.
    pub(super) async fn send_dead_letter(&self, msg: Message) {
        let Some(sink) = self.dead_letters.clone() else {
            return;
        };
        let id = msg.id;
        let attempts = msg.attempts;
        // The clone shares the body; the original stays here in case the
        // sink fails.
        let result = sink.publish(msg.clone()).await;
        let retry = {
            let mut inner = self.lock();
            match result {
                Ok(()) => {
                    tracing::debug!(topic = %self.topic, channel = %self.name, %id, attempts,
                        "message dead-lettered after its last attempt");
                    self.finished_reads(&mut inner, Some(&id));
                    false
                }
                Err(e) if inner.exiting => {
                    tracing::warn!(topic = %self.topic, channel = %self.name, %id, error = %e,
                        "dead letter not published at shutdown; kept in the channel");
                    inner.orphans.push(msg.to_record());
                    false
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, channel = %self.name, %id, error = %e,
                        "cannot publish a dead letter; retrying");
                    inner.state.handle_dead_letter_failed(msg);
                    true
                }
            }
        };
        if retry {
            // Boxed: rare, and not worth a timer in every idle task.
            Box::pin(tokio::time::sleep(DEAD_LETTER_RETRY_DELAY)).await;
        }
    }
}
