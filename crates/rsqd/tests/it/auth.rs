//! AUTH against a small auth server run by the test: granting, refusing,
//! failing, TTL refresh, and a third-party client (`tokio-nsq`) using it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rsq_codec::{Command, Frame};
use tokio_nsq::{NSQConfigShared, NSQEvent, NSQProducerConfig, NSQTopic};

use crate::harness::Daemon;

/// An auth server on a loopback port. Secrets: `good` may publish to
/// `^allowed$` and subscribe to topics matching `allowed` on channel `^c$`
/// (TTL 1 s); `empty` gets no authorizations; anything else is refused (403).
struct AuthServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    last_query: Arc<Mutex<String>>,
}

impl AuthServer {
    fn start() -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let last_query = Arc::new(Mutex::new(String::new()));
        let (count, last) = (requests.clone(), last_query.clone());
        // The thread ends with the test process; each request is bounded
        // by the read timeout.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut req = Vec::new();
                let mut chunk = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
                count.fetch_add(1, Ordering::SeqCst);
                *last.lock().unwrap() = target.clone();
                let (status, body) = if text.contains("secret=good") {
                    (
                        "200 OK",
                        r#"{"ttl": 1, "identity": "alice", "identity_url": "http://id/alice",
                            "authorizations": [
                              {"topic": "^allowed$", "channels": [".*"], "permissions": ["publish"]},
                              {"topic": "allowed", "channels": ["^c$"], "permissions": ["subscribe"]}]}"#,
                    )
                } else if text.contains("secret=empty") {
                    ("200 OK", r#"{"ttl": 60, "authorizations": []}"#)
                } else {
                    ("403 Forbidden", r#"{"message": "NOPE"}"#)
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        AuthServer {
            addr,
            requests,
            last_query,
        }
    }

    fn daemon(&self) -> Daemon {
        Daemon::start(&[&format!("--auth-http-address={}", self.addr)])
    }
}

fn publish(topic: &str) -> Command {
    Command::Pub {
        topic: topic.into(),
        body: Bytes::from_static(b"x"),
    }
}

#[test]
fn auth_grants_refuses_and_refreshes() {
    let server = AuthServer::start();
    let d = server.daemon();

    let mut v = d.connect();
    match v.identify(r#"{"feature_negotiation": true}"#) {
        Frame::Response(body) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["auth_required"], true);
        }
        other => panic!("{other:?}"),
    }
    v.send(publish("allowed"));
    assert_eq!(v.expect_error(), "E_AUTH_FIRST AUTH required before PUB");
    v.expect_closed();

    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(b"wrong")));
    assert_eq!(v.expect_error(), "E_AUTH_FAILED AUTH failed");
    v.expect_closed();

    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(b"empty")));
    assert_eq!(
        v.expect_error(),
        "E_UNAUTHORIZED AUTH no authorizations found"
    );

    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(b"good")));
    match v.frame_skip_heartbeats() {
        Some(Frame::Response(body)) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["identity"], "alice");
            assert_eq!(answer["identity_url"], "http://id/alice");
            assert_eq!(answer["permission_count"], 2);
        }
        other => panic!("{other:?}"),
    }
    let query = server.last_query.lock().unwrap().clone();
    assert!(query.starts_with("/auth?"), "{query}");
    for part in [
        "remote_ip=127.0.0.1",
        "tls=false",
        "secret=good",
        "common_name=",
    ] {
        assert!(query.contains(part), "{query}");
    }
    v.send(Command::Auth(Bytes::from_static(b"good")));
    assert_eq!(v.expect_error(), "E_INVALID AUTH already set");

    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(b"good")));
    let _ = v.frame_skip_heartbeats();
    v.send(publish("allowed"));
    v.expect_ok();
    let before = server.requests.load(Ordering::SeqCst);
    // The TTL is 1 s: the next check asks the server again.
    std::thread::sleep(Duration::from_millis(1100));
    v.send(publish("allowed"));
    v.expect_ok();
    assert_eq!(server.requests.load(Ordering::SeqCst), before + 1);
    let s = d.stats();
    let producer = &s["producers"][0];
    assert_eq!(producer["authed"], true, "{producer}");
    assert_eq!(producer["auth_identity"], "alice", "{producer}");
    v.send(publish("other"));
    assert_eq!(
        v.expect_error(),
        r#"E_UNAUTHORIZED AUTH failed for PUB on "other" """#
    );
    v.expect_closed();

    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(b"good")));
    let _ = v.frame_skip_heartbeats();
    v.send(Command::Sub {
        topic: "allowed".into(),
        channel: "d".into(),
    });
    assert_eq!(
        v.expect_error(),
        r#"E_UNAUTHORIZED AUTH failed for SUB on "allowed" "d""#
    );
    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(b"good")));
    let _ = v.frame_skip_heartbeats();
    v.send(Command::Sub {
        topic: "allowed".into(),
        channel: "c".into(),
    });
    v.expect_ok();
}

#[test]
fn auth_disabled_and_post_method() {
    let d = Daemon::start(&[]);
    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(b"good")));
    assert_eq!(v.expect_error(), "E_AUTH_DISABLED AUTH disabled");

    let server = AuthServer::start();
    let d = Daemon::start(&[
        &format!("--auth-http-address=http://{}/auth", server.addr),
        "--auth-http-request-method=post",
    ]);
    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(b"good")));
    // The form travels in the body; the URL is used as given.
    match v.frame_skip_heartbeats() {
        Some(Frame::Response(body)) => assert!(String::from_utf8_lossy(&body).contains("alice")),
        other => panic!("{other:?}"),
    }
    assert_eq!(*server.last_query.lock().unwrap(), "/auth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_nsq_authenticates() {
    let server = AuthServer::start();
    let d = server.daemon();
    let mut p = NSQProducerConfig::new(d.tcp.to_string())
        .set_shared(NSQConfigShared::new().set_credentials(b"good".to_vec()))
        .build();
    let limit = Duration::from_secs(20);
    match tokio::time::timeout(limit, p.consume()).await {
        Ok(Some(NSQEvent::Healthy())) => {}
        other => panic!("producer did not connect: {other:?}"),
    }
    p.publish(&NSQTopic::new("allowed").unwrap(), b"hi".to_vec())
        .await
        .unwrap();
    match tokio::time::timeout(limit, p.consume()).await {
        Ok(Some(NSQEvent::Ok())) => {}
        other => panic!("expected OK, got {other:?}"),
    }
    assert!(server.requests.load(Ordering::SeqCst) >= 1);
}
