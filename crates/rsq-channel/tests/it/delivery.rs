//! Put, deliver, FIN through the async channel, memory and backend.

use std::collections::BTreeSet;
use std::time::Duration;

use rsq_channel::{ChannelConfig, ChannelError};
use rsq_diskqueue::BackendQueue;

use crate::{SEC, channel, drain, id, msg, next, num};

#[tokio::test(start_paused = true)]
async fn put_then_ready_delivers_in_flight_with_attempts_one() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.put(msg(1)).await.unwrap();
    assert!(next(&mut c, SEC).await.is_none(), "no delivery before RDY");
    ch.set_ready(1, 1);
    let m = next(&mut c, SEC).await.unwrap();
    assert_eq!((num(&m.id), m.attempts), (1, 1));
    let s = ch.stats();
    assert_eq!((s.in_flight_count, s.message_count, s.depth), (1, 1, 0));
    ch.finish(1, &m.id).unwrap();
    assert_eq!(ch.stats().in_flight_count, 0);
    assert_eq!(ch.stats().e2e_processing_latency, None, "not configured");
}

#[tokio::test(start_paused = true)]
async fn finishes_feed_the_configured_latency_percentiles() {
    let (ch, _) = channel(ChannelConfig {
        e2e_percentiles: vec![0.99, 0.5],
        ..ChannelConfig::default()
    });
    let e2e = ch.stats().e2e_processing_latency.unwrap();
    assert_eq!((e2e.count, e2e.percentiles), (0, vec![(0.99, 0), (0.5, 0)]));
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 10);
    for n in 1..=3 {
        ch.put(msg(n)).await.unwrap();
        let m = next(&mut c, SEC).await.unwrap();
        ch.finish(1, &m.id).unwrap();
    }
    let e2e = ch.stats().e2e_processing_latency.unwrap();
    assert_eq!(e2e.count, 3);
    assert_eq!(
        e2e.percentiles.iter().map(|p| p.0).collect::<Vec<_>>(),
        [0.99, 0.5]
    );
    let window = ch.e2e_latency_window().unwrap();
    assert_eq!(window.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn finish_many_settles_in_order_and_refills_the_window_once() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 3);
    for n in 1..=6 {
        ch.put(msg(n)).await.unwrap();
    }
    assert_eq!(drain(&mut c).await, vec![1, 2, 3]);
    let failures = ch.finish_many(1, &[id(1), id(9), id(2), id(1), id(3)]);
    let failed: Vec<(u64, bool)> = failures
        .iter()
        .map(|(i, e)| (num(i), matches!(e, ChannelError::NotInFlight)))
        .collect();
    assert_eq!(
        failed,
        vec![(9, true), (1, true)],
        "unknown, then already finished"
    );
    assert_eq!(
        ch.stats().in_flight_count,
        3,
        "the freed slots were refilled"
    );
    assert_eq!(drain(&mut c).await, vec![4, 5, 6]);
}

#[tokio::test(start_paused = true)]
async fn rdy_window_limits_what_a_consumer_holds() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 2);
    for n in 1..=5 {
        ch.put(msg(n)).await.unwrap();
    }
    assert_eq!(drain(&mut c).await, vec![1, 2]);
    ch.finish(1, &id(1)).unwrap();
    assert_eq!(drain(&mut c).await, vec![3]);
}

#[tokio::test(start_paused = true)]
async fn overflow_goes_to_the_backend_and_comes_back() {
    let (ch, backend) = channel(ChannelConfig {
        mem_queue_size: 2,
        ..ChannelConfig::default()
    });
    for n in 1..=6 {
        ch.put(msg(n)).await.unwrap();
    }
    assert_eq!(backend.depth(), 4);
    let s = ch.stats();
    assert_eq!((s.depth, s.backend_depth), (6, 4));
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 100);
    let got: BTreeSet<u64> = drain(&mut c).await.into_iter().collect();
    assert_eq!(got, (1..=6).collect());
    assert_eq!(ch.stats().depth, 0);
}

#[tokio::test(start_paused = true)]
async fn mem_queue_size_zero_delivers_through_the_backend() {
    let (ch, backend) = channel(ChannelConfig {
        mem_queue_size: 0,
        ..ChannelConfig::default()
    });
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 10);
    // The driver is parked on the backend's read: records arrive as written.
    for n in 1..=3 {
        ch.put(msg(n)).await.unwrap();
    }
    assert_eq!(drain(&mut c).await, vec![1, 2, 3]);
    assert_eq!(backend.depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn undecodable_backend_records_are_skipped() {
    let (ch, backend) = channel(ChannelConfig {
        mem_queue_size: 0,
        ..ChannelConfig::default()
    });
    backend
        .put(bytes::Bytes::from_static(b"short"))
        .await
        .unwrap();
    ch.put(msg(1)).await.unwrap();
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 10);
    assert_eq!(drain(&mut c).await, vec![1]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_does_not_stall_a_fast_one() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut slow = ch.add_consumer(1, 60 * SEC).unwrap();
    let mut fast = ch.add_consumer(2, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.set_ready(2, 1);
    for n in 1..=10 {
        ch.put(msg(n)).await.unwrap();
    }
    let first = next(&mut slow, SEC).await.unwrap();
    let mut done = vec![num(&first.id)];
    // The slow consumer never finishes; the fast one finishes the rest.
    while let Some(m) = next(&mut fast, SEC).await {
        done.push(num(&m.id));
        ch.finish(2, &m.id).unwrap();
    }
    done.sort();
    assert_eq!(done, (1..=10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn eight_consumers_share_the_stream() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut tasks = Vec::new();
    for client in 0..8u64 {
        let mut c = ch.add_consumer(client, 60 * SEC).unwrap();
        ch.set_ready(client, 4);
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(m) = next(&mut c, Duration::from_secs(5)).await {
                ch.finish(client, &m.id).unwrap();
                got.push(num(&m.id));
            }
            // Kept subscribed until the counts are read.
            (got, c)
        }));
    }
    for n in 0..1000 {
        ch.put(msg(n)).await.unwrap();
    }
    let mut all = Vec::new();
    let mut consumers = Vec::new();
    for t in tasks {
        let (got, c) = t.await.unwrap();
        consumers.push(c);
        assert!(!got.is_empty(), "every consumer got a share");
        all.extend(got);
    }
    all.sort();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    let s = ch.stats();
    assert_eq!(s.clients.iter().map(|c| c.finish_count).sum::<u64>(), 1000);
}

#[tokio::test(start_paused = true)]
async fn only_the_holder_may_fin_req_or_touch() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    let _other = ch.add_consumer(2, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    let m = next(&mut c, SEC).await.unwrap();
    assert!(matches!(ch.finish(2, &m.id), Err(ChannelError::NotOwner)));
    assert!(matches!(
        ch.requeue(2, &m.id, SEC),
        Err(ChannelError::NotOwner)
    ));
    assert!(matches!(ch.touch(2, &m.id), Err(ChannelError::NotOwner)));
    assert!(matches!(
        ch.finish(1, &id(99)),
        Err(ChannelError::NotInFlight)
    ));
    assert!(matches!(
        ch.add_consumer(1, SEC),
        Err(ChannelError::ConsumerExists(1))
    ));
    ch.finish(1, &m.id).unwrap();
    assert!(matches!(
        ch.finish(1, &m.id),
        Err(ChannelError::NotInFlight)
    ));
}

#[tokio::test(start_paused = true)]
async fn memory_and_backend_take_turns_so_neither_starves() {
    let (ch, _) = channel(ChannelConfig {
        mem_queue_size: 2,
        ..ChannelConfig::default()
    });
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    for n in 1..=6 {
        ch.put(msg(n)).await.unwrap();
    }
    ch.set_ready(1, 1);
    let mut order = Vec::new();
    while let Some(m) = next(&mut c, SEC).await {
        order.push(num(&m.id));
        ch.finish(1, &m.id).unwrap();
        // Keep memory busy with fresh messages while the backend holds old
        // ones: the driver reads those back in a batch of its own, and then
        // they take turns with memory.
        if order.len() <= 12 {
            ch.put(msg(100 + order.len() as u64)).await.unwrap();
        }
        // As a consumer waiting on its socket would: the driver gets a turn.
        tokio::task::yield_now().await;
    }
    assert_eq!(order.len(), 18);
    let last = |range: std::ops::RangeInclusive<u64>| {
        order.iter().rposition(|n| range.contains(n)).unwrap()
    };
    assert!(
        last(3..=6) < last(100..=112),
        "backend records waited behind memory: {order:?}"
    );
}
