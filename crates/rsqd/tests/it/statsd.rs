//! statsd push: a real rsqd sends its stats to a UDP socket the test bound.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::harness::Daemon;

#[test]
fn pushes_counters_and_gauges_in_bounded_datagrams() {
    const N: usize = 25;
    const PACKET: usize = 200;
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let d = Daemon::start(&[
        &format!("--statsd-address={}", sink.local_addr().unwrap()),
        "--statsd-interval=1s",
        "--statsd-prefix=test.%s",
        "--broadcast-address=127.0.0.1",
        &format!("--statsd-udp-packet-size={PACKET}"),
    ]);
    assert_eq!(d.http("POST", "/topic/create?topic=st", b"").0, 200);
    assert_eq!(
        d.http("POST", "/channel/create?topic=st&channel=c", b"").0,
        200
    );
    let body: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    let (status, answer) = d.http("POST", "/mpub?topic=st", body.join("\n").as_bytes());
    assert_eq!(status, 200, "{answer}");

    let prefix = format!("test.127_0_0_1_{}.", d.http.port());
    let mut published = 0u64;
    let mut depth_seen = false;
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while published < N as u64 || !depth_seen {
        assert!(
            Instant::now() < deadline,
            "no complete push within 10 s (published {published}, depth seen {depth_seen})"
        );
        let Ok(n) = sink.recv(&mut buf) else { continue };
        assert!(n <= PACKET, "datagram of {n} bytes over {PACKET}");
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        for line in text.lines() {
            let stat = line
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{line:?} lacks prefix {prefix:?}"));
            // Counters are deltas: their sum over pushes is the total.
            if let Some(v) = stat.strip_prefix("topic.st.message_count:") {
                published += v.strip_suffix("|c").unwrap().parse::<u64>().unwrap();
            }
            if stat == format!("topic.st.channel.c.depth:{N}|g") {
                depth_seen = true;
            }
        }
    }
    assert_eq!(published, N as u64);
}

#[test]
fn an_unreachable_statsd_never_fails_the_daemon() {
    // A closed loopback port (datagrams are dropped, or a later send of the
    // same push fails with ECONNREFUSED) and a name that does not resolve:
    // both are logged, not fatal.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for address in [closed.to_string(), "no-such-host.invalid:8125".to_string()] {
        let mut d = Daemon::start(&[
            &format!("--statsd-address={address}"),
            "--statsd-interval=100ms",
        ]);
        assert_eq!(d.http("POST", "/pub?topic=t", b"x").0, 200);
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(d.http("GET", "/ping", b"").0, 200);
        assert_eq!(d.terminate(), Some(0), "{address}");
    }
}
