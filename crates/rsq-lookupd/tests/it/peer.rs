//! rsqd's lookupd peer client (`crates/rsqd/src/lookup.rs`, compiled into
//! this test binary by path) against the real rsq-lookupd: IDENTIFY and the
//! snapshot's REGISTERs on connect, REGISTER/UNREGISTER as things change,
//! re-registration after lookupd restarts, resynchronization after a queue
//! overflow, and removal on shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsq_lookupd::Options;
use serde_json::json;

use crate::harness::{bounded, Lookupd};
use crate::lookup::{LookupConfig, LookupPeers, PeerIdentity, Snapshot};

/// The daemon's topics as the test changes them: topic -> channels.
type State = Arc<Mutex<Vec<(String, Vec<String>)>>>;

fn state(topics: &[(&str, &[&str])]) -> State {
    Arc::new(Mutex::new(
        topics
            .iter()
            .map(|(t, cs)| (t.to_string(), cs.iter().map(|c| c.to_string()).collect()))
            .collect(),
    ))
}

fn snapshot(state: &State) -> Snapshot {
    let state = state.clone();
    Arc::new(move || state.lock().unwrap().clone())
}

fn identity(name: &str, tcp_port: u16) -> PeerIdentity {
    PeerIdentity {
        version: "0.1.0".into(),
        tcp_port,
        http_port: tcp_port + 1,
        hostname: format!("{name}-host"),
        broadcast_address: name.into(),
    }
}

fn fast() -> LookupConfig {
    LookupConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..LookupConfig::default()
    }
}

fn broadcast_addresses(lookup: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = lookup["producers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["broadcast_address"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn peer_identifies_registers_and_follows_changes() {
    let lookupd = Lookupd::start().await;
    let daemon = state(&[("a", &[]), ("b", &["c1", "c2#ephemeral"])]);
    let peers = LookupPeers::new(identity("rsqd1", 4150), fast(), snapshot(&daemon));
    peers.set_addresses(&[lookupd.tcp.to_string()]);
    assert_eq!(peers.addresses(), [lookupd.tcp.to_string()]);

    let nodes = lookupd
        .wait_json("/nodes", "rsqd1 registered", |v| {
            v["producers"][0]["topics"] == json!(["a", "b"])
        })
        .await;
    let node = &nodes["producers"][0];
    assert_eq!(node["broadcast_address"], "rsqd1");
    assert_eq!(node["hostname"], "rsqd1-host");
    assert_eq!(
        (node["tcp_port"].as_u64(), node["http_port"].as_u64()),
        (Some(4150), Some(4151))
    );
    assert_eq!(node["version"], "0.1.0");
    let b = lookupd.get_json("/lookup?topic=b").await;
    assert_eq!(b["channels"], json!(["c1", "c2#ephemeral"]));

    // The daemon creates and deletes things.
    peers.register("x", None);
    peers.register("x", Some("y#ephemeral"));
    lookupd
        .wait_json("/channels?topic=x", "x/y registered", |v| {
            v["channels"] == json!(["y#ephemeral"])
        })
        .await;
    peers.unregister("x", Some("y#ephemeral"));
    peers.unregister("x", None);
    peers.unregister("b", Some("c2#ephemeral"));
    lookupd
        .wait_json("/lookup?topic=x", "x unregistered", |v| {
            v["producers"] == json!([]) && v["channels"] == json!([])
        })
        .await;
    lookupd
        .wait_json("/channels?topic=b", "b/c2 unregistered", |v| {
            v["channels"] == json!(["c1"])
        })
        .await;

    // Shutdown closes the connection: lookupd forgets the daemon.
    bounded("shutdown", peers.shutdown()).await;
    assert!(peers.addresses().is_empty());
    lookupd
        .wait_json("/nodes", "rsqd1 gone", |v| v["producers"] == json!([]))
        .await;
    let a = lookupd.get_json("/lookup?topic=a").await;
    assert_eq!(a["producers"], json!([]));
}

#[tokio::test]
async fn two_daemons_one_lookupd() {
    let lookupd = Lookupd::start().await;
    let d1 = state(&[("t", &["c"])]);
    let d2 = state(&[("t", &[]), ("only2", &[])]);
    let p1 = LookupPeers::new(identity("rsqd1", 4150), fast(), snapshot(&d1));
    let p2 = LookupPeers::new(identity("rsqd2", 4250), fast(), snapshot(&d2));
    p1.set_addresses(&[lookupd.tcp.to_string()]);
    p2.set_addresses(&[lookupd.tcp.to_string()]);
    let t = lookupd
        .wait_json("/lookup?topic=t", "both producers of t", |v| {
            broadcast_addresses(v) == ["rsqd1", "rsqd2"]
        })
        .await;
    assert_eq!(t["channels"], json!(["c"]));
    let only2 = lookupd.get_json("/lookup?topic=only2").await;
    assert_eq!(broadcast_addresses(&only2), ["rsqd2"]);
    // Removing the lookupd address from one daemon disconnects it.
    p1.set_addresses(&[]);
    lookupd
        .wait_json("/lookup?topic=t", "rsqd1 gone", |v| {
            broadcast_addresses(v) == ["rsqd2"]
        })
        .await;
    p2.shutdown().await;
}

#[tokio::test]
async fn peer_reregisters_after_lookupd_restarts() {
    let mut lookupd = Lookupd::start().await;
    let (tcp, http) = (lookupd.tcp, lookupd.http);
    let daemon = state(&[("before", &["c"])]);
    let peers = LookupPeers::new(identity("rsqd1", 4150), fast(), snapshot(&daemon));
    // A lookupd that is not up yet is retried too.
    let later_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    peers.set_addresses(&[tcp.to_string(), later_addr.to_string()]);
    lookupd
        .wait_json("/lookup?topic=before", "registered", |v| {
            broadcast_addresses(v) == ["rsqd1"]
        })
        .await;

    lookupd.stop().await;
    // While lookupd is down the daemon gains a topic; requests sent now are
    // lost, and the snapshot on reconnect covers them.
    daemon
        .lock()
        .unwrap()
        .push(("during".to_string(), vec!["d".to_string()]));
    peers.register("during", Some("d"));
    let lookupd = Lookupd::start_on(tcp, http, Options::default()).await;
    lookupd
        .wait_json("/lookup?topic=during", "re-registered after restart", |v| {
            broadcast_addresses(v) == ["rsqd1"] && v["channels"] == json!(["d"])
        })
        .await;
    let before = lookupd.get_json("/lookup?topic=before").await;
    assert_eq!(broadcast_addresses(&before), ["rsqd1"]);

    // The lookupd that was never up comes up on its address and gets
    // everything too.
    let second = Lookupd::start_on(
        later_addr,
        "127.0.0.1:0".parse().unwrap(),
        Options::default(),
    )
    .await;
    second
        .wait_json("/topics", "second lookupd registered", |v| {
            v["topics"] == json!(["before", "during"])
        })
        .await;
    peers.shutdown().await;
}

#[tokio::test]
async fn queue_overflow_resynchronizes_from_the_snapshot() {
    let lookupd = Lookupd::start().await;
    let daemon = state(&[]);
    let config = LookupConfig {
        queue_max: 1,
        ..fast()
    };
    let peers = LookupPeers::new(identity("rsqd1", 4150), config, snapshot(&daemon));
    peers.set_addresses(&[lookupd.tcp.to_string()]);
    lookupd
        .wait_json("/nodes", "connected", |v| {
            v["producers"].as_array().is_some_and(|p| p.len() == 1)
        })
        .await;
    // Far more requests than the queue holds, all at once.
    let names: Vec<String> = (0..50).map(|i| format!("t{i:02}")).collect();
    for name in &names {
        daemon.lock().unwrap().push((name.clone(), Vec::new()));
        peers.register(name, None);
    }
    lookupd
        .wait_json("/topics", "every topic registered", |v| {
            v["topics"]
                .as_array()
                .is_some_and(|t| t.len() == names.len())
        })
        .await;
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(
        nodes["producers"][0]["topics"].as_array().unwrap().len(),
        50
    );
    peers.shutdown().await;
}
