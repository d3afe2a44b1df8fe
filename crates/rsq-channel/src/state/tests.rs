//! Deterministic tests of the channel state machine, driven by a manual clock,
//! and a model-based property test over random interleavings.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use rsq_codec::{Message, MessageId};

use super::{ChannelState, PutOutcome};
use crate::{ChannelConfig, ChannelError, ClientId, Clock, E2eLatency, ManualClock};

const SEC: Duration = Duration::from_secs(1);

fn id(n: u64) -> MessageId {
    MessageId(format!("{n:016x}").as_bytes().try_into().unwrap())
}

fn msg(n: u64) -> Message {
    Message::new(id(n), 1_000, Bytes::from(format!("body {n}")))
}

/// A state machine, a manual clock, and a queue of records standing in
/// for the backend the async wrapper would write overflow to.
struct Harness {
    state: ChannelState,
    clock: ManualClock,
    backend: VecDeque<Bytes>,
}

impl Harness {
    fn new(config: ChannelConfig) -> Self {
        Harness {
            state: ChannelState::new(config),
            clock: ManualClock::new(),
            backend: VecDeque::new(),
        }
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn put(&mut self, n: u64) {
        if let PutOutcome::Overflow(m) = self.state.handle_put(msg(n)) {
            self.backend.push_back(m.to_bytes());
        }
    }

    fn consumer(&mut self, client: ClientId, rdy: u64) {
        self.state.add_consumer(client, 60 * SEC).unwrap();
        self.state.handle_rdy(client, rdy);
    }

    /// One delivery, reading the backend as the wrapper does: as many
    /// records as the state has room for.
    fn deliver(&mut self) -> Option<(ClientId, Message)> {
        for _ in 0..self.state.backend_room() {
            let Some(record) = self.backend.pop_front() else {
                break;
            };
            self.state
                .handle_backend_message(Message::decode(record).unwrap());
        }
        let out = self.state.poll_deliver(self.now());
        self.state.check_unique_ids();
        out
    }

    fn deliver_all(&mut self) -> Vec<(ClientId, u64, u16)> {
        std::iter::from_fn(|| self.deliver())
            .map(|(c, m)| (c, num(&m.id), m.attempts))
            .collect()
    }

    fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.state.handle_timeout(self.now());
        self.state.check_unique_ids();
    }
}

fn num(id: &MessageId) -> u64 {
    u64::from_str_radix(std::str::from_utf8(&id.0).unwrap(), 16).unwrap()
}

#[track_caller]
fn check(h: &mut Harness, expected: &[(ClientId, u64, u16)]) {
    assert_eq!(h.deliver_all(), expected);
}

#[test]
fn nothing_is_delivered_before_rdy() {
    let mut h = Harness::new(ChannelConfig::default());
    h.put(1);
    h.state.add_consumer(7, 60 * SEC).unwrap();
    check(&mut h, &[]);
    h.state.handle_rdy(7, 1);
    check(&mut h, &[(7, 1, 1)]);
}

#[test]
fn rdy_is_a_window_on_in_flight_not_a_credit() {
    let mut h = Harness::new(ChannelConfig::default());
    for n in 1..=4 {
        h.put(n);
    }
    h.consumer(1, 2);
    check(&mut h, &[(1, 1, 1), (1, 2, 1)]);
    h.state
        .handle_fin(1, &id(1), h.now(), h.clock.unix_nanos())
        .unwrap();
    check(&mut h, &[(1, 3, 1)]);
    // Lowering RDY below the in-flight count stops delivery until FINs catch up.
    h.state.handle_rdy(1, 1);
    h.state
        .handle_fin(1, &id(2), h.now(), h.clock.unix_nanos())
        .unwrap();
    check(&mut h, &[]);
    h.state
        .handle_fin(1, &id(3), h.now(), h.clock.unix_nanos())
        .unwrap();
    check(&mut h, &[(1, 4, 1)]);
    h.state.handle_rdy(1, 0);
    h.put(5);
    h.state
        .handle_fin(1, &id(4), h.now(), h.clock.unix_nanos())
        .unwrap();
    check(&mut h, &[]);
}

#[test]
fn rdy_is_capped_by_max_rdy_count() {
    let mut h = Harness::new(ChannelConfig {
        max_rdy_count: 3,
        ..ChannelConfig::default()
    });
    for n in 1..=5 {
        h.put(n);
    }
    h.consumer(1, 100);
    assert_eq!(h.deliver_all().len(), 3);
    assert_eq!(h.state.stats().clients[0].ready_count, 3);
}

#[test]
fn messages_spread_round_robin_over_ready_consumers() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 10);
    h.consumer(2, 10);
    for n in 1..=4 {
        h.put(n);
    }
    let got = h.deliver_all();
    let to_1 = got.iter().filter(|(c, _, _)| *c == 1).count();
    assert_eq!((to_1, got.len()), (2, 4));
}

#[test]
fn a_slow_consumer_never_stalls_the_others() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 1);
    h.consumer(2, 100);
    for n in 1..=10 {
        h.put(n);
    }
    let got = h.deliver_all();
    assert_eq!(got.len(), 10);
    assert_eq!(got.iter().filter(|(c, _, _)| *c == 1).count(), 1);
}

#[test]
fn in_flight_message_times_out_and_is_redelivered() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 1);
    h.put(1);
    let t0 = h.now();
    check(&mut h, &[(1, 1, 1)]);
    assert_eq!(h.state.poll_timeout(), Some(t0 + 60 * SEC));
    h.advance(60 * SEC - Duration::from_millis(1));
    assert_eq!(h.state.stats().timeout_count, 0);
    check(&mut h, &[]);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.state.stats().timeout_count, 1);
    check(&mut h, &[(1, 1, 2)]);
    // The late FIN of the first delivery succeeds: the id is in flight again
    // with the same owner, as in nsqd.
    h.state
        .handle_fin(1, &id(1), h.now(), h.clock.unix_nanos())
        .unwrap();
    assert_eq!(h.state.poll_timeout(), None);
}

#[test]
fn a_consumers_own_timeout_is_used() {
    let mut h = Harness::new(ChannelConfig::default());
    h.state.add_consumer(1, 5 * SEC).unwrap();
    h.state.handle_rdy(1, 1);
    h.put(1);
    check(&mut h, &[(1, 1, 1)]);
    h.advance(5 * SEC);
    assert_eq!(h.state.stats().timeout_count, 1);
}

#[test]
fn req_with_no_delay_requeues_at_once_and_counts() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 1);
    h.put(1);
    check(&mut h, &[(1, 1, 1)]);
    h.state
        .handle_req(1, &id(1), Duration::ZERO, h.now())
        .unwrap();
    check(&mut h, &[(1, 1, 2)]);
    let stats = h.state.stats();
    assert_eq!(
        (stats.requeue_count, stats.clients[0].requeue_count),
        (1, 1)
    );
}

#[test]
fn req_with_delay_defers_and_is_clamped_to_max_req_timeout() {
    let mut h = Harness::new(ChannelConfig {
        max_req_timeout: 10 * SEC,
        ..ChannelConfig::default()
    });
    h.consumer(1, 2);
    h.put(1);
    h.put(2);
    check(&mut h, &[(1, 1, 1), (1, 2, 1)]);
    let t0 = h.now();
    h.state.handle_req(1, &id(1), 3 * SEC, t0).unwrap();
    h.state.handle_req(1, &id(2), 3600 * SEC, t0).unwrap();
    assert_eq!(h.state.stats().deferred_count, 2);
    assert_eq!(h.state.poll_timeout(), Some(t0 + 3 * SEC));
    h.advance(3 * SEC);
    check(&mut h, &[(1, 1, 2)]);
    assert_eq!(h.state.poll_timeout(), Some(t0 + 10 * SEC));
    h.advance(7 * SEC - Duration::from_millis(1));
    check(&mut h, &[]);
    h.advance(Duration::from_millis(1));
    check(&mut h, &[(1, 2, 2)]);
}

#[test]
fn touch_restarts_the_timeout_up_to_max_msg_timeout() {
    let mut h = Harness::new(ChannelConfig {
        max_msg_timeout: 100 * SEC,
        ..ChannelConfig::default()
    });
    h.consumer(1, 1);
    h.put(1);
    let t0 = h.now();
    check(&mut h, &[(1, 1, 1)]);
    h.advance(50 * SEC);
    h.state.handle_touch(1, &id(1), h.now()).unwrap();
    // now + 60 s = t0 + 110 s, capped at delivery + 100 s.
    assert_eq!(h.state.poll_timeout(), Some(t0 + 100 * SEC));
    h.advance(30 * SEC);
    h.state.handle_touch(1, &id(1), h.now()).unwrap();
    assert_eq!(h.state.poll_timeout(), Some(t0 + 100 * SEC));
    h.advance(20 * SEC);
    assert_eq!(h.state.stats().timeout_count, 1);
    assert_eq!(
        h.state
            .handle_touch(1, &id(1), h.now())
            .unwrap_err()
            .to_string(),
        "ID not in flight"
    );
}

#[test]
fn touch_early_moves_the_deadline_forward() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 1);
    h.put(1);
    check(&mut h, &[(1, 1, 1)]);
    h.advance(30 * SEC);
    h.state.handle_touch(1, &id(1), h.now()).unwrap();
    h.advance(59 * SEC);
    assert_eq!(h.state.stats().timeout_count, 0);
    h.advance(SEC);
    assert_eq!(h.state.stats().timeout_count, 1);
}

#[test]
fn only_the_owner_may_fin_req_or_touch() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 1);
    h.consumer(2, 0);
    h.put(1);
    check(&mut h, &[(1, 1, 1)]);
    let now = h.now();
    let not_owner = |r: Result<(), ChannelError>| matches!(r, Err(ChannelError::NotOwner));
    assert!(not_owner(
        h.state
            .handle_fin(2, &id(1), h.now(), h.clock.unix_nanos())
            .map(drop)
    ));
    assert!(not_owner(h.state.handle_req(2, &id(1), SEC, now)));
    assert!(not_owner(h.state.handle_touch(2, &id(1), now)));
    let not_in_flight = |r: Result<(), ChannelError>| matches!(r, Err(ChannelError::NotInFlight));
    assert!(not_in_flight(
        h.state
            .handle_fin(1, &id(9), h.now(), h.clock.unix_nanos())
            .map(drop)
    ));
    assert!(not_in_flight(h.state.handle_req(1, &id(9), SEC, now)));
    assert!(not_in_flight(h.state.handle_touch(1, &id(9), now)));
    assert_eq!(
        ChannelError::NotOwner.to_string(),
        "client does not own message"
    );
    h.state
        .handle_fin(1, &id(1), h.now(), h.clock.unix_nanos())
        .unwrap();
    assert!(not_in_flight(
        h.state
            .handle_fin(1, &id(1), h.now(), h.clock.unix_nanos())
            .map(drop)
    ));
    assert_eq!(h.state.stats().clients[0].finish_count, 1);
}

#[test]
fn deferred_put_is_released_at_its_time() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 10);
    let t0 = h.now();
    h.state.handle_put_deferred(msg(1), 2 * SEC, t0);
    h.state.handle_put_deferred(msg(2), SEC, t0);
    let stats = h.state.stats();
    assert_eq!(
        (stats.deferred_count, stats.message_count, stats.depth),
        (2, 2, 0)
    );
    check(&mut h, &[]);
    assert_eq!(h.state.poll_timeout(), Some(t0 + SEC));
    h.advance(SEC);
    check(&mut h, &[(1, 2, 1)]);
    h.advance(SEC);
    check(&mut h, &[(1, 1, 1)]);
    assert_eq!(h.state.stats().deferred_count, 0);
}

#[test]
fn disconnect_requeues_in_flight_at_once() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 2);
    h.put(1);
    h.put(2);
    check(&mut h, &[(1, 1, 1), (1, 2, 1)]);
    h.consumer(2, 5);
    assert!(h.state.remove_consumer(1));
    assert!(!h.state.remove_consumer(1));
    check(&mut h, &[(2, 1, 2), (2, 2, 2)]);
    let stats = h.state.stats();
    assert_eq!(
        (stats.requeue_count, stats.timeout_count, stats.client_count),
        (2, 0, 1)
    );
}

#[test]
fn pause_stops_delivery_but_not_puts() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 10);
    h.state.pause();
    h.put(1);
    h.put(2);
    check(&mut h, &[]);
    assert!(!h.state.wants_message());
    let stats = h.state.stats();
    assert_eq!((stats.paused, stats.depth), (true, 2));
    h.state.unpause();
    check(&mut h, &[(1, 1, 1), (1, 2, 1)]);
}

#[test]
fn empty_drops_queued_in_flight_and_deferred() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 1);
    h.put(1);
    h.put(2);
    check(&mut h, &[(1, 1, 1)]);
    h.state.handle_put_deferred(msg(3), SEC, h.now());
    h.state.handle_empty();
    h.state.check_unique_ids();
    let stats = h.state.stats();
    assert_eq!(
        (
            stats.depth,
            stats.in_flight_count,
            stats.deferred_count,
            stats.clients[0].in_flight_count
        ),
        (0, 0, 0, 0)
    );
    assert!(matches!(
        h.state.handle_fin(1, &id(1), h.now(), h.clock.unix_nanos()),
        Err(ChannelError::NotInFlight)
    ));
    assert_eq!(h.state.poll_timeout(), None);
    h.put(4);
    check(&mut h, &[(1, 4, 1)]);
}

#[test]
fn fresh_messages_overflow_past_mem_queue_size() {
    let mut h = Harness::new(ChannelConfig {
        mem_queue_size: 2,
        ..ChannelConfig::default()
    });
    assert_eq!(h.state.handle_put(msg(1)), PutOutcome::Queued);
    assert_eq!(h.state.handle_put(msg(2)), PutOutcome::Queued);
    assert_eq!(h.state.handle_put(msg(3)), PutOutcome::Overflow(msg(3)));
    assert_eq!(h.state.stats().message_count, 3);
}

#[test]
fn mem_queue_size_zero_sends_everything_to_the_backend() {
    let mut h = Harness::new(ChannelConfig {
        mem_queue_size: 0,
        ..ChannelConfig::default()
    });
    h.consumer(1, 10);
    assert_eq!(h.state.handle_put(msg(1)), PutOutcome::Overflow(msg(1)));
    // ...but an ephemeral channel hands a message to a waiting consumer.
    let mut e = Harness::new(ChannelConfig {
        mem_queue_size: 0,
        ephemeral: true,
        ..ChannelConfig::default()
    });
    assert_eq!(e.state.handle_put(msg(1)), PutOutcome::Overflow(msg(1)));
    e.consumer(1, 1);
    assert_eq!(e.state.handle_put(msg(2)), PutOutcome::Queued);
    check(&mut e, &[(1, 2, 1)]);
    assert_eq!(e.state.handle_put(msg(3)), PutOutcome::Overflow(msg(3)));
}

#[test]
fn backend_records_are_read_when_memory_is_empty() {
    let mut h = Harness::new(ChannelConfig {
        mem_queue_size: 1,
        ..ChannelConfig::default()
    });
    for n in 1..=3 {
        h.put(n);
    }
    assert_eq!(h.backend.len(), 2);
    h.consumer(1, 10);
    check(&mut h, &[(1, 1, 1), (1, 2, 1), (1, 3, 1)]);
}

#[test]
fn drain_keeps_memory_then_in_flight_then_deferred() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 1);
    h.put(1);
    h.put(2);
    check(&mut h, &[(1, 1, 1)]);
    h.state.handle_put_deferred(msg(3), SEC, h.now());
    let order: Vec<u64> = h.state.drain(h.now()).iter().map(|m| num(&m.id)).collect();
    assert_eq!(order, vec![2, 1, 3]);
    assert_eq!(h.state.consumer_count(), 0);
}

#[test]
fn idle_channel_has_no_deadline() {
    let mut h = Harness::new(ChannelConfig::default());
    assert_eq!(h.state.poll_timeout(), None);
    h.put(1);
    assert_eq!(h.state.poll_timeout(), None);
}

#[test]
fn stale_deadlines_do_not_pile_up() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 1);
    for n in 0..10_000 {
        h.put(n);
        let (_, m) = h.deliver().unwrap();
        h.state.handle_touch(1, &m.id, h.now()).unwrap();
        h.state
            .handle_fin(1, &m.id, h.now(), h.clock.unix_nanos())
            .unwrap();
    }
    assert_eq!(h.state.poll_timeout(), None);
    assert!(
        h.state.in_flight.timer_count() <= 200,
        "{}",
        h.state.in_flight.timer_count()
    );
}

#[test]
fn duplicate_consumer_is_refused() {
    let mut h = Harness::new(ChannelConfig::default());
    h.consumer(1, 1);
    assert!(matches!(
        h.state.add_consumer(1, SEC),
        Err(ChannelError::ConsumerExists(1))
    ));
}

#[test]
fn fin_records_publish_to_fin_latency_in_a_window() {
    const MS: Duration = Duration::from_millis(1);
    let mut h = Harness::new(ChannelConfig {
        e2e_percentiles: vec![1.0, 0.5],
        e2e_window: 10 * 60 * SEC,
        ..ChannelConfig::default()
    });
    let empty = h.state.e2e_latency(h.now()).unwrap().snapshot();
    assert_eq!(
        empty,
        E2eLatency {
            count: 0,
            percentiles: vec![(1.0, 0), (0.5, 0)],
        }
    );
    // Four messages published together, finished 10, 20, 30 and 40 ms later.
    let published = h.clock.unix_nanos();
    for n in 1..=4 {
        let m = Message::new(id(n), published, Bytes::from_static(b"x"));
        assert_eq!(h.state.handle_put(m), PutOutcome::Queued);
    }
    h.consumer(1, 10);
    assert_eq!(h.deliver_all().len(), 4);
    for n in 1..=4 {
        h.advance(10 * MS);
        h.state
            .handle_fin(1, &id(n), h.now(), h.clock.unix_nanos())
            .unwrap();
    }
    let s = h.state.e2e_latency(h.now()).unwrap().snapshot();
    assert_eq!(s.count, 4);
    assert_eq!(
        s.percentiles,
        vec![(1.0, 40_000_000), (0.5, 20_000_000)],
        "exact for small counts"
    );
    // Half a window on the finishes are the previous half: still reported.
    h.advance(5 * 60 * SEC);
    assert_eq!(h.state.e2e_latency(h.now()).unwrap().count(), 4);
    // A whole window on they are forgotten.
    h.advance(5 * 60 * SEC);
    assert_eq!(h.state.e2e_latency(h.now()).unwrap().count(), 0);
    // Counters report no latency themselves (the wrapper adds it).
    assert_eq!(h.state.stats().e2e_processing_latency, None);
}

#[test]
fn latency_is_not_kept_unless_configured() {
    let mut h = Harness::new(ChannelConfig::default());
    h.put(1);
    h.consumer(1, 1);
    check(&mut h, &[(1, 1, 1)]);
    h.state
        .handle_fin(1, &id(1), h.now(), h.clock.unix_nanos())
        .unwrap();
    assert!(h.state.e2e_latency(h.now()).is_none());
}

fn limited(max_attempts: u16) -> Harness {
    Harness::new(ChannelConfig {
        max_attempts,
        ..ChannelConfig::default()
    })
}

/// Ids and attempts of every dead letter waiting, oldest first.
fn take_dead_letters(h: &mut Harness) -> Vec<(u64, u16)> {
    let out = std::iter::from_fn(|| h.state.poll_dead_letter())
        .map(|m| (num(&m.id), m.attempts))
        .collect();
    h.state.check_unique_ids();
    out
}

#[test]
fn req_on_the_last_attempt_dead_letters_instead_of_requeueing() {
    let mut h = limited(3);
    h.put(1);
    h.consumer(1, 1);
    for attempt in 1..=3 {
        check(&mut h, &[(1, 1, attempt)]);
        assert!(take_dead_letters(&mut h).is_empty());
        h.state
            .handle_req(1, &id(1), Duration::ZERO, h.now())
            .unwrap();
        h.state.check_unique_ids();
    }
    check(&mut h, &[]);
    assert_eq!(h.state.dead_letter_depth(), 1);
    let s = h.state.stats();
    assert_eq!((s.dead_letter_count, s.requeue_count, s.depth), (1, 3, 0));
    assert_eq!(take_dead_letters(&mut h), vec![(1, 3)]);
    assert_eq!(h.state.dead_letter_depth(), 0);
    assert_eq!(
        h.state.stats().dead_letter_count,
        1,
        "a counter, not a depth"
    );
}

#[test]
fn a_deferred_req_on_the_last_attempt_dead_letters_at_once() {
    let mut h = limited(1);
    h.put(1);
    h.consumer(1, 1);
    check(&mut h, &[(1, 1, 1)]);
    h.state.handle_req(1, &id(1), 30 * SEC, h.now()).unwrap();
    assert_eq!(h.state.deferred_count(), 0);
    assert_eq!(take_dead_letters(&mut h), vec![(1, 1)]);
    assert_eq!(h.state.poll_timeout(), None);
}

#[test]
fn timeout_on_the_last_attempt_dead_letters() {
    let mut h = limited(2);
    h.put(1);
    h.put(2);
    h.consumer(1, 2);
    check(&mut h, &[(1, 1, 1), (1, 2, 1)]);
    h.advance(61 * SEC);
    check(&mut h, &[(1, 1, 2), (1, 2, 2)]);
    h.state
        .handle_fin(1, &id(2), h.now(), h.clock.unix_nanos())
        .unwrap();
    h.advance(61 * SEC);
    check(&mut h, &[]);
    let s = h.state.stats();
    assert_eq!((s.timeout_count, s.dead_letter_count), (3, 1));
    assert_eq!(take_dead_letters(&mut h), vec![(1, 2)]);
}

#[test]
fn a_disconnect_requeues_even_on_the_last_attempt() {
    // The consumer went away; it did not fail the message. The next REQ
    // or timeout (of attempt 2 here) dead-letters it.
    let mut h = limited(1);
    h.put(1);
    h.consumer(1, 1);
    check(&mut h, &[(1, 1, 1)]);
    h.state.remove_consumer(1);
    assert!(take_dead_letters(&mut h).is_empty());
    h.consumer(2, 1);
    check(&mut h, &[(2, 1, 2)]);
    h.state
        .handle_req(2, &id(1), Duration::ZERO, h.now())
        .unwrap();
    assert_eq!(take_dead_letters(&mut h), vec![(1, 2)]);
}

#[test]
fn without_a_limit_nothing_is_dead_lettered() {
    let mut h = limited(0);
    h.put(1);
    h.consumer(1, 1);
    for attempt in 1..=300u16 {
        check(&mut h, &[(1, 1, attempt)]);
        h.state
            .handle_req(1, &id(1), Duration::ZERO, h.now())
            .unwrap();
    }
    assert!(take_dead_letters(&mut h).is_empty());
    assert_eq!(h.state.stats().dead_letter_count, 0);
}

#[test]
fn a_failed_dead_letter_is_held_again_first_and_not_counted_twice() {
    let mut h = limited(1);
    h.put(1);
    h.put(2);
    h.consumer(1, 2);
    check(&mut h, &[(1, 1, 1), (1, 2, 1)]);
    h.state
        .handle_req(1, &id(1), Duration::ZERO, h.now())
        .unwrap();
    h.state
        .handle_req(1, &id(2), Duration::ZERO, h.now())
        .unwrap();
    let first = h.state.poll_dead_letter().unwrap();
    assert_eq!(num(&first.id), 1);
    h.state.check_unique_ids();
    h.state.handle_dead_letter_failed(first);
    h.state.check_unique_ids();
    assert_eq!(take_dead_letters(&mut h), vec![(1, 1), (2, 1)]);
    assert_eq!(h.state.stats().dead_letter_count, 2);
}

#[test]
fn drain_keeps_dead_letters_and_empty_drops_them() {
    let mut h = limited(1);
    for n in 1..=3 {
        h.put(n);
    }
    h.consumer(1, 2);
    check(&mut h, &[(1, 1, 1), (1, 2, 1)]);
    h.state
        .handle_req(1, &id(1), Duration::ZERO, h.now())
        .unwrap();
    let drained: Vec<(u64, u16)> = h
        .state
        .drain(h.now())
        .iter()
        .map(|m| (num(&m.id), m.attempts))
        .collect();
    // Memory, in flight, then the dead letter with its attempts.
    assert_eq!(drained, vec![(3, 0), (2, 1), (1, 1)]);
    h.state.check_unique_ids();

    let mut h = limited(1);
    h.put(1);
    h.consumer(1, 1);
    check(&mut h, &[(1, 1, 1)]);
    h.state
        .handle_req(1, &id(1), Duration::ZERO, h.now())
        .unwrap();
    h.state.handle_empty();
    h.state.check_unique_ids();
    assert!(take_dead_letters(&mut h).is_empty());
}

#[test]
fn the_limit_can_change_and_applies_from_the_next_failure() {
    let mut h = limited(0);
    h.put(1);
    h.consumer(1, 1);
    check(&mut h, &[(1, 1, 1)]);
    h.state
        .handle_req(1, &id(1), Duration::ZERO, h.now())
        .unwrap();
    check(&mut h, &[(1, 1, 2)]);
    h.state.set_max_attempts(2);
    assert_eq!(h.state.stats().max_attempts, 2);
    h.state
        .handle_req(1, &id(1), Duration::ZERO, h.now())
        .unwrap();
    assert_eq!(take_dead_letters(&mut h), vec![(1, 2)]);
}

// ---------------------------------------------------------------------------
// Model-based property test.

#[derive(Debug, Clone)]
enum Op {
    Put,
    PutDeferred(u64),
    AddConsumer(u8),
    Rdy(u8, u64),
    Deliver(u8),
    Fin(u8, u16),
    Req(u8, u16, u64),
    Touch(u8, u16),
    Advance(u64),
    Disconnect(u8),
    Pause,
    Unpause,
    /// Take up to this many dead letters, as the channel's driver does.
    TakeDeadLetters(u8),
    /// Take one dead letter and give it back (its publish failed).
    FailDeadLetter,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Put),
        1 => (1u64..20_000).prop_map(Op::PutDeferred),
        1 => (0u8..3).prop_map(Op::AddConsumer),
        2 => (any::<u8>(), 0u64..4).prop_map(|(c, n)| Op::Rdy(c, n)),
        4 => (1u8..5).prop_map(Op::Deliver),
        3 => (any::<u8>(), any::<u16>()).prop_map(|(c, m)| Op::Fin(c, m)),
        1 => (any::<u8>(), any::<u16>(), prop_oneof![Just(0u64), 1..10_000u64, Just(1_000_000u64)])
            .prop_map(|(c, m, d)| Op::Req(c, m, d)),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(c, m)| Op::Touch(c, m)),
        2 => (0u64..70_000).prop_map(Op::Advance),
        1 => any::<u8>().prop_map(Op::Disconnect),
        1 => Just(Op::Pause),
        1 => Just(Op::Unpause),
        1 => (1u8..4).prop_map(Op::TakeDeadLetters),
        1 => Just(Op::FailDeadLetter),
    ]
}

const TIMEOUTS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(60),
];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ModelClient {
    timeout: Duration,
    rdy: u64,
    in_flight: u64,
    message_count: u64,
    finish_count: u64,
    requeue_count: u64,
}

/// An independent model of what the channel must do.
#[derive(Default)]
struct Model {
    clients: BTreeMap<ClientId, ModelClient>,
    next_client: ClientId,
    /// Waiting for delivery, in memory or backend.
    available: HashSet<MessageId>,
    /// id -> (owner, deadline, delivered at)
    held: HashMap<MessageId, (ClientId, Instant, Instant)>,
    deferred: HashMap<MessageId, Instant>,
    attempts: HashMap<MessageId, u16>,
    finished: HashMap<MessageId, u32>,
    put: Vec<MessageId>,
    paused: bool,
    message_count: u64,
    requeue_count: u64,
    timeout_count: u64,
    /// The attempt limit (0: none).
    max_attempts: u16,
    /// Past their limit, not yet taken by the caller.
    dead_pending: HashSet<MessageId>,
    /// Taken by the caller (published to dead letters), and how often.
    dead_lettered: HashMap<MessageId, u32>,
    dead_letter_count: u64,
}

impl Model {
    /// Where a message leaving flight by REQ or timeout goes: `true` when
    /// it had its last attempt (the dead-letter outbox).
    fn at_limit(&self, id: &MessageId) -> bool {
        self.max_attempts > 0 && self.attempts.get(id).copied().unwrap_or(0) >= self.max_attempts
    }

    fn dead_letter(&mut self, id: MessageId) {
        self.dead_pending.insert(id);
        self.dead_letter_count += 1;
    }

    fn someone_ready(&self) -> bool {
        !self.paused
            && self
                .clients
                .values()
                .any(|c| c.rdy > 0 && c.in_flight < c.rdy)
    }

    fn client(&self, sel: u8) -> Option<ClientId> {
        let ids: Vec<ClientId> = self.clients.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[sel as usize % ids.len()])
    }

    fn msg(&self, sel: u16) -> Option<MessageId> {
        (!self.put.is_empty()).then(|| self.put[sel as usize % self.put.len()])
    }

    /// What FIN, REQ or TOUCH by `client` on `id` must answer.
    fn owner_check(&self, client: ClientId, id: &MessageId) -> Result<(), &'static str> {
        match self.held.get(id) {
            None => Err("ID not in flight"),
            Some((owner, _, _)) if *owner != client => Err("client does not own message"),
            Some(_) => Ok(()),
        }
    }

    fn release(&mut self, id: MessageId) {
        let (owner, _, _) = self.held.remove(&id).unwrap();
        self.clients.get_mut(&owner).unwrap().in_flight -= 1;
    }
}

struct Sim {
    h: Harness,
    m: Model,
    next_msg: u64,
    config: ChannelConfig,
}

impl Sim {
    fn new(max_attempts: u16) -> Self {
        Sim::with_limits(max_attempts, 0)
    }

    fn with_limits(max_attempts: u16, max_consumers: usize) -> Self {
        let config = ChannelConfig {
            mem_queue_size: 3,
            msg_timeout: 60 * SEC,
            max_msg_timeout: 90 * SEC,
            max_req_timeout: 60 * SEC,
            max_rdy_count: 2500,
            ephemeral: false,
            commit_backend_reads: false,
            // Latency on, so random interleavings exercise its FIN path.
            e2e_percentiles: vec![1.0, 0.5],
            e2e_window: 60 * SEC,
            max_attempts,
            max_consumers,
        };
        Sim {
            h: Harness::new(config.clone()),
            m: Model {
                max_attempts,
                ..Model::default()
            },
            next_msg: 0,
            config,
        }
    }

    fn fresh(&mut self) -> Message {
        self.next_msg += 1;
        let m = msg(self.next_msg);
        self.m.put.push(m.id);
        self.m.message_count += 1;
        m
    }

    fn deliver_one(&mut self) {
        let expect = self.m.someone_ready() && !self.m.available.is_empty();
        let got = self.h.deliver();
        assert_eq!(got.is_some(), expect, "delivery expected: {expect}");
        let Some((client, m)) = got else { return };
        let now = self.h.now();
        let c = self
            .m
            .clients
            .get_mut(&client)
            .expect("delivered to a subscribed consumer");
        assert!(
            c.rdy > 0 && c.in_flight < c.rdy,
            "delivered to a consumer that is not ready"
        );
        assert!(
            self.m.available.remove(&m.id),
            "delivered {} which was not waiting",
            m.id
        );
        assert!(!self.m.held.contains_key(&m.id), "{} in flight twice", m.id);
        let attempts = self.m.attempts.entry(m.id).or_default();
        *attempts += 1;
        assert_eq!(m.attempts, *attempts);
        c.in_flight += 1;
        c.message_count += 1;
        self.m.held.insert(m.id, (client, now + c.timeout, now));
    }

    fn apply(&mut self, op: Op) {
        let now = self.h.now();
        match op {
            Op::Put => {
                let m = self.fresh();
                self.m.available.insert(m.id);
                if let PutOutcome::Overflow(m) = self.h.state.handle_put(m) {
                    self.h.backend.push_back(m.to_bytes());
                }
            }
            Op::PutDeferred(ms) => {
                let m = self.fresh();
                let delay = Duration::from_millis(ms);
                self.m.deferred.insert(m.id, now + delay);
                self.h.state.handle_put_deferred(m, delay, now);
            }
            Op::AddConsumer(t) => self.add_consumer(t),
            Op::Rdy(c, n) => {
                let Some(client) = self.m.client(c) else {
                    return;
                };
                self.h.state.handle_rdy(client, n);
                self.m.clients.get_mut(&client).unwrap().rdy = n;
            }
            Op::Deliver(n) => {
                for _ in 0..n {
                    self.deliver_one();
                }
            }
            Op::Fin(c, sel) => self.fin(c, sel),
            Op::Req(c, sel, ms) => self.req(c, sel, ms, now),
            Op::Touch(c, sel) => self.touch(c, sel, now),
            Op::Advance(ms) => self.advance(Duration::from_millis(ms)),
            Op::Disconnect(c) => self.disconnect(c),
            Op::Pause => {
                self.h.state.pause();
                self.m.paused = true;
            }
            Op::Unpause => {
                self.h.state.unpause();
                self.m.paused = false;
            }
            Op::TakeDeadLetters(n) => {
                for _ in 0..n {
                    self.take_dead_letter();
                }
            }
            Op::FailDeadLetter => {
                if let Some(m) = self.h.state.poll_dead_letter() {
                    assert!(self.m.dead_pending.contains(&m.id), "{} not dead", m.id);
                    self.h.state.handle_dead_letter_failed(m);
                }
            }
        }
        self.h.state.check_unique_ids();
        self.compare();
    }

    /// A new consumer subscribes; refused past `max_consumers`.
    fn add_consumer(&mut self, t: u8) {
        let client = self.m.next_client;
        self.m.next_client += 1;
        let timeout = TIMEOUTS[t as usize];
        let got = self.h.state.add_consumer(client, timeout);
        let max = self.config.max_consumers;
        if max > 0 && self.m.clients.len() >= max {
            assert!(
                matches!(got, Err(ChannelError::TooManyConsumers { max: m }) if m == max),
                "subscription {} past the limit of {max}: {got:?}",
                self.m.clients.len() + 1
            );
            return;
        }
        got.unwrap();
        self.m.clients.insert(
            client,
            ModelClient {
                timeout,
                ..ModelClient::default()
            },
        );
    }

    /// FIN by the consumer `c` selects, of the message `sel` selects.
    fn fin(&mut self, c: u8, sel: u16) {
        let (Some(client), Some(id)) = (self.m.client(c), self.m.msg(sel)) else {
            return;
        };
        let expected = self.m.owner_check(client, &id);
        let got = self
            .h
            .state
            .handle_fin(client, &id, self.h.now(), self.h.clock.unix_nanos());
        assert_eq!(
            got.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            expected.map_err(String::from)
        );
        if expected.is_ok() {
            self.m.release(id);
            self.m.clients.get_mut(&client).unwrap().finish_count += 1;
            *self.m.finished.entry(id).or_default() += 1;
        }
    }

    /// REQ by the consumer `c` selects, of the message `sel` selects.
    fn req(&mut self, c: u8, sel: u16, ms: u64, now: Instant) {
        let (Some(client), Some(id)) = (self.m.client(c), self.m.msg(sel)) else {
            return;
        };
        let expected = self.m.owner_check(client, &id);
        let delay = Duration::from_millis(ms);
        let got = self.h.state.handle_req(client, &id, delay, now);
        assert_eq!(
            got.map_err(|e| e.to_string()),
            expected.map_err(String::from)
        );
        if expected.is_ok() {
            self.m.release(id);
            self.m.clients.get_mut(&client).unwrap().requeue_count += 1;
            self.m.requeue_count += 1;
            let delay = delay.min(self.config.max_req_timeout);
            if self.m.at_limit(&id) {
                self.m.dead_letter(id);
            } else if delay.is_zero() {
                self.m.available.insert(id);
            } else {
                self.m.deferred.insert(id, now + delay);
            }
        }
    }

    /// TOUCH by the consumer `c` selects, of the message `sel` selects.
    fn touch(&mut self, c: u8, sel: u16, now: Instant) {
        let (Some(client), Some(id)) = (self.m.client(c), self.m.msg(sel)) else {
            return;
        };
        let expected = self.m.owner_check(client, &id);
        let got = self.h.state.handle_touch(client, &id, now);
        assert_eq!(
            got.map_err(|e| e.to_string()),
            expected.map_err(String::from)
        );
        if expected.is_ok() {
            let timeout = self.m.clients[&client].timeout;
            let entry = self.m.held.get_mut(&id).unwrap();
            entry.1 = (now + timeout).min(entry.2 + self.config.max_msg_timeout);
        }
    }

    /// The consumer `c` selects leaves; what it held is requeued.
    fn disconnect(&mut self, c: u8) {
        let Some(client) = self.m.client(c) else {
            return;
        };
        assert!(self.h.state.remove_consumer(client));
        self.m.clients.remove(&client);
        let ids: Vec<MessageId> = self
            .m
            .held
            .iter()
            .filter(|(_, (owner, _, _))| *owner == client)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.m.held.remove(&id);
            self.m.available.insert(id);
            self.m.requeue_count += 1;
        }
    }

    fn advance(&mut self, by: Duration) {
        self.h.advance(by);
        let now = self.h.now();
        let expired: Vec<MessageId> = self
            .m
            .held
            .iter()
            .filter(|(_, (_, deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.m.release(id);
            if self.m.at_limit(&id) {
                self.m.dead_letter(id);
            } else {
                self.m.available.insert(id);
            }
            self.m.timeout_count += 1;
        }
        let due: Vec<MessageId> = self
            .m
            .deferred
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.m.deferred.remove(&id);
            self.m.available.insert(id);
        }
    }

    /// Takes one dead letter as the driver does: it must be one the model
    /// says is past its limit, with the attempts it was delivered with.
    fn take_dead_letter(&mut self) -> bool {
        let got = self.h.state.poll_dead_letter();
        self.h.state.check_unique_ids();
        assert_eq!(got.is_some(), !self.m.dead_pending.is_empty());
        let Some(m) = got else { return false };
        assert!(self.m.dead_pending.remove(&m.id), "{} not dead", m.id);
        assert_eq!(Some(&m.attempts), self.m.attempts.get(&m.id));
        assert!(m.attempts >= self.m.max_attempts && self.m.max_attempts > 0);
        *self.m.dead_lettered.entry(m.id).or_default() += 1;
        true
    }

    fn compare(&mut self) {
        let s = self.h.state.stats();
        assert_eq!(
            s.dead_letter_count, self.m.dead_letter_count,
            "dead letters"
        );
        assert_eq!(s.max_attempts, self.m.max_attempts);
        assert_eq!(
            self.h.state.dead_letter_depth(),
            self.m.dead_pending.len(),
            "dead letters held"
        );
        assert_eq!(
            s.depth + self.h.backend.len() as u64,
            self.m.available.len() as u64,
            "depth"
        );
        assert_eq!(s.in_flight_count, self.m.held.len() as u64, "in flight");
        assert_eq!(s.deferred_count, self.m.deferred.len() as u64, "deferred");
        assert_eq!(s.message_count, self.m.message_count, "message_count");
        assert_eq!(s.requeue_count, self.m.requeue_count, "requeue_count");
        assert_eq!(s.timeout_count, self.m.timeout_count, "timeout_count");
        assert_eq!(s.paused, self.m.paused);
        let clients: Vec<(ClientId, u64, u64, u64, u64, u64)> = self
            .m
            .clients
            .iter()
            .map(|(id, c)| {
                (
                    *id,
                    c.rdy,
                    c.in_flight,
                    c.message_count,
                    c.finish_count,
                    c.requeue_count,
                )
            })
            .collect();
        let got: Vec<(ClientId, u64, u64, u64, u64, u64)> = s
            .clients
            .iter()
            .map(|c| {
                (
                    c.client_id,
                    c.ready_count,
                    c.in_flight_count,
                    c.message_count,
                    c.finish_count,
                    c.requeue_count,
                )
            })
            .collect();
        assert_eq!(got, clients, "consumer stats");
    }

    /// Consumers finish everything left; every message must end finished once.
    fn finish_everything(&mut self) {
        self.apply(Op::Unpause);
        if self.m.clients.is_empty() {
            self.apply(Op::AddConsumer(2));
        }
        let clients: Vec<ClientId> = self.m.clients.keys().copied().collect();
        for (i, _) in clients.iter().enumerate() {
            self.apply(Op::Rdy(i as u8, 3));
        }
        for _ in 0..100_000 {
            while self.take_dead_letter() {}
            if self.m.available.is_empty() && self.m.held.is_empty() && self.m.deferred.is_empty() {
                break;
            }
            while self.m.someone_ready() && !self.m.available.is_empty() {
                self.deliver_one();
            }
            let held: Vec<(MessageId, ClientId)> = self
                .m
                .held
                .iter()
                .map(|(id, (c, _, _))| (*id, *c))
                .collect();
            for (id, client) in held {
                self.h
                    .state
                    .handle_fin(client, &id, self.h.now(), self.h.clock.unix_nanos())
                    .unwrap();
                self.m.release(id);
                self.m.clients.get_mut(&client).unwrap().finish_count += 1;
                *self.m.finished.entry(id).or_default() += 1;
            }
            if self.m.available.is_empty() && !self.m.deferred.is_empty() {
                self.advance(Duration::from_secs(61));
            }
            self.compare();
        }
        // Every message left exactly once: finished, or dead-lettered.
        for id in &self.m.put {
            let finished = self.m.finished.get(id).copied().unwrap_or(0);
            let dead = self.m.dead_lettered.get(id).copied().unwrap_or(0);
            assert_eq!(
                finished + dead,
                1,
                "{id} finished {finished} times, dead-lettered {dead} times"
            );
        }
        assert_eq!(
            self.m.finished.len() + self.m.dead_lettered.len(),
            self.m.put.len()
        );
        assert_eq!(self.h.state.dead_letter_depth(), 0);
        assert_eq!(self.h.state.poll_timeout(), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_message_is_lost_or_in_flight_twice(
        ops in proptest::collection::vec(op(), 1..200),
        max_attempts in prop_oneof![Just(0u16), 1u16..4],
    ) {
        let mut sim = Sim::new(max_attempts);
        sim.apply(Op::AddConsumer(0));
        for op in ops {
            sim.apply(op);
        }
        sim.finish_everything();
    }

    #[test]
    fn consumers_never_exceed_max_consumers(
        ops in proptest::collection::vec(op(), 1..200),
        max_consumers in 1usize..4,
    ) {
        // Every step checks the invariants, the bound among them, and the
        // model expects a refusal exactly when the bound is reached.
        let mut sim = Sim::with_limits(0, max_consumers);
        sim.apply(Op::AddConsumer(0));
        for op in ops {
            sim.apply(op);
        }
        sim.finish_everything();
    }
}

#[test]
fn a_replayed_copy_of_a_message_in_flight_is_dropped_and_breaks_no_invariant() {
    let mut h = Harness::new(ChannelConfig::default());
    h.put(1);
    h.consumer(1, 5);
    check(&mut h, &[(1, 1, 1)]);
    // A backend replaying its records (damaged metadata, a crash) hands
    // back a message the channel already holds.
    h.state.handle_backend_message(msg(1));
    h.state.check_invariants();
    assert_eq!(h.state.poll_deliver(h.now()), None);
    h.state.check_invariants();
    assert_eq!(h.state.in_flight_count(), 1);
}
