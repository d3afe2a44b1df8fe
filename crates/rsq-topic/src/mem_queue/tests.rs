//! Unit tests of the bounded memory queue and its zero-capacity rendezvous.

use std::time::Duration;

use bytes::Bytes;
use rsq_codec::{Message, MessageId};

use super::MemQueue;

fn msg(n: u8) -> Message {
    Message::new(
        MessageId([b'0' + n % 10; 16]),
        i64::from(n),
        Bytes::from(vec![n]),
    )
}

#[test]
fn bounded_by_capacity() {
    let q = MemQueue::new(2);
    assert!(q.try_push(msg(1), false).is_ok());
    assert!(q.try_push(msg(2), false).is_ok());
    assert_eq!(q.try_push(msg(3), true), Err(msg(3)));
    assert_eq!(q.len(), 2);
    assert_eq!(q.drain(), vec![msg(1), msg(2)]);
    assert_eq!(q.len(), 0);
}

#[test]
fn push_all_is_all_or_nothing() {
    let q = MemQueue::new(3);
    assert!(q.try_push(msg(1), false).is_ok());
    assert_eq!(
        q.try_push_all(vec![msg(2), msg(3), msg(4)]),
        Err(vec![msg(2), msg(3), msg(4)])
    );
    assert_eq!(q.len(), 1);
    assert!(q.try_push_all(vec![msg(2), msg(3)]).is_ok());
    assert_eq!(q.drain(), vec![msg(1), msg(2), msg(3)]);
}

#[test]
fn zero_capacity_refuses_without_a_waiting_pump() {
    let q = MemQueue::new(0);
    assert_eq!(q.try_push(msg(1), true), Err(msg(1)));
    assert_eq!(q.try_push_all(vec![msg(1)]), Err(vec![msg(1)]));
    assert!(q.try_push_all(Vec::new()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn zero_capacity_hands_off_to_a_waiting_pump() {
    let q = std::sync::Arc::new(MemQueue::new(0));
    let reader = tokio::spawn({
        let q = q.clone();
        async move { q.pop().await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    // Only a handoff-eligible message (deferred or ephemeral) is taken.
    assert_eq!(q.try_push(msg(1), false), Err(msg(1)));
    assert!(q.try_push(msg(2), true).is_ok());
    // The slot is taken until the pump receives it.
    assert_eq!(q.try_push(msg(3), true), Err(msg(3)));
    assert_eq!(reader.await.expect("reader"), msg(2));
    // A dropped pop no longer counts as a waiting pump.
    assert_eq!(q.try_push(msg(4), true), Err(msg(4)));
}

#[tokio::test(start_paused = true)]
async fn dropped_pop_loses_nothing() {
    let q = MemQueue::new(4);
    let timed_out = tokio::time::timeout(Duration::from_millis(5), q.pop()).await;
    assert!(timed_out.is_err());
    assert!(q.try_push(msg(1), false).is_ok());
    assert_eq!(q.pop().await, msg(1));
}
