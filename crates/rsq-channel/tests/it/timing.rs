//! Timeouts, REQ delays, TOUCH and deferred puts on tokio's paused clock.

use std::time::Duration;

use rsq_channel::ChannelConfig;
use tokio::time::Instant;

use crate::{SEC, channel, msg, next, num};

#[tokio::test(start_paused = true)]
async fn unfinished_message_times_out_and_is_redelivered() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut c = ch.add_consumer(1, 10 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    let start = Instant::now();
    let first = next(&mut c, SEC).await.unwrap();
    let again = next(&mut c, 20 * SEC).await.unwrap();
    assert_eq!((num(&again.id), again.attempts), (num(&first.id), 2));
    let waited = start.elapsed();
    assert!(
        waited >= 10 * SEC && waited < 10 * SEC + Duration::from_millis(5),
        "{waited:?}"
    );
    assert_eq!(ch.stats().timeout_count, 1);
}

#[tokio::test(start_paused = true)]
async fn req_with_delay_redelivers_after_the_delay() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    let m = next(&mut c, SEC).await.unwrap();
    let start = Instant::now();
    ch.requeue(1, &m.id, 3 * SEC).unwrap();
    assert_eq!(ch.stats().deferred_count, 1);
    let again = next(&mut c, 10 * SEC).await.unwrap();
    assert_eq!(again.attempts, 2);
    let waited = start.elapsed();
    assert!(
        waited >= 3 * SEC && waited < 3 * SEC + Duration::from_millis(5),
        "{waited:?}"
    );
    assert_eq!(ch.stats().requeue_count, 1);
}

#[tokio::test(start_paused = true)]
async fn req_delay_is_capped_by_max_req_timeout() {
    let (ch, _) = channel(ChannelConfig {
        max_req_timeout: 5 * SEC,
        ..ChannelConfig::default()
    });
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    let m = next(&mut c, SEC).await.unwrap();
    ch.requeue(1, &m.id, 3600 * SEC).unwrap();
    assert!(next(&mut c, 6 * SEC).await.is_some());
}

#[tokio::test(start_paused = true)]
async fn touch_keeps_a_message_but_not_past_max_msg_timeout() {
    let (ch, _) = channel(ChannelConfig {
        max_msg_timeout: 25 * SEC,
        ..ChannelConfig::default()
    });
    let mut c = ch.add_consumer(1, 10 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    let m = next(&mut c, SEC).await.unwrap();
    let start = Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(8 * SEC).await;
        if ch.touch(1, &m.id).is_err() {
            break;
        }
    }
    // Touched at 8 s and 16 s (deadline 26 s, capped at 25 s); expired at 25 s.
    assert_eq!(ch.stats().timeout_count, 1);
    let again = next(&mut c, SEC).await.unwrap();
    assert_eq!(again.attempts, 2);
    assert!(start.elapsed() >= 25 * SEC);
}

#[tokio::test(start_paused = true)]
async fn deferred_put_is_held_until_its_time() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut c = ch.add_consumer(1, 60 * SEC).unwrap();
    ch.set_ready(1, 10);
    ch.put_deferred(msg(1), 5 * SEC).await.unwrap();
    ch.put_deferred(msg(2), Duration::ZERO).await.unwrap();
    assert_eq!(num(&next(&mut c, SEC).await.unwrap().id), 2);
    assert_eq!(ch.stats().deferred_count, 1);
    assert!(next(&mut c, 3 * SEC).await.is_none());
    assert_eq!(num(&next(&mut c, 3 * SEC).await.unwrap().id), 1);
    assert_eq!(ch.stats().message_count, 2);
}

#[tokio::test(start_paused = true)]
async fn a_shorter_consumer_timeout_wakes_the_driver_earlier() {
    let (ch, _) = channel(ChannelConfig::default());
    let mut slow = ch.add_consumer(1, 60 * SEC).unwrap();
    let mut quick = ch.add_consumer(2, 2 * SEC).unwrap();
    ch.set_ready(1, 1);
    ch.put(msg(1)).await.unwrap();
    next(&mut slow, SEC).await.unwrap();
    ch.set_ready(2, 1);
    ch.put(msg(2)).await.unwrap();
    let start = Instant::now();
    next(&mut quick, SEC).await.unwrap();
    let again = next(&mut quick, 5 * SEC).await.unwrap();
    assert_eq!((num(&again.id), again.attempts), (2, 2));
    assert!(start.elapsed() < 3 * SEC);
}
