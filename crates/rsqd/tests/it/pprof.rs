//! `/debug/pprof/profile`: a real CPU profile of a daemon under a little
//! traffic, gunzipped and decoded as pprof's `profile.proto`; one profile
//! at a time; `seconds` checked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::pprof::protos::{Message, Profile};

use crate::harness::Daemon;

/// The longest the test's traffic runs, whatever happens to the profile.
const TRAFFIC_MAX: Duration = Duration::from_secs(20);

/// One GET on a fresh connection: status, head (lowercased) and raw body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "a whole body is sent with its length: {head}"
    );
    (status, head, body)
}

/// Publishes on one connection until `stop` or [`TRAFFIC_MAX`].
fn traffic(d: &Daemon, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut v2 = d.connect();
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < TRAFFIC_MAX {
            v2.publish("pprof", b"some bytes to profile");
            sent += 1;
        }
        sent
    })
}

#[track_caller]
fn check_profile(head: &str, gzipped: &[u8]) -> Profile {
    assert!(
        head.contains("content-type: application/octet-stream"),
        "{head}"
    );
    assert!(
        head.contains(r#"content-disposition: attachment; filename="profile""#),
        "{head}"
    );
    assert_eq!(&gzipped[..2], [0x1f, 0x8b], "gzip magic");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut raw)
        .expect("gunzips");
    assert!(!raw.is_empty());
    let profile = Profile::decode(raw.as_slice()).expect("a profile.proto");
    assert_eq!(profile.string_table.first().map(String::as_str), Some(""));
    let name = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| profile.string_table.get(i))
    };
    let types: Vec<_> = profile
        .sample_type
        .iter()
        .map(|t| (name(t.ty).cloned(), name(t.unit).cloned()))
        .collect();
    assert!(
        types.contains(&(Some("cpu".into()), Some("nanoseconds".into()))),
        "{types:?}"
    );
    assert!(profile.duration_nanos > 0);
    profile
}

#[test]
fn a_profile_under_traffic_decodes_and_only_one_runs_at_a_time() {
    let d = Daemon::start(&[]);
    for bad in ["0", "301", "x", "-1"] {
        let (status, _, body) = get(d.http, &format!("/debug/pprof/profile?seconds={bad}"));
        assert_eq!(status, 400, "seconds={bad}");
        assert_eq!(body, br#"{"message":"INVALID_ARG_SECONDS"}"#);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = traffic(&d, Arc::clone(&stop));
    let http = d.http;
    let first = std::thread::spawn(move || get(http, "/debug/pprof/profile?seconds=1"));
    std::thread::sleep(Duration::from_millis(300));
    let (status, _, body) = get(d.http, "/debug/pprof/profile?seconds=1");
    assert_eq!(status, 500, "a second profile while one runs");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "Could not enable CPU profiling: cpu profiling already in use\n"
    );
    let (status, head, body) = first.join().unwrap();
    assert_eq!(status, 200, "{head}");
    let profile = check_profile(&head, &body);
    assert!(!profile.sample.is_empty(), "no samples under traffic");
    assert!(
        profile.string_table.iter().any(|s| s.contains("rsqd::")),
        "no frame of rsqd's own was symbolized"
    );
    // The first one is over, so the next may run.
    let (status, head, body) = get(d.http, "/debug/pprof/profile?seconds=1");
    assert_eq!(status, 200, "{head}");
    check_profile(&head, &body);
    stop.store(true, Ordering::Relaxed);
    assert!(publisher.join().unwrap() > 0);
    let (status, _, _) = get(d.http, "/ping");
    assert_eq!(status, 200, "the daemon still answers");
}
