//! `--max-attempts` and `/channel/create?max_attempts=N`: a message
//! REQueued or timed out on its last allowed delivery is published to the
//! topic's dead-letter topic (`<topic>.dead`) instead of being delivered
//! again; counted in `/stats` and `/metrics`; the channel's own limit is
//! kept in `nsqd.dat` across restarts; under `--durable` the move survives
//! SIGKILL. With rsq's client and pynsq (`max_tries` above the server's).

use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use rsq_codec::Command;

use crate::harness::{Daemon, V2, channel_stats};

fn create(d: &Daemon, topic: &str, channel_query: &str) {
    assert_eq!(
        d.http("POST", &format!("/topic/create?topic={topic}"), b"")
            .0,
        200
    );
    let path = format!("/channel/create?topic={topic}&channel={channel_query}");
    let (status, body) = d.http("POST", &path, b"");
    assert_eq!(status, 200, "{path}: {body}");
}

fn consumer(d: &Daemon, topic: &str, channel: &str, rdy: u64) -> V2 {
    let mut c = d.connect();
    c.identify(r#"{"heartbeat_interval": 5000}"#);
    c.subscribe(topic, channel);
    c.send(Command::Rdy(rdy));
    c
}

/// REQs whatever arrives; returns the attempts it saw once nothing more
/// comes for `quiet`.
fn requeue_until_quiet(c: &mut V2, quiet: Duration) -> Vec<u16> {
    let mut seen = Vec::new();
    while !c.quiet_for(quiet) {
        let m = c.expect_message();
        seen.push(m.attempts);
        c.send(Command::Req {
            id: m.id,
            timeout_ms: 0,
        });
        assert!(seen.len() < 100, "delivered forever: {seen:?}");
    }
    seen
}

fn stat(d: &Daemon, topic: &str, channel: &str, field: &str) -> u64 {
    channel_stats(&d.stats(), topic, channel)
        .and_then(|c| c[field].as_u64())
        .unwrap_or_else(|| panic!("no {field} for {topic}/{channel}"))
}

#[test]
fn a_req_on_the_last_attempt_goes_to_the_dead_letter_topic() {
    let d = Daemon::start(&["--max-attempts=3"]);
    create(&d, "orders", "billing");
    let mut c = consumer(&d, "orders", "billing", 1);
    d.connect().publish("orders", b"poison");
    assert_eq!(
        requeue_until_quiet(&mut c, Duration::from_millis(500)),
        [1, 2, 3]
    );
    d.wait_stats("the dead letter", |s| {
        channel_stats(s, "orders", "billing").is_some_and(|c| c["dead_letter_count"] == 1)
    });
    let stats = d.stats();
    let billing = channel_stats(&stats, "orders", "billing").unwrap();
    assert_eq!(billing["max_attempts"], 3);
    assert_eq!(billing["requeue_count"], 3);
    assert_eq!(billing["depth"], 0);
    assert_eq!(billing["in_flight_count"], 0);

    // The dead-letter topic is an ordinary topic: it holds the message
    // until a channel takes it; the new message's attempts start over.
    let mut dead = consumer(&d, "orders.dead", "ops", 1);
    let m = dead.expect_message();
    assert_eq!((&m.body[..], m.attempts), (&b"poison"[..], 1));
    // Its channels never dead-letter themselves (no `.dead.dead`).
    assert_eq!(stat(&d, "orders.dead", "ops", "max_attempts"), 0);
    dead.send(Command::Fin(m.id));

    let (status, metrics) = d.http("GET", "/metrics", b"");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("nsq_channel_dead_letter_total{topic=\"orders\",channel=\"billing\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn a_timeout_on_the_last_attempt_goes_to_the_dead_letter_topic() {
    let d = Daemon::start(&["--max-attempts=2", "--msg-timeout=1s"]);
    create(&d, "t", "c");
    let mut c = consumer(&d, "t", "c", 1);
    let started = Instant::now();
    d.connect().publish("t", b"slow");
    // Never finished: each delivery times out after 1 s.
    let attempts: Vec<u16> = (0..2).map(|_| c.expect_message().attempts).collect();
    assert_eq!(attempts, [1, 2]);
    if !c.quiet_for(Duration::from_millis(1500)) {
        panic!("a third delivery: {:?}", c.frame_skip_heartbeats());
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    let stats = d.stats();
    let chan = channel_stats(&stats, "t", "c").unwrap();
    assert_eq!(
        (
            chan["timeout_count"].as_u64(),
            chan["dead_letter_count"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let m = consumer(&d, "t.dead", "x", 1).expect_message();
    assert_eq!(&m.body[..], b"slow");
}

#[test]
fn a_channels_own_limit_is_checked_and_kept_across_restarts() {
    let mut d = Daemon::start(&[]);
    assert_eq!(d.http("POST", "/topic/create?topic=t", b"").0, 200);
    for bad in ["abc", "-1", "%2B3", "65536", "", "3.0"] {
        let (status, body) = d.http(
            "POST",
            &format!("/channel/create?topic=t&channel=c&max_attempts={bad}"),
            b"",
        );
        assert_eq!(
            (status, body.as_str()),
            (400, r#"{"message":"INVALID_MAX_ATTEMPTS"}"#),
            "max_attempts={bad}"
        );
    }
    assert!(
        channel_stats(&d.stats(), "t", "c").is_none(),
        "nothing created"
    );
    // A dead-letter topic's channel takes no limit (0 is allowed: it is off).
    assert_eq!(d.http("POST", "/topic/create?topic=t.dead", b"").0, 200);
    let (status, body) = d.http(
        "POST",
        "/channel/create?topic=t.dead&channel=x&max_attempts=2",
        b"",
    );
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"message":"INVALID_MAX_ATTEMPTS"}"#)
    );
    create(&d, "t.dead", "x&max_attempts=0");

    create(&d, "t", "plain");
    create(&d, "t", "c&max_attempts=5");
    // Applied to an existing channel too.
    create(&d, "t", "c&max_attempts=2");
    assert_eq!(stat(&d, "t", "c", "max_attempts"), 2);
    assert_eq!(stat(&d, "t", "plain", "max_attempts"), 0);

    assert_eq!(d.terminate(), Some(0));
    let dat = std::fs::read_to_string(d.data_path().join("nsqd.dat")).unwrap();
    assert!(
        dat.contains(r#"{"name":"c","paused":false,"max_attempts":2}"#),
        "{dat}"
    );
    assert!(dat.contains(r#"{"name":"plain","paused":false}"#), "{dat}");
    d.restart();
    assert_eq!(stat(&d, "t", "c", "max_attempts"), 2);
    assert_eq!(stat(&d, "t", "plain", "max_attempts"), 0);

    let mut c = consumer(&d, "t", "c", 1);
    d.connect().publish("t", b"m");
    assert_eq!(
        requeue_until_quiet(&mut c, Duration::from_millis(500)),
        [1, 2]
    );
    assert_eq!(
        consumer(&d, "t.dead", "x", 1).expect_message().body,
        &b"m"[..]
    );
}

#[test]
fn under_durable_a_dead_letter_survives_sigkill() {
    // The channel's own limit: after the SIGKILL it comes back from the
    // journal (no whole nsqd.dat write happened).
    let mut d = Daemon::start(&["--durable"]);
    create(&d, "t", "c&max_attempts=1");
    let mut c = consumer(&d, "t", "c", 1);
    d.connect().publish("t", b"keep me");
    let m = c.expect_message();
    c.send(Command::Req {
        id: m.id,
        timeout_ms: 0,
    });
    // Once counted, the publish to t.dead has returned (fsynced), and the
    // channel committed its read right after.
    d.wait_stats("the dead letter in t.dead", |s| {
        s["topics"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["topic_name"] == "t.dead"))
            .is_some_and(|t| t["message_count"] == 1)
    });
    std::thread::sleep(Duration::from_millis(500));
    drop(c);
    d.kill();
    d.restart();
    assert_eq!(stat(&d, "t", "c", "max_attempts"), 1);
    let m = consumer(&d, "t.dead", "x", 1).expect_message();
    assert_eq!(&m.body[..], b"keep me");
    let mut again = consumer(&d, "t", "c", 1);
    assert!(
        again.quiet_for(Duration::from_millis(500)),
        "dead-lettered and delivered again"
    );
}

const PYNSQ_SCRIPT: &str = r#"
import sys, json
import tornado.ioloop
import nsq

tcp, topic, max_tries = sys.argv[1], sys.argv[2], int(sys.argv[3])
loop = tornado.ioloop.IOLoop.current()
seen = []
gave_up = []
result = {}

def on_message(msg):
    # Always fails: the server's limit, not max_tries, must end it.
    seen.append(msg.attempts)
    msg.requeue(delay=0, backoff=False)

def on_dead(msg):
    result["body"] = msg.body.decode()
    result["attempts"] = msg.attempts
    msg.finish()
    source.close(); dead.close()
    loop.call_later(0.5, loop.stop)

class Source(nsq.Reader):
    def giving_up(self, message):
        gave_up.append(message.attempts)

source = Source(message_handler=on_message, nsqd_tcp_addresses=[tcp], topic=topic,
                channel="work", max_in_flight=1, max_tries=max_tries, lookupd_poll_interval=1)
dead = nsq.Reader(message_handler=on_dead, nsqd_tcp_addresses=[tcp], topic=topic + ".dead",
                  channel="ops", max_in_flight=1, lookupd_poll_interval=1)
writer = nsq.Writer([tcp])

def on_pub(conn, data):
    if isinstance(data, nsq.Error):
        print("publish error", data, file=sys.stderr); sys.exit(2)

loop.call_later(1.0, lambda: writer.pub(topic, b"poison", callback=on_pub))
loop.call_later(30.0, lambda: (print("timeout", seen, file=sys.stderr), sys.exit(3)))
loop.start()
result["seen"] = seen
result["gave_up"] = gave_up
print(json.dumps(result))
"#;

#[test]
fn pynsq_max_tries_above_the_server_limit_ends_in_dead_letters() {
    let python = crate::pynsq::python();
    let d = Daemon::start(&["--max-attempts=3"]);
    // The source channel exists before the publish, so no message skips it.
    create(&d, "py", "work");
    let child = Process::new(python)
        .arg("-c")
        .arg(PYNSQ_SCRIPT)
        .arg(d.tcp.to_string())
        .arg("py")
        .arg("10")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(result["seen"], serde_json::json!([1, 2, 3]), "{result}");
    assert_eq!(result["gave_up"], serde_json::json!([]), "{result}");
    assert_eq!(result["body"], "poison");
    assert_eq!(
        result["attempts"], 1,
        "a new message on the dead-letter topic"
    );
    assert_eq!(stat(&d, "py", "work", "dead_letter_count"), 1);
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "pynsq script did not finish: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
