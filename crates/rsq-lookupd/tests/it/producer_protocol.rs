//! The producer protocol over real TCP: magic, IDENTIFY, REGISTER,
//! UNREGISTER, PING, errors, and what a closed connection leaves behind.

use bytes::BytesMut;
use rsq_codec::lookup::Request;

use crate::harness::{Lookupd, Producer, identify_body};

#[tokio::test]
async fn bad_magic_gets_length_prefixed_bad_protocol_and_close() {
    let lookupd = Lookupd::start().await;
    let mut p = Producer::connect_raw(lookupd.tcp).await;
    p.send(b"  V2").await;
    assert_eq!(p.reply().await, "E_BAD_PROTOCOL");
    assert!(p.is_closed().await);
}

#[tokio::test]
async fn identify_replies_with_lookupds_own_details() {
    let lookupd = Lookupd::start().await;
    let mut p = Producer::connect(lookupd.tcp).await;
    // PING before IDENTIFY is allowed and answered.
    assert_eq!(p.command("PING").await, "OK");
    let reply = p.identify(&identify_body("n1", 4150)).await;
    let info: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(info["tcp_port"], lookupd.tcp.port());
    assert_eq!(info["http_port"], lookupd.http.port());
    assert_eq!(info["broadcast_address"], "lookupd.test");
    assert_eq!(info["version"], rsq_lookupd::options::VERSION);
    assert!(info["hostname"].is_string());
    assert_eq!(p.command("PING").await, "OK");
}

#[tokio::test]
async fn register_before_identify_is_fatal() {
    let lookupd = Lookupd::start().await;
    let mut p = Producer::connect(lookupd.tcp).await;
    assert_eq!(
        p.command("REGISTER t").await,
        "E_INVALID client must IDENTIFY"
    );
    assert!(p.is_closed().await);
    let topics = lookupd.get_json("/topics").await;
    assert_eq!(topics, serde_json::json!({"topics": []}));
}

#[tokio::test]
async fn errors_are_nsqlookupds_and_close_the_connection() {
    let lookupd = Lookupd::start().await;
    for (line, expected) in [
        (
            "REGISTER bad!topic",
            "E_BAD_TOPIC REGISTER topic name 'bad!topic' is not valid",
        ),
        (
            "UNREGISTER t bad:chan",
            "E_BAD_CHANNEL UNREGISTER channel name 'bad:chan' is not valid",
        ),
        (
            "REGISTER",
            "E_INVALID REGISTER insufficient number of params",
        ),
        ("SUB t c", "E_INVALID invalid command SUB"),
    ] {
        let mut p = Producer::identified(lookupd.tcp, "n1", 4150).await;
        assert_eq!(p.command("REGISTER keep c").await, "OK");
        assert_eq!(p.command(line).await, expected);
        assert!(p.is_closed().await, "{line} must close the connection");
    }
    let mut p = Producer::identified(lookupd.tcp, "n1", 4150).await;
    assert_eq!(
        p.identify(&identify_body("n1", 4150)).await,
        "E_INVALID cannot IDENTIFY again"
    );
    let mut p = Producer::connect(lookupd.tcp).await;
    assert_eq!(
        p.identify(r#"{"version":"1.3.0","tcp_port":4150}"#).await,
        "E_BAD_BODY IDENTIFY missing fields"
    );
    // Every failed connection took its registrations with it.
    let lookup = lookupd
        .wait_json("/lookup?topic=keep", "producers gone", |v| {
            v["producers"].as_array().is_some_and(|p| p.is_empty())
        })
        .await;
    assert_eq!(lookup["channels"], serde_json::json!(["c"]));
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let lookupd = Lookupd::start().await;
    let mut p = Producer::identified(lookupd.tcp, "n1", 4150).await;
    let mut pipelined = BytesMut::new();
    for request in [
        Request::register("a", None),
        Request::register("b", Some("c")),
        Request::Ping,
        Request::unregister("a", None),
    ] {
        request.encode(&mut pipelined);
    }
    p.send(&pipelined).await;
    for _ in 0..4 {
        assert_eq!(p.reply().await, "OK");
    }
    let lookup = lookupd.get_json("/lookup?topic=b").await;
    assert_eq!(lookup["channels"], serde_json::json!(["c"]));
    assert_eq!(lookup["producers"].as_array().unwrap().len(), 1);
    let a = lookupd.get_json("/lookup?topic=a").await;
    assert_eq!(a["producers"], serde_json::json!([]));
}

#[tokio::test]
async fn connection_close_drops_all_registrations() {
    let lookupd = Lookupd::start().await;
    let mut keep = Producer::identified(lookupd.tcp, "n1", 4150).await;
    let mut gone = Producer::identified(lookupd.tcp, "n2", 4250).await;
    assert_eq!(keep.command("REGISTER t").await, "OK");
    assert_eq!(gone.command("REGISTER t c").await, "OK");
    assert_eq!(gone.command("REGISTER t e#ephemeral").await, "OK");
    assert_eq!(gone.command("REGISTER u").await, "OK");
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(nodes["producers"].as_array().unwrap().len(), 2);
    drop(gone);
    let lookup = lookupd
        .wait_json("/lookup?topic=t", "n2 gone from t", |v| {
            v["producers"].as_array().is_some_and(|p| p.len() == 1)
        })
        .await;
    assert_eq!(lookup["producers"][0]["broadcast_address"], "n1");
    // The ephemeral channel went with its only producer; the others stay
    // registered (without producers) as in nsqlookupd.
    assert_eq!(lookup["channels"], serde_json::json!(["c"]));
    let u = lookupd.get_json("/lookup?topic=u").await;
    assert_eq!(u["producers"], serde_json::json!([]));
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(nodes["producers"].as_array().unwrap().len(), 1);
}
