//! Tests of listen addresses and of binding unix sockets.

use std::error::Error;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::bind;

fn parse(s: &str) -> ListenAddr {
    s.parse().expect(s)
}

#[test]
fn tcp_addresses_parse_as_socket_addresses() {
    assert_eq!(
        parse("0.0.0.0:4150"),
        ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 4150)))
    );
    assert_eq!(
        parse("[::1]:4151"),
        ListenAddr::Tcp("[::1]:4151".parse().expect("v6"))
    );
    // Go's `:port`: every interface.
    assert_eq!(
        parse(":4152"),
        ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 4152)))
    );
    assert_eq!(parse("127.0.0.1:0").port(), Some(0));
}

#[test]
fn host_names_are_kept_for_bind_time() {
    assert_eq!(
        parse("localhost:4150"),
        ListenAddr::Host {
            host: "localhost".into(),
            port: 4150
        }
    );
    assert_eq!(parse("nsq-1.example:80").port(), Some(80));
}

#[test]
fn anything_else_is_a_unix_socket_path() {
    for path in [
        "/tmp/nsqd.sock",
        "rsqd.sock",
        "./rel/x.sock",
        "/run/nsq:1/tcp.sock",
        "./a:4150",
    ] {
        let addr = parse(path);
        assert_eq!(addr, ListenAddr::Unix(PathBuf::from(path)), "{path}");
        assert!(addr.is_unix());
        assert_eq!(addr.port(), None);
    }
}

#[test]
fn malformed_addresses_are_refused_with_the_reason() {
    for (bad, reason) in [
        ("", "empty"),
        ("localhost:http", "the port must be a number"),
        ("localhost:", "the port must be a number"),
        ("localhost:70000", "the port is too large"),
        ("::1:4150", "IPv6"),
        ("[::1:4150", "IPv6"),
    ] {
        let err = bad.parse::<ListenAddr>().expect_err(bad).to_string();
        assert!(err.contains(reason), "{bad:?}: {err}");
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn display_and_serde_give_the_text_back() {
    for text in [
        "0.0.0.0:4150",
        "[::1]:4151",
        "localhost:4150",
        "/tmp/nsqd.sock",
    ] {
        let addr = parse(text);
        assert_eq!(addr.to_string(), text);
        let json = serde_json::to_string(&addr).expect("serialize");
        assert_eq!(json, format!("{text:?}"));
        let back: ListenAddr = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, addr);
    }
    assert!(serde_json::from_str::<ListenAddr>("\"\"").is_err());
}

#[test]
fn unix_peers_show_as_go_shows_them() {
    assert_eq!(PeerAddr::Unix.to_string(), "@");
    assert_eq!(PeerAddr::Unix.ip(), None);
    let tcp = PeerAddr::from(SocketAddr::from(([10, 0, 0, 1], 5000)));
    assert_eq!(tcp.to_string(), "10.0.0.1:5000");
    assert_eq!(tcp.ip(), Some(IpAddr::from([10, 0, 0, 1])));
}

#[tokio::test]
async fn host_names_resolve_when_bound() {
    let listener = bind("TCP", parse("localhost:0")).await.expect("bind");
    let ListenAddr::Tcp(addr) = listener.local_addr().expect("addr") else {
        panic!("a TCP listener");
    };
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0);
}

#[tokio::test]
async fn unix_sockets_accept_and_remove_their_file_when_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.sock");
    let listener = bind("TCP", ListenAddr::Unix(path.clone()))
        .await
        .expect("bind");
    assert_eq!(
        listener.local_addr().expect("addr"),
        ListenAddr::Unix(path.clone())
    );
    let mut client = UnixStream::connect(&path).await.expect("connect");
    let (mut server, peer) = listener.accept().await.expect("accept");
    assert_eq!(peer, PeerAddr::Unix);
    assert!(matches!(server, Stream::Unix(_)));
    client.write_all(b"ping").await.expect("write");
    let mut buf = [0; 4];
    server.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ping");
    drop(listener);
    assert!(!path.exists(), "socket file left behind");
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stale.sock");
    // A socket bound and closed without removing its file: what a crash
    // leaves.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let listener = bind("HTTP", ListenAddr::Unix(path.clone()))
        .await
        .expect("stale file replaced");
    UnixStream::connect(&path).await.expect("connect");
    drop(listener);
    assert!(!path.exists());
}

#[tokio::test]
async fn a_live_socket_or_another_file_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live.sock");
    let first = bind("TCP", ListenAddr::Unix(live.clone()))
        .await
        .expect("bind");
    let err = bind("TCP", ListenAddr::Unix(live.clone()))
        .await
        .expect_err("bound twice");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on TCP {}", live.display())
    );
    let cause = err.source().map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("another process is listening"), "{cause}");
    // The first listener still has its file and still accepts.
    UnixStream::connect(&live).await.expect("connect");
    drop(first);

    let file = dir.path().join("data.txt");
    std::fs::write(&file, "keep me").expect("write");
    let err = bind("HTTP", ListenAddr::Unix(file.clone()))
        .await
        .expect_err("not a socket");
    let cause = err.source().map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("is not a socket"), "{cause}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep me");
}

#[tokio::test]
async fn a_replaced_socket_file_is_not_removed_by_the_old_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.sock");
    let old = bind("TCP", ListenAddr::Unix(path.clone()))
        .await
        .expect("bind");
    std::fs::remove_file(&path).expect("remove");
    let new = bind("TCP", ListenAddr::Unix(path.clone()))
        .await
        .expect("bind again");
    drop(old);
    assert!(path.exists(), "the new listener's file was removed");
    drop(new);
    assert!(!path.exists());
}
