//! Unit tests for the `/metrics` encoding: names, labels, types and the
//! histogram layout, from a hand-made snapshot.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::stats::{ChannelReport, DaemonStats, DiskCounters, Percentile, TopicReport};

fn latency(count: u64, values: &[(f64, i64)]) -> Latency {
    Latency {
        count,
        percentiles: Some(
            values
                .iter()
                .map(|&(quantile, value)| Percentile { quantile, value })
                .collect(),
        ),
    }
}

fn snapshot(durable: bool) -> Stats {
    let channel = ChannelReport {
        channel_name: "c".into(),
        depth: 3,
        backend_depth: 2,
        in_flight_count: 1,
        deferred_count: 4,
        message_count: 10,
        requeue_count: 5,
        timeout_count: 6,
        dead_letter_count: 13,
        max_attempts: 5,
        client_count: 7,
        clients: None,
        paused: true,
        e2e_processing_latency: latency(9, &[(0.99, 2_500_000), (1.0, 3_000_000_000)]),
        disk: DiskCounters {
            corrupt_records: 11,
            quarantined_files: 12,
        },
    };
    let topic = TopicReport {
        topic_name: "t".into(),
        channels: vec![channel],
        depth: 20,
        backend_depth: 19,
        message_count: 30,
        message_bytes: 300,
        paused: false,
        e2e_processing_latency: latency(9, &[(0.99, 2_500_000), (1.0, 3_000_000_000)]),
        disk: DiskCounters::default(),
    };
    let mut commits = rsq_diskqueue::CommitSnapshot::default();
    commits.latency_buckets[0] = 2;
    commits.latency_buckets[3] = 1;
    commits.latency_sum = std::time::Duration::from_micros(1200);
    commits.records_buckets[1] = 3;
    commits.records_sum = 6;
    Stats {
        version: VERSION,
        health: "OK".into(),
        start_time: 1000,
        topics: Some(vec![topic]),
        memory: None,
        producers: None,
        draining: false,
        disk_bytes: 4096,
        disk_full: false,
        replicated_topics: None,
        daemon: DaemonStats {
            connections: 2,
            topic_count: 1,
            healthy: true,
            durable,
            commits,
        },
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn the_exposition_has_nsq_exporters_names_and_prometheus_conventions() {
    let text = render(snapshot(false), 1060, Format::Prometheus).unwrap();
    let l = lines(&text);
    for expected in [
        "# TYPE nsq_build_info gauge",
        &format!("nsq_build_info{{version=\"{VERSION}\"}} 1"),
        "nsq_uptime_seconds 60",
        "nsq_start_time_seconds 1000",
        "nsq_connections 2",
        "nsq_draining 0",
        "nsq_disk_bytes 4096",
        "nsq_disk_full 0",
        "nsq_topics 1",
        "nsq_channels 1",
        "nsq_topic_depth{topic=\"t\",paused=\"false\"} 20",
        "nsq_topic_message_count{topic=\"t\",paused=\"false\"} 30",
        "# TYPE nsq_topic_message_bytes_total counter",
        "nsq_topic_message_bytes_total{topic=\"t\"} 300",
        "nsq_topic_e2e_latency_99_percentile{topic=\"t\",paused=\"false\"} 2500000",
        "nsq_topic_e2e_processing_latency_seconds{topic=\"t\",quantile=\"1\"} 3.0",
        "nsq_topic_e2e_processing_latency_samples{topic=\"t\"} 9",
        "nsq_channel_depth{topic=\"t\",channel=\"c\",paused=\"true\"} 3",
        "nsq_channel_in_flight_count{topic=\"t\",channel=\"c\",paused=\"true\"} 1",
        "nsq_channel_deferred_count{topic=\"t\",channel=\"c\",paused=\"true\"} 4",
        "nsq_channel_requeue_count{topic=\"t\",channel=\"c\",paused=\"true\"} 5",
        "nsq_channel_timeout_count{topic=\"t\",channel=\"c\",paused=\"true\"} 6",
        "nsq_channel_client_count{topic=\"t\",channel=\"c\",paused=\"true\"} 7",
        "nsq_channel_e2e_latency_99p{topic=\"t\",channel=\"c\",paused=\"true\"} 2500000",
        "nsq_channel_e2e_processing_latency_seconds{topic=\"t\",channel=\"c\",quantile=\"0.99\"} 0.0025",
        "nsq_channel_paused{topic=\"t\",channel=\"c\"} 1",
        "# TYPE nsq_channel_dead_letter_total counter",
        "nsq_channel_dead_letter_total{topic=\"t\",channel=\"c\"} 13",
        "# TYPE nsq_channel_disk_corrupt_records_total counter",
        "nsq_channel_disk_corrupt_records_total{topic=\"t\",channel=\"c\"} 11",
        "nsq_channel_disk_quarantined_files_total{topic=\"t\",channel=\"c\"} 12",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    // 0.95 is not configured: nsq_exporter's 95th percentile has no sample.
    assert!(!text.contains("nsq_channel_e2e_latency_95p{"), "{text}");
    assert!(!text.contains("nsq_disk_commit"), "not --durable");
    // Every sample's family is declared once, HELP then TYPE.
    let types = l.iter().filter(|l| l.starts_with("# TYPE ")).count();
    let helps = l.iter().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(types, helps);
}

#[test]
fn durable_commits_are_cumulative_histograms() {
    let text = render(snapshot(true), 1060, Format::Prometheus).unwrap();
    let l = lines(&text);
    for expected in [
        "# TYPE nsq_disk_commit_duration_seconds histogram",
        "nsq_disk_commit_duration_seconds_bucket{le=\"0.0001\"} 2",
        "nsq_disk_commit_duration_seconds_bucket{le=\"0.0005\"} 2",
        "nsq_disk_commit_duration_seconds_bucket{le=\"0.001\"} 3",
        "nsq_disk_commit_duration_seconds_bucket{le=\"+Inf\"} 3",
        "nsq_disk_commit_duration_seconds_sum 0.0012",
        "nsq_disk_commit_duration_seconds_count 3",
        "nsq_disk_commit_records_bucket{le=\"1\"} 0",
        "nsq_disk_commit_records_bucket{le=\"2\"} 3",
        "nsq_disk_commit_records_sum 6.0",
        "nsq_disk_commit_records_count 3",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn openmetrics_is_the_same_figures_with_an_eof() {
    let text = render(snapshot(true), 1060, Format::OpenMetrics).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE nsq_build info\n"), "{text}");
    assert!(
        text.contains("nsq_channel_disk_corrupt_records_total{topic=\"t\",channel=\"c\"} 11\n"),
        "{text}"
    );
    assert_eq!(
        Format::from_param(Some("openmetrics")),
        Some(Format::OpenMetrics)
    );
    assert_eq!(Format::from_param(None), Some(Format::Prometheus));
    assert_eq!(Format::from_param(Some("json")), None);
}

#[test]
fn replicated_topics_are_gauges_by_topic() {
    let mut stats = snapshot(false);
    stats.replicated_topics = Some(
        [(
            "orders".to_string(),
            crate::stats::ReplicatedTopicReport {
                replicas: 3,
                role: "leader",
                leader: Some("127.0.0.1:4160".into()),
                term: 4,
                commit_index: 99,
                delivering: true,
                stopped: None,
            },
        )]
        .into_iter()
        .collect(),
    );
    let text = render(stats, 1060, Format::Prometheus).unwrap();
    let l = lines(&text);
    for expected in [
        "rsq_replicated_topic_leader{topic=\"orders\"} 1",
        "rsq_replicated_topic_term{topic=\"orders\"} 4",
        "rsq_replicated_topic_commit_index{topic=\"orders\"} 99",
        "rsq_replicated_topic_stopped{topic=\"orders\"} 0",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
    }
    let plain = render(snapshot(false), 1060, Format::Prometheus).unwrap();
    assert!(!plain.contains("rsq_replicated"), "no cluster, no family");
}
