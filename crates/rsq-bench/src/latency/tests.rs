//! Stamps survive encoding and are found again; the histogram summarizes.

use bytes::Bytes;
use rsq_codec::Command;

use super::*;

#[test]
fn a_stamp_reads_back() {
    let body = stamped_body(200, 1_234_567_890_123);
    assert_eq!(body.len(), 200);
    assert_eq!(read_stamp(&body), Some(1_234_567_890_123));
}

#[test]
fn bodies_without_a_stamp_are_not_measured() {
    assert_eq!(read_stamp(b"hello world, no stamp here"), None);
    assert_eq!(read_stamp(b"RSQB1234"), None, "too short for a stamp");
    let mut recorder = LatencyRecorder::new();
    assert!(!recorder.record_body(b"plain body from another client", 10));
    assert_eq!(recorder.count(), 0);
    assert_eq!(recorder.summary(), None);
}

#[test]
fn short_bodies_are_padded_to_hold_a_stamp() {
    let body = stamped_body(3, 7);
    assert_eq!(body.len(), STAMP_LEN);
    assert_eq!(read_stamp(&body), Some(7));
}

#[track_caller]
fn check_offsets(command: Command, bodies: usize) {
    let mut buf = bytes::BytesMut::new();
    command.encode(&mut buf);
    let offsets = stamp_offsets(&buf);
    assert_eq!(offsets.len(), bodies);
    for (i, &at) in offsets.iter().enumerate() {
        write_stamp(&mut buf[at..at + STAMP_LEN], 1000 + i as u64);
    }
    // Re-reading the patched command as the daemon would: each body carries
    // its own stamp.
    let mut decoder = rsq_codec::CommandDecoder::without_magic(rsq_codec::Limits::default());
    let decoded = decoder.decode(&mut buf).expect("valid").expect("complete");
    let got: Vec<Option<u64>> = match decoded {
        Command::Pub { body, .. } => vec![read_stamp(&body)],
        Command::Mpub { bodies, .. } => bodies.iter().map(|b| read_stamp(b)).collect(),
        other => panic!("unexpected {other:?}"),
    };
    let want: Vec<Option<u64>> = (0..bodies).map(|i| Some(1000 + i as u64)).collect();
    assert_eq!(got, want);
}

#[test]
fn stamps_are_found_in_encoded_commands() {
    let body = Bytes::from(stamped_body(200, 0));
    check_offsets(
        Command::Pub {
            topic: "t".into(),
            body: body.clone(),
        },
        1,
    );
    check_offsets(
        Command::Mpub {
            topic: "RSQB-looks-like-a-stamp".into(),
            bodies: vec![body.clone(); 200],
        },
        200,
    );
    check_offsets(
        Command::Mpub {
            topic: "t".into(),
            bodies: vec![Bytes::from(stamped_body(STAMP_LEN, 0)); 3],
        },
        3,
    );
}

#[test]
fn summary_reports_percentiles_in_microseconds() {
    let mut recorder = LatencyRecorder::new();
    for ms in 1..=1000u64 {
        recorder.record(0, ms * 1_000_000);
    }
    let summary = recorder.summary().expect("recorded");
    assert_eq!(summary.count, 1000);
    let near = |got: u64, want: u64| got.abs_diff(want) <= want / 100;
    assert!(near(summary.p50_us, 500_000), "{summary:?}");
    assert!(near(summary.p99_us, 990_000), "{summary:?}");
    assert!(near(summary.p999_us, 999_000), "{summary:?}");
    assert!(near(summary.max_us, 1_000_000), "{summary:?}");
}

#[test]
fn merging_adds_counts_and_clock_steps_count_as_smallest() {
    let mut a = LatencyRecorder::new();
    let mut b = LatencyRecorder::new();
    a.record(5_000, 1_000); // received "before" sent
    b.record(0, 10_000_000);
    b.record(0, LATENCY_MAX_US * 10_000);
    a.merge(&b);
    let summary = a.summary().expect("recorded");
    assert_eq!(summary.count, 3);
    assert_eq!(summary.p50_us.max(1), summary.p50_us);
    assert!(summary.max_us >= LATENCY_MAX_US - LATENCY_MAX_US / 100);
}
