//! Channels, pause, empty, delete, close and reopen.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rsq_diskqueue::{BackendQueue, MemoryQueue};
use rsq_topic::TopicError;

use crate::support::{LogCapture, id, msg, settle, topic, topic_over};

#[tokio::test(start_paused = true)]
async fn close_flushes_memory_and_a_reopened_topic_delivers_it() {
    let backend = Arc::new(MemoryQueue::unbounded());
    let (topic, _) = topic_over("t", 3, backend.clone());
    let ch = topic.get_or_create_channel("c").await.unwrap().0;
    topic.start();
    topic.pause();
    for n in 0..5 {
        topic.put(msg(n)).await.unwrap();
    }
    settle().await;
    assert_eq!(topic.stats().memory_depth, 3);
    topic.close().await.unwrap();
    assert!(ch.deliveries().is_empty());
    assert!(ch.closed.load(Ordering::SeqCst));
    assert_eq!(backend.depth(), 5, "memory queue flushed to the backend");
    drop(topic);

    let (reopened, _) = topic_over("t", 3, backend.clone());
    let ch = reopened.get_or_create_channel("c").await.unwrap().0;
    reopened.start();
    settle().await;
    let mut got = ch.ids();
    got.sort();
    assert_eq!(got, (0..5).map(id).collect::<Vec<_>>());
    assert_eq!(backend.depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn delete_removes_channels_and_backend() {
    let (topic, backend, _) = topic(2);
    let a = topic.get_or_create_channel("a").await.unwrap().0;
    let b = topic.get_or_create_channel("b").await.unwrap().0;
    for n in 0..4 {
        topic.put(msg(n)).await.unwrap();
    }
    topic.delete().await.unwrap();
    assert!(a.deleted.load(Ordering::SeqCst) && b.deleted.load(Ordering::SeqCst));
    assert!(topic.channels().is_empty());
    assert_eq!(topic.stats().depth, 0);
    assert_eq!(backend.depth(), 0);
    assert!(
        backend.put(msg(9).to_bytes()).await.is_err(),
        "backend deleted"
    );
}

#[tokio::test(start_paused = true)]
async fn empty_drops_waiting_messages() {
    let (topic, _backend, _) = topic(2);
    for n in 0..4 {
        topic.put(msg(n)).await.unwrap();
    }
    topic.empty().await.unwrap();
    assert_eq!(topic.stats().depth, 0);
    let ch = topic.get_or_create_channel("c").await.unwrap().0;
    topic.start();
    topic.put(msg(10)).await.unwrap();
    settle().await;
    assert_eq!(ch.ids(), vec![id(10)]);
}

#[tokio::test(start_paused = true)]
async fn channels_are_got_created_listed_and_deleted() {
    let (topic, _backend, recorder) = topic(2);
    let (b, created) = topic.get_or_create_channel("b").await.unwrap();
    assert!(created);
    let (b2, created) = topic.get_or_create_channel("b").await.unwrap();
    assert!(!created);
    assert!(Arc::ptr_eq(&b, &b2));
    topic.get_or_create_channel("a").await.unwrap();
    let names: Vec<_> = topic.channels().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(topic.channel("a").is_some());
    assert!(topic.channel("zz").is_none());
    assert_eq!(topic.stats().channel_count, 2);

    recorder.refuse.lock().unwrap().push("bad".into());
    assert!(matches!(
        topic.get_or_create_channel("bad").await,
        Err(TopicError::ChannelCreate { .. })
    ));
    assert_eq!(topic.channels().len(), 2);

    assert!(matches!(
        topic.delete_channel("zz").await,
        Err(TopicError::ChannelNotFound(name)) if name == "zz"
    ));
    assert!(!topic.delete_channel("a").await.unwrap());
    assert!(!topic.delete_channel("b").await.unwrap(), "not ephemeral");
    assert_eq!(topic.stats().channel_count, 0);
}

#[tokio::test(start_paused = true)]
async fn ephemeral_topic_reports_its_last_channel_gone() {
    let (topic, _) = topic_over("e#ephemeral", 2, Arc::new(MemoryQueue::discarding(0)));
    topic.start();
    topic.get_or_create_channel("a").await.unwrap();
    topic.get_or_create_channel("b").await.unwrap();
    assert!(!topic.delete_channel("a").await.unwrap());
    assert!(topic.delete_channel("b").await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn pause_state_is_reported() {
    let (topic, _backend, _) = topic(2);
    assert!(!topic.is_paused());
    topic.pause();
    topic.pause();
    assert!(topic.is_paused() && topic.stats().paused);
    topic.unpause();
    assert!(!topic.is_paused());
}

#[tokio::test(start_paused = true)]
async fn close_waits_for_a_taken_message_to_reach_channels() {
    let (topic, backend, _) = topic(10);
    let ch = topic.get_or_create_channel("c").await.unwrap().0;
    topic.start();
    for n in 0..10 {
        topic.put(msg(n)).await.unwrap();
    }
    // No settle: close races the pump. Every message ends up delivered or
    // in the backend, none in both and none lost.
    topic.close().await.unwrap();
    let delivered = ch.ids();
    let mut all = delivered.clone();
    while let Ok(Some(record)) = backend.try_read() {
        all.push(rsq_codec::Message::decode(record).unwrap().id);
    }
    all.sort();
    assert_eq!(all, (0..10).map(id).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_topic_stops_its_pump() {
    let (logs, _guard) = LogCapture::install();
    let (topic, _backend, _) = topic(2);
    topic.start();
    settle().await;
    drop(topic);
    settle().await;
    assert!(logs.contains("pump closed"), "{:?}", logs.lines());
}

/// Real threads: publishers race `close`. Every accepted message ends up
/// exactly once in the channel or in the backend; every refused one is
/// refused with `Exiting`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_racing_publishers_loses_nothing() {
    let (topic, backend, _) = topic(16);
    let ch = topic.get_or_create_channel("c").await.unwrap().0;
    topic.start();
    let publishers: Vec<_> = (0..4u32)
        .map(|p| {
            let topic = topic.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for n in 0..100_000u32 {
                    let n = p * 1_000_000 + n;
                    match topic.put(msg(n)).await {
                        Ok(()) => accepted.push(id(n)),
                        Err(TopicError::Exiting) => break,
                        Err(e) => panic!("unexpected {e}"),
                    }
                    if n % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    topic.close().await.unwrap();
    let mut accepted = Vec::new();
    for p in publishers {
        accepted.extend(p.await.unwrap());
    }
    let mut landed = ch.ids();
    while let Ok(Some(record)) = backend.try_read() {
        landed.push(rsq_codec::Message::decode(record).unwrap().id);
    }
    accepted.sort();
    landed.sort();
    assert_eq!(accepted.len(), landed.len());
    assert!(accepted == landed, "accepted and landed sets differ");
}

#[tokio::test(start_paused = true)]
async fn a_slow_creation_blocks_neither_lookups_nor_the_pump_and_close_waits_for_it() {
    let (topic, _backend, recorder) = topic(100);
    let a = topic.get_or_create_channel("a").await.unwrap().0;
    topic.start();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *recorder.gate.lock().unwrap() = Some(gate.clone());
    let creating = tokio::spawn({
        let topic = topic.clone();
        async move { topic.get_or_create_channel("b").await }
    });
    settle().await;
    // The factory is opening "b": the topic keeps serving.
    assert!(topic.channel("a").is_some());
    assert!(topic.channel("b").is_none());
    topic.put(msg(1)).await.unwrap();
    settle().await;
    assert_eq!(a.ids(), vec![id(1)]);
    let closing = tokio::spawn({
        let topic = topic.clone();
        async move { topic.close().await }
    });
    settle().await;
    assert!(
        !closing.is_finished(),
        "close waits for the creation in progress"
    );
    gate.add_permits(1);
    let (b, created) = creating.await.unwrap().unwrap();
    assert!(created);
    closing.await.unwrap().unwrap();
    assert!(
        b.closed.load(Ordering::SeqCst),
        "a channel created as close began is closed with the rest"
    );
    assert!(matches!(
        topic.get_or_create_channel("c").await,
        Err(TopicError::Exiting)
    ));
}
