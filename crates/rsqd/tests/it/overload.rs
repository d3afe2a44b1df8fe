//! Overload: a consumer that stops reading, thousands of connections, and a
//! topic holding far more messages than memory queues keep. The daemon's
//! resident memory is read from /proc and must stay bounded; every loop is
//! bounded in count and time.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use rsq_codec::{Command, MAGIC_V2};

use crate::harness::Daemon;

/// The daemon's peak resident set (VmHWM) in bytes.
fn peak_rss(d: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap()
}

/// Publishes `count` messages of `size` bytes in MPUB batches of 100.
fn fill(d: &Daemon, topic: &str, count: usize, size: usize) {
    let mut p = d.connect();
    let body = Bytes::from(vec![b'x'; size]);
    for _ in 0..count / 100 {
        p.send(Command::Mpub {
            topic: topic.into(),
            bodies: vec![body.clone(); 100],
        });
        p.expect_ok();
    }
}

#[test]
fn a_consumer_that_stops_reading_does_not_grow_memory() {
    let d = Daemon::start(&["--mem-queue-size=1000"]);
    // Subscribes with a large window, then never reads a byte.
    let mut stuck = TcpStream::connect(d.tcp).unwrap();
    stuck.write_all(MAGIC_V2).unwrap();
    stuck
        .write_all(
            &Command::Sub {
                topic: "big".into(),
                channel: "c".into(),
            }
            .to_bytes(),
        )
        .unwrap();
    stuck.write_all(&Command::Rdy(2500).to_bytes()).unwrap();
    // 200 MB published while it sleeps.
    fill(&d, "big", 50_000, 4096);
    let rss = peak_rss(&d);
    eprintln!(
        "peak RSS with a stuck consumer after 200 MB published: {} MB",
        rss >> 20
    );
    // Memory queues (1000 messages each), the stuck client's RDY window
    // (2500) and its socket buffers bound it: about 20 MB of messages.
    assert!(rss < 160 << 20, "peak RSS {} MB", rss >> 20);
    // Not yet pumped into the channel, the rest of the backlog waits at the
    // topic (on its disk queue too): count both.
    let s = d.stats();
    let topic = s["topics"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["topic_name"] == "big"))
        .unwrap();
    let channel = crate::harness::channel_stats(&s, "big", "c").unwrap();
    let depth = topic["depth"].as_u64().unwrap() + channel["depth"].as_u64().unwrap();
    assert!(
        depth > 40_000,
        "the backlog should sit on disk, depth {depth}"
    );
}

#[test]
fn thousands_of_connections_are_served() {
    let wanted: usize = if std::env::var("RSQ_LONG_TESTS").is_ok() {
        5000
    } else {
        2000
    };
    // Room for our sockets and the daemon's (it inherits this limit).
    // SAFETY: setrlimit with a valid resource and a fully initialised struct;
    // it only changes this process's limits.
    #[allow(unsafe_code)]
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let d = Daemon::start(&[]);
    let mut conns = Vec::with_capacity(wanted);
    for i in 0..wanted {
        let mut s = TcpStream::connect(d.tcp).unwrap();
        s.write_all(MAGIC_V2).unwrap();
        s.write_all(
            &Command::Sub {
                topic: "many".into(),
                channel: format!("c{}", i % 10),
            }
            .to_bytes(),
        )
        .unwrap();
        conns.push(s);
    }
    d.wait_stats("all subscribed", |s| {
        s["topics"][0]["channels"].as_array().is_some_and(|cs| {
            cs.iter()
                .map(|c| c["client_count"].as_u64().unwrap_or(0))
                .sum::<u64>()
                == wanted as u64
        })
    });
    // Under that load, a new client still publishes and consumes.
    let mut c = d.connect();
    c.subscribe("other", "c");
    c.send(Command::Rdy(1));
    d.connect().publish("other", b"hello");
    assert_eq!(&c.expect_message().body[..], b"hello");
    eprintln!(
        "{wanted} idle consumers: peak RSS {} MB",
        peak_rss(&d) >> 20
    );
    drop(conns);
    d.wait_stats("all gone", |s| {
        s["topics"][0]["channels"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["client_count"] == 0))
    });
}

#[test]
fn a_deep_topic_keeps_memory_bounded() {
    let count = if std::env::var("RSQ_LONG_TESTS").is_ok() {
        5_000_000
    } else {
        500_000
    };
    let d = Daemon::start(&[]);
    assert_eq!(d.http("POST", "/topic/create?topic=deep", b"").0, 200);
    assert_eq!(
        d.http("POST", "/channel/create?topic=deep&channel=c", b"")
            .0,
        200
    );
    fill(&d, "deep", count, 100);
    d.wait_stats("all stored", |s| {
        s["topics"][0]["channels"][0]["depth"].as_u64() == Some(count as u64)
    });
    let rss = peak_rss(&d);
    eprintln!("{count} messages of 100 B held: peak RSS {} MB", rss >> 20);
    assert!(rss < 200 << 20, "peak RSS {} MB", rss >> 20);
    let _ = Duration::ZERO;
}
