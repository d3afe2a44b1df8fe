//! Protocol V2 over TCP with rsq's own client: semantics and every error path.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_codec::{Command, Frame};

use crate::harness::{Daemon, V2, channel_stats};

fn consumer(d: &Daemon, topic: &str, channel: &str, rdy: u64) -> V2 {
    let mut c = d.connect();
    c.subscribe(topic, channel);
    c.send(Command::Rdy(rdy));
    c
}

#[test]
fn publish_then_consume_and_finish() {
    let d = Daemon::start(&[]);
    let mut p = d.connect();
    p.publish("t", b"hello");
    let mut c = consumer(&d, "t", "c", 1);
    let m = c.expect_message();
    assert_eq!(&m.body[..], b"hello");
    assert_eq!(m.attempts, 1);
    c.send(Command::Fin(m.id));
    d.wait_stats("finish", |s| {
        channel_stats(s, "t", "c").is_some_and(|c| c["in_flight_count"] == 0 && c["depth"] == 0)
    });
    // FIN of an id that is no longer in flight is a non-fatal error.
    c.send(Command::Fin(m.id));
    let err = c.expect_error();
    assert_eq!(
        err,
        format!("E_FIN_FAILED FIN {} failed ID not in flight", m.id)
    );
    c.send(Command::Nop);
    p.publish("t", b"still-open");
    assert_eq!(&c.expect_message().body[..], b"still-open");
}

#[test]
fn one_worker_thread_serves_publishers_and_consumers() {
    let d = Daemon::start(&["--worker-threads=1"]);
    let (status, workers) = d.http("GET", "/config/worker_threads", b"");
    assert_eq!((status, workers.as_str()), (200, "1"));
    let mut p = d.connect();
    let mut c = consumer(&d, "t", "c", 10);
    for i in 0..10u8 {
        p.publish("t", &[i]);
    }
    for i in 0..10u8 {
        let m = c.expect_message();
        assert_eq!(&m.body[..], &[i]);
        c.send(Command::Fin(m.id));
    }
    d.wait_stats("finish", |s| {
        channel_stats(s, "t", "c").is_some_and(|c| {
            c["message_count"] == 10 && c["in_flight_count"] == 0 && c["depth"] == 0
        })
    });
}

#[test]
fn mpub_delivers_every_message_in_order() {
    let d = Daemon::start(&[]);
    let mut c = consumer(&d, "t", "c", 100);
    let mut p = d.connect();
    let bodies: Vec<Bytes> = (0..50).map(|i| Bytes::from(format!("m{i}"))).collect();
    p.send(Command::Mpub {
        topic: "t".into(),
        bodies: bodies.clone(),
    });
    p.expect_ok();
    for expected in &bodies {
        let m = c.expect_message();
        assert_eq!(&m.body, expected);
        c.send(Command::Fin(m.id));
    }
}

#[test]
fn dpub_is_delivered_no_earlier_than_asked() {
    let d = Daemon::start(&[]);
    let mut c = consumer(&d, "t", "c", 1);
    let mut p = d.connect();
    let sent = Instant::now();
    p.send(Command::Dpub {
        topic: "t".into(),
        defer_ms: 400,
        body: Bytes::from_static(b"later"),
    });
    p.expect_ok();
    let m = c.expect_message();
    assert!(
        sent.elapsed() >= Duration::from_millis(400),
        "delivered after {:?}",
        sent.elapsed()
    );
    assert_eq!(&m.body[..], b"later");
}

#[test]
fn fan_out_to_three_channels() {
    let d = Daemon::start(&[]);
    let mut consumers: Vec<V2> = ["a", "b", "c"]
        .iter()
        .map(|ch| consumer(&d, "t", ch, 10))
        .collect();
    let mut p = d.connect();
    for i in 0..5 {
        p.publish("t", format!("m{i}").as_bytes());
    }
    for c in &mut consumers {
        let got: Vec<_> = (0..5).map(|_| c.expect_message()).collect();
        let bodies: Vec<_> = got
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
    }
}

#[test]
fn two_consumers_share_a_channel() {
    let d = Daemon::start(&[]);
    let mut a = consumer(&d, "t", "c", 5);
    let mut b = consumer(&d, "t", "c", 5);
    let mut p = d.connect();
    for i in 0..10 {
        p.publish("t", format!("m{i}").as_bytes());
    }
    // Neither may exceed RDY 5, so each gets exactly five, none twice.
    let mut seen = HashSet::new();
    for c in [&mut a, &mut b] {
        for _ in 0..5 {
            let m = c.expect_message();
            assert!(seen.insert(m.body.clone()), "duplicate {:?}", m.body);
        }
    }
    assert_eq!(seen.len(), 10);
}

#[test]
fn req_and_timeout_redeliver_with_attempts_counted() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let Frame::Response(_) = c.identify(r#"{"msg_timeout": 1000}"#) else {
        panic!("identify failed")
    };
    c.subscribe("t", "c");
    c.send(Command::Rdy(1));
    let mut p = d.connect();
    p.publish("t", b"x");
    let m1 = c.expect_message();
    assert_eq!(m1.attempts, 1);
    c.send(Command::Req {
        id: m1.id,
        timeout_ms: 0,
    });
    let m2 = c.expect_message();
    assert_eq!((m2.id, m2.attempts), (m1.id, 2));
    // Not finished: the 1 s timeout requeues it.
    let m3 = c.expect_message();
    assert_eq!((m3.id, m3.attempts), (m1.id, 3));
    c.send(Command::Fin(m3.id));
    d.wait_stats("counters", |s| {
        channel_stats(s, "t", "c").is_some_and(|c| {
            c["requeue_count"] == 1 && c["timeout_count"] == 1 && c["in_flight_count"] == 0
        })
    });
}

#[test]
fn touch_extends_the_deadline() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    c.identify(r#"{"msg_timeout": 2000}"#);
    c.subscribe("t", "c");
    c.send(Command::Rdy(1));
    d.connect().publish("t", b"x");
    let m = c.expect_message();
    std::thread::sleep(Duration::from_millis(1200));
    c.send(Command::Touch(m.id));
    std::thread::sleep(Duration::from_millis(1200));
    // 2.4 s after delivery: without the TOUCH it would have timed out.
    c.send(Command::Fin(m.id));
    assert!(
        c.quiet_for(Duration::from_millis(300)),
        "FIN after TOUCH failed"
    );
    d.wait_stats("no timeout", |s| {
        channel_stats(s, "t", "c")
            .is_some_and(|c| c["timeout_count"] == 0 && c["in_flight_count"] == 0)
    });
}

#[test]
fn rdy_one_keeps_one_message_in_flight() {
    let d = Daemon::start(&[]);
    let mut p = d.connect();
    for i in 0..3 {
        p.publish("t", format!("m{i}").as_bytes());
    }
    let mut c = consumer(&d, "t", "c", 1);
    let m = c.expect_message();
    assert!(
        c.quiet_for(Duration::from_millis(300)),
        "a second message arrived with RDY 1"
    );
    c.send(Command::Fin(m.id));
    let m = c.expect_message();
    c.send(Command::Fin(m.id));
    let m = c.expect_message();
    assert_eq!(&m.body[..], b"m2");
}

#[test]
fn ephemeral_channel_is_removed_with_its_last_consumer() {
    let d = Daemon::start(&[]);
    let c = consumer(&d, "t", "e#ephemeral", 1);
    d.wait_stats("channel exists", |s| {
        channel_stats(s, "t", "e#ephemeral").is_some()
    });
    drop(c);
    d.wait_stats("channel removed", |s| {
        channel_stats(s, "t", "e#ephemeral").is_none()
    });
}

#[test]
fn paused_channel_holds_messages_until_unpaused() {
    let d = Daemon::start(&[]);
    let mut c = consumer(&d, "t", "c", 1);
    assert_eq!(
        d.http("POST", "/channel/pause?topic=t&channel=c", b"").0,
        200
    );
    d.connect().publish("t", b"x");
    assert!(
        c.quiet_for(Duration::from_millis(300)),
        "delivered while paused"
    );
    assert_eq!(
        d.http("POST", "/channel/unpause?topic=t&channel=c", b"").0,
        200
    );
    assert_eq!(&c.expect_message().body[..], b"x");
}

#[test]
fn heartbeats_are_sent_and_silent_clients_dropped() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    c.identify(r#"{"heartbeat_interval": 1000}"#);
    match c.frame() {
        Some(Frame::Response(b)) => assert_eq!(&b[..], b"_heartbeat_"),
        other => panic!("expected heartbeat, got {other:?}"),
    }
    // Never answering: closed after two missed intervals.
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        match c.frame() {
            None => break,
            Some(_) => assert!(Instant::now() < deadline, "not disconnected"),
        }
    }
}

#[track_caller]
fn check_fatal(d: &Daemon, raw: &[u8], expected: &str) {
    let mut c = d.connect();
    c.send_raw(raw);
    assert_eq!(
        c.expect_error(),
        expected,
        "for input {:?}",
        String::from_utf8_lossy(raw)
    );
    c.expect_closed();
}

#[test]
fn bad_input_gets_nsqds_errors_and_others_keep_working() {
    let d = Daemon::start(&["--max-msg-size=100", "--max-rdy-count=50"]);
    let mut bystander = consumer(&d, "t", "c", 10);

    check_fatal(&d, b"FOO\n", "E_INVALID invalid command FOO");
    check_fatal(
        &d,
        b"PUB bad!topic\n",
        "E_BAD_TOPIC PUB topic name \"bad!topic\" is not valid",
    );
    check_fatal(
        &d,
        b"SUB t bad!chan\n",
        "E_BAD_CHANNEL SUB channel name \"bad!chan\" is not valid",
    );
    check_fatal(
        &d,
        b"PUB t\n\x00\x00\x00\x00",
        "E_BAD_MESSAGE PUB invalid message body size 0",
    );
    check_fatal(
        &d,
        b"PUB t\n\x00\x00\x01\x00",
        "E_BAD_MESSAGE PUB message too big 256 > 100",
    );
    // State is checked before parameters, as nsqd does.
    check_fatal(&d, b"RDY 51\n", "E_INVALID cannot RDY in current state");
    let mut c = consumer(&d, "t", "c9", 0);
    c.send_raw(b"RDY 51\n");
    assert_eq!(c.expect_error(), "E_INVALID RDY count 51 out of range 0-50");
    c.expect_closed();
    check_fatal(
        &d,
        b"FIN 0123456789abcdef\n",
        "E_INVALID cannot FIN in current state",
    );
    check_fatal(&d, b"CLS\n", "E_INVALID cannot CLS in current state");
    check_fatal(
        &d,
        b"DPUB t 99999999999\n",
        "E_INVALID DPUB timeout 99999999999 out of range 0-3600000",
    );

    let mut bad_magic = std::net::TcpStream::connect(d.tcp).unwrap();
    std::io::Write::write_all(&mut bad_magic, b"  V1").unwrap();
    let mut resp = Vec::new();
    let _ = std::io::Read::read_to_end(&mut bad_magic, &mut resp);
    assert!(
        String::from_utf8_lossy(&resp).contains("E_BAD_PROTOCOL"),
        "{resp:?}"
    );

    // SUB twice on one connection.
    let mut c = consumer(&d, "t", "c2", 1);
    c.send(Command::Sub {
        topic: "t".into(),
        channel: "c3".into(),
    });
    assert_eq!(c.expect_error(), "E_INVALID cannot SUB in current state");
    c.expect_closed();

    // SUB with heartbeats disabled.
    let mut c = d.connect();
    c.identify(r#"{"heartbeat_interval": -1}"#);
    c.send(Command::Sub {
        topic: "t".into(),
        channel: "c".into(),
    });
    assert_eq!(
        c.expect_error(),
        "E_INVALID cannot SUB with heartbeats disabled"
    );

    // Non-fatal errors leave the connection open.
    bystander.send(Command::Touch(rsq_codec::MessageId(*b"0123456789abcdef")));
    assert_eq!(
        bystander.expect_error(),
        "E_TOUCH_FAILED TOUCH 0123456789abcdef failed ID not in flight"
    );

    // Through all of that, the bystander still consumes.
    d.connect().publish("t", b"fine");
    assert_eq!(&bystander.expect_message().body[..], b"fine");
}

#[test]
fn identify_negotiates_as_nsqd() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    match c.identify(r#"{"feature_negotiation": true, "client_id": "me", "user_agent": "test/1"}"#)
    {
        Frame::Response(b) => {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["max_rdy_count"], 2500);
            assert_eq!(v["msg_timeout"], 60000);
            assert_eq!(v["max_msg_timeout"], 900000);
            assert_eq!(v["tls_v1"], false);
            assert_eq!(v["auth_required"], false);
            assert_eq!(v["output_buffer_size"], 16384);
            assert_eq!(v["output_buffer_timeout"], 250);
        }
        other => panic!("{other:?}"),
    }
    let mut c = d.connect();
    match c.identify(r#"{"heartbeat_interval": 10}"#) {
        Frame::Error(b) => assert_eq!(
            &b[..],
            b"E_BAD_BODY IDENTIFY heartbeat interval (10) is invalid"
        ),
        other => panic!("{other:?}"),
    }
    c.expect_closed();
}

#[test]
fn cls_answers_close_wait() {
    let d = Daemon::start(&[]);
    let mut c = consumer(&d, "t", "c", 1);
    c.send(Command::Cls);
    c.expect_response(b"CLOSE_WAIT");
}

#[test]
fn max_channel_consumers_refuses_the_one_past_the_limit() {
    let d = Daemon::start(&["--max-channel-consumers=2"]);
    let mut first = d.connect();
    first.subscribe("t", "c");
    let mut second = d.connect();
    second.subscribe("t", "c");
    let mut third = d.connect();
    third.send(Command::Sub {
        topic: "t".into(),
        channel: "c".into(),
    });
    assert_eq!(
        third.expect_error(),
        "E_SUB_FAILED SUB failed consumers for t:c exceeds limit of 2"
    );
    third.expect_closed();
    // Another channel has its own limit; a consumer leaving makes room.
    let mut other = d.connect();
    other.subscribe("t", "other");
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut again = d.connect();
        again.send(Command::Sub {
            topic: "t".into(),
            channel: "c".into(),
        });
        match again.frame_skip_heartbeats() {
            Some(rsq_codec::Frame::Response(r)) if &r[..] == b"OK" => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "still refused after a consumer left: {other:?}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
