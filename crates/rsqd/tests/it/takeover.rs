//! rsqd on a data directory Go nsqd v1.3.0 left (`testdata/go-nsqd-1.3.0-data`,
//! described in `testdata/README.md`): it takes the directory over in place
//! and serves every unread message, exactly those, with the paused flags
//! nsqd had; killed at random moments while doing so, it still does; and
//! after `rsqd downgrade` the files are Go's again (read here as Go nsqd
//! reads them) and a new rsqd takes them over once more. Everything is
//! checked over real TCP and HTTP; every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_codec::{Command, DEFERRED_RECORD_TAG, Frame, MESSAGE_HEADER_LEN};

use crate::harness::{Daemon, channel_stats, daemon_args, rng, run_to_exit};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// A writable copy of Go nsqd's data directory.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = testdata().join("go-nsqd-1.3.0-data");
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        let to = dir.path().join(entry.file_name());
        std::fs::copy(entry.path(), &to).unwrap();
        // A copy of a read-only original is read-only too.
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

/// One manifest entry: a channel (`topic/channel`) or a topic without
/// channels, and every body it holds unread.
struct Expected {
    topic: String,
    channel: Option<String>,
    paused: bool,
    topic_paused: bool,
    unread: Vec<Bytes>,
}

fn manifest() -> Vec<Expected> {
    let text =
        std::fs::read_to_string(testdata().join("go-nsqd-1.3.0-data.manifest.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for (key, entry) in json.as_object().unwrap() {
        let (topic, channel) = match key.split_once('/') {
            Some((t, c)) => (t.to_string(), Some(c.to_string())),
            None => (key.clone(), None),
        };
        let flag = |name: &str| entry[name].as_bool().unwrap_or(false);
        out.push(Expected {
            topic,
            channel,
            paused: flag("paused"),
            topic_paused: flag("topic_paused"),
            unread: entry["unread"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| Bytes::from(b.as_str().unwrap().to_string()))
                .collect(),
        });
    }
    assert_eq!(out.len(), 4, "the manifest's four entries");
    out
}

fn topic_stats<'a>(stats: &'a serde_json::Value, topic: &str) -> &'a serde_json::Value {
    stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic_name"] == topic)
        .unwrap_or_else(|| panic!("no topic {topic} in {stats:#}"))
}

/// `/stats` shows what Go nsqd left: every topic and channel, their
/// paused flags, and the depths the manifest implies (`extra` more in
/// each of `payments`' channels).
fn check_stats(d: &Daemon, extra: u64) {
    let stats = d.stats();
    let topics: BTreeSet<_> = stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        topics,
        BTreeSet::from(["lonely".into(), "payments".into(), "signups".into()]),
        "{stats:#}"
    );
    for e in manifest() {
        let topic = topic_stats(&stats, &e.topic);
        let extra = if e.topic == "payments" { extra } else { 0 };
        let depth = e.unread.len() as u64 + extra;
        match &e.channel {
            None => {
                assert_eq!(topic["channels"].as_array().unwrap().len(), 0, "{topic:#}");
                assert_eq!(topic["depth"], depth, "{topic:#}");
                assert_eq!(topic["paused"], false, "{topic:#}");
            }
            Some(channel) => {
                assert_eq!(topic["paused"], e.topic_paused, "{topic:#}");
                let c = channel_stats(&stats, &e.topic, channel).unwrap();
                assert_eq!(c["paused"], e.paused, "{c:#}");
                if e.topic_paused {
                    // Waiting at the paused topic, not yet in the channel.
                    assert_eq!(topic["depth"], depth, "{topic:#}");
                    assert_eq!(c["depth"], 0, "{c:#}");
                } else {
                    assert_eq!(c["depth"], depth, "{c:#}");
                }
            }
        }
    }
    assert_eq!(topic_stats(&stats, "payments")["depth"], 0, "{stats:#}");
}

/// Subscribes and finishes everything `topic`/`channel` delivers, until at
/// least `expected` messages came and then nothing for a while (bounded).
/// Returns every delivery's body, in order.
fn consume(d: &Daemon, topic: &str, channel: &str, expected: usize) -> Vec<Bytes> {
    let mut c = d.connect();
    c.subscribe(topic, channel);
    c.send(Command::Rdy(500));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if c.quiet_for(Duration::from_millis(if got.len() >= expected {
            500
        } else {
            2000
        })) {
            if got.len() >= expected {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}/{channel}: {} of {expected} delivered; stats {:#}",
                got.len(),
                d.stats()
            );
            continue;
        }
        match c.frame_skip_heartbeats() {
            Some(Frame::Message(m)) => {
                c.send(Command::Fin(m.id));
                got.push(m.body);
            }
            other => panic!("{topic}/{channel}: unexpected {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "{topic}/{channel}: still delivering"
        );
    }
}

/// Unpauses what Go nsqd had paused, consumes every channel (a new one
/// for `lonely`) and checks the bodies as sets against the manifest, plus
/// `extra` in each of `payments`' channels. With `exact`, no message may
/// come twice either.
fn consume_all_and_check(d: &Daemon, extra: &[Bytes], exact: bool) {
    for e in manifest() {
        let channel = e.channel.clone().unwrap_or_else(|| "drain".to_string());
        if e.paused {
            let path = format!("/channel/unpause?topic={}&channel={channel}", e.topic);
            assert_eq!(d.http("POST", &path, b"").0, 200);
        }
        if e.topic_paused {
            let path = format!("/topic/unpause?topic={}", e.topic);
            assert_eq!(d.http("POST", &path, b"").0, 200);
        }
        let mut want: BTreeSet<Bytes> = e.unread.iter().cloned().collect();
        assert_eq!(want.len(), e.unread.len(), "manifest bodies are distinct");
        if e.topic == "payments" {
            want.extend(extra.iter().cloned());
        }
        let got = consume(d, &e.topic, &channel, want.len());
        let distinct: BTreeSet<Bytes> = got.iter().cloned().collect();
        let missing: Vec<_> = want.difference(&distinct).take(5).collect();
        let unexpected: Vec<_> = distinct.difference(&want).take(5).collect();
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "{}/{channel}: {} missing (first {missing:?}), {} unexpected (first {unexpected:?})",
            e.topic,
            want.difference(&distinct).count(),
            distinct.difference(&want).count(),
        );
        if exact {
            assert_eq!(got.len(), want.len(), "{}/{channel}: duplicates", e.topic);
        }
    }
    d.wait_stats("every queue drained", |s| {
        s["topics"].as_array().is_some_and(|topics| {
            topics.iter().all(|t| {
                t["depth"] == 0
                    && t["channels"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .all(|c| c["depth"] == 0 && c["in_flight_count"] == 0)
                    })
            })
        })
    });
}

#[test]
fn takes_over_a_go_nsqd_data_dir_in_place() {
    let d = Daemon::start_in(fixture_copy(), &[]);
    check_stats(&d, 0);
    consume_all_and_check(&d, &[], true);
}

#[test]
fn a_takeover_killed_at_random_moments_loses_nothing() {
    let seed = std::env::var("RSQ_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("seed {seed} (RSQ_TEST_SEED={seed} replays it)");
    let mut next = rng(seed);
    for round in 0..3 {
        let dir = fixture_copy();
        let mut delays = Vec::new();
        for kill in 0..4 {
            // The conversion itself runs about 5 to 15 ms after the
            // spawn (debug build, idle machine), so half the kills aim at
            // the first 20 ms.
            let range = if kill % 2 == 0 { 20 } else { 200 };
            let delay = Duration::from_millis(next() % range);
            delays.push(delay);
            let mut child = Process::new(env!("CARGO_BIN_EXE_rsqd"))
                .args(daemon_args(dir.path()))
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            let _ = child.wait();
        }
        println!("round {round}: killed after {delays:?}");
        let d = Daemon::start_in(dir, &[]);
        check_stats(&d, 0);
        consume_all_and_check(&d, &[], false);
    }
}

/// A Go queue's unread records, read as go-diskqueue v1.1.0 reads them:
/// from the read position to the write position, each file before the
/// write file to its end.
fn go_unread(dir: &Path, queue: &str) -> Vec<Bytes> {
    let meta_path = dir.join(format!("{queue}.diskqueue.meta.dat"));
    let text = match std::fs::read_to_string(&meta_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Go starts such a queue empty; it must have no segments then.
            let prefix = format!("{queue}.diskqueue.");
            let stray = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .find(|name| name.starts_with(&prefix));
            assert_eq!(stray, None, "{queue}: segments without metadata");
            return Vec::new();
        }
        Err(e) => panic!("{queue}: {e}"),
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{queue}: not Go's metadata: {text:?}");
    let depth: usize = lines[0].parse().unwrap();
    let pos = |line: &str| -> (u64, usize) {
        let (file, at) = line.split_once(',').unwrap();
        (file.parse().unwrap(), at.parse().unwrap())
    };
    let ((read_file, read_pos), (write_file, write_pos)) = (pos(lines[1]), pos(lines[2]));
    let mut records = Vec::new();
    for file in read_file..=write_file {
        let start = if file == read_file { read_pos } else { 0 };
        if file == write_file && start == write_pos {
            break;
        }
        let name = dir.join(format!("{queue}.diskqueue.{file:06}.dat"));
        let bytes = std::fs::read(&name).unwrap_or_else(|e| panic!("{}: {e}", name.display()));
        let end = if file == write_file {
            write_pos
        } else {
            bytes.len()
        };
        let mut at = start;
        while at < end {
            let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert!(
                size >= MESSAGE_HEADER_LEN,
                "{queue} {file}@{at}: size {size}"
            );
            let payload = &bytes[at + 4..at + 4 + size];
            assert!(
                !payload.starts_with(DEFERRED_RECORD_TAG),
                "{queue}: a deferral tag left for Go nsqd"
            );
            records.push(Bytes::copy_from_slice(&payload[MESSAGE_HEADER_LEN..]));
            at += 4 + size;
        }
        assert_eq!(at, end, "{queue} {file}: records end past the position");
    }
    assert_eq!(
        records.len(),
        depth,
        "{queue}: depth {depth}, records {}",
        records.len()
    );
    records
}

#[test]
fn downgrade_gives_go_nsqd_its_files_back_and_rsqd_takes_them_again() {
    let flags = ["--max-bytes-per-file=65536"];
    let mut d = Daemon::start_in(fixture_copy(), &flags);
    check_stats(&d, 0);
    // A deferred message is rsq-only state on disk: a tagged record,
    // which the downgrade makes ready at once.
    let deferred = Bytes::from_static(b"rsq-deferred-an-hour");
    let mut p = d.connect();
    p.send(Command::Dpub {
        topic: "payments".into(),
        defer_ms: 3_600_000,
        body: deferred.clone(),
    });
    p.expect_ok();
    drop(p);
    d.wait_stats("the DPUB deferred in both channels", |s| {
        ["ledger", "archive"]
            .iter()
            .all(|c| channel_stats(s, "payments", c).is_some_and(|c| c["deferred_count"] == 1))
    });
    let data = d.data_path().to_path_buf();
    assert_eq!(d.terminate(), Some(0));

    let (code, stdout, stderr) = run_to_exit(
        &[
            "downgrade".into(),
            format!("--data-path={}", data.display()),
            flags[0].into(),
        ],
        "info",
    );
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let queues = [
        ("lonely", 40),
        ("payments", 0),
        ("payments:archive", 2505),
        ("payments:ledger", 1805),
        ("signups", 300),
        ("signups:welcome", 0),
    ];
    for (queue, records) in queues {
        let line = stderr
            .lines()
            .find(|l| {
                l.contains("queue is in Go nsqd's format") && l.contains(&format!("queue={queue} "))
            })
            .unwrap_or_else(|| panic!("no line for {queue} in {stderr}"));
        assert!(line.contains(&format!("records={records}")), "{line}");
    }
    assert!(
        stdout.contains("6 queues, 4650 unread messages"),
        "{stdout}"
    );
    assert!(stdout.contains("2 deferred messages"), "{stdout}");

    // nsqd.dat is Go nsqd v1.3.0's, to the byte but for the topics' order.
    let text = std::fs::read_to_string(data.join("nsqd.dat")).unwrap();
    assert!(text.ends_with(r#"],"version":"1.3.0"}"#), "{text}");
    assert!(
        text.contains(r#"{"name":"lonely","paused":false,"channels":null}"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"{"name":"signups","paused":true,"channels":[{"name":"welcome","paused":false}]}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"{"name":"payments","paused":false,"channels":["#),
        "{text}"
    );
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    let payments = meta["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "payments")
        .unwrap();
    let channels: BTreeMap<_, _> = payments["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["paused"].clone()))
        .collect();
    assert_eq!(
        channels,
        BTreeMap::from([
            ("archive".into(), true.into()),
            ("ledger".into(), false.into())
        ])
    );

    // What Go nsqd would serve from the files, per channel: its own queue
    // and what waits in its topic's.
    for e in manifest() {
        let mut got: Vec<Bytes> = go_unread(&data, &e.topic);
        if let Some(channel) = &e.channel {
            got.extend(go_unread(&data, &format!("{}:{channel}", e.topic)));
        }
        let mut want: Vec<Bytes> = e.unread.clone();
        if e.topic == "payments" {
            want.push(deferred.clone());
        }
        got.sort();
        want.sort();
        assert!(
            got == want,
            "{}/{:?}: Go would serve {} of {} expected",
            e.topic,
            e.channel,
            got.len(),
            want.len()
        );
    }
    // No rsq file is left for Go nsqd to trip over.
    for entry in std::fs::read_dir(&data).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name == "nsqd.dat" || (name.contains(".diskqueue.") && name.ends_with(".dat")),
            "unexpected file {name}"
        );
    }

    // And back: rsqd takes the downgraded dir over like Go's own.
    d.restart();
    check_stats(&d, 1);
    consume_all_and_check(&d, &[deferred], true);
}
