//! The message pump: start gating, signals, reading conditions, fan-out,
//! deferred routing, corrupt records.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rsq_diskqueue::BackendQueue;

use crate::support::{LogCapture, deferred, id, msg, settle, topic};

#[tokio::test(start_paused = true)]
async fn no_delivery_before_start() {
    let (topic, _backend, _) = topic(2);
    let (ch, created) = topic.get_or_create_channel("c").await.unwrap();
    assert!(created);
    for n in 0..5 {
        topic.put(msg(n)).await.unwrap();
    }
    settle().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(ch.deliveries().is_empty());
    assert_eq!(topic.stats().depth, 5);

    topic.start();
    settle().await;
    assert_eq!(ch.deliveries().len(), 5);
    assert_eq!(topic.stats().depth, 0);
}

#[tokio::test(start_paused = true)]
async fn signals_do_not_block_before_start() {
    let (topic, _backend, _) = topic(10);
    let before_start = async {
        for round in 0..100 {
            let name = format!("c{}", round % 7);
            topic.get_or_create_channel(&name).await.unwrap();
            topic.pause();
            topic.unpause();
            if round % 3 == 0 {
                topic.delete_channel(&name).await.unwrap();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(1), before_start)
        .await
        .expect("channel-update and pause signals must not wait for a stopped pump");
    assert!(!topic.is_paused());

    let (ch, _) = topic.get_or_create_channel("late").await.unwrap();
    topic.put(msg(1)).await.unwrap();
    topic.start();
    settle().await;
    assert_eq!(ch.ids(), vec![id(1)]);
}

#[tokio::test(start_paused = true)]
async fn exits_before_start() {
    let (logs, _guard) = LogCapture::install();
    let (topic, backend, _) = topic(10);
    let (ch, _) = topic.get_or_create_channel("c").await.unwrap();
    topic.put(msg(1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), topic.close())
        .await
        .expect("close of a never-started topic must not wait")
        .unwrap();
    assert!(ch.deliveries().is_empty());
    assert!(ch.closed.load(Ordering::SeqCst));
    assert_eq!(backend.depth(), 1, "the undelivered message was flushed");
    assert!(logs.contains("pump closed"), "{:?}", logs.lines());
}

#[tokio::test(start_paused = true)]
async fn reads_nothing_without_channels_until_one_appears() {
    let (topic, backend, _) = topic(2);
    topic.start();
    for n in 0..4 {
        topic.put(msg(n)).await.unwrap();
    }
    settle().await;
    let stats = topic.stats();
    assert_eq!(
        (stats.memory_depth, stats.backend_depth, stats.depth),
        (2, 2, 4)
    );
    assert_eq!(backend.depth(), 2);

    let (ch, _) = topic.get_or_create_channel("c").await.unwrap();
    settle().await;
    let mut got = ch.ids();
    got.sort();
    assert_eq!(got, (0..4).map(id).collect::<Vec<_>>());
    assert_eq!(topic.stats().depth, 0);
}

#[tokio::test(start_paused = true)]
async fn reads_nothing_while_paused_until_unpaused() {
    let (topic, _backend, _) = topic(2);
    let (ch, _) = topic.get_or_create_channel("c").await.unwrap();
    topic.start();
    topic.put(msg(0)).await.unwrap();
    settle().await;
    assert_eq!(ch.ids(), vec![id(0)]);

    topic.pause();
    assert!(topic.is_paused());
    for n in 1..5 {
        topic.put(msg(n)).await.unwrap();
    }
    settle().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(ch.ids(), vec![id(0)]);
    assert_eq!(topic.stats().depth, 4);
    assert!(topic.stats().paused);

    topic.unpause();
    settle().await;
    let mut got = ch.ids();
    got.sort();
    assert_eq!(got, (0..5).map(id).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn fan_out_reaches_every_channel_and_shares_the_body() {
    for channels in [1usize, 2, 50] {
        let (topic, _backend, _) = topic(100);
        let mut chans = Vec::new();
        for i in 0..channels {
            chans.push(
                topic
                    .get_or_create_channel(&format!("c{i:02}"))
                    .await
                    .unwrap()
                    .0,
            );
        }
        topic.start();
        for n in 0..20 {
            topic.put(msg(n)).await.unwrap();
        }
        settle().await;
        let first = chans[0].deliveries();
        assert_eq!(first.len(), 20);
        for ch in &chans {
            let got = ch.deliveries();
            assert_eq!(got.len(), 20, "{channels} channels");
            for (a, b) in first.iter().zip(&got) {
                assert_eq!(a.msg, b.msg, "same id, body, timestamp, deferral");
                assert_eq!(
                    a.msg.body.as_ptr(),
                    b.msg.body.as_ptr(),
                    "body bytes shared"
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn backend_messages_fan_out_with_shared_bodies() {
    let (topic, backend, _) = topic(0);
    topic.put(msg(7)).await.unwrap();
    assert_eq!(backend.depth(), 1);
    let a = topic.get_or_create_channel("a").await.unwrap().0;
    let b = topic.get_or_create_channel("b").await.unwrap().0;
    topic.start();
    settle().await;
    let (da, db) = (a.deliveries(), b.deliveries());
    assert_eq!(da[0].msg, msg(7));
    assert_eq!(da[0].msg.body.as_ptr(), db[0].msg.body.as_ptr());
}

#[tokio::test(start_paused = true)]
async fn deferred_messages_go_to_deferred_put() {
    let (topic, _backend, _) = topic(10);
    let a = topic.get_or_create_channel("a").await.unwrap().0;
    let b = topic.get_or_create_channel("b").await.unwrap().0;
    topic.start();
    topic
        .put(deferred(1, Duration::from_secs(5)))
        .await
        .unwrap();
    topic.put(msg(2)).await.unwrap();
    settle().await;
    for ch in [&a, &b] {
        let got = ch.deliveries();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].msg.id, id(1));
        assert_eq!(got[0].deferred, Some(Duration::from_secs(5)));
        assert_eq!(got[0].msg.deferred, Some(Duration::from_secs(5)));
        assert_eq!(got[1].msg.id, id(2));
        assert_eq!(got[1].deferred, None);
    }
}

#[tokio::test(start_paused = true)]
async fn zero_mem_queue_hands_deferred_to_a_waiting_pump_only() {
    let (topic, backend, _) = topic(0);
    let ch = topic.get_or_create_channel("c").await.unwrap().0;
    topic.start();
    settle().await;

    // The pump waits for a message: a deferred one is handed over directly.
    topic
        .put(deferred(1, Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(backend.depth(), 0);
    // A plain message always goes through the backend.
    topic.put(msg(2)).await.unwrap();
    assert_eq!(backend.depth(), 1);
    settle().await;

    // Paused, the pump is not receiving: the deferred message goes to the
    // backend, which (unlike nsqd's) keeps its deferral.
    topic.pause();
    settle().await;
    topic
        .put(deferred(3, Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(backend.depth(), 1);
    topic.unpause();
    settle().await;

    let mut summary: Vec<_> = ch
        .deliveries()
        .iter()
        .map(|d| (d.msg.id, d.deferred))
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        vec![
            (id(1), Some(Duration::from_secs(3))),
            (id(2), None),
            (id(3), Some(Duration::from_secs(3)))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn corrupt_backend_record_is_skipped_and_logged() {
    let (logs, _guard) = LogCapture::install();
    let (topic, backend, _) = topic(10);
    backend.put(msg(1).to_bytes()).await.unwrap();
    backend.put(Bytes::from_static(b"too short")).await.unwrap();
    backend.put(msg(2).to_bytes()).await.unwrap();
    let ch = topic.get_or_create_channel("c").await.unwrap().0;
    topic.start();
    settle().await;
    backend.put(msg(3).to_bytes()).await.unwrap();
    settle().await;
    assert_eq!(ch.ids(), vec![id(1), id(2), id(3)]);
    assert!(
        logs.contains("skipping corrupt backend record"),
        "{:?}",
        logs.lines()
    );
}

#[tokio::test(start_paused = true)]
async fn failed_channel_put_is_logged_and_not_fatal() {
    let (logs, _guard) = LogCapture::install();
    let (topic, _backend, _) = topic(10);
    let bad = topic.get_or_create_channel("a").await.unwrap().0;
    let good = topic.get_or_create_channel("b").await.unwrap().0;
    bad.failing.store(true, Ordering::SeqCst);
    topic.start();
    topic.put(msg(1)).await.unwrap();
    topic.put(msg(2)).await.unwrap();
    settle().await;
    assert_eq!(good.ids(), vec![id(1), id(2)]);
    assert!(logs.contains("channel put failed"), "{:?}", logs.lines());
    bad.failing.store(false, Ordering::SeqCst);
    topic.put(msg(3)).await.unwrap();
    settle().await;
    assert_eq!(bad.ids(), vec![id(3)]);
}

#[tokio::test(start_paused = true)]
async fn deleted_channel_gets_no_more_puts() {
    let (topic, _backend, _) = topic(10);
    let a = topic.get_or_create_channel("a").await.unwrap().0;
    let b = topic.get_or_create_channel("b").await.unwrap().0;
    topic.start();
    topic.put(msg(1)).await.unwrap();
    settle().await;
    assert!(!topic.delete_channel("a").await.unwrap());
    assert!(a.deleted.load(Ordering::SeqCst));
    topic.put(msg(2)).await.unwrap();
    settle().await;
    assert_eq!(a.ids(), vec![id(1)]);
    assert_eq!(b.ids(), vec![id(1), id(2)]);
    assert_eq!(a.puts_after_delete.load(Ordering::SeqCst), 0);
}

/// Each id in `ids` exactly once.
fn once_each(ids: &[rsq_codec::MessageId], n: u32) -> bool {
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted == (0..n).map(id).collect::<Vec<_>>()
}

#[tokio::test(start_paused = true)]
async fn a_full_channel_disk_holds_messages_at_the_pump_until_it_has_room() {
    let (topic, backend, _) = topic(2);
    let (a, _) = topic.get_or_create_channel("a").await.unwrap();
    let (b, _) = topic.get_or_create_channel("b").await.unwrap();
    b.full.store(true, Ordering::SeqCst);
    topic.start();
    // Through memory and, past 2, through the backend (batches).
    for n in 0..3 {
        topic.put(msg(n)).await.unwrap();
    }
    topic.put_many((3..10).map(msg).collect()).await.unwrap();
    settle().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(b.ids().is_empty());
    // The pump holds a refused message and goes no further meanwhile.
    assert!(a.ids().len() < 10);
    b.full.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(once_each(&a.ids(), 10), "a got {:?}", a.ids());
    assert!(once_each(&b.ids(), 10), "b got {:?}", b.ids());
    assert_eq!(backend.depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn deleting_a_full_channel_does_not_wait_for_its_disk() {
    let (topic, _backend, _) = topic(10);
    let (a, _) = topic.get_or_create_channel("a").await.unwrap();
    let (b, _) = topic.get_or_create_channel("b").await.unwrap();
    b.full.store(true, Ordering::SeqCst);
    topic.start();
    topic.put(msg(0)).await.unwrap();
    topic.put(msg(1)).await.unwrap();
    settle().await;
    tokio::time::timeout(Duration::from_secs(1), topic.delete_channel("b"))
        .await
        .expect("delete must not wait for a full disk")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(once_each(&a.ids(), 2), "a got {:?}", a.ids());
}

#[tokio::test(start_paused = true)]
async fn closing_while_a_channel_disk_is_full_keeps_the_messages_in_the_topic_backend() {
    let (topic, backend, _) = topic(10);
    let (b, _) = topic.get_or_create_channel("b").await.unwrap();
    b.full.store(true, Ordering::SeqCst);
    topic.start();
    topic.put(msg(0)).await.unwrap();
    settle().await;
    tokio::time::timeout(Duration::from_secs(1), topic.close())
        .await
        .expect("close must not wait for a full disk")
        .unwrap();
    assert!(b.ids().is_empty());
    let record = backend
        .try_read()
        .unwrap()
        .expect("the refused message is kept");
    assert_eq!(rsq_codec::Message::from_record(record).unwrap().id, id(0));
}
