//! Unit tests for the statsd formatting: prefix, deltas, exclusion, packing.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::stats::{ChannelReport, Percentile};

fn channel(name: &str, message_count: u64, depth: u64) -> ChannelReport {
    ChannelReport {
        channel_name: name.to_string(),
        depth,
        backend_depth: 1,
        in_flight_count: 2,
        deferred_count: 3,
        message_count,
        requeue_count: 4,
        timeout_count: 5,
        dead_letter_count: 0,
        max_attempts: 0,
        client_count: 6,
        clients: None,
        paused: false,
        e2e_processing_latency: Latency::default(),
        disk: Default::default(),
    }
}

fn topic(name: &str, message_count: u64, channels: Vec<ChannelReport>) -> TopicReport {
    TopicReport {
        topic_name: name.to_string(),
        channels,
        depth: 7,
        backend_depth: 8,
        message_count,
        message_bytes: message_count * 10,
        paused: false,
        e2e_processing_latency: Latency::default(),
        disk: Default::default(),
    }
}

#[track_caller]
fn check_prefix(template: &str, host: &str, port: u16, expected: &str) {
    assert_eq!(prefix(template, host, port), expected);
}

#[test]
fn prefix_uses_host_key_and_ends_in_a_dot() {
    check_prefix("nsq.%s", "10.0.0.1", 4151, "nsq.10_0_0_1_4151.");
    check_prefix("nsq.%s", "host.example", 80, "nsq.host_example_80.");
    check_prefix("nsq.%s", "::1", 4151, "nsq.[__1]_4151.");
    check_prefix("custom.", "h", 1, "custom.");
    check_prefix("custom", "h", 1, "custom.");
    check_prefix("", "h", 1, "");
}

#[test]
fn first_push_sends_totals_and_all_stats() {
    let topics = vec![topic("t", 5, vec![channel("c", 5, 9)])];
    let (lines, counters) = lines("p.", &topics, &Counters::new(), false);
    assert_eq!(
        lines.concat(),
        "p.topic.t.message_count:5|c\n\
         p.topic.t.message_bytes:50|c\n\
         p.topic.t.depth:7|g\n\
         p.topic.t.backend_depth:8|g\n\
         p.topic.t.channel.c.message_count:5|c\n\
         p.topic.t.channel.c.requeue_count:4|c\n\
         p.topic.t.channel.c.timeout_count:5|c\n\
         p.topic.t.channel.c.depth:9|g\n\
         p.topic.t.channel.c.backend_depth:1|g\n\
         p.topic.t.channel.c.in_flight_count:2|g\n\
         p.topic.t.channel.c.deferred_count:3|g\n\
         p.topic.t.channel.c.clients:6|g\n"
    );
    assert_eq!(counters["topic.t.message_count"], 5);
    assert_eq!(counters["topic.t.channel.c.timeout_count"], 5);
}

#[test]
fn counters_are_deltas_and_gauges_are_values() {
    let (_, first) = lines(
        "",
        &[topic("t", 5, vec![channel("c", 5, 9)])],
        &Counters::new(),
        false,
    );
    let (second, counters) = lines(
        "",
        &[topic("t", 12, vec![channel("c", 8, 4)])],
        &first,
        false,
    );
    assert!(second.contains(&"topic.t.message_count:7|c\n".to_string()));
    assert!(second.contains(&"topic.t.message_bytes:70|c\n".to_string()));
    assert!(second.contains(&"topic.t.channel.c.message_count:3|c\n".to_string()));
    assert!(second.contains(&"topic.t.channel.c.requeue_count:0|c\n".to_string()));
    assert!(second.contains(&"topic.t.channel.c.depth:4|g\n".to_string()));
    assert_eq!(counters["topic.t.message_count"], 12);
    // Recreated between pushes (the count went down): counted from zero.
    let (third, _) = lines("", &[topic("t", 2, vec![])], &counters, false);
    assert_eq!(third[0], "topic.t.message_count:2|c\n");
}

#[test]
fn deleted_objects_are_forgotten() {
    let (_, first) = lines(
        "",
        &[topic("gone", 5, vec![channel("c", 5, 0)])],
        &Counters::new(),
        false,
    );
    let (_, second) = lines("", &[topic("t", 1, vec![])], &first, false);
    assert!(
        second.keys().all(|k| k.starts_with("topic.t.")),
        "{second:?}"
    );
}

#[test]
fn ephemeral_names_are_excluded_only_when_asked() {
    let topics = vec![
        topic(
            "t",
            1,
            vec![channel("c", 1, 0), channel("e#ephemeral", 1, 0)],
        ),
        topic("u#ephemeral", 1, vec![channel("c", 1, 0)]),
    ];
    let (all, _) = lines("", &topics, &Counters::new(), false);
    assert!(all.iter().any(|l| l.contains("#ephemeral")));
    let (kept, counters) = lines("", &topics, &Counters::new(), true);
    assert!(!kept.iter().any(|l| l.contains("#ephemeral")), "{kept:?}");
    assert!(kept.contains(&"topic.t.channel.c.clients:6|g\n".to_string()));
    assert!(!counters.keys().any(|k| k.contains("#ephemeral")));
}

#[test]
fn percentiles_become_gauges_named_by_percent() {
    let mut t = topic("t", 0, vec![channel("c", 0, 0)]);
    t.e2e_processing_latency = Latency {
        count: 3,
        percentiles: Some(vec![
            Percentile {
                quantile: 0.99,
                value: 1500,
            },
            Percentile {
                quantile: 0.5,
                value: 20,
            },
        ]),
    };
    t.channels[0].e2e_processing_latency = Latency {
        count: 1,
        percentiles: Some(vec![Percentile {
            quantile: 1.0,
            value: 7,
        }]),
    };
    let (lines, _) = lines("", &[t], &Counters::new(), false);
    assert!(lines.contains(&"topic.t.e2e_processing_latency_99:1500|g\n".to_string()));
    assert!(lines.contains(&"topic.t.e2e_processing_latency_50:20|g\n".to_string()));
    assert!(lines.contains(&"topic.t.channel.c.e2e_processing_latency_100:7|g\n".to_string()));
}

#[test]
fn packets_hold_whole_lines_within_the_limit() {
    let lines: Vec<String> = ["aaaa\n", "bbb\n", "cc\n", "d\n"]
        .map(String::from)
        .to_vec();
    let packed = packets(&lines, 9);
    assert_eq!(packed, vec![b"aaaa\nbbb\n".to_vec(), b"cc\nd\n".to_vec()]);
    // Exactly at the limit fits; one byte more starts a new datagram.
    assert_eq!(packets(&lines, 14).len(), 1);
    assert_eq!(packets(&lines, 13).len(), 2);
    assert!(packets(&[], 508).is_empty());
}

#[test]
fn a_line_longer_than_the_limit_goes_alone() {
    let lines: Vec<String> = ["ab\n", "a-very-long-line\n", "cd\n"]
        .map(String::from)
        .to_vec();
    let packed = packets(&lines, 5);
    assert_eq!(
        packed,
        vec![
            b"ab\n".to_vec(),
            b"a-very-long-line\n".to_vec(),
            b"cd\n".to_vec()
        ]
    );
    // A limit of zero still sends everything, one line each.
    assert_eq!(packets(&lines, 0).len(), 3);
}

proptest::proptest! {
    #[test]
    fn packing_keeps_every_line_in_order(
        lens in proptest::collection::vec(1usize..40, 0..60),
        max in 1usize..100,
    ) {
        let lines: Vec<String> = lens
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{}\n", char::from(b'a' + (i % 26) as u8).to_string().repeat(*n)))
            .collect();
        let packed = packets(&lines, max);
        proptest::prop_assert_eq!(packed.concat(), lines.concat().into_bytes());
        for p in &packed {
            // Over the limit only when it is one line.
            proptest::prop_assert!(p.len() <= max || p.iter().filter(|b| **b == b'\n').count() == 1);
        }
    }
}

#[test]
fn flags_have_nsqds_defaults() -> anyhow::Result<()> {
    let o = crate::Options::load_from(["rsqd"])?;
    assert_eq!(o.statsd_address, "");
    assert_eq!(o.statsd_prefix, "nsq.%s");
    assert_eq!(o.statsd_interval, Duration::from_secs(60));
    assert!(o.statsd_mem_stats);
    assert_eq!(o.statsd_udp_packet_size, 508);
    assert!(!o.statsd_exclude_ephemeral);
    let o = crate::Options::load_from([
        "rsqd",
        "--statsd-address=127.0.0.1:8125",
        "--statsd-interval=1s",
        "--statsd-mem-stats=false",
        "--statsd-exclude-ephemeral",
    ])?;
    assert_eq!(o.statsd_interval, Duration::from_secs(1));
    assert!(!o.statsd_mem_stats && o.statsd_exclude_ephemeral);
    assert!(
        crate::Options::load_from(["rsqd", "--statsd-address=x:1", "--statsd-interval=0s"])
            .is_err()
    );
    Ok(())
}
