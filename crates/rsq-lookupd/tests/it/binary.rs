//! The real `rsq-lookupd` binary: flags, serving, and a clean exit on SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{http, Producer, WAIT};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

#[tokio::test]
async fn binary_serves_with_flags_and_exits_on_sigterm() {
    let (tcp, http_addr) = (free_addr(), free_addr());
    let mut child = Command::new(env!("CARGO_BIN_EXE_rsq-lookupd"))
        .arg(format!("--tcp-address={tcp}"))
        .arg(format!("--http-address={http_addr}"))
        .arg("--broadcast-address=lk.example")
        .arg("--inactive-producer-timeout=5m")
        .arg("--tombstone-lifetime=45s")
        .arg("--log-level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn rsq-lookupd");
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(http_addr).is_err() {
        assert!(Instant::now() < deadline, "rsq-lookupd did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
