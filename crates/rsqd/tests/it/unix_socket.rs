//! Unix-socket listeners, as nsqd's `protocol_v2_unixsocket_test.go` runs
//! them: the real `rsqd` with `--tcp-address` and `--http-address` given
//! as socket paths, driven over those sockets (protocol V2, the HTTP API,
//! TLS), the socket files' life from a stale leftover to SIGTERM.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_codec::{Command, Frame};

use crate::cluster::Lookupd;
use crate::harness::{V2, http_unix, terminate, wait_exit};
use crate::tls::{Cert, Frames};

/// A daemon on unix sockets in a temporary directory.
struct UnixDaemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl UnixDaemon {
    /// Starts `rsqd` on `tcp.sock` and `http.sock` in `dir` (after the
    /// caller has prepared it) and waits, bounded, until HTTP answers.
    fn start_in(dir: tempfile::TempDir, extra: &[String]) -> UnixDaemon {
        let child = rsqd(dir.path(), extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rsqd");
        let mut d = UnixDaemon { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_unix(&d.http(), "GET", "/ping", b"").is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("rsqd exited: {status}");
            }
            assert!(Instant::now() < deadline, "rsqd did not serve HTTP in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn tcp(&self) -> PathBuf {
        self.dir.path().join("tcp.sock")
    }

    fn http(&self) -> PathBuf {
        self.dir.path().join("http.sock")
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_unix(&self.http(), "GET", path, b"").expect("http")
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("json")
    }

    /// SIGTERM, then a bounded wait for the exit; its code.
    fn terminate(&mut self) -> Option<i32> {
        terminate(&mut self.child)
    }
}

/// The `rsqd` command on `dir`'s sockets and data directory.
fn rsqd(dir: &Path, extra: &[String]) -> Process {
    let mut command = Process::new(env!("CARGO_BIN_EXE_rsqd"));
    command
        .arg(format!("--tcp-address={}", dir.join("tcp.sock").display()))
        .arg(format!(
            "--http-address={}",
            dir.join("http.sock").display()
        ))
        .arg(format!("--data-path={}", dir.display()))
        .args(extra)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    command
}

impl Drop for UnixDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn v2_and_http_over_unix_sockets_from_a_stale_file_to_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // What a crashed daemon leaves: a socket file nothing accepts on.
    drop(UnixListener::bind(dir.path().join("tcp.sock")).unwrap());
    let mut d = UnixDaemon::start_in(dir, &[]);

    let (status, body) = d.get("/ping");
    assert_eq!((status, body.as_str()), (200, "OK"));
    let info = d.json("/info");
    assert_eq!(info["tcp_port"], -1, "{info}");
    assert_eq!(info["http_port"], -1, "{info}");
    let tcp_path = d.tcp().display().to_string();
    assert_eq!(d.json("/config/tcp_address"), tcp_path.as_str());

    let (status, body) =
        http_unix(&d.http(), "POST", "/pub?topic=unix", b"over-http").expect("pub");
    assert_eq!((status, body.as_str()), (200, "OK"));

    let mut c = V2::connect_unix(&d.tcp());
    c.publish("unix", b"over-v2");
    c.subscribe("unix", "ch");
    c.send(Command::Rdy(10));
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let m = c.expect_message();
        bodies.push(String::from_utf8_lossy(&m.body).into_owned());
        c.send(Command::Fin(m.id));
    }
    bodies.sort();
    assert_eq!(bodies, ["over-http", "over-v2"]);
    assert!(c.quiet_for(Duration::from_millis(100)));

    // /stats: the client shows Go's unix peer address; FINs counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = d.json("/stats?format=json");
        let client = &stats["topics"][0]["channels"][0]["clients"][0];
        if client["finish_count"] == 2 {
            break stats;
        }
        assert!(Instant::now() < deadline, "FINs not counted: {stats:#}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let client = &stats["topics"][0]["channels"][0]["clients"][0];
    assert_eq!(client["remote_address"], "@", "{client}");
    assert_eq!(client["client_id"], "", "{client}");
    drop(c);

    assert_eq!(d.terminate(), Some(0));
    let dir = d.dir.path();
    for sock in ["tcp.sock", "http.sock"] {
        assert!(!dir.join(sock).exists(), "{sock} left behind");
    }
    // A clean stop: the metadata was written.
    assert!(dir.join("nsqd.dat").exists());
}

#[test]
fn a_live_socket_or_a_plain_file_is_not_taken_over() {
    let d = UnixDaemon::start_in(tempfile::tempdir().unwrap(), &[]);
    // A second daemon on the same sockets must fail and leave them alone.
    let other_data = tempfile::tempdir().unwrap();
    let stderr = refused(
        d.dir.path(),
        &[format!("--data-path={}", other_data.path().display())],
    );
    assert!(
        stderr.contains(&format!("cannot listen on TCP {}", d.tcp().display()))
            && stderr.contains("another process is listening"),
        "{stderr}"
    );
    assert_eq!(d.get("/ping").0, 200);
    V2::connect_unix(&d.tcp()).publish("still", b"here");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tcp.sock"), "not a socket").unwrap();
    let stderr = refused(dir.path(), &[]);
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tcp.sock")).unwrap(),
        "not a socket"
    );
}

/// Waits (bounded) for a child expected to exit on its own.
/// Runs `rsqd` on `dir` with `extra` flags, expects it to fail at start
/// and returns what it logged.
fn refused(dir: &Path, extra: &[String]) -> String {
    let mut child = rsqd(dir, extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_exit(&mut child, Duration::from_secs(20));
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tls_and_compression_upgrade_over_a_unix_socket() {
    let cert = Cert::new();
    let d = UnixDaemon::start_in(tempfile::tempdir().unwrap(), &cert.flags());
    let mut v = V2::connect_unix(&d.tcp());
    match v.identify(r#"{"feature_negotiation": true, "tls_v1": true}"#) {
        Frame::Response(body) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["tls_v1"], true, "{answer}");
        }
        other => panic!("IDENTIFY answer: {other:?}"),
    }
    let sock: UnixStream = v.stream().try_clone().unwrap();
    let mut tls = Frames::new(cert.connect(sock));
    tls.expect("OK");
    tls.send(Command::Pub {
        topic: "secure".into(),
        body: Bytes::from_static(b"sealed"),
    });
    tls.expect("OK");
    let stats = d.json("/stats?format=json&include_clients=true");
    let client = &stats["producers"][0];
    assert_eq!(client["tls"], true, "{stats:#}");
    assert_eq!(client["remote_address"], "@", "{stats:#}");
    drop(tls);

    // Snappy on a second connection: the OK comes back compressed, and
    // a plain reader sees the snappy stream identifier first.
    let mut v = V2::connect_unix(&d.tcp());
    match v.identify(r#"{"feature_negotiation": true, "snappy": true}"#) {
        Frame::Response(body) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["snappy"], true, "{answer}");
        }
        other => panic!("IDENTIFY answer: {other:?}"),
    }
    // The compressed bytes may have come in with the IDENTIFY answer.
    let mut head = v.unread().to_vec();
    let mut sock: UnixStream = v.stream().try_clone().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while head.len() < 10 {
        let mut more = [0u8; 64];
        let n = std::io::Read::read(&mut sock, &mut more).unwrap();
        assert!(n > 0, "closed after {head:?}");
        head.extend_from_slice(&more[..n]);
    }
    assert_eq!(&head[..10], b"\xff\x06\x00\x00sNaPpY");
}

/// A daemon on unix sockets has no ports to announce: it sends lookupd 0
/// for each, which lookupd refuses (`E_BAD_BODY IDENTIFY missing fields`,
/// as nsqlookupd does), unless `--broadcast-tcp-port` and
/// `--broadcast-http-port` say what consumers should dial.
#[test]
fn lookupd_needs_broadcast_ports_from_a_unix_socket_daemon() {
    let lookupd = Lookupd::start("127.0.0.1:0", "127.0.0.1:0");
    let flag = format!("--lookupd-tcp-address={}", lookupd.tcp);
    let base = [flag, "--broadcast-address=127.0.0.1".to_string()];
    let plain = UnixDaemon::start_in(tempfile::tempdir().unwrap(), &base);
    let mut flags = base.to_vec();
    flags.push("--broadcast-tcp-port=5150".into());
    flags.push("--broadcast-http-port=5151".into());
    let mapped = UnixDaemon::start_in(tempfile::tempdir().unwrap(), &flags);
    for d in [&plain, &mapped] {
        let (status, _) = http_unix(&d.http(), "POST", "/topic/create?topic=u", b"").expect("http");
        assert_eq!(status, 200);
    }
    let v = lookupd.wait("/lookup?topic=u", "the mapped daemon registered", |v| {
        v["producers"].as_array().is_some_and(|p| !p.is_empty())
    });
    let ports: Vec<(u64, u64)> = v["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["tcp_port"].as_u64().unwrap(),
                p["http_port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(5150, 5151)], "{v}");
    // Refused by lookupd, the plain daemon still serves its clients.
    assert_eq!(plain.get("/ping").0, 200);
}
