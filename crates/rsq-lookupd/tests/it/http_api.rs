//! The HTTP API against registrations made over real TCP: nsqlookupd's
//! response shapes, status codes and error bodies.

use serde_json::json;

use crate::harness::{Lookupd, Producer};

#[tokio::test]
async fn lookup_topics_channels_nodes_have_nsqlookupds_shapes() {
    let lookupd = Lookupd::start().await;
    let mut p1 = Producer::identified(lookupd.tcp, "n1", 4150).await;
    let mut p2 = Producer::identified(lookupd.tcp, "n2", 4250).await;
    assert_eq!(p1.command("REGISTER t c1").await, "OK");
    assert_eq!(p1.command("REGISTER t c2").await, "OK");
    assert_eq!(p1.command("REGISTER u").await, "OK");
    assert_eq!(p2.command("REGISTER t").await, "OK");

    let lookup = lookupd.get_json("/lookup?topic=t").await;
    let producer = |p: &Producer, name: &str, port: u16| {
        json!({
            "remote_address": p.local_addr().to_string(),
            "hostname": format!("{name}-host"),
            "broadcast_address": name,
            "tcp_port": port,
            "http_port": port + 1,
            "version": "1.3.0",
        })
    };
    let mut producers = lookup["producers"].as_array().unwrap().clone();
    producers.sort_by_key(|p| p["broadcast_address"].as_str().unwrap().to_string());
    assert_eq!(
        producers,
        [producer(&p1, "n1", 4150), producer(&p2, "n2", 4250)]
    );
    assert_eq!(lookup["channels"], json!(["c1", "c2"]));
    assert_eq!(
        lookupd.get_json("/topics").await,
        json!({"topics": ["t", "u"]})
    );
    assert_eq!(
        lookupd.get_json("/channels?topic=t").await,
        json!({"channels": ["c1", "c2"]})
    );
    assert_eq!(
        lookupd.get_json("/channels?topic=none").await,
        json!({"channels": []})
    );

    let nodes = lookupd.get_json("/nodes").await;
    let mut nodes = nodes["producers"].as_array().unwrap().clone();
    nodes.sort_by_key(|p| p["broadcast_address"].as_str().unwrap().to_string());
    let mut n1 = producer(&p1, "n1", 4150);
    n1["tombstones"] = json!([false, false]);
    n1["topics"] = json!(["t", "u"]);
    let mut n2 = producer(&p2, "n2", 4250);
    n2["tombstones"] = json!([false]);
    n2["topics"] = json!(["t"]);
    assert_eq!(nodes, [n1, n2]);
}

#[tokio::test]
async fn ping_info_headers_and_errors() {
    let lookupd = Lookupd::start().await;
    let ping = lookupd.request("GET", "/ping").await;
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    assert!(ping.head.contains("x-nsq-content-type: nsq; version=1.0"));
    assert_eq!(
        lookupd.get_json("/info").await,
        json!({"version": rsq_lookupd::options::VERSION})
    );
    for (method, path, status, message) in [
        ("GET", "/lookup", 400, "MISSING_ARG_TOPIC"),
        ("GET", "/lookup?topic=nope", 404, "TOPIC_NOT_FOUND"),
        ("GET", "/channels", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/topic/create", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/topic/create?topic=bad!", 400, "INVALID_ARG_TOPIC"),
        ("POST", "/topic/delete", 400, "MISSING_ARG_TOPIC"),
        (
            "POST",
            "/channel/create?topic=t",
            400,
            "MISSING_ARG_CHANNEL",
        ),
        (
            "POST",
            "/channel/create?topic=t&channel=a:b",
            400,
            "INVALID_ARG_CHANNEL",
        ),
        (
            "POST",
            "/channel/delete?topic=t&channel=c",
            404,
            "CHANNEL_NOT_FOUND",
        ),
        ("POST", "/topic/tombstone?topic=t", 400, "MISSING_ARG_NODE"),
        (
            "POST",
            "/topic/tombstone?node=n:1",
            400,
            "MISSING_ARG_TOPIC",
        ),
        ("GET", "/topic/create?topic=t", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/nothing", 404, "NOT_FOUND"),
    ] {
        let res = lookupd.request(method, path).await;
        assert_eq!(res.status, status, "{method} {path}: {}", res.body);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&res.body).unwrap(),
            json!({ "message": message }),
            "{method} {path}"
        );
        assert!(res.head.contains("x-nsq-content-type: nsq; version=1.0"));
    }
}

#[tokio::test]
async fn create_and_delete_over_http() {
    let lookupd = Lookupd::start().await;
    let ok = |res: crate::harness::Response| {
        assert_eq!((res.status, res.body.as_str()), (200, ""), "{res:?}");
    };
    ok(lookupd.request("POST", "/topic/create?topic=t").await);
    assert_eq!(
        lookupd.get_json("/lookup?topic=t").await,
        json!({"channels": [], "producers": []})
    );
    ok(lookupd
        .request("POST", "/channel/create?topic=u&channel=c")
        .await);
    assert_eq!(
        lookupd.get_json("/topics").await,
        json!({"topics": ["t", "u"]})
    );
    assert_eq!(
        lookupd.get_json("/channels?topic=u").await,
        json!({"channels": ["c"]})
    );
    ok(lookupd
        .request("POST", "/channel/delete?topic=u&channel=c")
        .await);
    assert_eq!(
        lookupd.get_json("/channels?topic=u").await,
        json!({"channels": []})
    );
    ok(lookupd.request("POST", "/topic/delete?topic=u").await);
    ok(lookupd
        .request("POST", "/topic/delete?topic=never-was")
        .await);
    assert_eq!(lookupd.get_json("/topics").await, json!({"topics": ["t"]}));
}

#[tokio::test]
async fn unregister_and_topic_delete_disappear_from_lookup() {
    let lookupd = Lookupd::start().await;
    let mut p1 = Producer::identified(lookupd.tcp, "n1", 4150).await;
    let mut p2 = Producer::identified(lookupd.tcp, "n2", 4250).await;
    assert_eq!(p1.command("REGISTER t c").await, "OK");
    assert_eq!(p2.command("REGISTER t c").await, "OK");
    assert_eq!(p1.command("REGISTER t e#ephemeral").await, "OK");
    assert_eq!(p1.command("REGISTER gone").await, "OK");

    // A channel UNREGISTER keeps the producer on the topic; the ephemeral
    // channel goes with its last producer.
    assert_eq!(p1.command("UNREGISTER t e#ephemeral").await, "OK");
    let lookup = lookupd.get_json("/lookup?topic=t").await;
    assert_eq!(lookup["channels"], json!(["c"]));
    assert_eq!(lookup["producers"].as_array().unwrap().len(), 2);

    // A topic UNREGISTER removes the producer from the topic's answers.
    assert_eq!(p1.command("UNREGISTER t").await, "OK");
    let lookup = lookupd.get_json("/lookup?topic=t").await;
    assert_eq!(lookup["producers"].as_array().unwrap().len(), 1);
    assert_eq!(lookup["producers"][0]["broadcast_address"], "n2");
    let nodes = lookupd.get_json("/nodes").await;
    let n1 = nodes["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["broadcast_address"] == "n1")
        .unwrap();
    assert_eq!(n1["topics"], json!(["gone"]));

    // /topic/delete forgets the topic whoever produces it.
    let res = lookupd.request("POST", "/topic/delete?topic=gone").await;
    assert_eq!(res.status, 200);
    let res = lookupd.request("GET", "/lookup?topic=gone").await;
    assert_eq!(res.status, 404, "{}", res.body);
    assert_eq!(lookupd.get_json("/topics").await, json!({"topics": ["t"]}));
}

#[tokio::test]
async fn tombstone_hides_a_producer_from_lookup_but_not_nodes() {
    let lookupd = Lookupd::start().await;
    let mut p1 = Producer::identified(lookupd.tcp, "n1", 4150).await;
    let mut p2 = Producer::identified(lookupd.tcp, "n2", 4250).await;
    assert_eq!(p1.command("REGISTER t").await, "OK");
    assert_eq!(p1.command("REGISTER u").await, "OK");
    assert_eq!(p2.command("REGISTER t").await, "OK");
    // The node is broadcast_address:http_port.
    let res = lookupd
        .request("POST", "/topic/tombstone?topic=t&node=n1:4151")
        .await;
    assert_eq!((res.status, res.body.as_str()), (200, ""));
    let lookup = lookupd.get_json("/lookup?topic=t").await;
    let producers = lookup["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 1);
    assert_eq!(producers[0]["broadcast_address"], "n2");
    // Only topic t is affected.
    let u = lookupd.get_json("/lookup?topic=u").await;
    assert_eq!(u["producers"][0]["broadcast_address"], "n1");
    let nodes = lookupd.get_json("/nodes").await;
    let n1 = nodes["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["broadcast_address"] == "n1")
        .expect("tombstoned producer still listed in /nodes");
    assert_eq!(n1["topics"], json!(["t", "u"]));
    assert_eq!(n1["tombstones"], json!([true, false]));
}
