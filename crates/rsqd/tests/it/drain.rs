//! Drain mode: `PUT /config/drain` and `--sigterm-mode=drain` refuse
//! publishes (TCP `E_PUB_FAILED` on a connection that stays open, HTTP 503
//! `DRAINING`, `/ping` 503), keep serving consumers, and exit 0 once every
//! channel is empty; topics without channels keep their messages on disk.

use std::time::Duration;

use bytes::Bytes;
use rsq_codec::Command;

use crate::harness::{Daemon, V2};

/// Creates `topic` with channel `channel`.
fn create(d: &Daemon, topic: &str, channel: &str) {
    assert_eq!(
        d.http("POST", &format!("/topic/create?topic={topic}"), b"")
            .0,
        200
    );
    let path = format!("/channel/create?topic={topic}&channel={channel}");
    assert_eq!(d.http("POST", &path, b"").0, 200);
}

/// Publishes `n` messages to `topic` over HTTP.
fn publish(d: &Daemon, topic: &str, n: usize) {
    for i in 0..n {
        let (status, body) = d.http(
            "POST",
            &format!("/pub?topic={topic}"),
            format!("m{i}").as_bytes(),
        );
        assert_eq!((status, body.as_str()), (200, "OK"));
    }
}

/// A consumer of `topic`/`channel` with RDY 0.
fn consumer(d: &Daemon, topic: &str, channel: &str) -> V2 {
    let mut c = d.connect();
    // The test client answers no heartbeat and is silent between steps:
    // a long interval keeps the read deadline away on a loaded machine.
    c.identify(r#"{"heartbeat_interval": 20000}"#);
    c.subscribe(topic, channel);
    c
}

/// Receives and finishes `n` messages.
fn consume(c: &mut V2, n: usize) {
    c.send(Command::Rdy(n as u64));
    for _ in 0..n {
        let msg = c.expect_message();
        c.send(Command::Fin(msg.id));
    }
}

#[test]
fn draining_refuses_publishes_serves_consumers_and_exits_when_empty() {
    let mut d = Daemon::start(&[]);
    create(&d, "t", "c");
    publish(&d, "t", 30);
    // Deferred messages drain too, once they come due.
    let mut p = d.connect();
    p.send(Command::Dpub {
        topic: "t".into(),
        defer_ms: 300,
        body: Bytes::from_static(b"later"),
    });
    p.expect_ok();
    publish(&d, "lonely", 5);
    let mut c = consumer(&d, "t", "c");

    assert_eq!(d.http("GET", "/config/drain", b""), (200, "false".into()));
    assert_eq!(
        d.http("PUT", "/config/drain", b"true"),
        (200, "true".into())
    );
    assert_eq!(d.http("GET", "/config/drain", b""), (200, "true".into()));
    assert_eq!(d.stats()["draining"], true);
    let (_, info) = d.http("GET", "/info", b"");
    assert!(info.contains(r#""draining":true"#), "{info}");
    d.assert_publishes_refused(503, "DRAINING", "NOK - draining");
    assert!(d.is_running(), "messages are left: still running");

    consume(&mut c, 31);
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));

    // The topic without channels kept its messages.
    d.restart();
    let stats = d.stats();
    let lonely = stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic_name"] == "lonely")
        .expect("lonely topic kept");
    assert_eq!(lonely["depth"], 5);
    assert_eq!(d.stats()["draining"], false, "drain mode is not persisted");
}

#[test]
fn drain_mode_can_be_turned_off() {
    let d = Daemon::start(&[]);
    create(&d, "t", "c");
    publish(&d, "t", 3);
    assert_eq!(
        d.http("PUT", "/config/drain", b"\"true\""),
        (200, "true".into())
    );
    d.assert_publishes_refused(503, "DRAINING", "NOK - draining");
    assert_eq!(
        d.http("PUT", "/config/drain", b"false"),
        (200, "false".into())
    );
    assert_eq!(d.http("GET", "/ping", b""), (200, "OK".into()));
    publish(&d, "t", 1);
    assert_eq!(d.http("PUT", "/config/drain", b"maybe").0, 400);
    let mut c = consumer(&d, "t", "c");
    consume(&mut c, 4);
}

#[test]
fn sigterm_drains_in_drain_mode_and_a_second_one_flushes() {
    // One SIGTERM: drains, then exits once consumed.
    let mut d = Daemon::start(&["--sigterm-mode=drain"]);
    create(&d, "t", "c");
    publish(&d, "t", 10);
    let mut c = consumer(&d, "t", "c");
    d.signal_term();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.http("GET", "/ping", b"").0 != 503 {
        assert!(std::time::Instant::now() < deadline, "drain mode not on");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.assert_publishes_refused(503, "DRAINING", "NOK - draining");
    consume(&mut c, 10);
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));

    // Two SIGTERMs: the second flushes with messages left, which a restart
    // serves.
    d.restart();
    publish(&d, "t", 4);
    d.signal_term();
    while d.http("GET", "/ping", b"").0 != 503 {
        assert!(
            std::time::Instant::now() < deadline + Duration::from_secs(10),
            "drain mode not on"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.signal_term();
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    d.restart();
    let mut c = consumer(&d, "t", "c");
    consume(&mut c, 4);
}

#[test]
fn a_pynsq_producer_sees_e_pub_failed_while_draining() {
    let python = crate::pynsq::python();
    let d = Daemon::start(&[]);
    create(&d, "t", "c");
    publish(&d, "t", 1);
    assert_eq!(d.http("PUT", "/config/drain", b"true").0, 200);
    let stdout = crate::pynsq::publish_refused_twice(&python, d.tcp);
    assert!(stdout.contains("DRAINING"), "{stdout}");
}
