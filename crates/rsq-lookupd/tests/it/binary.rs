//! The real `rsq-lookupd` binary: flags, serving, and a clean exit on SIGTERM.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Producer, WAIT, http};

/// Reads the listener announcements on the child's stderr until both
/// addresses are known (bounded), copying every other line to ours.
fn announced_addresses(child: &mut Child) -> (SocketAddr, SocketAddr) {
    let stderr = child.stderr.take().expect("stderr piped");
    let rx = rsq_service::follow_announcements(stderr, |line| eprintln!("{line}"));
    let (mut tcp, mut http) = (None, None);
    while tcp.is_none() || http.is_none() {
        match rx.recv_timeout(WAIT) {
            Ok((what, addr)) if what == "TCP" => tcp = Some(addr),
            Ok((what, addr)) if what == "HTTP" => http = Some(addr),
            Ok(_) => {}
            Err(e) => panic!("rsq-lookupd did not announce its listeners: {e}"),
        }
    }
    (tcp.expect("tcp"), http.expect("http"))
}

#[tokio::test]
async fn binary_serves_with_flags_and_exits_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rsq-lookupd"))
        .arg("--tcp-address=127.0.0.1:0")
        .arg("--http-address=127.0.0.1:0")
        .arg("--broadcast-address=lk.example")
        .arg("--inactive-producer-timeout=5m")
        .arg("--tombstone-lifetime=45s")
        .arg("--log-level=warn")
        .env(
            "RUST_LOG",
            format!("warn,{}=info", rsq_service::LISTEN_TARGET),
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rsq-lookupd");
    let (tcp, http_addr) = announced_addresses(&mut child);
    assert_eq!(http(http_addr, "GET", "/ping").await.body, "OK");
    let mut p = Producer::identified(tcp, "n1", 4150).await;
    assert_eq!(p.command("REGISTER t").await, "OK");
    let res = http(http_addr, "GET", "/lookup?topic=t").await;
    assert!(
        res.body.contains("\"broadcast_address\":\"n1\""),
        "{}",
        res.body
    );
    let identify = {
        let mut q = Producer::connect(tcp).await;
        q.identify(&crate::harness::identify_body("n2", 4250)).await
    };
    assert!(
        identify.contains("\"broadcast_address\":\"lk.example\""),
        "{identify}"
    );

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rsq-lookupd did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(p.is_closed().await);
}

#[test]
fn bad_flags_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_rsq-lookupd"))
        .arg("--tombstone-lifetime=soon")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration"));
}
