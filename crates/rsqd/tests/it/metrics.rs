//! `GET /metrics` on a real rsqd: the exposition parses, agrees with
//! `/stats` figure for figure, reports disk damage and `--durable`'s
//! commit histograms, ignores unknown parameters and refuses unknown
//! formats with nsqd's error body.

use std::collections::BTreeMap;

use bytes::Bytes;
use rsq_codec::Command;

use crate::harness::{Daemon, channel_stats};

/// One sample: the metric name and its labels, sorted.
type Key = (String, BTreeMap<String, String>);

/// Parses Prometheus' text format: `name{label="value",...} value` lines,
/// `#` lines skipped. Panics on a line that does not parse.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().expect(line),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect(line);
                let mut labels = BTreeMap::new();
                // Label values here hold no `,` or `"` (NSQ names cannot).
                for pair in rest.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').expect(line);
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                    labels.insert(k.to_string(), v.expect(line).to_string());
                }
                (name, labels)
            }
        };
        let key = (name.to_string(), labels);
        assert!(!samples.contains_key(&key), "duplicate series {line}");
        samples.insert(key, value);
    }
    samples
}

fn scrape(d: &Daemon) -> BTreeMap<Key, f64> {
    let (status, body) = d.http("GET", "/metrics", b"");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// The value of `name` with exactly `labels`.
#[track_caller]
fn value(m: &BTreeMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    *m.get(&key)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {:#?}", m.keys()))
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn metrics_agree_with_stats_figure_for_figure() {
    let d = Daemon::start(&[
        "--e2e-processing-latency-percentile=0.99,0.95,0.5",
        "--e2e-processing-latency-window-time=10m",
    ]);
    let mut a = d.connect();
    a.subscribe("t", "a");
    let (status, _) = d.http("POST", "/channel/create?topic=t&channel=b", b"");
    assert_eq!(status, 200);
    let (status, _) = d.http("POST", "/channel/pause?topic=t&channel=b", b"");
    assert_eq!(status, 200);
    let (status, _) = d.http("POST", "/topic/create?topic=idle", b"");
    assert_eq!(status, 200);
    let (status, _) = d.http("POST", "/topic/pause?topic=idle", b"");
    assert_eq!(status, 200);
    let mut producer = d.connect();
    for n in 0..5 {
        producer.publish("t", format!("message {n}").as_bytes());
    }
    producer.send(Command::Dpub {
        topic: "t".into(),
        defer_ms: 600_000,
        body: Bytes::from_static(b"later"),
    });
    producer.expect_ok();
    // Channel a: three finished, one requeued and finished, one in flight.
    a.send(Command::Rdy(10));
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(a.expect_message());
    }
    for m in &held[..3] {
        a.send(Command::Fin(m.id));
    }
    a.send(Command::Req {
        id: held[3].id,
        timeout_ms: 0,
    });
    let again = a.expect_message();
    a.send(Command::Fin(again.id));
    d.wait_stats("finishes and the requeue counted", |s| {
        channel_stats(s, "t", "a")
            .is_some_and(|c| c["e2e_processing_latency"]["count"] == 4 && c["in_flight_count"] == 1)
    });

    let stats = d.stats();
    let m = scrape(&d);
    let topics = stats["topics"].as_array().unwrap();
    assert_eq!(value(&m, "nsq_topics", &[]), topics.len() as f64);
    assert_eq!(value(&m, "nsq_channels", &[]), 2.0);
    assert_eq!(value(&m, "nsq_connections", &[]), 2.0);
    assert_eq!(value(&m, "nsq_healthy", &[]), 1.0);
    assert_eq!(value(&m, "nsq_draining", &[]), num(&stats["draining"]));
    assert_eq!(
        value(
            &m,
            "nsq_build_info",
            &[("version", stats["version"].as_str().unwrap())]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "nsq_start_time_seconds", &[]),
        num(&stats["start_time"])
    );
    assert!(value(&m, "nsq_uptime_seconds", &[]) >= 0.0);
    assert!(
        !m.keys()
            .any(|(name, _)| name.starts_with("nsq_disk_commit")),
        "commit histograms only under --durable"
    );

    let mut seen_latency = 0;
    for t in topics {
        let name = t["topic_name"].as_str().unwrap();
        let paused = t["paused"].to_string();
        let exporter = [("topic", name), ("paused", paused.as_str())];
        let own = [("topic", name)];
        for (metric, field) in [
            ("nsq_topic_depth", "depth"),
            ("nsq_topic_backend_depth", "backend_depth"),
            ("nsq_topic_message_count", "message_count"),
        ] {
            assert_eq!(
                value(&m, metric, &exporter),
                num(&t[field]),
                "{metric} {name}"
            );
        }
        assert_eq!(
            value(&m, "nsq_topic_channel_count", &exporter),
            t["channels"].as_array().unwrap().len() as f64
        );
        assert_eq!(value(&m, "nsq_topic_paused", &own), num(&t["paused"]));
        assert_eq!(
            value(&m, "nsq_topic_message_bytes_total", &own),
            num(&t["message_bytes"])
        );
        assert_eq!(value(&m, "nsq_topic_disk_corrupt_records_total", &own), 0.0);
        assert_eq!(
            value(&m, "nsq_topic_disk_quarantined_files_total", &own),
            0.0
        );
        seen_latency += check_latency(
            &m,
            &t["e2e_processing_latency"],
            &own,
            "nsq_topic",
            &exporter,
            (
                "nsq_topic_e2e_latency_99_percentile",
                "nsq_topic_e2e_latency_95_percentile",
            ),
        );

        for c in t["channels"].as_array().unwrap() {
            let channel = c["channel_name"].as_str().unwrap();
            let paused = c["paused"].to_string();
            let exporter = [
                ("topic", name),
                ("channel", channel),
                ("paused", paused.as_str()),
            ];
            let own = [("topic", name), ("channel", channel)];
            for (metric, field) in [
                ("nsq_channel_depth", "depth"),
                ("nsq_channel_backend_depth", "backend_depth"),
                ("nsq_channel_in_flight_count", "in_flight_count"),
                ("nsq_channel_deferred_count", "deferred_count"),
                ("nsq_channel_message_count", "message_count"),
                ("nsq_channel_requeue_count", "requeue_count"),
                ("nsq_channel_timeout_count", "timeout_count"),
                ("nsq_channel_client_count", "client_count"),
            ] {
                assert_eq!(
                    value(&m, metric, &exporter),
                    num(&c[field]),
                    "{metric} {name}/{channel}"
                );
            }
            assert_eq!(value(&m, "nsq_channel_paused", &own), num(&c["paused"]));
            assert_eq!(
                value(&m, "nsq_channel_disk_corrupt_records_total", &own),
                0.0
            );
            assert_eq!(
                value(&m, "nsq_channel_disk_quarantined_files_total", &own),
                0.0
            );
            seen_latency += check_latency(
                &m,
                &c["e2e_processing_latency"],
                &own,
                "nsq_channel",
                &exporter,
                ("nsq_channel_e2e_latency_99p", "nsq_channel_e2e_latency_95p"),
            );
        }
    }
    assert!(seen_latency > 0, "some latency was non-zero");
    // The figures the scenario made, so the comparison above is not of zeros.
    let a = [("topic", "t"), ("channel", "a"), ("paused", "false")];
    let b = [("topic", "t"), ("channel", "b"), ("paused", "true")];
    assert_eq!(value(&m, "nsq_channel_in_flight_count", &a), 1.0);
    assert_eq!(value(&m, "nsq_channel_requeue_count", &a), 1.0);
    assert_eq!(value(&m, "nsq_channel_deferred_count", &a), 1.0);
    assert_eq!(value(&m, "nsq_channel_depth", &b), 5.0);
    assert_eq!(value(&m, "nsq_topic_paused", &[("topic", "idle")]), 1.0);
}

/// Checks one `e2e_processing_latency` block against its series; returns
/// how many quantiles were non-zero.
fn check_latency(
    m: &BTreeMap<Key, f64>,
    block: &serde_json::Value,
    own: &[(&str, &str)],
    prefix: &str,
    exporter: &[(&str, &str)],
    (p99, p95): (&str, &str),
) -> usize {
    let Some(percentiles) = block["percentiles"].as_array() else {
        // No window (a topic without channels): no series either.
        let samples = format!("{prefix}_e2e_processing_latency_samples");
        let labels: BTreeMap<String, String> = own
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(!m.contains_key(&(samples, labels)), "{own:?}");
        return 0;
    };
    assert_eq!(
        value(m, &format!("{prefix}_e2e_processing_latency_samples"), own),
        num(&block["count"])
    );
    let mut non_zero = 0;
    for p in percentiles {
        let q = p["quantile"].as_f64().unwrap();
        let ns = num(&p["value"]);
        let mut labels = own.to_vec();
        let quantile = q.to_string();
        labels.push(("quantile", &quantile));
        let seconds = value(
            m,
            &format!("{prefix}_e2e_processing_latency_seconds"),
            &labels,
        );
        assert!((seconds * 1e9 - ns).abs() < 1.0, "{seconds} s vs {ns} ns");
        if q == 0.99 {
            assert_eq!(value(m, p99, exporter), ns);
        }
        if q == 0.95 {
            assert_eq!(value(m, p95, exporter), ns);
        }
        non_zero += usize::from(ns > 0.0);
    }
    non_zero
}

#[test]
fn metrics_ignore_unknown_parameters_and_refuse_unknown_formats() {
    let d = Daemon::start(&[]);
    let (status, body) = d.http("GET", "/metrics?include_clients=false&bogus=1", b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(value(&parse(&body), "nsq_topics", &[]), 0.0);
    for format in ["text", "prometheus"] {
        let (status, body) = d.http("GET", &format!("/metrics?format={format}"), b"");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("# TYPE nsq_topics gauge"), "{body}");
    }
    let (status, body) = d.http("GET", "/metrics?format=openmetrics", b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    for bad in ["json", "", "protobuf"] {
        let (status, body) = d.http("GET", &format!("/metrics?format={bad}"), b"");
        assert_eq!(
            (status, body.as_str()),
            (400, r#"{"message":"INVALID_FORMAT"}"#)
        );
    }
}

#[test]
fn durable_metrics_have_commit_histograms() {
    let d = Daemon::start(&["--durable"]);
    let mut producer = d.connect();
    for n in 0..5 {
        producer.publish("t", format!("message {n}").as_bytes());
    }
    let m = scrape(&d);
    let commits = value(&m, "nsq_disk_commit_duration_seconds_count", &[]);
    assert!(commits >= 1.0, "{commits}");
    assert_eq!(
        value(
            &m,
            "nsq_disk_commit_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        commits
    );
    assert_eq!(value(&m, "nsq_disk_commit_records_count", &[]), commits);
    let records = value(&m, "nsq_disk_commit_records_sum", &[]);
    assert!((1.0..=5.0).contains(&records), "{records}");
    assert!(value(&m, "nsq_disk_commit_duration_seconds_sum", &[]) > 0.0);
    // Buckets are cumulative.
    let mut last = 0.0;
    for le in ["0.0001", "0.001", "0.01", "0.1", "1", "2.5", "+Inf"] {
        let n = value(&m, "nsq_disk_commit_duration_seconds_bucket", &[("le", le)]);
        assert!(n >= last, "{le}: {n} < {last}");
        last = n;
    }
}

#[test]
fn a_segment_quarantined_at_open_shows_in_metrics() {
    let mut d = Daemon::start(&["--mem-queue-size=0"]);
    d.connect().publish("q", b"to be damaged");
    d.wait_stats("on disk", |s| s["topics"][0]["backend_depth"] == 1);
    assert_eq!(d.terminate(), Some(0));
    let segment = d.data_path().join("q.diskqueue.000000.dat");
    let mut bytes = std::fs::read(&segment).unwrap();
    for b in bytes.iter_mut().take(8) {
        *b ^= 0xff;
    }
    std::fs::write(&segment, &bytes).unwrap();
    // Damaged metadata makes recovery scan the segment, whose first record
    // no longer parses: the segment is moved aside whole.
    std::fs::write(d.data_path().join("q.diskqueue.meta.dat"), b"garbage").unwrap();
    d.restart();
    d.wait_stats("topic loaded", |s| s["topics"][0]["topic_name"] == "q");
    let m = scrape(&d);
    assert_eq!(
        value(
            &m,
            "nsq_topic_disk_quarantined_files_total",
            &[("topic", "q")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "nsq_topic_disk_corrupt_records_total",
            &[("topic", "q")]
        ),
        0.0,
        "no whole record was known in it"
    );
}
