//! A full disk: `--max-disk-bytes` and a real `ENOSPC` refuse publishes
//! (TCP `E_PUB_FAILED ... DISK_FULL` on a connection that stays open, HTTP
//! 507 `DISK_FULL`, `/ping` 503) without dropping anything accepted, keep
//! serving consumers, and take publishes again by themselves once consumers
//! bring usage under the low-water mark.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rsq_codec::Command;

use crate::harness::{Daemon, V2};

/// A message body of `len` bytes that names `i`.
fn body(i: usize, len: usize) -> Vec<u8> {
    let mut b = format!("m{i:06}-").into_bytes();
    b.resize(len, b'x');
    b
}

/// The index a [`body`] names.
fn index_of(body: &[u8]) -> usize {
    std::str::from_utf8(&body[1..7]).unwrap().parse().unwrap()
}

fn create(d: &Daemon, topic: &str, channel: &str) {
    assert_eq!(
        d.http("POST", &format!("/topic/create?topic={topic}"), b"")
            .0,
        200
    );
    let path = format!("/channel/create?topic={topic}&channel={channel}");
    assert_eq!(d.http("POST", &path, b"").0, 200);
}

/// Publishes bodies of `len` bytes over HTTP until one is refused with
/// 507 (at most `limit`); returns how many were accepted.
fn fill(d: &Daemon, len: usize, limit: usize) -> usize {
    for i in 0..limit {
        let (status, answer) = d.http("POST", "/pub?topic=t", &body(i, len));
        match status {
            200 => assert_eq!(answer, "OK"),
            507 => {
                assert_eq!(answer, r#"{"message":"DISK_FULL"}"#);
                return i;
            }
            other => panic!("publish {i}: {other} {answer}"),
        }
    }
    panic!("{limit} publishes and no DISK_FULL");
}

/// Receives (and finishes) messages until every index in `0..n` was seen,
/// bounded by `limit`; returns how many deliveries there were.
fn consume_all(c: &mut V2, n: usize, limit: Duration) -> (BTreeSet<usize>, usize) {
    let deadline = Instant::now() + limit;
    let mut seen = BTreeSet::new();
    let mut deliveries = 0;
    c.send(Command::Rdy(100));
    while seen.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered",
            seen.len()
        );
        let msg = c.expect_message();
        c.send(Command::Fin(msg.id));
        deliveries += 1;
        let i = index_of(&msg.body);
        assert!(i < n, "message {i} was refused, yet delivered");
        seen.insert(i);
    }
    (seen, deliveries)
}

/// Polls `/ping` until it answers OK (bounded).
fn wait_ping_ok(d: &Daemon, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let (status, answer) = d.http("GET", "/ping", b"");
        if status == 200 {
            assert_eq!(answer, "OK");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/ping still {status} {answer}: {}",
            d.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric(d: &Daemon, name: &str) -> f64 {
    let (status, text) = d.http("GET", "/metrics", b"");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn the_disk_bound_refuses_publishes_loses_nothing_and_recovers_by_itself() {
    bound_refuses_and_recovers(&[]);
}

#[test]
fn under_durable_the_disk_bound_refuses_publishes_loses_nothing_and_recovers() {
    bound_refuses_and_recovers(&["--durable"]);
}

fn bound_refuses_and_recovers(extra: &[&str]) {
    const BOUND: u64 = 200_000;
    let bound = format!("--max-disk-bytes={BOUND}");
    let mut args = vec![&*bound, "--mem-queue-size=10", "--max-bytes-per-file=50000"];
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    create(&d, "t", "c");
    let accepted = fill(&d, 1000, 1000);
    // Each accepted message ends up in the channel's queue; the topic's
    // queue keeps at most the segment being read (--max-bytes-per-file)
    // besides. So at least (BOUND - one segment) / (1,000 B + the record
    // and message headers) fit, whatever the pump's timing.
    const FLOOR: usize = (BOUND as usize - 50_000) / 1_100;
    assert!(
        accepted > FLOOR,
        "only {accepted} accepted under a bound of {BOUND} (at least {FLOOR} fit)"
    );
    d.assert_publishes_refused(507, "DISK_FULL", "NOK - disk full");
    let stats = d.stats();
    assert_eq!(stats["disk_full"], true);
    assert!(stats["disk_bytes"].as_u64().unwrap() <= BOUND, "{stats}");
    assert_eq!(metric(&d, "nsq_disk_full"), 1.0);
    assert!(metric(&d, "nsq_disk_bytes") <= BOUND as f64);

    // Consumers are served meanwhile, every accepted message exactly once.
    let mut c = d.connect();
    // The test client answers no heartbeat, and it sits silent while it
    // waits for recovery: a long interval keeps the read deadline away.
    c.identify(r#"{"heartbeat_interval": 20000}"#);
    c.subscribe("t", "c");
    let (seen, deliveries) = consume_all(&mut c, accepted, Duration::from_secs(60));
    assert_eq!((seen.len(), deliveries), (accepted, accepted));
    assert!(c.quiet_for(Duration::from_millis(300)), "nothing more");

    // Under the low-water mark publishing resumes without anyone's help.
    wait_ping_ok(&d, Duration::from_secs(15));
    let stats = d.stats();
    assert_eq!(stats["disk_full"], false);
    // Puts the disk refused and the pump made again count once.
    let channel = crate::harness::channel_stats(&stats, "t", "c").unwrap();
    assert_eq!(channel["message_count"], accepted as u64, "{stats}");
    assert_eq!(metric(&d, "nsq_disk_full"), 0.0);
    let (status, _) = d.http("POST", "/pub?topic=t", &body(0, 10));
    assert_eq!(status, 200);
    assert_eq!(index_of(&c.expect_message().body), 0);
}

#[test]
fn the_disk_bound_holds_across_a_restart() {
    const BOUND: u64 = 100_000;
    let args = [
        &format!("--max-disk-bytes={BOUND}") as &str,
        "--mem-queue-size=5",
    ];
    let mut d = Daemon::start(&args);
    create(&d, "t", "c");
    let accepted = fill(&d, 1000, 1000);
    // The flush at shutdown writes memory to disk past the bound: nothing
    // accepted is dropped, and the restarted node counts it and is full.
    assert_eq!(d.terminate(), Some(0));
    d.restart();
    d.assert_publishes_refused(507, "DISK_FULL", "NOK - disk full");
    let mut c = d.connect();
    // The test client answers no heartbeat, and it sits silent while it
    // waits for recovery: a long interval keeps the read deadline away.
    c.identify(r#"{"heartbeat_interval": 20000}"#);
    c.subscribe("t", "c");
    let (seen, _) = consume_all(&mut c, accepted, Duration::from_secs(60));
    assert_eq!(seen.len(), accepted);
    wait_ping_ok(&d, Duration::from_secs(15));
}

#[test]
fn a_pynsq_producer_sees_e_pub_failed_disk_full() {
    let python = crate::pynsq::python();
    let d = Daemon::start(&["--max-disk-bytes=50000", "--mem-queue-size=5"]);
    create(&d, "t", "c");
    fill(&d, 1000, 1000);
    let stdout = crate::pynsq::publish_refused_twice(&python, d.tcp);
    assert!(stdout.contains("DISK_FULL"), "{stdout}");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`), or `None` (with a
    /// message saying the test is skipped) where mounting is not allowed.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs(path, dir)),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs ({}); the ENOSPC test needs root",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount ({e}); the ENOSPC test needs it");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Files in `dir` whose name ends in `.bad` (quarantined segments).
fn bad_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".bad"))
        .collect()
}

#[test]
fn a_full_file_system_is_a_refusal_not_a_crash_nor_a_corrupt_segment() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let data = tempfile::tempdir_in(fs.path()).unwrap();
    let data_path = data.path().to_path_buf();
    let mut d = Daemon::start_in(
        data,
        &[
            "--mem-queue-size=10",
            "--max-bytes-per-file=65536",
            "--sync-timeout=100ms",
        ],
    );
    create(&d, "t", "c");
    // No bound: the file system itself fills.
    let accepted = fill(&d, 4000, 2000);
    assert!(accepted > 100, "only {accepted} accepted on 2 MiB");
    d.assert_publishes_refused(507, "DISK_FULL", "NOK - disk full");
    assert!(d.is_running());

    // Consumers are served: everything accepted arrives (a publish refused
    // by a failed write may also have been kept: at least once).
    let mut c = d.connect();
    // The test client answers no heartbeat, and it sits silent while it
    // waits for recovery: a long interval keeps the read deadline away.
    c.identify(r#"{"heartbeat_interval": 20000}"#);
    c.subscribe("t", "c");
    let (seen, _) = consume_all(&mut c, accepted, Duration::from_secs(60));
    assert_eq!(seen.len(), accepted);
    wait_ping_ok(&d, Duration::from_secs(20));
    let (status, _) = d.http("POST", "/pub?topic=t", &body(0, 10));
    assert_eq!(status, 200);

    // No segment was left torn or damaged: a restart quarantines nothing.
    assert_eq!(d.terminate(), Some(0));
    d.restart();
    assert_eq!(bad_files(&data_path), Vec::<String>::new());
    assert_eq!(
        metric(
            &d,
            "nsq_channel_disk_corrupt_records_total{topic=\"t\",channel=\"c\"}"
        ),
        0.0
    );
    let mut c = d.connect();
    // The test client answers no heartbeat, and it sits silent while it
    // waits for recovery: a long interval keeps the read deadline away.
    c.identify(r#"{"heartbeat_interval": 20000}"#);
    c.subscribe("t", "c");
    c.send(Command::Rdy(100));
    // Reads consumed while the metadata could not be written may come
    // again (at least once); the message published after recovery is there.
    for _ in 0..=accepted {
        let msg = c.expect_message();
        c.send(Command::Fin(msg.id));
        if msg.body.len() == 10 {
            assert_eq!(index_of(&msg.body), 0);
            return;
        }
    }
    panic!("the message published after recovery is gone");
}
