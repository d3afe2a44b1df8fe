//! `--e2e-processing-latency-percentile`: the `/stats` latency blocks per
//! channel and per topic, and the startup check on the quantiles.

use rsq_codec::Command;

use crate::harness::{Daemon, channel_stats};

fn quantiles(block: &serde_json::Value) -> Vec<f64> {
    block["percentiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["quantile"].as_f64().unwrap())
        .collect()
}

#[test]
fn stats_report_configured_percentiles_per_channel_and_topic() {
    let d = Daemon::start(&[
        "--e2e-processing-latency-percentile=0.5",
        "--e2e-processing-latency-percentile=0.99,1.0",
        "--e2e-processing-latency-window-time=1m",
    ]);
    let mut a = d.connect();
    a.subscribe("t", "a");
    a.send(Command::Rdy(10));
    let mut b = d.connect();
    b.subscribe("t", "b");
    b.send(Command::Rdy(10));
    let mut producer = d.connect();
    for n in 0..3 {
        producer.publish("t", format!("m{n}").as_bytes());
    }
    // Channel a finishes all three, channel b only one.
    for _ in 0..3 {
        let m = a.expect_message();
        a.send(Command::Fin(m.id));
    }
    let m = b.expect_message();
    b.send(Command::Fin(m.id));
    d.wait_stats("finishes counted", |s| {
        channel_stats(s, "t", "a").is_some_and(|c| c["e2e_processing_latency"]["count"] == 3)
            && channel_stats(s, "t", "b").is_some_and(|c| c["e2e_processing_latency"]["count"] == 1)
    });
    let s = d.stats();
    let chan = &channel_stats(&s, "t", "a").unwrap()["e2e_processing_latency"];
    // Highest quantile first, as nsqd sorts the flag's values.
    assert_eq!(quantiles(chan), [1.0, 0.99, 0.5]);
    for p in chan["percentiles"].as_array().unwrap() {
        let ns = p["value"].as_i64().unwrap();
        assert!(ns > 0 && ns < 10_000_000_000, "{p}");
    }
    // The topic merges its channels: four finishes.
    let topic = &s["topics"][0]["e2e_processing_latency"];
    assert_eq!(topic["count"], 4, "{topic}");
    assert_eq!(quantiles(topic), [1.0, 0.99, 0.5]);
    // Even when the channel filter shows only one channel.
    let (_, body) = d.http("GET", "/stats?format=json&channel=b", b"");
    let filtered: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(filtered["topics"][0]["e2e_processing_latency"]["count"], 4);
    // The text form lists one human value per quantile.
    let (_, text) = d.http("GET", "/stats", b"");
    let line = text
        .lines()
        .find(|l| l.contains("[a  "))
        .unwrap_or_else(|| panic!("{text}"));
    let values = line.split("e2e%: ").nth(1).unwrap();
    assert_eq!(values.split(", ").count(), 3, "{line}");
    assert!(values.ends_with('s'), "{line}");
}

#[test]
fn stats_latency_is_null_when_not_configured() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    c.subscribe("t", "c");
    c.send(Command::Rdy(1));
    let mut producer = d.connect();
    producer.publish("t", b"x");
    let m = c.expect_message();
    c.send(Command::Fin(m.id));
    d.wait_stats("finished", |s| {
        channel_stats(s, "t", "c").is_some_and(|c| c["in_flight_count"] == 0)
    });
    let s = d.stats();
    let none = serde_json::json!({"count": 0, "percentiles": null});
    assert_eq!(s["topics"][0]["e2e_processing_latency"], none);
    assert_eq!(
        channel_stats(&s, "t", "c").unwrap()["e2e_processing_latency"],
        none
    );
}

#[test]
fn percentiles_outside_zero_one_stop_startup() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rsqd"))
        .arg("--e2e-processing-latency-percentile=0.99,1.5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid E2E processing latency percentile: 1.5"),
        "{out:?}"
    );
}
