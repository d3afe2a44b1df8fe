//! The outbound machine driven with a stepped clock: unit tests of each
//! rule, and a property test that no byte ever waits past its deadline,
//! whatever the events and their timing.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rsq_codec::{Frame, FrameDecoder, Message, MessageId, OK, encode_response};

use super::{Delivery, Output};
use crate::{Negotiated, ProtocolConfig, Sampler};

fn settings() -> Negotiated {
    Negotiated::defaults(&ProtocolConfig::default())
}

fn message(n: u8) -> Message {
    Message::new(MessageId([n; 16]), 0, Bytes::from_static(b"body"))
}

fn ok_frame() -> BytesMut {
    let mut f = BytesMut::new();
    encode_response(OK, &mut f);
    f
}

/// The frames in one transmitted buffer.
fn frames(out: &mut BytesMut) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut seen = Vec::new();
    while let Some(frame) = decoder.decode(out).unwrap() {
        seen.push(frame);
    }
    assert!(out.is_empty(), "a partial frame transmitted");
    seen
}

#[test]
fn responses_leave_at_once_and_heartbeats_every_interval() {
    let t0 = Instant::now();
    let mut o = Output::new(settings(), 1, t0);
    let mut out = BytesMut::new();
    assert!(!o.poll_transmit(&mut out));
    o.handle_frame(&ok_frame(), &mut out);
    assert!(o.poll_transmit(&mut out));
    assert!(matches!(&frames(&mut out)[..], [Frame::Response(r)] if &r[..] == OK));

    let interval = settings().heartbeat_interval.unwrap();
    assert_eq!(o.poll_timeout(), Some(t0 + interval));
    let early = t0 + interval - Duration::from_millis(1);
    o.handle_timeout(early);
    assert!(!o.poll_transmit(&mut out));
    let t1 = t0 + interval;
    o.handle_timeout(t1);
    assert!(o.poll_transmit(&mut out));
    assert!(matches!(&frames(&mut out)[..], [Frame::Response(r)] if &r[..] == b"_heartbeat_"));
    assert_eq!(o.poll_timeout(), Some(t1 + interval));

    // IDENTIFY with heartbeats off: no timer at all.
    o.handle_settings(
        Negotiated {
            heartbeat_interval: None,
            ..settings()
        },
        t1,
    );
    assert_eq!(o.poll_timeout(), None);
    o.handle_timeout(t1 + interval * 10);
    assert!(!o.poll_transmit(&mut out));
}

#[test]
fn messages_wait_for_the_end_of_the_readers_batch_but_never_past_the_timeout() {
    let t0 = Instant::now();
    let timeout = settings().output_buffer_timeout.unwrap();
    let mut o = Output::new(settings(), 1, t0);
    let mut out = BytesMut::new();

    // Not busy: a batch leaves at once.
    assert_eq!(o.handle_message(&message(1), &mut out), Delivery::Sent);
    o.handle_delivered(t0, false, &out);
    assert!(o.poll_transmit(&mut out));
    assert_eq!(frames(&mut out).len(), 1);

    // Busy: held until the reader's batch ends.
    assert_eq!(o.handle_message(&message(2), &mut out), Delivery::Sent);
    o.handle_delivered(t0, true, &out);
    assert!(!o.poll_transmit(&mut out));
    assert_eq!(o.poll_timeout(), Some(t0 + timeout));
    o.handle_input_idle(&out);
    assert!(o.poll_transmit(&mut out));
    assert_eq!(frames(&mut out).len(), 1);

    // Busy for longer than the timeout: the first held message sets the
    // deadline, later ones do not push it back.
    let _ = o.handle_message(&message(3), &mut out);
    o.handle_delivered(t0, true, &out);
    let later = t0 + timeout / 2;
    let _ = o.handle_message(&message(4), &mut out);
    o.handle_delivered(later, true, &out);
    assert_eq!(o.poll_timeout(), Some(t0 + timeout));
    o.handle_timeout(t0 + timeout);
    assert!(o.poll_transmit(&mut out));
    assert_eq!(frames(&mut out).len(), 2);
}

#[test]
fn a_full_buffer_or_no_timeout_leaves_at_once_even_when_busy() {
    let t0 = Instant::now();
    let small = Negotiated {
        output_buffer_size: 64,
        ..settings()
    };
    let mut o = Output::new(small.clone(), 1, t0);
    let mut out = BytesMut::new();
    let mut sent = 0;
    while o.has_room(&out) {
        let _ = o.handle_message(&message(sent), &mut out);
        sent += 1;
    }
    o.handle_delivered(t0, true, &out);
    assert!(o.poll_transmit(&mut out));
    assert_eq!(frames(&mut out).len(), usize::from(sent));

    let mut o = Output::new(
        Negotiated {
            output_buffer_timeout: None,
            ..small
        },
        1,
        t0,
    );
    let _ = o.handle_message(&message(0), &mut out);
    o.handle_delivered(t0, true, &out);
    assert!(o.poll_transmit(&mut out));
}

#[test]
fn sampling_replays_the_sampler_of_the_seed_and_rate_zero_keeps_all() {
    let t0 = Instant::now();
    let rate = Negotiated {
        sample_rate: 30,
        ..settings()
    };
    let mut o = Output::new(settings(), 9, t0);
    o.handle_settings(rate, t0);
    let mut reference = Sampler::new(30, 9);
    let mut out = BytesMut::new();
    let mut kept = 0;
    for n in 0..200u8 {
        let expected = if reference.keep() {
            kept += 1;
            Delivery::Sent
        } else {
            Delivery::SampledOut
        };
        assert_eq!(o.handle_message(&message(n), &mut out), expected);
    }
    o.handle_delivered(t0, false, &out);
    assert!(o.poll_transmit(&mut out));
    assert_eq!(frames(&mut out).len(), kept);
    assert!(kept > 0 && kept < 200);

    let mut o = Output::new(settings(), 9, t0);
    for n in 0..200u8 {
        assert_eq!(o.handle_message(&message(n), &mut out), Delivery::Sent);
    }
}

/// One thing that happens to the outbound half.
#[derive(Debug, Clone)]
enum Event {
    Frame,
    /// This many messages delivered, with the reader busy or not.
    Messages(u8, bool),
    InputIdle,
    Flush,
    /// Time passes by this many milliseconds.
    Advance(u16),
    /// IDENTIFY: heartbeat and output buffer timeout in ms (0 = off).
    Settings(u16, u16),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Frame),
        (0..40u8, any::<bool>()).prop_map(|(n, busy)| Event::Messages(n, busy)),
        Just(Event::InputIdle),
        Just(Event::Flush),
        (0..600u16).prop_map(Event::Advance),
        (0..2000u16, 0..300u16).prop_map(|(h, t)| Event::Settings(h, t)),
    ]
}

fn ms(n: u16) -> Option<Duration> {
    (n > 0).then(|| Duration::from_millis(u64::from(n)))
}

/// Delivers up to `n` messages as the writer does (while there is room),
/// then reports them delivered: how many were sent (not sampled out), and
/// whether the buffer must leave now rather than wait for the batch.
fn deliver(o: &mut Output, out: &mut BytesMut, n: u8, busy: bool, now: Instant) -> (usize, bool) {
    let mut sent = 0;
    for i in 0..n {
        if !o.has_room(out) {
            break;
        }
        if o.handle_message(&message(i), out) == Delivery::Sent {
            sent += 1;
        }
    }
    o.handle_delivered(now, busy, out);
    let must_leave = (!busy || o.settings().output_buffer_timeout.is_none() || !o.has_room(out))
        && !out.is_empty();
    (sent, must_leave)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever happens, a driver that writes whenever `poll_transmit`
    /// says so and wakes at `poll_timeout`: responses leave in the same
    /// step; held messages leave by the deadline their first byte set;
    /// heartbeats come one interval apart; every kept message leaves once.
    #[test]
    fn nothing_waits_past_its_deadline(events in proptest::collection::vec(event(), 0..80)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut o = Output::new(settings(), 3, t0);
        let mut out = BytesMut::new();
        let (mut queued, mut written) = (0usize, 0usize);
        let mut first_held: Option<Instant> = None;
        let mut last_heartbeat = t0;
        let mut heartbeat_restarted = t0;
        for event in events {
            let mut urgent = false;
            match event {
                Event::Frame => {
                    o.handle_frame(&ok_frame(), &mut out);
                    urgent = true;
                }
                Event::Messages(n, busy) => {
                    let (sent, must_leave) = deliver(&mut o, &mut out, n, busy, now);
                    queued += sent;
                    urgent = must_leave;
                }
                Event::InputIdle => {
                    urgent = !out.is_empty();
                    o.handle_input_idle(&out);
                }
                Event::Flush => {
                    urgent = !out.is_empty();
                    o.handle_flush();
                }
                Event::Advance(step) => {
                    // Wake at every timeout on the way, as a driver sleeping
                    // until `poll_timeout` does.
                    let end = now + Duration::from_millis(u64::from(step));
                    while let Some(at) = o.poll_timeout().filter(|&at| at <= end) {
                        now = now.max(at);
                        o.handle_timeout(now);
                        prop_assert!(o.poll_transmit(&mut out), "woken for nothing");
                        let frames = frames(&mut out);
                        if let Some(held) = first_held.take() {
                            let limit = held + o.settings().output_buffer_timeout.unwrap();
                            prop_assert!(now <= limit, "held past the deadline");
                        }
                        for f in frames {
                            match f {
                                Frame::Message(_) => written += 1,
                                Frame::Response(r) => {
                                    prop_assert_eq!(&r[..], b"_heartbeat_");
                                    let interval = o.settings().heartbeat_interval.unwrap();
                                    let since = last_heartbeat.max(heartbeat_restarted);
                                    prop_assert_eq!(now, since + interval);
                                    last_heartbeat = now;
                                }
                                Frame::Error(_) => prop_assert!(false, "an error frame"),
                            }
                        }
                    }
                    now = end;
                }
                Event::Settings(h, t) => {
                    o.handle_settings(
                        Negotiated {
                            heartbeat_interval: ms(h),
                            output_buffer_timeout: ms(t),
                            ..settings()
                        },
                        now,
                    );
                    heartbeat_restarted = now;
                    // A shorter timeout applies to bytes held from now on.
                    if first_held.is_some() {
                        o.handle_flush();
                        urgent = true;
                    }
                }
            }
            let due = o.poll_transmit(&mut out);
            if urgent {
                prop_assert!(due, "an urgent write was held");
            }
            if due {
                first_held = None;
                for f in frames(&mut out) {
                    if matches!(f, Frame::Message(_)) {
                        written += 1;
                    }
                }
            } else if !out.is_empty() {
                first_held.get_or_insert(now);
            }
        }
        o.handle_flush();
        if o.poll_transmit(&mut out) {
            written += frames(&mut out).iter().filter(|f| matches!(f, Frame::Message(_))).count();
        }
        prop_assert_eq!(queued, written);
    }
}
