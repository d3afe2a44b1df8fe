//! The one timer each half of a connection sleeps on.

use std::pin::Pin;
use std::time::Instant;

use tokio::time::{Sleep, sleep_until};

/// A timer that follows a sans-IO machine's `poll_timeout`, re-armed
/// lazily: it is reset only when the wanted instant comes before the one
/// armed. A later one lets it fire early at the old instant, where the
/// machine's `handle_timeout`, which acts only on what is due, finds
/// nothing to do and the timer is armed again. The read deadline moves on
/// every read and the writer's wake-up on every held batch; a tokio timer
/// made or reset each time cost a timer-wheel update per read or write.
#[derive(Debug, Default)]
pub(crate) struct LazyTimer {
    /// Made at the first deadline, then reset: one per connection half.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The instant the sleep fires at; `None` while nothing is wanted.
    armed: Option<Instant>,
}

impl LazyTimer {
    /// Makes the timer fire no later than `want`; `None` disarms it.
    pub(crate) fn arm(&mut self, want: Option<Instant>) {
        let Some(want) = want else {
            self.armed = None;
            return;
        };
        if self.armed.is_some_and(|armed| armed <= want) {
            return;
        }
        let at = tokio::time::Instant::from_std(want);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(sleep_until(at))),
        }
        self.armed = Some(want);
    }

    /// Completes when the armed instant passes (then the timer is
    /// disarmed); never while disarmed. Cancel-safe.
    pub(crate) async fn fired(&mut self) {
        match (&mut self.sleep, self.armed) {
            (Some(sleep), Some(_)) => {
                sleep.as_mut().await;
                self.armed = None;
            }
            _ => std::future::pending().await,
        }
    }
}
