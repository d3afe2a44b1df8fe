//! A connection's two halves, the reader (`session.rs`) and the writer
//! (`writer.rs`), as two futures of one task.
//!
//! Two tasks cost a hand-off per answer: the reader's `OK` woke the
//! writer's task, and tokio, finding a second task woken in one turn,
//! woke a parked worker thread to steal one of them, so at light load each
//! published message cost a futex wake-up and a few context switches (the
//! profile of `paced10k` spent most of its daemon CPU in the scheduler).
//! Here the reader queues the frame (`outbound.rs`), and the writer, polled
//! right after it in the same turn, writes it: a PUB is read, published and
//! answered without leaving the thread. The halves still wait independently
//! (a writer blocked on a client that reads nothing does not stop the
//! reader, and the reader stops itself at `OUTBOUND_MAX`), and different
//! connections still run on different worker threads, so throughput grows
//! with cores by connection, as it did.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// How a connection's halves ended.
pub(crate) struct Ended<T> {
    /// What the reader returned.
    pub(crate) reader: T,
    /// Whether the writer finished by itself; `false` when it was dropped
    /// mid-write, `close_limit` after the reader ended.
    pub(crate) writer_finished: bool,
}

/// Polls `reader` and then `writer` on every turn, until the reader has
/// ended and the writer has too, or `close_limit` after the reader ended
/// (then the writer is dropped: a client that reads nothing must not hold
/// its connection open).
///
/// The order matters: the outbound queue's receiver registers no waker
/// (`outbound.rs`), because whatever the reader queued is seen by the
/// writer's poll that follows.
pub(crate) async fn run<R, W>(reader: R, writer: W, close_limit: Duration) -> Ended<R::Output>
where
    R: Future,
    W: Future<Output = ()>,
{
    let mut reader = pin!(reader);
    let mut writer = pin!(Some(writer));
    let mut limit = pin!(None::<tokio::time::Sleep>);
    let mut ended: Option<R::Output> = None;
    let mut writer_finished = false;
    let reader = std::future::poll_fn(|cx| {
        if ended.is_none()
            && let Poll::Ready(out) = reader.as_mut().poll(cx)
        {
            ended = Some(out);
            limit.set(Some(tokio::time::sleep(close_limit)));
        }
        if let Some(w) = writer.as_mut().as_pin_mut()
            && w.poll(cx).is_ready()
        {
            writer.set(None);
            writer_finished = true;
        }
        if ended.is_some() && !writer_finished {
            let timed_out = limit
                .as_mut()
                .as_pin_mut()
                .is_some_and(|sleep| sleep.poll(cx).is_ready());
            if !timed_out {
                return Poll::Pending;
            }
            writer.set(None);
        }
        // Pending until the reader has ended.
        ended.take().map_or(Poll::Pending, Poll::Ready)
    })
    .await;
    Ended {
        reader,
        writer_finished,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_writer_gets_its_time_after_the_reader_ends_and_no_more() {
        let ended = run(async { 7 }, async {}, Duration::from_secs(5)).await;
        assert_eq!(ended.reader, 7);
        assert!(ended.writer_finished);

        let started = tokio::time::Instant::now();
        let ended = run(
            async { 8 },
            std::future::pending::<()>(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(ended.reader, 8);
        assert!(!ended.writer_finished, "a stuck writer is dropped");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_ends_first_waits_for_the_reader() {
        let started = tokio::time::Instant::now();
        let ended = run(
            async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                9
            },
            async {},
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(ended.reader, 9);
        assert!(ended.writer_finished);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
