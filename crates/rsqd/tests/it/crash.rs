//! Acknowledged means delivered: publishers record every `OK`, the daemon is
//! killed (SIGKILL with `--durable`, SIGTERM without), restarted on the same
//! data directory, and every acknowledged message must come out of the
//! channel at least once. Rounds are bounded; `RSQ_LONG_TESTS` runs more.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_codec::{Command, Frame};

use crate::harness::{Daemon, V2};

/// Publishes `p<n>-<seq>` until the connection fails or `stop` is set,
/// recording each body the daemon acknowledged.
fn publisher(
    d: &Daemon,
    topic: String,
    n: usize,
    acked: Arc<Mutex<Vec<Bytes>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let tcp = d.tcp;
    std::thread::spawn(move || {
        let mut c = V2::connect(tcp);
        for seq in 0u64.. {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let body = Bytes::from(format!("p{n}-{seq}"));
            let cmd = Command::Pub {
                topic: topic.clone(),
                body: body.clone(),
            }
            .to_bytes();
            if std::io::Write::write_all(c.stream(), &cmd).is_err() {
                return;
            }
            match c.try_frame() {
                Some(Frame::Response(r)) if &r[..] == b"OK" => acked.lock().unwrap().push(body),
                _ => return,
            }
        }
    })
}

/// Consumes everything in `topic`/`channel`, finishing each message, until
/// `expected` have all been seen and nothing more arrives. Returns
/// (distinct bodies seen, duplicate deliveries).
fn drain(
    d: &Daemon,
    topic: &str,
    channel: &str,
    expected: &HashSet<Bytes>,
) -> (HashSet<Bytes>, usize) {
    let mut c = d.connect();
    c.subscribe(topic, channel);
    c.send(Command::Rdy(500));
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if c.quiet_for(Duration::from_millis(500)) {
            if expected.iter().all(|b| seen.contains(b)) {
                break;
            }
            let missing = expected.iter().filter(|b| !seen.contains(*b)).count();
            assert!(
                Instant::now() < deadline,
                "drain stalled: {missing} of {} acknowledged messages not delivered; stats: {:#}",
                expected.len(),
                d.stats()
            );
            continue;
        }
        match c.frame_skip_heartbeats() {
            Some(Frame::Message(m)) => {
                if !seen.insert(m.body.clone()) {
                    duplicates += 1;
                }
                c.send(Command::Fin(m.id));
            }
            Some(other) => panic!("unexpected frame {other:?}"),
            None => panic!("daemon closed the consumer"),
        }
    }
    (seen, duplicates)
}

/// Kills the daemon under its publishers, lets them see the connection
/// fail, and restarts it on the same data dir.
fn kill_and_restart(
    d: &mut Daemon,
    kill: fn(&mut Daemon),
    stop: &AtomicBool,
    publishers: Vec<std::thread::JoinHandle<()>>,
) {
    kill(d);
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.join().unwrap();
    }
    d.restart();
}

fn rounds() -> usize {
    if std::env::var("RSQ_LONG_TESTS").is_ok() {
        10
    } else {
        2
    }
}

fn crash_rounds(extra: &[&str], kill: fn(&mut Daemon)) {
    let mut d = Daemon::start(extra);
    let mut next = crate::harness::rng(u64::from(std::process::id()));
    let mut total_acked = 0;
    let mut total_dups = 0;
    for round in 0..rounds() {
        let topic = format!("crash{round}");
        assert_eq!(
            d.http("POST", &format!("/topic/create?topic={topic}"), b"")
                .0,
            200
        );
        assert_eq!(
            d.http(
                "POST",
                &format!("/channel/create?topic={topic}&channel=c"),
                b""
            )
            .0,
            200
        );
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let publishers: Vec<_> = (0..4)
            .map(|n| publisher(&d, topic.clone(), n, acked.clone(), stop.clone()))
            .collect();
        // Let the publishers get going (bounded), then kill at a random moment.
        let started = std::time::Instant::now();
        while acked.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300 + next() % 700));
        kill_and_restart(&mut d, kill, &stop, publishers);
        let expected: HashSet<Bytes> = acked.lock().unwrap().iter().cloned().collect();
        assert!(
            !expected.is_empty(),
            "no publish was acknowledged in round {round}"
        );
        let (seen, dups) = drain(&d, &topic, "c", &expected);
        let lost = expected.iter().filter(|b| !seen.contains(*b)).count();
        assert_eq!(
            lost,
            0,
            "round {round}: {lost} of {} acknowledged messages lost",
            expected.len()
        );
        total_acked += expected.len();
        total_dups += dups;
    }
    eprintln!(
        "crash test {extra:?}: {total_acked} acknowledged, 0 lost, {total_dups} duplicate deliveries over {} rounds",
        rounds()
    );
}

/// The crash loop of a durable deployment: the topic and its channel exist
/// before anyone publishes, no consumer is connected, publishers run right
/// up to each kill, the daemon restarts on the same data dir, and only after
/// every round does one consumer drain. Returns (acknowledged, duplicate
/// deliveries). Each restart must replay only what was in doubt at the kill
/// (the pump's uncommitted batch and reads committed during the last
/// metadata write), not the backlog since the daemon started.
fn crash_loop(extra: &[&str], kill: fn(&mut Daemon)) -> (usize, usize) {
    let mut d = Daemon::start(extra);
    let mut next = crate::harness::rng(u64::from(std::process::id()) ^ 0x17);
    let topic = "loop";
    for create in [
        "/topic/create?topic=loop",
        "/channel/create?topic=loop&channel=c",
    ] {
        assert_eq!(d.http("POST", create, b"").0, 200, "{create}");
    }
    let acked = Arc::new(Mutex::new(Vec::new()));
    for round in 0..rounds() {
        let stop = Arc::new(AtomicBool::new(false));
        // Bodies name the round, so no two rounds publish the same one.
        let publishers: Vec<_> = (0..4)
            .map(|n| {
                publisher(
                    &d,
                    topic.to_string(),
                    round * 4 + n,
                    acked.clone(),
                    stop.clone(),
                )
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500 + next() % 1500));
        kill_and_restart(&mut d, kill, &stop, publishers);
    }
    let expected: HashSet<Bytes> = acked.lock().unwrap().iter().cloned().collect();
    assert!(!expected.is_empty(), "no publish was acknowledged");
    let (seen, dups) = drain(&d, topic, "c", &expected);
    let lost = expected.iter().filter(|b| !seen.contains(*b)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged messages lost",
        expected.len()
    );
    eprintln!(
        "crash loop {extra:?}: {} rounds, {} acknowledged, 0 lost, {dups} duplicate deliveries",
        rounds(),
        expected.len()
    );
    (expected.len(), dups)
}

#[test]
fn durable_crash_loop_replays_only_what_was_in_doubt() {
    let (acked, dups) = crash_loop(&["--durable"], |d| d.kill());
    // Issue 17's bound: each restart replays a bounded window, not the
    // backlog. The window is the pump's uncommitted batch plus the reads
    // committed during the last metadata write: at most two of the pump's
    // 128-record batches. (Replaying the backlog would repeat every message
    // of the earlier rounds, thousands.) A bound per round rather than a
    // share of `acked`, which falls on a loaded machine while the window
    // does not.
    const IN_DOUBT_PER_RESTART: usize = 2 * 128;
    assert!(
        dups <= rounds() * IN_DOUBT_PER_RESTART,
        "{dups} duplicates for {acked} acknowledged messages over {} restarts",
        rounds()
    );
}

#[test]
fn clean_restarts_deliver_no_duplicates() {
    for extra in [&[][..], &["--durable"][..]] {
        let (_, dups) = crash_loop(extra, |d| {
            assert_eq!(d.terminate(), Some(0));
        });
        assert_eq!(dups, 0, "SIGTERM restarts {extra:?} delivered duplicates");
    }
}

#[test]
fn durable_survives_sigkill() {
    crash_rounds(&["--durable"], |d| d.kill());
}

#[test]
fn default_mode_survives_sigterm() {
    crash_rounds(&[], |d| {
        assert_eq!(d.terminate(), Some(0));
    });
}

/// Damaged files while stopped: flipped bytes in segments and in
/// `nsqd.dat`, a truncated segment, a removed one. rsqd still starts,
/// serves what is intact and keeps accepting new messages.
#[test]
fn corrupt_files_are_survived() {
    let mut next = crate::harness::rng(0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id()));
    for damage in 0..4 {
        let mut d = Daemon::start(&["--mem-queue-size=0", "--max-bytes-per-file=4096"]);
        for t in ["a", "b"] {
            assert_eq!(
                d.http("POST", &format!("/topic/create?topic={t}"), b"").0,
                200
            );
            assert_eq!(
                d.http("POST", &format!("/channel/create?topic={t}&channel=c"), b"")
                    .0,
                200
            );
            let bodies: Vec<u8> = (0..300)
                .flat_map(|i| format!("{t}{i}\n").into_bytes())
                .collect();
            assert_eq!(d.http("POST", &format!("/mpub?topic={t}"), &bodies).0, 200);
        }
        d.wait_stats("moved to channels", |s| {
            s["topics"]
                .as_array()
                .is_some_and(|ts| ts.iter().all(|t| t["depth"] == 0))
        });
        assert_eq!(d.terminate(), Some(0));
        let mut files: Vec<_> = std::fs::read_dir(d.data_path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".dat"))
            .collect();
        files.sort();
        for _ in 0..3 {
            let victim = &files[(next() as usize) % files.len()];
            // A file removed by an earlier pick of this loop stays removed.
            let Ok(mut bytes) = std::fs::read(victim) else {
                continue;
            };
            match damage {
                0 if !bytes.is_empty() => {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] ^= 0x5a;
                    std::fs::write(victim, &bytes).unwrap();
                }
                1 => {
                    let len = (next() as usize) % (bytes.len() + 1);
                    std::fs::write(victim, &bytes[..len]).unwrap();
                }
                2 => {
                    let _ = std::fs::remove_file(victim);
                }
                _ => std::fs::write(
                    d.data_path().join("nsqd.dat"),
                    b"{\"topics\": [{\"name\": 12",
                )
                .unwrap(),
            }
        }
        d.restart();
        // It serves: stats answer, new messages flow end to end, and what
        // survived of the old ones can be drained.
        let _ = d.stats();
        let mut c = d.connect();
        c.subscribe("fresh", "c");
        c.send(Command::Rdy(10));
        d.connect().publish("fresh", b"after damage");
        assert_eq!(&c.expect_message().body[..], b"after damage");
        for t in ["a", "b"] {
            let mut c = d.connect();
            c.subscribe(t, "c");
            c.send(Command::Rdy(100));
            while !c.quiet_for(Duration::from_millis(300)) {
                if let Some(Frame::Message(m)) = c.frame_skip_heartbeats() {
                    c.send(Command::Fin(m.id));
                }
            }
        }
        assert_eq!(d.terminate(), Some(0), "damage kind {damage}: unclean exit");
    }
}

/// With `--durable`, messages that consumers hold in flight (or have not
/// yet received) when the daemon is SIGKILLed come back after the restart.
#[test]
fn durable_sigkill_keeps_in_flight_messages() {
    let mut d = Daemon::start(&["--durable"]);
    assert_eq!(d.http("POST", "/topic/create?topic=inflight", b"").0, 200);
    assert_eq!(
        d.http("POST", "/channel/create?topic=inflight&channel=c", b"")
            .0,
        200
    );
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..4)
        .map(|n| publisher(&d, "inflight".to_string(), n, acked.clone(), stop.clone()))
        .collect();
    // A consumer that finishes every other message and holds the rest.
    let tcp = d.tcp;
    let consumer = std::thread::spawn(move || {
        let mut c = V2::connect(tcp);
        c.subscribe("inflight", "c");
        c.send(Command::Rdy(200));
        let (mut received, mut finished) = (0u64, HashSet::new());
        while let Some(frame) = c.try_frame() {
            if let Frame::Message(m) = frame {
                received += 1;
                if received % 2 == 0 {
                    c.send(Command::Fin(m.id));
                    finished.insert(m.body);
                }
            }
        }
        (received, finished)
    });
    let started = Instant::now();
    while acked.lock().unwrap().len() < 500 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    d.kill();
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.join().unwrap();
    }
    let (received, finished) = consumer.join().unwrap();
    assert!(
        received > 0,
        "the consumer received nothing before the crash"
    );
    d.restart();
    let expected: HashSet<Bytes> = acked.lock().unwrap().iter().cloned().collect();
    // Finished before the crash (if that FIN did not arrive, the message
    // comes back, which is fine), or delivered now.
    let unfinished: HashSet<Bytes> = expected.difference(&finished).cloned().collect();
    let (seen, dups) = drain(&d, "inflight", "c", &unfinished);
    let lost = unfinished.iter().filter(|b| !seen.contains(*b)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} unfinished acknowledged messages lost",
        unfinished.len()
    );
    eprintln!(
        "durable, consumer holding messages at SIGKILL: {} acknowledged, {received} received before, 0 lost, {dups} duplicates in the drain",
        expected.len()
    );
}

/// With `--durable` a DPUB is on disk with its delay when `OK` comes back:
/// a SIGKILL right after loses nothing, and the restart does not deliver it
/// early.
#[test]
fn durable_dpub_survives_sigkill_and_keeps_its_delay() {
    let mut d = Daemon::start(&["--durable"]);
    assert_eq!(d.http("POST", "/topic/create?topic=later", b"").0, 200);
    assert_eq!(
        d.http("POST", "/channel/create?topic=later&channel=c", b"")
            .0,
        200
    );
    let mut p = d.connect();
    p.send(Command::Dpub {
        topic: "later".into(),
        defer_ms: 1500,
        body: Bytes::from_static(b"deferred"),
    });
    p.expect_ok();
    d.kill();
    d.restart();
    let mut c = d.connect();
    c.subscribe("later", "c");
    let subscribed = Instant::now();
    c.send(Command::Rdy(1));
    let m = c.expect_message();
    assert_eq!(&m.body[..], b"deferred");
    assert!(
        subscribed.elapsed() >= Duration::from_millis(1500),
        "delivered {:?} after the restart, before its delay",
        subscribed.elapsed()
    );
}
