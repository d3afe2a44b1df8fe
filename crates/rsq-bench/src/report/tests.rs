//! Number formatting, the table's shape, and the JSON's fields.

use super::*;
use crate::latency::LatencySummary;
use crate::process::ProcessSample;

#[track_caller]
fn check(got: String, want: &str) {
    assert_eq!(got, want);
}

#[test]
fn rates_and_delays() {
    check(format_rate(1_040_000.0), "1.04 M");
    check(format_rate(162_400.0), "162 k");
    check(format_rate(9_960.0), "10.0 k");
    check(format_rate(999.4), "999");
    check(format_mib(1_048_576.0, 200), "200.0");
    check(format_ms(850), "0.85");
    check(format_ms(12_345), "12.3");
    check(format_ms(250_400), "250");
}

fn measured() -> Row {
    Row {
        scenario: "nsq/write".into(),
        description: "as nsq's bench_writer".into(),
        body_size: 200,
        published: 2_000_000,
        publish_secs: 2.0,
        consumed: 0,
        consume_secs: 0.0,
        latency: Some(LatencySummary {
            count: 10,
            p50_us: 1_500,
            p99_us: 20_000,
            p999_us: 30_000,
            max_us: 31_000,
        }),
        daemon: Some(ProcessSample {
            peak_rss_kib: 26_624,
            cpu_secs: 1.5,
            wall_secs: 2.0,
        }),
        setup_secs: 0.5,
        client_cpu_percent: Some(42.0),
        skipped: None,
        error: None,
    }
}

#[test]
fn table_has_a_row_per_phase_and_a_legend() {
    let skipped = Row {
        scenario: "disk".into(),
        description: "pubsub through disk".into(),
        skipped: Some("needs --mem-queue-size=0".into()),
        ..Row::default()
    };
    let text = table(&[measured(), skipped]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("| scenario "), "{text}");
    assert!(lines[1].starts_with("| ---"), "{text}");
    let row = lines[2];
    for want in [
        "nsq/write",
        "1.00 M",
        "190.7",
        "1.50",
        "20.0",
        "26.0",
        "75",
        "0.75",
        "42",
    ] {
        assert!(row.contains(want), "{want:?} missing from {row}");
    }
    assert!(
        lines[3].contains("skipped: needs --mem-queue-size=0"),
        "{text}"
    );
    assert!(text.contains("- nsq: as nsq's bench_writer"), "{text}");
    assert!(text.contains("- disk: pubsub through disk"), "{text}");
    // Every measured line is as wide as the header.
    assert_eq!(lines[0].chars().count(), row.chars().count(), "{text}");
}

#[test]
fn unmeasured_values_show_as_dashes_and_na() {
    let row = Row {
        daemon: None,
        latency: None,
        ..measured()
    };
    let text = table(&[row]);
    let line = text.lines().nth(2).expect("row");
    assert!(line.contains(" - |"), "{line}");
    assert!(line.contains("n/a"), "{line}");
}

#[test]
fn json_carries_rates_and_samples() {
    let rows = [measured()];
    let json = JsonReport::new("rsqd".into(), 2.0, 200, &rows).to_json();
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let row = &value["rows"][0];
    assert_eq!(row["scenario"], "nsq/write");
    assert_eq!(row["publish_msgs_per_sec"], 1_000_000.0);
    assert_eq!(row["latency"]["p99_us"], 20_000);
    assert_eq!(row["daemon"]["peak_rss_kib"], 26_624);
    assert_eq!(row["daemon_cpu_percent"], 75.0);
    assert_eq!(row["daemon_cpu_us_per_msg"], 0.75);
    assert_eq!(value["body_size"], 200);
    assert_eq!(row["setup_secs"], 0.5);
    assert_eq!(row["client_cpu_percent"], 42.0);
}
