//! Unit tests of the registration database, with time passed in explicitly.

use std::time::{Duration, Instant};

use super::*;

const LIVENESS: Liveness = Liveness {
    inactive_producer_timeout: Duration::from_secs(300),
    tombstone_lifetime: Duration::from_secs(45),
};

fn peer(n: u16) -> PeerInfo {
    PeerInfo {
        id: format!("127.0.0.1:{}", 50000 + n),
        remote_address: format!("127.0.0.1:{}", 50000 + n),
        hostname: format!("host{n}"),
        broadcast_address: format!("node{n}"),
        tcp_port: 4150,
        http_port: 4151,
        version: "1.3.0".to_string(),
    }
}

fn ids(lookup: &Lookup) -> Vec<String> {
    lookup.producers.iter().map(|p| p.id.clone()).collect()
}

/// A registry with peers 1 and 2 identified at `t0`.
fn two_peers(t0: Instant) -> (Registry, String, String) {
    let mut r = Registry::new();
    let (a, b) = (peer(1), peer(2));
    assert!(r.handle_identify(a.clone(), t0));
    assert!(r.handle_identify(b.clone(), t0));
    (r, a.id, b.id)
}

#[test]
fn identify_twice_with_the_same_id_is_refused() {
    let t0 = Instant::now();
    let (mut r, _, _) = two_peers(t0);
    assert!(!r.handle_identify(peer(1), t0));
    assert_eq!(r.peer(&peer(1).id), Some(&peer(1)));
}

#[test]
fn register_channel_registers_topic_too() {
    let t0 = Instant::now();
    let (mut r, a, b) = two_peers(t0);
    assert!(r.handle_register(&a, "t", Some("c")));
    assert!(r.handle_register(&b, "t", None));
    assert!(r.handle_register(&b, "u", None));
    assert_eq!(r.topics(), ["t", "u"]);
    assert_eq!(r.channels("t"), ["c"]);
    assert!(r.channels("u").is_empty());
    let found = r.lookup("t", t0, LIVENESS).expect("topic t");
    assert_eq!(found.channels, ["c"]);
    assert_eq!(ids(&found), [a.as_str(), b.as_str()]);
    assert!(r.lookup("nope", t0, LIVENESS).is_none());
    r.assert_consistent();
}

#[test]
fn register_from_an_unknown_peer_changes_nothing() {
    let mut r = Registry::new();
    assert!(!r.handle_register("1.2.3.4:5", "t", Some("c")));
    assert!(r.topics().is_empty());
}

#[test]
fn unregister_channel_keeps_topic_and_other_producers() {
    let t0 = Instant::now();
    let (mut r, a, b) = two_peers(t0);
    r.handle_register(&a, "t", Some("c"));
    r.handle_register(&b, "t", Some("c"));
    assert_eq!(r.handle_unregister(&a, "t", Some("c")), 0);
    // The channel registration stays (it is not ephemeral), and a is still
    // a producer of the topic.
    assert_eq!(r.channels("t"), ["c"]);
    assert_eq!(ids(&r.lookup("t", t0, LIVENESS).expect("t")), [a, b]);
    r.assert_consistent();
}

#[test]
fn unregister_topic_removes_producer_from_its_channels() {
    let t0 = Instant::now();
    let (mut r, a, b) = two_peers(t0);
    r.handle_register(&a, "t", Some("c1"));
    r.handle_register(&a, "t", Some("c2"));
    r.handle_register(&b, "t", None);
    assert_eq!(r.handle_unregister(&a, "t", None), 2);
    assert_eq!(ids(&r.lookup("t", t0, LIVENESS).expect("t")), [b.as_str()]);
    // Non-ephemeral registrations outlive their producers.
    assert_eq!(r.channels("t"), ["c1", "c2"]);
    r.handle_unregister(&b, "t", None);
    assert_eq!(r.topics(), ["t"]);
    assert!(r.lookup("t", t0, LIVENESS).expect("t").producers.is_empty());
    r.assert_consistent();
}

#[test]
fn ephemeral_registrations_go_with_their_last_producer() {
    let t0 = Instant::now();
    let (mut r, a, b) = two_peers(t0);
    r.handle_register(&a, "t", Some("c#ephemeral"));
    r.handle_register(&b, "t", Some("c#ephemeral"));
    r.handle_register(&a, "e#ephemeral", None);
    r.handle_unregister(&a, "t", Some("c#ephemeral"));
    assert_eq!(r.channels("t"), ["c#ephemeral"]);
    r.handle_unregister(&b, "t", Some("c#ephemeral"));
    assert!(r.channels("t").is_empty());
    r.handle_unregister(&a, "e#ephemeral", None);
    assert_eq!(r.topics(), ["t"]);
    r.assert_consistent();
}

#[test]
fn close_removes_every_registration_of_the_peer() {
    let t0 = Instant::now();
    let (mut r, a, b) = two_peers(t0);
    r.handle_register(&a, "t", Some("c"));
    r.handle_register(&a, "t", Some("c#ephemeral"));
    r.handle_register(&a, "x#ephemeral", None);
    r.handle_register(&b, "t", None);
    r.handle_close(&a);
    assert!(r.peer(&a).is_none());
    assert_eq!(ids(&r.lookup("t", t0, LIVENESS).expect("t")), [b.as_str()]);
    assert_eq!(r.topics(), ["t"]);
    assert_eq!(r.channels("t"), ["c"]);
    assert_eq!(r.nodes(t0, LIVENESS).len(), 1);
    r.assert_consistent();
    // Closing twice, or an unknown peer, is harmless.
    r.handle_close(&a);
    r.handle_close("nobody");
    r.assert_consistent();
}

#[test]
fn inactive_producers_drop_out_until_they_ping() {
    let t0 = Instant::now();
    let (mut r, a, b) = two_peers(t0);
    r.handle_register(&a, "t", None);
    r.handle_register(&b, "t", None);
    let timeout = LIVENESS.inactive_producer_timeout;
    r.handle_ping(&b, t0 + timeout);
    // Exactly at the timeout both are still active.
    assert_eq!(
        r.lookup("t", t0 + timeout, LIVENESS)
            .expect("t")
            .producers
            .len(),
        2
    );
    let later = t0 + timeout + Duration::from_millis(1);
    assert_eq!(
        ids(&r.lookup("t", later, LIVENESS).expect("t")),
        [b.as_str()]
    );
    assert_eq!(r.nodes(later, LIVENESS).len(), 1);
    r.handle_ping(&a, later);
    assert_eq!(
        r.lookup("t", later, LIVENESS).expect("t").producers.len(),
        2
    );
    assert_eq!(r.nodes(later, LIVENESS).len(), 2);
}

#[test]
fn tombstone_hides_from_lookup_not_nodes_and_expires() {
    let t0 = Instant::now();
    let (mut r, a, b) = two_peers(t0);
    r.handle_register(&a, "t", Some("c"));
    r.handle_register(&a, "u", None);
    r.handle_register(&b, "t", None);
    assert_eq!(r.tombstone("t", "node1:4151", t0), 1);
    assert_eq!(r.tombstone("t", "node9:4151", t0), 0);
    assert_eq!(r.tombstone("missing", "node1:4151", t0), 0);
    assert_eq!(ids(&r.lookup("t", t0, LIVENESS).expect("t")), [b.as_str()]);
    // The tombstone is per topic: a still serves u.
    assert_eq!(ids(&r.lookup("u", t0, LIVENESS).expect("u")), [a.as_str()]);
    let nodes = r.nodes(t0, LIVENESS);
    let node_a = nodes.iter().find(|n| n.info.id == a).expect("a listed");
    assert_eq!(node_a.topics, ["t", "u"]);
    assert_eq!(node_a.tombstones, [true, false]);
    // Re-registering does not lift the tombstone; the lifetime does.
    r.handle_register(&a, "t", None);
    let almost = t0 + LIVENESS.tombstone_lifetime - Duration::from_millis(1);
    assert_eq!(
        r.lookup("t", almost, LIVENESS).expect("t").producers.len(),
        1
    );
    let after = t0 + LIVENESS.tombstone_lifetime;
    assert_eq!(
        r.lookup("t", after, LIVENESS).expect("t").producers.len(),
        2
    );
    let nodes = r.nodes(after, LIVENESS);
    let node_a = nodes.iter().find(|n| n.info.id == a).expect("a listed");
    assert_eq!(node_a.tombstones, [false, false]);
}

#[test]
fn http_create_and_delete() {
    let t0 = Instant::now();
    let (mut r, a, _) = two_peers(t0);
    r.create_topic("t");
    r.create_channel("u", "c");
    assert_eq!(r.topics(), ["t", "u"]);
    assert_eq!(r.channels("u"), ["c"]);
    let empty = r.lookup("t", t0, LIVENESS).expect("t");
    assert!(empty.channels.is_empty() && empty.producers.is_empty());
    r.handle_register(&a, "u", Some("d"));
    assert!(r.delete_channel("u", "c"));
    assert!(!r.delete_channel("u", "c"));
    assert!(!r.delete_channel("nope", "c"));
    assert_eq!(r.channels("u"), ["d"]);
    assert!(r.delete_topic("u"));
    assert!(!r.delete_topic("u"));
    assert!(r.lookup("u", t0, LIVENESS).is_none());
    assert!(r.channels("u").is_empty());
    // The producer is still connected, just without topics.
    let nodes = r.nodes(t0, LIVENESS);
    assert!(nodes.iter().all(|n| n.topics.is_empty()));
    r.assert_consistent();
}

#[test]
fn lookup_serializes_in_nsqlookupd_shape() {
    let t0 = Instant::now();
    let (mut r, a, _) = two_peers(t0);
    r.handle_register(&a, "t", Some("c"));
    let json = serde_json::to_value(r.lookup("t", t0, LIVENESS).expect("t")).expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "channels": ["c"],
            "producers": [{
                "remote_address": "127.0.0.1:50001",
                "hostname": "host1",
                "broadcast_address": "node1",
                "tcp_port": 4150,
                "http_port": 4151,
                "version": "1.3.0",
            }],
        })
    );
    let nodes = serde_json::to_value(r.nodes(t0, LIVENESS)).expect("json");
    assert_eq!(nodes[0]["topics"], serde_json::json!(["t"]));
    assert_eq!(nodes[0]["tombstones"], serde_json::json!([false]));
    assert_eq!(nodes[0]["broadcast_address"], "node1");
    assert_eq!(nodes[1]["topics"], serde_json::json!([]));
}
