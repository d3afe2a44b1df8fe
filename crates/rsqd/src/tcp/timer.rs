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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::{Instant, timeout};

    use super::LazyTimer;

    const S: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_later_wish_fires_early_an_earlier_one_resets_and_none_never_fires() {
        let mut timer = LazyTimer::default();
        assert!(
            timeout(5 * S, timer.fired()).await.is_err(),
            "fired unarmed"
        );

        // A later instant keeps the armed one: it fires early, at 10 s.
        let t0 = Instant::now();
        timer.arm(Some((t0 + 10 * S).into_std()));
        timer.arm(Some((t0 + 20 * S).into_std()));
        timer.fired().await;
        assert_eq!(Instant::now() - t0, 10 * S);

        // An earlier one resets it.
        let t1 = Instant::now();
        timer.arm(Some((t1 + 10 * S).into_std()));
        timer.arm(Some((t1 + 3 * S).into_std()));
        timer.fired().await;
        assert_eq!(Instant::now() - t1, 3 * S);

        // Fired means disarmed; `None` disarms too.
        assert!(timeout(5 * S, timer.fired()).await.is_err(), "fired twice");
        timer.arm(Some((Instant::now() + S).into_std()));
        timer.arm(None);
        assert!(
            timeout(5 * S, timer.fired()).await.is_err(),
            "fired disarmed"
        );
    }
}
