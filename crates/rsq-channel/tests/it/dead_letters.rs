//! Messages past `max_attempts` leave through the channel's
//! `DeadLetterSink`: once, with their attempts, and (durably) committed
//! only after the sink returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rsq_channel::{Channel, ChannelConfig, ChannelError, DeadLetterSink, SystemClock};
use rsq_codec::Message;
use rsq_diskqueue::{BackendQueue, DiskQueue, MemoryQueue};
use tokio::sync::{Semaphore, mpsc};

use crate::durable::{queue_config, replayed_after_crash};
use crate::{SEC, msg, next, num};

/// A real sink that keeps what it is given: each publish first takes a
/// permit of `gate` (so a test can hold publishes), then fails while
/// `failures` lasts, then delivers to `rx`.
struct Letters {
    gate: Semaphore,
    failures: AtomicU32,
    tx: mpsc::UnboundedSender<Message>,
}

#[async_trait]
impl DeadLetterSink for Letters {
    async fn publish(&self, msg: Message) -> Result<(), ChannelError> {
        self.gate
            .acquire()
            .await
            .map_err(|e| ChannelError::DeadLetter(e.into()))?
            .forget();
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ChannelError::DeadLetter("disk full".into()));
        }
        self.tx
            .send(msg)
            .map_err(|_| ChannelError::DeadLetter("receiver gone".into()))
    }
}

fn letters(permits: usize, failures: u32) -> (Arc<Letters>, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Arc::new(Letters {
        gate: Semaphore::new(permits),
        failures: AtomicU32::new(failures),
        tx,
    });
    (sink, rx)
}

fn limited(
    max_attempts: u16,
    backend: Arc<dyn BackendQueue>,
    sink: Arc<Letters>,
    config: ChannelConfig,
) -> Arc<Channel> {
    Channel::with_dead_letters(
        "t",
        "c",
        ChannelConfig {
            max_attempts,
            ..config
        },
        backend,
        Arc::new(SystemClock),
        Some(sink),
    )
}

#[tokio::test(start_paused = true)]
async fn req_on_the_last_attempt_publishes_one_dead_letter() {
    let (sink, mut rx) = letters(usize::MAX >> 4, 0);
    let backend = Arc::new(MemoryQueue::unbounded());
    let ch = limited(3, backend, sink, ChannelConfig::default());
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    for attempt in 1..=3 {
        let m = next(&mut c, SEC).await.expect("delivered");
        assert_eq!((num(&m.id), m.attempts), (1, attempt));
        ch.requeue(1, &m.id, Duration::ZERO).unwrap();
    }
    let dead = tokio::time::timeout(SEC, rx.recv()).await.unwrap().unwrap();
    assert_eq!(
        (num(&dead.id), dead.attempts, &dead.body[..]),
        (1, 3, &b"body 1"[..])
    );
    assert!(
        next(&mut c, 10 * SEC).await.is_none(),
        "not delivered again"
    );
    let s = ch.stats();
    assert_eq!(
        (s.dead_letter_count, s.requeue_count, s.max_attempts),
        (1, 3, 3)
    );
    assert_eq!(s.depth + s.in_flight_count + s.deferred_count, 0);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_on_the_last_attempt_publishes_a_dead_letter() {
    let (sink, mut rx) = letters(usize::MAX >> 4, 0);
    let ch = limited(
        2,
        Arc::new(MemoryQueue::unbounded()),
        sink,
        ChannelConfig::default(),
    );
    let mut c = ch.add_consumer(1, 2 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(7)).await.unwrap();
    assert_eq!(next(&mut c, SEC).await.unwrap().attempts, 1);
    assert_eq!(next(&mut c, 3 * SEC).await.unwrap().attempts, 2);
    let dead = tokio::time::timeout(3 * SEC, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((num(&dead.id), dead.attempts), (7, 2));
    let s = ch.stats();
    assert_eq!((s.timeout_count, s.dead_letter_count), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_failed_publish_is_retried_and_counted_once() {
    let (sink, mut rx) = letters(usize::MAX >> 4, 3);
    let ch = limited(
        1,
        Arc::new(MemoryQueue::unbounded()),
        sink,
        ChannelConfig::default(),
    );
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    let m = next(&mut c, SEC).await.unwrap();
    ch.requeue(1, &m.id, Duration::ZERO).unwrap();
    let dead = tokio::time::timeout(5 * SEC, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(num(&dead.id), 1);
    assert!(
        tokio::time::timeout(5 * SEC, rx.recv()).await.is_err(),
        "once"
    );
    assert_eq!(ch.stats().dead_letter_count, 1);
}

#[tokio::test(start_paused = true)]
async fn close_writes_an_unpublished_dead_letter_back_with_its_attempts() {
    // The sink always fails: at close the dead letter is still the
    // channel's, and goes to its backend like everything else it holds.
    let (sink, _rx) = letters(usize::MAX >> 4, u32::MAX);
    let backend = Arc::new(MemoryQueue::unbounded());
    let ch = limited(
        2,
        Arc::clone(&backend) as Arc<dyn BackendQueue>,
        sink,
        ChannelConfig::default(),
    );
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    for _ in 0..2 {
        let m = next(&mut c, SEC).await.unwrap();
        ch.requeue(1, &m.id, Duration::ZERO).unwrap();
    }
    tokio::time::sleep(SEC).await;
    ch.close().await.unwrap();
    assert_eq!(backend.depth(), 1);
    let record = backend.try_read().unwrap().expect("written back");
    let m = Message::from_record(record).unwrap();
    assert_eq!((num(&m.id), m.attempts), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn without_a_sink_there_is_no_limit() {
    let (ch, _) = crate::channel(ChannelConfig {
        max_attempts: 1,
        ..ChannelConfig::default()
    });
    assert_eq!(ch.max_attempts(), 0);
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    for attempt in 1..=3 {
        let m = next(&mut c, SEC).await.unwrap();
        assert_eq!(m.attempts, attempt);
        ch.requeue(1, &m.id, Duration::ZERO).unwrap();
    }
}

#[tokio::test]
async fn a_durable_dead_letter_is_committed_only_after_its_publish_returned() {
    let dir = tempfile::tempdir().unwrap();
    let dq = Arc::new(DiskQueue::open(queue_config(dir.path())).unwrap());
    // The gate starts shut: the driver takes the dead letter and waits.
    let (sink, mut rx) = letters(0, 0);
    let ch = limited(
        1,
        Arc::clone(&dq) as Arc<dyn BackendQueue>,
        Arc::clone(&sink),
        ChannelConfig {
            mem_queue_size: 0,
            commit_backend_reads: true,
            ..ChannelConfig::default()
        },
    );
    for n in 1..=2 {
        ch.put(msg(n)).await.unwrap();
    }
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 2);
    let mut got = [
        next(&mut c, SEC).await.unwrap(),
        next(&mut c, SEC).await.unwrap(),
    ];
    got.sort_by_key(|m| num(&m.id));
    ch.finish(1, &got[1].id).unwrap();
    ch.requeue(1, &got[0].id, Duration::ZERO).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ch.stats().dead_letter_count, 1);

    // Publishing: a crash now replays 1 (and 2, finished behind it).
    dq.sync().await.unwrap();
    assert_eq!(replayed_after_crash(dir.path()), [1, 2].into());

    sink.gate.add_permits(1);
    let dead = tokio::time::timeout(5 * SEC, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(num(&dead.id), 1);
    // The publish returned: both are finished and forgotten.
    let deadline = tokio::time::Instant::now() + 5 * SEC;
    loop {
        dq.sync().await.unwrap();
        if replayed_after_crash(dir.path()).is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sink whose publish never returns.
struct Stuck;

#[async_trait]
impl DeadLetterSink for Stuck {
    async fn publish(&self, _msg: Message) -> Result<(), ChannelError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_publish_that_never_returns_stops_neither_timeouts_nor_backend_reads() {
    // Memory holds nothing: each fresh message must be read back from the
    // backend by the driver, while its publish of the first dead letter
    // hangs.
    let ch = Channel::with_dead_letters(
        "t",
        "c",
        ChannelConfig {
            max_attempts: 2,
            mem_queue_size: 0,
            ..ChannelConfig::default()
        },
        Arc::new(MemoryQueue::unbounded()),
        Arc::new(SystemClock),
        Some(Arc::new(Stuck)),
    );
    let mut c = ch.add_consumer(1, 2 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    for attempt in 1..=2 {
        let m = next(&mut c, SEC).await.expect("delivered");
        assert_eq!((num(&m.id), m.attempts), (1, attempt));
        ch.requeue(1, &m.id, Duration::ZERO).unwrap();
    }
    tokio::time::sleep(SEC).await;
    assert_eq!(ch.stats().dead_letter_count, 1, "its publish is in flight");

    ch.put(msg(2)).await.unwrap();
    let m = next(&mut c, SEC).await.expect("read from the backend");
    assert_eq!((num(&m.id), m.attempts), (2, 1));
    // Not finished: its timeout fires on time and it comes back.
    let m = next(&mut c, 3 * SEC)
        .await
        .expect("timed out and redelivered");
    assert_eq!((num(&m.id), m.attempts), (2, 2));
    // Its last attempt times out too: it waits behind the stuck publish.
    tokio::time::sleep(3 * SEC).await;
    let s = ch.stats();
    assert_eq!((s.timeout_count, s.dead_letter_count), (2, 2));
    assert_eq!(s.depth + s.in_flight_count + s.deferred_count, 0);
}

#[tokio::test(start_paused = true)]
async fn dead_letters_behind_a_slow_publish_leave_after_it_in_order() {
    // The gate starts shut: the first publish waits, the second stays in
    // the outbox meanwhile, and deliveries go on.
    let (sink, mut rx) = letters(0, 0);
    let ch = limited(
        1,
        Arc::new(MemoryQueue::unbounded()),
        Arc::clone(&sink),
        ChannelConfig::default(),
    );
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    for n in 1..=3 {
        ch.put(msg(n)).await.unwrap();
    }
    for n in 1..=2 {
        let m = next(&mut c, SEC).await.expect("delivered");
        assert_eq!(num(&m.id), n);
        ch.requeue(1, &m.id, Duration::ZERO).unwrap();
    }
    let third = next(&mut c, SEC)
        .await
        .expect("delivered while a publish waits");
    assert_eq!(num(&third.id), 3);
    assert!(tokio::time::timeout(SEC, rx.recv()).await.is_err());

    sink.gate.add_permits(2);
    for n in 1..=2 {
        let dead = tokio::time::timeout(SEC, rx.recv()).await.unwrap().unwrap();
        assert_eq!(num(&dead.id), n);
    }
    ch.finish(1, &third.id).unwrap();
    ch.close().await.unwrap();
}
