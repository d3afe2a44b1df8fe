//! Time-based visibility over the real servers: a producer that stops
//! pinging drops out after `--inactive-producer-timeout` and comes back with
//! its next PING; a tombstone lasts `--tombstone-lifetime`. The durations
//! are made small and every wait is a bounded poll (the exact boundaries
//! are tested with explicit instants in the registry's unit tests).

use std::time::Duration;

use rsq_lookupd::Options;

use crate::harness::{Lookupd, Producer};

fn producers(v: &serde_json::Value) -> usize {
    v["producers"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn inactive_producer_drops_out_until_it_pings() {
    let lookupd = Lookupd::start_with(Options {
        inactive_producer_timeout: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let mut p = Producer::identified(lookupd.tcp, "n1", 4150).await;
    assert_eq!(p.command("REGISTER t c").await, "OK");
    assert_eq!(producers(&lookupd.get_json("/lookup?topic=t").await), 1);
    lookupd
        .wait_json("/lookup?topic=t", "producer inactive", |v| {
            producers(v) == 0
        })
        .await;
    lookupd
        .wait_json("/nodes", "node inactive", |v| producers(v) == 0)
        .await;
    // Its registrations are kept, so one PING brings it back.
    assert_eq!(p.command("PING").await, "OK");
    let lookup = lookupd.get_json("/lookup?topic=t").await;
    assert_eq!(producers(&lookup), 1);
    assert_eq!(lookup["channels"], serde_json::json!(["c"]));
    assert_eq!(producers(&lookupd.get_json("/nodes").await), 1);
}

#[tokio::test]
async fn tombstone_expires_after_its_lifetime() {
    let lookupd = Lookupd::start_with(Options {
        tombstone_lifetime: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let mut p = Producer::identified(lookupd.tcp, "n1", 4150).await;
    assert_eq!(p.command("REGISTER t").await, "OK");
    let started = tokio::time::Instant::now();
    let res = lookupd
        .request("POST", "/topic/tombstone?topic=t&node=n1:4151")
        .await;
    assert_eq!(res.status, 200);
    // Hidden now (unless this machine stalled past the lifetime already).
    let lookup = lookupd.get_json("/lookup?topic=t").await;
    if started.elapsed() < Duration::from_millis(400) {
        assert_eq!(producers(&lookup), 0);
    }
    lookupd
        .wait_json("/lookup?topic=t", "tombstone expired", |v| {
            producers(v) == 1
        })
        .await;
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(
        nodes["producers"][0]["tombstones"],
        serde_json::json!([false])
    );
}
