//! AUTH against a small auth server run by the test: granting, refusing,
//! failing, TTL refresh, a chunked answer, an https auth server (trusted
//! through `SSL_CERT_FILE`, and refused when its certificate is not), and a
//! third-party client (`tokio-nsq`) using it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rsq_codec::{Command, Frame};
use tokio_nsq::{NSQConfigShared, NSQEvent, NSQProducerConfig, NSQTopic};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::harness::{Daemon, daemon_args, run_to_exit};
use crate::tls::Cert;

/// An auth server on a loopback port. Secrets: `good` may publish to
/// `^allowed$` and subscribe to topics matching `allowed` on channel `^c$`
/// (TTL 1 s); `chunked` gets the same grants as identity `chunky`, in a
/// chunked answer; `empty` gets no authorizations; anything else is
/// refused (403).
struct AuthServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    last_query: Arc<Mutex<String>>,
}

impl AuthServer {
    /// A plain HTTP auth server.
    fn start() -> AuthServer {
        AuthServer::start_with(None)
    }

    /// An HTTPS auth server presenting `cert`.
    fn start_tls(cert: &Cert) -> AuthServer {
        let chain = vec![CertificateDer::from_pem_file(&cert.cert).unwrap()];
        let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        AuthServer::start_with(Some(Arc::new(config)))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let last_query = Arc::new(Mutex::new(String::new()));
        let (count, last) = (requests.clone(), last_query.clone());
        // The thread ends with the test process; each request is bounded
        // by the read timeout.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                match &tls {
                    None => answer(stream, &count, &last),
                    Some(config) => {
                        let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                        answer(rustls::StreamOwned::new(conn, stream), &count, &last);
                    }
                }
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

/// Reads one request from `stream` and answers it (see [`AuthServer`]).
fn answer(mut stream: impl Read + Write, count: &AtomicUsize, last: &Mutex<String>) {
    let mut req = Vec::new();
    let mut chunk = [0u8; 4096];
    // Each read adds bytes or ends the loop; reads time out after 5 s.
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&chunk[..n]),
        }
    }
    if !req.windows(4).any(|w| w == b"\r\n\r\n") {
        return; // No request came (a failed TLS handshake, a timeout).
    }
    let text = String::from_utf8_lossy(&req).into_owned();
    let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
    count.fetch_add(1, Ordering::SeqCst);
    *last.lock().unwrap() = target.clone();
    if text.contains("secret=chunked") {
        let body = GOOD.replace("alice", "chunky");
        let mut reply =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                .to_string();
        // Chunks of 7 bytes, the last one shorter, and a chunk extension.
        for (i, piece) in body.as_bytes().chunks(7).enumerate() {
            let ext = if i == 0 { ";x=y" } else { "" };
            reply.push_str(&format!("{:x}{ext}\r\n", piece.len()));
            reply.push_str(std::str::from_utf8(piece).unwrap());
            reply.push_str("\r\n");
        }
        reply.push_str("0\r\n\r\n");
        let _ = stream.write_all(reply.as_bytes());
        let _ = stream.flush();
        return;
    }
    let (status, body) = if text.contains("secret=good") {
        ("200 OK", GOOD)
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
    let _ = stream.flush();
}

/// The answer for secret `good`.
const GOOD: &str = r#"{"ttl": 1, "identity": "alice", "identity_url": "http://id/alice",
    "authorizations": [
      {"topic": "^allowed$", "channels": [".*"], "permissions": ["publish"]},
      {"topic": "allowed", "channels": ["^c$"], "permissions": ["subscribe"]}]}"#;

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

/// AUTH with `secret` on a fresh connection to `d`: the identity granted,
/// or the error frame's text.
fn auth(d: &Daemon, secret: &'static [u8]) -> Result<String, String> {
    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(secret)));
    match v.frame_skip_heartbeats() {
        Some(Frame::Response(body)) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            Ok(answer["identity"].as_str().unwrap_or_default().to_string())
        }
        Some(Frame::Error(body)) => Err(String::from_utf8_lossy(&body).into_owned()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn chunked_answers_are_read_whole() {
    let server = AuthServer::start();
    let d = server.daemon();
    assert_eq!(auth(&d, b"chunked"), Ok("chunky".to_string()));
    let mut v = d.connect();
    v.send(Command::Auth(Bytes::from_static(b"chunked")));
    let _ = v.frame_skip_heartbeats();
    v.send(publish("allowed"));
    v.expect_ok();
}

#[test]
fn https_auth_server_is_verified_against_the_trusted_roots() {
    let cert = Cert::new();
    let server = AuthServer::start_tls(&cert);
    let address = format!(
        "--auth-http-address=https://127.0.0.1:{}/auth",
        server.addr.port()
    );
    let root_ca = |c: &Cert| format!("--tls-root-ca-file={}", c.cert.display());

    // As nsqd: --tls-root-ca-file is what the auth client trusts.
    let d = Daemon::start(&[&address, &root_ca(&cert)]);
    assert_eq!(auth(&d, b"good"), Ok("alice".to_string()));
    assert_eq!(auth(&d, b"chunked"), Ok("chunky".to_string()));
    assert_eq!(
        auth(&d, b"wrong"),
        Err("E_AUTH_FAILED AUTH failed".to_string())
    );
    let query = server.last_query.lock().unwrap().clone();
    assert!(
        query.starts_with("/auth?") && query.contains("secret=wrong"),
        "{query}"
    );

    // Without it, the system roots: SSL_CERT_FILE, as Go reads it.
    let trusted = cert.cert.display().to_string();
    let d = Daemon::start_with_env(&[&address], &[("SSL_CERT_FILE", &trusted)]);
    assert_eq!(auth(&d, b"good"), Ok("alice".to_string()));

    // A daemon that trusts another certificate refuses to talk to it.
    let other = Cert::new();
    let before = server.requests.load(Ordering::SeqCst);
    let d = Daemon::start(&[&address, &root_ca(&other)]);
    assert_eq!(
        auth(&d, b"good"),
        Err("E_AUTH_FAILED AUTH failed".to_string())
    );
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        before,
        "no request sent"
    );

    // An unreadable --tls-root-ca-file stops the start, as in nsqd.
    let data = tempfile::tempdir().unwrap();
    let mut args = daemon_args(data.path());
    args.push(address.clone());
    args.push("--tls-root-ca-file=/nonexistent/ca.pem".to_string());
    let (code, _, stderr) = run_to_exit(&args, "warn");
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--tls-root-ca-file"), "{stderr}");
}
