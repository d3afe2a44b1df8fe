//! snappy and deflate, alone and over TLS, through two third-party clients:
//! PyPI `pynsq` (reader and writer) and the `tokio-nsq` crate.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::time::timeout;
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConfigSharedCompression, NSQConfigSharedTLS, NSQConsumerConfig,
    NSQConsumerConfigSources, NSQDeflateLevel, NSQEvent, NSQProducerConfig, NSQTopic,
};

use crate::harness::Daemon;
use crate::tls::{Cert, tls_daemon};

/// Publishes `n` messages with a Writer and reads them back with a Reader,
/// both with the connection options given as JSON; then prints the
/// consumer's `/stats` entry as `stats <json>`.
const SCRIPT: &str = r#"
import sys, json, urllib.request
import tornado.ioloop
import nsq

tcp, http, topic, n, opts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
received = set()
acked = []
loop = tornado.ioloop.IOLoop.current()
finished = []

def done_check():
    if len(received) == n and len(acked) == 1 and not finished:
        finished.append(1)
        stats = json.load(urllib.request.urlopen("http://%s/stats?format=json&topic=%s" % (http, topic)))
        client = stats["topics"][0]["channels"][0]["clients"][0]
        print("stats", json.dumps(client))
        reader.close()
        loop.stop()

def on_message(msg):
    received.add(msg.body.decode())
    msg.finish()
    done_check()

def on_pub(conn, data):
    if isinstance(data, nsq.Error):
        print("publish error", data, file=sys.stderr); sys.exit(2)
    acked.append(data)
    done_check()

writer = nsq.Writer([tcp], **opts)
reader = nsq.Reader(message_handler=on_message, nsqd_tcp_addresses=[tcp],
                    topic=topic, channel="py", max_in_flight=20, lookupd_poll_interval=1, **opts)

def publish():
    # Bodies that compress well and ones that do not, large and small.
    bodies = [("m%d " % i) * (i * 37 % 500 + 1) for i in range(n)]
    writer.mpub(topic, [b.encode() for b in bodies], callback=on_pub)

loop.call_later(1.0, publish)
loop.call_later(30.0, lambda: (print("timeout", len(received), len(acked), file=sys.stderr), sys.exit(3)))
loop.start()
print("received", len(received))
"#;

/// Runs the script against `d` with `opts`; returns the consumer's stats.
fn run_pynsq(d: &Daemon, topic: &str, opts: &str) -> std::process::Child {
    Command::new(crate::pynsq::python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(d.tcp.to_string())
        .arg(d.http.to_string())
        .arg(topic)
        .arg("60")
        .arg(opts)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait(child: std::process::Child, what: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("received 60"),
        "pynsq {what} failed: {:?} {stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stats "))
        .unwrap_or_else(|| panic!("no stats from pynsq {what}: {stdout}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn pynsq_snappy_deflate_and_tls() {
    // The venv is made once, before the parallel runs.
    crate::pynsq::python();
    let cert = Cert::new();
    let d = tls_daemon(&cert, &[]);
    let tls = r#""tls_v1": true, "tls_options": {"cert_reqs": 0}"#;
    let cases = [
        (
            "snappy",
            r#"{"snappy": true}"#.to_string(),
            false,
            true,
            false,
        ),
        (
            "deflate",
            r#"{"deflate": true, "deflate_level": 3}"#.to_string(),
            false,
            false,
            true,
        ),
        ("tls", format!("{{{tls}}}"), true, false, false),
        (
            "tls_snappy",
            format!(r#"{{{tls}, "snappy": true}}"#),
            true,
            true,
            false,
        ),
        (
            "tls_deflate",
            format!(r#"{{{tls}, "deflate": true}}"#),
            true,
            false,
            true,
        ),
    ];
    let children: Vec<_> = cases
        .iter()
        .map(|(topic, opts, ..)| run_pynsq(&d, topic, opts))
        .collect();
    for (child, (what, _, tls, snappy, deflate)) in children.into_iter().zip(cases.iter()) {
        let client = wait(child, what);
        assert_eq!(client["tls"], *tls, "{what}: {client}");
        assert_eq!(client["snappy"], *snappy, "{what}: {client}");
        assert_eq!(client["deflate"], *deflate, "{what}: {client}");
        assert_eq!(client["message_count"], 60, "{what}: {client}");
    }
}

const LIMIT: Duration = Duration::from_secs(20);

/// Publishes 50 messages of up to `size` bytes and consumes them.
async fn roundtrip(d: &Daemon, topic: &str, size: usize, shared: NSQConfigShared) {
    let nsq_topic = NSQTopic::new(topic).unwrap();
    let mut p = NSQProducerConfig::new(d.tcp.to_string())
        .set_shared(shared.clone())
        .build();
    match timeout(LIMIT, p.consume()).await {
        Ok(Some(NSQEvent::Healthy())) => {}
        other => panic!("{topic}: producer did not connect: {other:?}"),
    }
    let bodies: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            let mut body = format!("{topic}-{i}-").repeat(i * 13 + 1).into_bytes();
            body.truncate(size);
            body
        })
        .collect();
    p.publish_multiple(&nsq_topic, bodies.clone())
        .await
        .unwrap();
    match timeout(LIMIT, p.consume()).await {
        Ok(Some(NSQEvent::Ok())) => {}
        other => panic!("{topic}: expected OK, got {other:?}"),
    }
    let mut c = NSQConsumerConfig::new(nsq_topic, NSQChannel::new("c").unwrap())
        .set_max_in_flight(10)
        .set_shared(shared)
        .set_sources(NSQConsumerConfigSources::Daemons(vec![d.tcp.to_string()]))
        .build();
    let mut seen = HashSet::new();
    while seen.len() < bodies.len() {
        let Ok(msg) = timeout(LIMIT, c.consume_filtered()).await else {
            let (_, stats) =
                tokio::task::block_in_place(|| d.http("GET", "/stats?format=json", b""));
            panic!("{topic}: consumer timed out at {}: {stats}", seen.len());
        };
        let msg = msg.expect("consumer closed");
        seen.insert(msg.body.clone());
        msg.finish().await;
    }
    assert!(bodies.iter().all(|b| seen.contains(b)), "{topic}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_nsq_snappy_deflate_and_tls() {
    let cert = Cert::new();
    let d = tls_daemon(&cert, &[]);
    let tls = || NSQConfigSharedTLS::new("localhost");
    let deflate = || NSQConfigSharedCompression::Deflate(NSQDeflateLevel::new(4).unwrap());
    // tokio-nsq's deflate reader (async-compression 0.3) stalls when one
    // flushed batch inflates to more than its 8 KiB read buffer and no more
    // input follows, whatever the server: keep its deflate batches small.
    let small = 100;
    let large = 8000;
    roundtrip(
        &d,
        "tn_snappy",
        large,
        NSQConfigShared::new().set_compression(NSQConfigSharedCompression::Snappy),
    )
    .await;
    roundtrip(
        &d,
        "tn_deflate",
        small,
        NSQConfigShared::new().set_compression(deflate()),
    )
    .await;
    roundtrip(&d, "tn_tls", large, NSQConfigShared::new().set_tls(tls())).await;
    roundtrip(
        &d,
        "tn_tls_snappy",
        large,
        NSQConfigShared::new()
            .set_tls(tls())
            .set_compression(NSQConfigSharedCompression::Snappy),
    )
    .await;
    roundtrip(
        &d,
        "tn_tls_deflate",
        small,
        NSQConfigShared::new()
            .set_tls(tls())
            .set_compression(deflate()),
    )
    .await;
}

#[test]
fn both_compressions_is_an_error() {
    let d = Daemon::start(&[]);
    let mut v = d.connect();
    v.send(rsq_codec::Command::Identify(bytes::Bytes::from_static(
        br#"{"feature_negotiation": true, "snappy": true, "deflate": true}"#,
    )));
    assert_eq!(
        v.expect_error(),
        "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
    );
    v.expect_closed();
}
