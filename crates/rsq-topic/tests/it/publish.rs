//! Publishing: memory queue, overflow, multi-put, ephemeral topics, errors.

use std::sync::Arc;
use std::time::Duration;

use rsq_diskqueue::{BackendQueue, MemoryQueue};
use rsq_topic::TopicError;

use crate::support::{deferred, id, msg, settle, topic, topic_over};

#[tokio::test(start_paused = true)]
async fn put_fills_memory_then_overflows_to_backend() {
    let (topic, backend, _) = topic(3);
    for n in 0..5 {
        topic.put(msg(n)).await.unwrap();
    }
    let stats = topic.stats();
    assert_eq!(stats.memory_depth, 3);
    assert_eq!(stats.backend_depth, 2);
    assert_eq!(stats.depth, 5);
    assert_eq!(stats.message_count, 5);
    assert_eq!(stats.message_bytes, 500);
    assert_eq!(stats.name, "t");
    // The backend holds the messages' wire layout.
    let record = backend.try_read().unwrap().unwrap();
    assert_eq!(record, msg(3).to_bytes());
}

#[tokio::test(start_paused = true)]
async fn put_many_goes_to_memory_when_the_whole_batch_fits() {
    let (topic, backend, _) = topic(4);
    topic.put(msg(0)).await.unwrap();
    topic.put_many((1..4).map(msg).collect()).await.unwrap();
    assert_eq!(topic.stats().memory_depth, 4);
    assert_eq!(backend.depth(), 0);
    // One more does not fit: the whole batch goes to the backend.
    topic.put_many((4..6).map(msg).collect()).await.unwrap();
    assert_eq!(topic.stats().memory_depth, 4);
    assert_eq!(backend.depth(), 2);
    assert_eq!(topic.stats().message_count, 6);
    topic.put_many(Vec::new()).await.unwrap();
    assert_eq!(topic.stats().message_count, 6);
}

#[tokio::test(start_paused = true)]
async fn put_many_delivers_every_message_once() {
    let (topic, _backend, _) = topic(8);
    let ch = topic.get_or_create_channel("c").await.unwrap().0;
    topic.start();
    topic.put_many((0..5).map(msg).collect()).await.unwrap();
    topic.put_many((5..20).map(msg).collect()).await.unwrap();
    settle().await;
    let mut got = ch.ids();
    got.sort();
    assert_eq!(got, (0..20).map(id).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn puts_after_close_or_delete_are_refused() {
    for delete in [false, true] {
        let (topic, backend, _) = topic(4);
        if delete {
            topic.delete().await.unwrap();
        } else {
            topic.close().await.unwrap();
        }
        assert!(matches!(topic.put(msg(1)).await, Err(TopicError::Exiting)));
        assert!(matches!(
            topic.put_many(vec![msg(2), msg(3)]).await,
            Err(TopicError::Exiting)
        ));
        assert!(matches!(
            topic.get_or_create_channel("c").await,
            Err(TopicError::Exiting)
        ));
        assert_eq!(topic.stats().message_count, 0);
        assert_eq!(topic.stats().depth, 0);
        assert_eq!(backend.depth(), 0);
        assert!(matches!(topic.close().await, Err(TopicError::Exiting)));
        assert!(matches!(topic.delete().await, Err(TopicError::Exiting)));
    }
}

#[tokio::test(start_paused = true)]
async fn backend_failure_is_reported_and_batch_takes_nothing() {
    let backend = Arc::new(MemoryQueue::unbounded());
    let (topic, _) = topic_over("t", 1, backend.clone());
    topic.put(msg(0)).await.unwrap();
    // Someone else closed the backend: overflow writes fail.
    backend.close().await.unwrap();
    assert!(matches!(
        topic.put(msg(1)).await,
        Err(TopicError::Backend(_))
    ));
    assert!(matches!(
        topic.put_many(vec![msg(2), msg(3)]).await,
        Err(TopicError::Backend(_))
    ));
    let stats = topic.stats();
    assert_eq!(stats.message_count, 1);
    assert_eq!(stats.depth, 1);
}

#[tokio::test(start_paused = true)]
async fn ephemeral_topic_drops_overflow_silently() {
    let (topic, _) = topic_over("t#ephemeral", 2, Arc::new(MemoryQueue::discarding(0)));
    assert!(topic.is_ephemeral());
    for n in 0..5 {
        topic.put(msg(n)).await.unwrap();
    }
    topic.put_many(vec![msg(5), msg(6)]).await.unwrap();
    let stats = topic.stats();
    assert_eq!(stats.depth, 2);
    assert_eq!(stats.message_count, 7);
    let ch = topic.get_or_create_channel("c").await.unwrap().0;
    topic.start();
    settle().await;
    assert_eq!(ch.ids(), vec![id(0), id(1)]);
}

#[tokio::test(start_paused = true)]
async fn ephemeral_topic_with_zero_mem_queue_hands_to_a_waiting_pump() {
    let (topic, _) = topic_over("t#ephemeral", 0, Arc::new(MemoryQueue::discarding(0)));
    let ch = topic.get_or_create_channel("c").await.unwrap().0;
    topic.start();
    settle().await;
    topic.put(msg(1)).await.unwrap();
    settle().await;
    topic
        .put(deferred(2, Duration::from_secs(1)))
        .await
        .unwrap();
    // The pump has not run since the last handoff: this one is dropped.
    topic.put(msg(3)).await.unwrap();
    settle().await;
    assert_eq!(ch.ids(), vec![id(1), id(2)]);
}

#[tokio::test(start_paused = true)]
async fn non_ephemeral_name() {
    let (topic, _, _) = topic(1);
    assert!(!topic.is_ephemeral());
    assert_eq!(topic.name(), "t");
}
