//! The HTTP API: routes, status codes and nsqd's JSON error bodies.

use rsq_codec::Command;

use crate::harness::{Daemon, channel_stats};

#[track_caller]
fn check(d: &Daemon, method: &str, path: &str, body: &[u8], status: u16, expected: &str) {
    let (got_status, got_body) = d.http(method, path, body);
    assert_eq!(
        (got_status, got_body.as_str()),
        (status, expected),
        "{method} {path}"
    );
}

#[test]
fn ping_info_and_config() {
    let d = Daemon::start(&[]);
    check(&d, "GET", "/ping", b"", 200, "OK");
    let (status, body) = d.http("GET", "/info", b"");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["tcp_port"], d.tcp.port());
    assert_eq!(info["http_port"], d.http.port());
    assert_eq!(info["max_output_buffer_size"], 65536);
    check(&d, "GET", "/config/mem_queue_size", b"", 200, "10000");
    check(
        &d,
        "GET",
        "/config/nope",
        b"",
        400,
        r#"{"message":"INVALID_OPTION"}"#,
    );
    check(&d, "GET", "/nope", b"", 404, r#"{"message":"NOT_FOUND"}"#);
    check(
        &d,
        "GET",
        "/pub",
        b"",
        405,
        r#"{"message":"METHOD_NOT_ALLOWED"}"#,
    );
}

#[test]
fn pub_and_mpub_reach_consumers() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    c.subscribe("t", "c");
    c.send(Command::Rdy(10));
    check(&d, "POST", "/pub?topic=t", b"one", 200, "OK");
    check(&d, "POST", "/mpub?topic=t", b"two\n\nthree\n", 200, "OK");
    let mut binary = Vec::new();
    binary.extend_from_slice(&2u32.to_be_bytes());
    for body in [&b"four"[..], b"five"] {
        binary.extend_from_slice(&(body.len() as u32).to_be_bytes());
        binary.extend_from_slice(body);
    }
    check(&d, "POST", "/mpub?topic=t&binary=true", &binary, 200, "OK");
    for expected in ["one", "two", "three", "four", "five"] {
        let m = c.expect_message();
        assert_eq!(String::from_utf8_lossy(&m.body), expected);
        c.send(Command::Fin(m.id));
    }
}

#[test]
fn publish_errors() {
    let d = Daemon::start(&["--max-msg-size=10", "--max-body-size=100"]);
    check(
        &d,
        "POST",
        "/pub",
        b"x",
        400,
        r#"{"message":"MISSING_ARG_TOPIC"}"#,
    );
    check(
        &d,
        "POST",
        "/pub?topic=bad!",
        b"x",
        400,
        r#"{"message":"INVALID_TOPIC"}"#,
    );
    check(
        &d,
        "POST",
        "/pub?topic=t",
        b"",
        400,
        r#"{"message":"MSG_EMPTY"}"#,
    );
    check(
        &d,
        "POST",
        "/pub?topic=t",
        b"01234567890",
        413,
        r#"{"message":"MSG_TOO_BIG"}"#,
    );
    check(
        &d,
        "POST",
        "/pub?topic=t&defer=abc",
        b"x",
        400,
        r#"{"message":"INVALID_DEFER"}"#,
    );
    check(
        &d,
        "POST",
        "/pub?topic=t&defer=3600001",
        b"x",
        400,
        r#"{"message":"INVALID_DEFER"}"#,
    );
    check(
        &d,
        "POST",
        "/mpub?topic=t",
        b"ok\n01234567890",
        413,
        r#"{"message":"MSG_TOO_BIG"}"#,
    );
    check(
        &d,
        "POST",
        "/mpub?topic=t",
        &[b'x'; 101],
        413,
        r#"{"message":"BODY_TOO_BIG"}"#,
    );
}

#[test]
fn topic_and_channel_admin() {
    let d = Daemon::start(&[]);
    check(&d, "POST", "/topic/create?topic=t", b"", 200, "");
    check(
        &d,
        "POST",
        "/channel/create?topic=t&channel=c",
        b"",
        200,
        "",
    );
    check(
        &d,
        "POST",
        "/channel/create?topic=nope&channel=c",
        b"",
        404,
        r#"{"message":"TOPIC_NOT_FOUND"}"#,
    );
    check(
        &d,
        "POST",
        "/channel/create?topic=t&channel=bad!",
        b"",
        400,
        r#"{"message":"INVALID_ARG_CHANNEL"}"#,
    );
    check(
        &d,
        "POST",
        "/channel/delete?topic=t&channel=zz",
        b"",
        404,
        r#"{"message":"CHANNEL_NOT_FOUND"}"#,
    );
    check(
        &d,
        "POST",
        "/topic/delete?topic=zz",
        b"",
        404,
        r#"{"message":"TOPIC_NOT_FOUND"}"#,
    );
    check(
        &d,
        "POST",
        "/topic/pause",
        b"",
        400,
        r#"{"message":"MISSING_ARG_TOPIC"}"#,
    );

    for _ in 0..3 {
        check(&d, "POST", "/pub?topic=t", b"m", 200, "OK");
    }
    d.wait_stats("depth 3", |s| {
        channel_stats(s, "t", "c").is_some_and(|c| c["depth"] == 3)
    });
    check(&d, "POST", "/channel/empty?topic=t&channel=c", b"", 200, "");
    d.wait_stats("emptied", |s| {
        channel_stats(s, "t", "c").is_some_and(|c| c["depth"] == 0)
    });

    check(&d, "POST", "/topic/pause?topic=t", b"", 200, "");
    check(&d, "POST", "/pub?topic=t", b"m", 200, "OK");
    let stats = d.stats();
    assert_eq!(stats["topics"][0]["paused"], true);
    assert_eq!(stats["topics"][0]["depth"], 1);
    check(&d, "POST", "/topic/empty?topic=t", b"", 200, "");
    check(&d, "POST", "/topic/unpause?topic=t", b"", 200, "");
    d.wait_stats("topic emptied", |s| {
        s["topics"][0]["depth"] == 0 && s["topics"][0]["paused"] == false
    });

    check(
        &d,
        "POST",
        "/channel/delete?topic=t&channel=c",
        b"",
        200,
        "",
    );
    d.wait_stats("channel gone", |s| channel_stats(s, "t", "c").is_none());
    check(&d, "POST", "/topic/delete?topic=t", b"", 200, "");
    d.wait_stats("topic gone", |s| {
        s["topics"].as_array().is_some_and(|t| t.is_empty())
    });
}

#[test]
fn stats_shapes_and_filters() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    c.identify(r#"{"client_id": "consumer-1", "user_agent": "rsq-test"}"#);
    c.subscribe("t", "c");
    c.send(Command::Rdy(3));
    let mut producer = d.connect();
    producer.publish("t", b"x");
    let _ = c.expect_message();
    d.wait_stats("in flight", |s| {
        channel_stats(s, "t", "c").is_some_and(|c| c["in_flight_count"] == 1)
    });
    let s = d.stats();
    assert_eq!(s["health"], "OK");
    let ch = channel_stats(&s, "t", "c").unwrap();
    assert_eq!(ch["client_count"], 1);
    let client = &ch["clients"][0];
    assert_eq!(client["client_id"], "consumer-1");
    assert_eq!(client["user_agent"], "rsq-test");
    assert_eq!(client["ready_count"], 3);
    assert_eq!(client["in_flight_count"], 1);
    assert_eq!(client["state"], 3);
    assert_eq!(s["producers"].as_array().unwrap().len(), 1);

    let (_, body) = d.http("GET", "/stats?format=json&topic=nope", b"");
    let none: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(none["topics"].is_null() && none["producers"].is_null());
    let (_, body) = d.http(
        "GET",
        "/stats?format=json&include_clients=false&include_mem=false",
        b"",
    );
    let slim: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(slim["producers"].is_null() && slim.get("memory").is_none());
    assert!(slim["topics"][0]["channels"][0]["clients"].is_null());
    let (status, text) = d.http("GET", "/stats", b"");
    assert_eq!(status, 200);
    assert!(text.contains("[t              ] depth: 0"), "{text}");
}
