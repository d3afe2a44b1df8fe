//! Disconnects, pause, empty, delete, close and ephemeral channels.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rsq_channel::{Channel, ChannelConfig, ChannelError, DeadLetterSink, SystemClock};
use rsq_codec::Message;
use rsq_diskqueue::{BackendQueue, BackendStats, MemoryQueue, QueueError};

use crate::{SEC, channel, drain, msg, next, num};

#[tokio::test(start_paused = true)]
async fn disconnect_requeues_delivered_and_unread_messages_at_once() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut a = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 3);
    for n in 1..=3 {
        ch.put(msg(n)).await.unwrap();
    }
    // Read one; two more sit unread in the consumer's queue.
    next(&mut a, SEC).await.unwrap();
    assert!(!ch.remove_consumer(1));
    assert!(
        a.recv().await.is_none(),
        "a removed consumer yields nothing"
    );
    let mut b = ch.add_consumer(2, 60 * SEC).unwrap();
    ch.set_ready(2, 10);
    assert_eq!(drain(&mut b).await, vec![1, 2, 3]);
    let s = ch.stats();
    assert_eq!(
        (s.requeue_count, s.timeout_count, s.in_flight_count),
        (3, 0, 3)
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_consumer_handle_gives_its_messages_back() {
    let (ch, _) = channel(ChannelConfig::default());
    let a = ch.add_consumer(1, 60 * SEC).unwrap();
    let mut b = ch.add_consumer(2, 60 * SEC).unwrap();
    drop(a);
    assert_eq!(
        ch.stats().client_count,
        1,
        "dropping a consumer unsubscribes it"
    );
    ch.set_ready(1, 10);
    ch.set_ready(2, 10);
    ch.put(msg(1)).await.unwrap();
    ch.put(msg(2)).await.unwrap();
    let mut got = drain(&mut b).await;
    got.sort();
    assert_eq!(got, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_consumer_requeues_what_it_took_and_what_waits_for_it() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut a = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 3);
    for n in 1..=3 {
        ch.put(msg(n)).await.unwrap();
    }
    // One handed out and finished, one taken but not handed out, and one
    // put after the take, still in the outlet.
    let m = a.recv().await.unwrap();
    ch.finish(1, &m.id).unwrap();
    ch.put(msg(4)).await.unwrap();
    assert_eq!(ch.stats().in_flight_count, 3);
    drop(a);
    assert_eq!(ch.stats().in_flight_count, 0);
    let mut b = ch.add_consumer(2, 60 * SEC).unwrap();
    ch.set_ready(2, 10);
    let mut got = drain(&mut b).await;
    got.sort();
    assert_eq!(got, vec![2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn pause_holds_delivery_and_unpause_resumes() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 10);
    ch.pause();
    assert!(ch.is_paused());
    ch.put(msg(1)).await.unwrap();
    assert!(next(&mut c, 5 * SEC).await.is_none());
    assert!(ch.stats().paused);
    ch.unpause();
    assert_eq!(drain(&mut c).await, vec![1]);
}

#[tokio::test(start_paused = true)]
async fn empty_drops_everything_including_the_backend() {
    let (ch, backend) = channel(ChannelConfig {
        mem_queue_size: 1,
        ..ChannelConfig::default()
    });
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    for n in 1..=4 {
        ch.put(msg(n)).await.unwrap();
    }
    ch.put_deferred(msg(5), SEC).await.unwrap();
    let held = next(&mut c, SEC).await.unwrap();
    ch.empty().await.unwrap();
    let s = ch.stats();
    assert_eq!((s.depth, s.in_flight_count, s.deferred_count), (0, 0, 0));
    assert_eq!(backend.depth(), 0);
    assert!(matches!(
        ch.finish(1, &held.id),
        Err(ChannelError::NotInFlight)
    ));
    assert!(next(&mut c, 5 * SEC).await.is_none());
    ch.put(msg(6)).await.unwrap();
    assert_eq!(drain(&mut c).await, vec![6]);
}

#[tokio::test(start_paused = true)]
async fn close_writes_memory_in_flight_and_deferred_to_the_backend() {
    let (ch, backend) = channel(ChannelConfig {
        mem_queue_size: 2,
        ..ChannelConfig::default()
    });
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    for n in 1..=4 {
        ch.put(msg(n)).await.unwrap();
    }
    ch.put_deferred(msg(5), 3600 * SEC).await.unwrap();
    next(&mut c, SEC).await.unwrap();
    ch.close().await.unwrap();
    assert!(c.recv().await.is_none());
    assert!(matches!(ch.put(msg(6)).await, Err(ChannelError::Exiting)));
    assert!(matches!(ch.close().await, Err(ChannelError::Exiting)));
    // A restart reads them all back from the backend; the deferred one
    // keeps what was left of its delay.
    let mut kept = BTreeSet::new();
    let restarted = Arc::new(MemoryQueue::unbounded());
    while let Ok(Some(record)) = backend.try_read() {
        let m = Message::from_record(record.clone()).unwrap();
        if num(&m.id) == 5 {
            let left = m.deferred.expect("deferral kept");
            assert!(left > 3598 * SEC && left <= 3600 * SEC, "{left:?}");
        }
        kept.insert(num(&m.id));
        restarted.put(record).await.unwrap();
    }
    assert_eq!(kept, (1..=5).collect());

    // Served by a new channel: 1 to 4 at once, 5 only when its time comes.
    let ch = Channel::new(
        "t",
        "c",
        ChannelConfig::default(),
        restarted as Arc<dyn BackendQueue>,
        Arc::new(SystemClock),
    );
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 10);
    let mut early = Vec::new();
    while let Some(m) = next(&mut c, SEC).await {
        early.push(num(&m.id));
        ch.finish(1, &m.id).unwrap();
    }
    early.sort();
    assert_eq!(early, [1, 2, 3, 4]);
    assert_eq!(ch.stats().deferred_count, 1);
    let m = next(&mut c, 3600 * SEC)
        .await
        .expect("released at its time");
    assert_eq!(num(&m.id), 5);
}

#[tokio::test(start_paused = true)]
async fn delete_stops_consumers_and_removes_the_backend() {
    let (ch, backend) = channel(ChannelConfig {
        mem_queue_size: 1,
        ..ChannelConfig::default()
    });
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    for n in 1..=3 {
        ch.put(msg(n)).await.unwrap();
    }
    ch.delete().await.unwrap();
    assert!(c.recv().await.is_none());
    assert!(backend.try_read().is_err(), "backend closed and emptied");
    assert!(matches!(
        ch.finish(1, &crate::id(1)),
        Err(ChannelError::Exiting)
    ));
}

#[tokio::test(start_paused = true)]
async fn ephemeral_channel_stays_in_memory_and_goes_with_its_last_consumer() {
    let backend = Arc::new(MemoryQueue::discarding(0));
    let ch = Channel::new(
        "t",
        "c#ephemeral",
        ChannelConfig {
            mem_queue_size: 2,
            ephemeral: true,
            ..ChannelConfig::default()
        },
        Arc::clone(&backend) as Arc<dyn BackendQueue>,
        Arc::new(SystemClock),
    );
    for n in 1..=3 {
        ch.put(msg(n)).await.unwrap();
    }
    assert_eq!(backend.stats().discarded_records, 1);
    let mut a = ch.add_consumer(1, 60 * SEC).unwrap();
    let _b = ch.add_consumer(2, 60 * SEC).unwrap();
    ch.set_ready(1, 10);
    assert_eq!(drain(&mut a).await, vec![1, 2]);
    assert!(!ch.remove_consumer(1), "one consumer left");
    assert!(
        ch.remove_consumer(2),
        "last consumer gone: the owner deletes it"
    );
    ch.delete().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stats_report_consumers_and_depths() {
    let (ch, _) = channel(ChannelConfig {
        mem_queue_size: 1,
        ..ChannelConfig::default()
    });
    let mut c = ch.add_consumer(7, 60 * SEC).unwrap();
    ch.set_ready(7, 1);
    for n in 1..=3 {
        ch.put(msg(n)).await.unwrap();
    }
    let m = next(&mut c, SEC).await.unwrap();
    ch.requeue(7, &m.id, std::time::Duration::ZERO).unwrap();
    let m = next(&mut c, SEC).await.unwrap();
    ch.finish(7, &m.id).unwrap();
    let s = ch.stats();
    assert_eq!(s.channel_name, "c");
    assert_eq!(
        (s.message_count, s.requeue_count, s.client_count),
        (3, 1, 1)
    );
    let client = &s.clients[0];
    assert_eq!(
        (
            client.client_id,
            client.ready_count,
            client.in_flight_count,
            client.message_count,
            client.finish_count,
            client.requeue_count
        ),
        (7, 1, 1, 3, 1, 1)
    );
    assert_eq!(s.depth, 1);
}

#[tokio::test(start_paused = true)]
async fn subscriptions_past_max_consumers_are_refused_until_one_leaves() {
    let (ch, _) = channel(ChannelConfig {
        max_consumers: 2,
        ..ChannelConfig::default()
    });
    let first = ch.add_consumer(1, 60 * SEC).unwrap();
    let _second = ch.add_consumer(2, 60 * SEC).unwrap();
    assert!(matches!(
        ch.add_consumer(3, 60 * SEC),
        Err(ChannelError::TooManyConsumers { max: 2 })
    ));
    assert!(
        matches!(
            ch.add_consumer(2, 60 * SEC),
            Err(ChannelError::ConsumerExists(2))
        ),
        "a second subscription of the same client is a duplicate, whatever the count"
    );
    assert_eq!(ch.stats().client_count, 2);
    drop(first);
    let _third = ch.add_consumer(3, 60 * SEC).unwrap();
    assert_eq!(ch.stats().client_count, 2);
}

/// Threads race to subscribe and leave: the check and the add are one step
/// under the channel lock, so no more than the limit ever hold a
/// subscription at once, and every refusal names the limit.
#[test]
fn racing_subscriptions_never_exceed_max_consumers() {
    const MAX: usize = 3;
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 300;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let (ch, _) = channel(ChannelConfig {
        max_consumers: MAX,
        ..ChannelConfig::default()
    });
    let holding = AtomicUsize::new(0);
    let (admitted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (ch, holding, admitted, refused) = (&ch, &holding, &admitted, &refused);
            s.spawn(move || {
                for round in 0..ROUNDS {
                    match ch.add_consumer(t * ROUNDS + round, 60 * SEC) {
                        Ok(consumer) => {
                            // Counted after the add and uncounted before the
                            // removal, so this never exceeds the subscribed.
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= MAX, "{now} consumers past the limit of {MAX}");
                            admitted.fetch_add(1, Ordering::SeqCst);
                            std::thread::yield_now();
                            holding.fetch_sub(1, Ordering::SeqCst);
                            drop(consumer);
                        }
                        Err(ChannelError::TooManyConsumers { max }) => {
                            assert_eq!(max, MAX);
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            });
        }
    });
    let (admitted, refused) = (admitted.into_inner(), refused.into_inner());
    assert_eq!((admitted + refused) as u64, THREADS * ROUNDS);
    assert!(admitted > 0);
    assert_eq!(ch.stats().client_count, 0);
}

/// A real in-memory backend that counts the calls that write to it.
struct CountingQueue {
    queue: MemoryQueue,
    puts: AtomicUsize,
    put_manys: AtomicUsize,
}

impl CountingQueue {
    fn new() -> Arc<CountingQueue> {
        Arc::new(CountingQueue {
            queue: MemoryQueue::unbounded(),
            puts: AtomicUsize::new(0),
            put_manys: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl BackendQueue for CountingQueue {
    async fn put(&self, record: Bytes) -> Result<(), QueueError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.queue.put(record).await
    }

    async fn put_many(&self, records: Vec<Bytes>) -> Result<(), QueueError> {
        self.put_manys.fetch_add(1, Ordering::SeqCst);
        self.queue.put_many(records).await
    }

    fn try_read(&self) -> Result<Option<Bytes>, QueueError> {
        self.queue.try_read()
    }

    async fn read(&self) -> Result<Bytes, QueueError> {
        self.queue.read().await
    }

    fn depth(&self) -> u64 {
        self.queue.depth()
    }

    fn stats(&self) -> BackendStats {
        self.queue.stats()
    }

    async fn empty(&self) -> Result<(), QueueError> {
        self.queue.empty().await
    }

    async fn delete(&self) -> Result<(), QueueError> {
        self.queue.delete().await
    }

    async fn close(&self) -> Result<(), QueueError> {
        self.queue.close().await
    }
}

/// A dead-letter sink that refuses everything, so dead letters stay in the
/// channel's outbox.
struct Refusing;

#[async_trait]
impl DeadLetterSink for Refusing {
    async fn publish(&self, _msg: Message) -> Result<(), ChannelError> {
        Err(ChannelError::DeadLetter("refusing on purpose".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn close_writes_everything_held_with_one_put_many() {
    let backend = CountingQueue::new();
    let ch = Channel::with_dead_letters(
        "t",
        "c",
        ChannelConfig {
            max_attempts: 1,
            ..ChannelConfig::default()
        },
        Arc::clone(&backend) as Arc<dyn BackendQueue>,
        Arc::new(SystemClock),
        Some(Arc::new(Refusing)),
    );
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    for n in 1..=5 {
        ch.put(msg(n)).await.unwrap();
    }
    ch.put_deferred(msg(6), 60 * SEC).await.unwrap();
    ch.set_ready(1, 2);
    let first = next(&mut c, SEC).await.unwrap();
    // Its last attempt: a dead letter the sink refuses, so it stays held.
    ch.requeue(1, &first.id, Duration::ZERO).unwrap();
    tokio::time::sleep(SEC).await;
    let s = ch.stats();
    assert_eq!(s.dead_letter_count, 1);
    assert_eq!((s.in_flight_count, s.depth, s.deferred_count), (2, 2, 1));
    assert_eq!(backend.puts.load(Ordering::SeqCst), 0);

    ch.close().await.unwrap();
    assert_eq!(
        (
            backend.puts.load(Ordering::SeqCst),
            backend.put_manys.load(Ordering::SeqCst)
        ),
        (0, 1),
        "memory, in flight, deferred and the dead letter in one batch"
    );
    assert_eq!(backend.depth(), 6);
    let mut stored = BTreeSet::new();
    for _ in 0..6 {
        let record = backend.try_read().unwrap().expect("written back");
        stored.insert(num(&Message::from_record(record).unwrap().id));
    }
    assert_eq!(stored, (1..=6).collect());
}

#[tokio::test(start_paused = true)]
async fn closing_an_empty_channel_writes_nothing() {
    let backend = CountingQueue::new();
    let ch = Channel::new(
        "t",
        "c",
        ChannelConfig::default(),
        Arc::clone(&backend) as Arc<dyn BackendQueue>,
        Arc::new(SystemClock),
    );
    ch.close().await.unwrap();
    assert_eq!(backend.put_manys.load(Ordering::SeqCst), 0);
    assert_eq!(backend.puts.load(Ordering::SeqCst), 0);
}
