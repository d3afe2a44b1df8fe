//! Shutdown and restart: metadata and every accepted message survive.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use rsq_codec::Command;

use crate::harness::{Daemon, channel_stats};

#[test]
fn sigterm_then_restart_delivers_every_message() {
    // A small memory queue so messages sit in memory, on disk, in flight
    // and deferred when the daemon is told to stop.
    let mut d = Daemon::start(&["--mem-queue-size=10"]);
    let mut c = d.connect();
    c.subscribe("t", "c");
    let mut p = d.connect();
    let bodies: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("m{i}"))).collect();
    p.send(Command::Mpub {
        topic: "t".into(),
        bodies: bodies.clone(),
    });
    p.expect_ok();
    p.send(Command::Dpub {
        topic: "t".into(),
        defer_ms: 60_000,
        body: Bytes::from_static(b"deferred"),
    });
    p.expect_ok();
    c.send(Command::Rdy(5));
    let in_flight: Vec<_> = (0..5).map(|_| c.expect_message()).collect();
    assert_eq!(in_flight.len(), 5);
    d.wait_stats("all accepted", |s| {
        channel_stats(s, "t", "c")
            .is_some_and(|c| c["in_flight_count"] == 5 && c["deferred_count"] == 1)
    });
    drop(p);
    assert_eq!(d.terminate(), Some(0));

    d.restart();
    let mut c = d.connect();
    c.subscribe("t", "c");
    c.send(Command::Rdy(100));
    let mut seen = HashSet::new();
    while seen.len() < 200 {
        let m = c.expect_message();
        seen.insert(m.body.clone());
        c.send(Command::Fin(m.id));
    }
    for b in &bodies {
        assert!(seen.contains(b), "lost {b:?}");
    }
    // The DPUB survived the restart still deferred: not delivered early.
    assert!(
        c.quiet_for(Duration::from_millis(300)),
        "the deferred message came early"
    );
    d.wait_stats("deferred kept", |s| {
        channel_stats(s, "t", "c").is_some_and(|c| c["deferred_count"] == 1)
    });
}

#[test]
fn sigterm_with_a_consumer_that_reads_nothing_exits_and_keeps_its_messages() {
    const MESSAGES: usize = 2_000;
    let mut d = Daemon::start(&[]);
    // Subscribed with a wide window, and never read: the daemon's writes
    // to it stall once the socket buffers are full (20 MB outruns them).
    let mut stuck = d.connect();
    stuck.subscribe("t", "c");
    stuck.send(Command::Rdy(2500));
    let mut p = d.connect();
    let body = vec![b'x'; 10_000];
    for _ in 0..MESSAGES {
        p.publish("t", &body);
    }
    d.wait_stats("all delivered to the stuck consumer", |s| {
        channel_stats(s, "t", "c").is_some_and(|c| c["message_count"] == MESSAGES as u64)
    });
    drop(p);
    d.signal_term();
    // The writer blocked on that socket gets 5 s to flush, then is dropped.
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0));
    drop(stuck);

    d.restart();
    d.wait_stats("every message back in the channel", |s| {
        channel_stats(s, "t", "c")
            .is_some_and(|c| c["depth"] == MESSAGES as u64 && c["in_flight_count"] == 0)
    });
}

#[test]
fn topics_channels_and_pauses_survive_restart() {
    let mut d = Daemon::start(&[]);
    assert_eq!(d.http("POST", "/topic/create?topic=t1", b"").0, 200);
    assert_eq!(
        d.http("POST", "/channel/create?topic=t1&channel=c1", b"").0,
        200
    );
    assert_eq!(
        d.http("POST", "/channel/create?topic=t1&channel=c2", b"").0,
        200
    );
    assert_eq!(
        d.http("POST", "/channel/pause?topic=t1&channel=c2", b"").0,
        200
    );
    assert_eq!(d.http("POST", "/topic/create?topic=t2", b"").0, 200);
    assert_eq!(d.http("POST", "/topic/pause?topic=t2", b"").0, 200);
    assert_eq!(
        d.http("POST", "/topic/create?topic=eph%23ephemeral", b"").0,
        200
    );
    // While running, changes are in nsqd.dat or its journal.
    let meta = rsqd::metadata::read(d.data_path()).unwrap().unwrap();
    let listed: Vec<&str> = meta.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(listed, ["t1", "t2"], "{meta:?}");
    let journal = std::fs::read_to_string(d.data_path().join("nsqd.dat.journal")).unwrap();
    assert!(!journal.contains("ephemeral"), "{journal}");
    assert_eq!(d.terminate(), Some(0));
    d.restart();
    let s = d.stats();
    let names: Vec<_> = s["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic_name"].clone())
        .collect();
    assert_eq!(names, ["t1", "t2"]);
    assert_eq!(s["topics"][1]["paused"], true);
    assert_eq!(channel_stats(&s, "t1", "c1").unwrap()["paused"], false);
    assert_eq!(channel_stats(&s, "t1", "c2").unwrap()["paused"], true);
}

#[test]
fn bad_flags_exit_non_zero_with_a_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsqd"))
        .arg("--msg-timeout=soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid duration"),
        "{out:?}"
    );
}

#[test]
fn durable_creates_and_pauses_survive_sigkill() {
    // Past the journal's compaction point, so a whole nsqd.dat write
    // happens between journaled changes.
    let pairs = rsqd::metadata::journal::COMPACT_AFTER / 2 + 100;
    let mut d = Daemon::start(&["--durable"]);
    for n in 0..pairs {
        assert_eq!(
            d.http("POST", &format!("/topic/create?topic=t{n}"), b"").0,
            200
        );
        let path = format!("/channel/create?topic=t{n}&channel=c");
        assert_eq!(d.http("POST", &path, b"").0, 200);
    }
    assert_eq!(d.http("POST", "/topic/pause?topic=t7", b"").0, 200);
    assert_eq!(
        d.http("POST", "/channel/pause?topic=t8&channel=c", b"").0,
        200
    );
    assert_eq!(
        d.http("POST", "/channel/delete?topic=t9&channel=c", b"").0,
        200
    );
    assert_eq!(d.http("POST", "/topic/delete?topic=t10", b"").0, 200);
    d.kill();
    d.restart();
    let s = d.stats();
    let topics = s["topics"].as_array().unwrap();
    assert_eq!(topics.len(), pairs - 1);
    for t in topics {
        let name = t["topic_name"].as_str().unwrap();
        assert_eq!(t["paused"], name == "t7", "{name}");
        let channels = t["channels"].as_array().unwrap();
        if name == "t9" {
            assert!(channels.is_empty());
            continue;
        }
        assert_eq!(channels.len(), 1, "{name}");
        assert_eq!(channels[0]["paused"], name == "t8", "{name}");
    }
}
