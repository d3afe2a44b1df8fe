//! TLS on the V2 protocol and HTTPS, with a self-signed certificate made
//! here, driven by a blocking rustls client that checks the upgrade
//! sequence byte for byte (JSON answer in plain text, handshake, `OK` inside).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsq_codec::{Command, DEFAULT_MAX_FRAME_SIZE, Frame, FrameDecoder};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::harness::{Daemon, V2};

/// A self-signed certificate for `localhost` and `127.0.0.1` in a temporary directory.
pub struct Cert {
    _dir: tempfile::TempDir,
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl Cert {
    /// Makes a fresh certificate and key.
    pub fn new() -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
        Cert {
            der: cert.der().clone(),
            _dir: dir,
            cert: cert_path,
            key: key_path,
        }
    }

    /// The daemon flags that enable TLS with this certificate.
    pub fn flags(&self) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.cert.display()),
            format!("--tls-key={}", self.key.display()),
        ]
    }

    /// A client configuration that trusts only this certificate.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A TLS session over `tcp` (any socket), handshake done.
    pub fn connect<S: Read + Write>(
        &self,
        tcp: S,
    ) -> rustls::StreamOwned<rustls::ClientConnection, S> {
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(self.client_config(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        tls
    }
}

/// Starts a daemon with TLS from `cert` plus `extra` flags.
pub fn tls_daemon(cert: &Cert, extra: &[&str]) -> Daemon {
    let mut flags = cert.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Daemon::start(&flags)
}

/// A V2 frame reader and command writer over any stream (TLS here).
pub struct Frames<S> {
    stream: S,
    buf: BytesMut,
    dec: FrameDecoder,
}

impl<S: Read + Write> Frames<S> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> Self {
        Frames {
            stream,
            buf: BytesMut::new(),
            dec: FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE),
        }
    }

    /// Sends a command, flushed.
    pub fn send(&mut self, cmd: Command) {
        self.stream.write_all(&cmd.to_bytes()).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next frame that is not a heartbeat.
    pub fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                if matches!(&f, Frame::Response(b) if &b[..] == b"_heartbeat_") {
                    continue;
                }
                return Some(f);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Expects a response with this body.
    #[track_caller]
    pub fn expect(&mut self, body: &str) {
        match self.frame() {
            Some(Frame::Response(b)) => assert_eq!(String::from_utf8_lossy(&b), body),
            other => panic!("expected {body}, got {other:?}"),
        }
    }
}

/// IDENTIFY asking for TLS on a plain connection; returns the raw socket
/// after checking the plain-text answer.
fn identify_tls(addr: SocketAddr, extra: &str) -> TcpStream {
    let mut v = V2::connect(addr);
    let json = format!(r#"{{"feature_negotiation": true, "tls_v1": true{extra}}}"#);
    match v.identify(&json) {
        Frame::Response(body) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["tls_v1"], true, "{answer}");
        }
        other => panic!("IDENTIFY answer: {other:?}"),
    }
    v.stream().try_clone().unwrap()
}

#[test]
fn tls_upgrade_sequence_and_stats() {
    let cert = Cert::new();
    let d = tls_daemon(&cert, &[]);
    let tcp = identify_tls(d.tcp, "");
    let mut tls = Frames::new(cert.connect(tcp));
    tls.expect("OK");
    tls.send(Command::Pub {
        topic: "secure".into(),
        body: Bytes::from_static(b"hello"),
    });
    tls.expect("OK");
    tls.send(Command::Sub {
        topic: "secure".into(),
        channel: "c".into(),
    });
    tls.expect("OK");
    tls.send(Command::Rdy(1));
    match tls.frame() {
        Some(Frame::Message(m)) => assert_eq!(&m.body[..], b"hello"),
        other => panic!("expected the message, got {other:?}"),
    }
    let s = d.stats();
    let client = &crate::harness::channel_stats(&s, "secure", "c").unwrap()["clients"][0];
    assert_eq!(client["tls"], true, "{client}");
    assert!(client["tls_version"].as_str().unwrap().starts_with("TLS1."));
    assert!(
        client["tls_cipher_suite"]
            .as_str()
            .unwrap()
            .starts_with("TLS_")
    );
}

#[test]
fn tls_not_offered_without_a_certificate() {
    let d = Daemon::start(&[]);
    let mut v = d.connect();
    match v.identify(r#"{"feature_negotiation": true, "tls_v1": true}"#) {
        Frame::Response(body) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["tls_v1"], false);
        }
        other => panic!("{other:?}"),
    }
    v.send(Command::Nop);
    v.send(Command::Pub {
        topic: "t".into(),
        body: Bytes::from_static(b"x"),
    });
    v.expect_ok();
}

#[test]
fn tls_required_refuses_plain_commands() {
    let cert = Cert::new();
    let d = tls_daemon(&cert, &["--tls-required=tcp-https"]);
    let mut v = d.connect();
    v.send(Command::Pub {
        topic: "t".into(),
        body: Bytes::from_static(b"x"),
    });
    assert_eq!(
        v.expect_error(),
        "E_INVALID cannot PUB in current state (TLS required)"
    );
    v.expect_closed();
    // After the upgrade the same command works.
    let mut tls = Frames::new(cert.connect(identify_tls(d.tcp, "")));
    tls.expect("OK");
    tls.send(Command::Pub {
        topic: "t".into(),
        body: Bytes::from_static(b"x"),
    });
    tls.expect("OK");
}

fn https_get(cert: &Cert, addr: SocketAddr, path: &str) -> String {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = cert.connect(tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn https_serves_the_api_and_plain_http_can_be_refused() {
    let cert = Cert::new();
    let d = tls_daemon(&cert, &["--tls-required=true"]);
    let answer = https_get(&cert, d.https.expect("https"), "/ping");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("OK"), "{answer}");
    let port = d.https.expect("https").port();
    let (status, body) = crate::harness::http(d.http, "GET", "/stats", b"").unwrap();
    assert_eq!(status, 403);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["message"], "TLS_REQUIRED");
    assert_eq!(body["https_port"], port);
}

#[test]
fn client_certificate_policy_is_enforced() {
    let cert = Cert::new();
    let d = tls_daemon(&cert, &["--tls-client-auth-policy=require"]);
    // Our client presents no certificate: the handshake must fail.
    let tcp = identify_tls(d.tcp, "");
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut failed = false;
    for _ in 0..100 {
        if let Err(_e) = tls.conn.complete_io(&mut tls.sock) {
            failed = true;
            break;
        }
        if !tls.conn.is_handshaking() {
            // TLS 1.3 clients finish before the server checks; the server
            // then refuses the session, so reading fails.
            let mut b = [0u8; 16];
            failed = !matches!(tls.read(&mut b), Ok(n) if n > 0);
            break;
        }
    }
    assert!(failed, "a client without a certificate was accepted");
}

/// A CA and a client certificate it signed, for `require-verify`.
struct ClientPki {
    ca_pem: PathBuf,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl ClientPki {
    fn new() -> ClientPki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client_params = rcgen::CertificateParams::new(vec!["rsq-test-client".into()]).unwrap();
        let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        ClientPki {
            ca_pem,
            client_chain: vec![client.der().clone()],
            client_key: client_key.serialize_der(),
            _dir: dir,
        }
    }

    /// A client trusting `server`, presenting `chain` if given.
    fn client_config(
        server: &Cert,
        identity: Option<(Vec<CertificateDer<'static>>, Vec<u8>)>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()))
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }
}

/// Runs IDENTIFY with `tls_v1` and a handshake with `config`; true if the
/// daemon then answers `OK` inside TLS.
fn upgrade_accepted(d: &Daemon, config: Arc<rustls::ClientConfig>) -> bool {
    let tcp = identify_tls(d.tcp, "");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = Frames::new(rustls::StreamOwned::new(conn, tcp));
    matches!(tls.frame(), Some(Frame::Response(b)) if &b[..] == b"OK")
}

#[test]
fn require_verify_accepts_only_certificates_from_the_root_ca() {
    let server = Cert::new();
    let pki = ClientPki::new();
    let ca_flag = format!("--tls-root-ca-file={}", pki.ca_pem.display());
    let d = tls_daemon(
        &server,
        &["--tls-client-auth-policy=require-verify", &ca_flag],
    );
    // Signed by the configured CA: accepted.
    let signed = Some((pki.client_chain.clone(), pki.client_key.clone()));
    assert!(upgrade_accepted(
        &d,
        ClientPki::client_config(&server, signed)
    ));
    // Self-signed, not from that CA: refused.
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger".into()]).unwrap();
    let unsigned = Some((
        vec![stranger.cert.der().clone()],
        stranger.key_pair.serialize_der(),
    ));
    assert!(!upgrade_accepted(
        &d,
        ClientPki::client_config(&server, unsigned)
    ));
    // No certificate at all: refused.
    assert!(!upgrade_accepted(
        &d,
        ClientPki::client_config(&server, None)
    ));
}
