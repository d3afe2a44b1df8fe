//! Hostile input over the wire: a table of malformed and abusive inputs,
//! each answered as nsqd answers it, plus random byte streams; through all
//! of it a bystander keeps publishing and consuming.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rsq_codec::{Command, MessageId};

use crate::harness::{Daemon, V2};

/// A consumer that must keep working while others misbehave.
struct Bystander {
    producer: V2,
    consumer: V2,
    n: u64,
}

impl Bystander {
    fn new(d: &Daemon) -> Bystander {
        let mut consumer = d.connect();
        consumer.subscribe("calm", "c");
        consumer.send(Command::Rdy(10));
        Bystander {
            producer: d.connect(),
            consumer,
            n: 0,
        }
    }

    #[track_caller]
    fn still_served(&mut self) {
        self.n += 1;
        let body = format!("ok{}", self.n);
        self.producer.publish("calm", body.as_bytes());
        let m = self.consumer.expect_message();
        assert_eq!(String::from_utf8_lossy(&m.body), body);
        self.consumer.send(Command::Fin(m.id));
    }
}

/// Sends `raw`; expects exactly `expected` as an error frame (or nothing
/// but a close when `expected` is empty), then a closed connection.
#[track_caller]
fn check(d: &Daemon, raw: &[u8], expected: &str) {
    let mut c = d.connect();
    c.send_raw(raw);
    if !expected.is_empty() {
        assert_eq!(
            c.expect_error(),
            expected,
            "for {:?}",
            String::from_utf8_lossy(raw)
        );
    }
    c.expect_closed();
}

#[test]
fn table_of_bad_inputs() {
    let d = Daemon::start(&[
        "--max-msg-size=1024",
        "--max-body-size=4096",
        "--max-rdy-count=100",
    ]);
    let mut calm = Bystander::new(&d);
    let table: &[(&[u8], &str)] = &[
        (
            b"PUB t\n\xff\xff\xff\xff",
            "E_BAD_MESSAGE PUB invalid message body size -1",
        ),
        (
            b"PUB t\n\x7f\xff\xff\xff",
            "E_BAD_MESSAGE PUB message too big 2147483647 > 1024",
        ),
        (
            b"MPUB t\n\x7f\xff\xff\xff",
            "E_BAD_BODY MPUB body too big 2147483647 > 4096",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x08\xff\xff\xff\xff",
            "E_BAD_BODY MPUB invalid message count -1",
        ),
        (
            b"MPUB t\n\x00\x00\x00\x08\x00\x00\x10\x00",
            "E_BAD_BODY MPUB invalid message count 4096",
        ),
        (
            b"IDENTIFY\n\x7f\xff\xff\xff",
            "E_BAD_BODY IDENTIFY body too big 2147483647 > 4096",
        ),
        (
            b"IDENTIFY\n\x00\x00\x00\x02{]",
            "E_BAD_BODY IDENTIFY failed to decode JSON body",
        ),
        (
            b"PUB \xff\xfe\n",
            "E_BAD_TOPIC PUB topic name \"\\xff\\xfe\" is not valid",
        ),
        (b"RDY 1\n", "E_INVALID cannot RDY in current state"),
        (
            b"REQ 0123456789abcdef 10\n",
            "E_INVALID cannot REQ in current state",
        ),
        (
            b"TOUCH 0123456789abcdef\n",
            "E_INVALID cannot TOUCH in current state",
        ),
        (b"AUTH\n\x00\x00\x00\x01x", "E_AUTH_DISABLED AUTH disabled"),
        (b"DPUB t -5\n", "E_INVALID DPUB could not parse timeout -5"),
        (b"BOGUS\n", "E_INVALID invalid command BOGUS"),
    ];
    for (raw, expected) in table {
        check(&d, raw, expected);
        calm.still_served();
    }

    // A line longer than nsqd's 16 KiB buffer, without a newline.
    let mut c = d.connect();
    c.send_raw(&vec![b'A'; 17 * 1024]);
    let _ = c.try_frame();
    c.expect_closed();
    calm.still_served();

    // RDY above the cap after SUB.
    let mut c = d.connect();
    c.subscribe("t", "greedy");
    c.send_raw(b"RDY 101\n");
    assert_eq!(
        c.expect_error(),
        "E_INVALID RDY count 101 out of range 0-100"
    );
    c.expect_closed();

    // FIN, REQ and TOUCH of a message another client holds: non-fatal.
    let mut owner = d.connect();
    owner.subscribe("shared", "c");
    owner.send(Command::Rdy(1));
    let mut thief = d.connect();
    thief.subscribe("shared", "c");
    d.connect().publish("shared", b"mine");
    let m = owner.expect_message();
    thief.send(Command::Fin(m.id));
    assert_eq!(
        thief.expect_error(),
        format!(
            "E_FIN_FAILED FIN {} failed client does not own message",
            m.id
        )
    );
    thief.send(Command::Req {
        id: m.id,
        timeout_ms: 0,
    });
    assert_eq!(
        thief.expect_error(),
        format!(
            "E_REQ_FAILED REQ {} failed client does not own message",
            m.id
        )
    );
    thief.send(Command::Touch(MessageId(*b"ffffffffffffffff")));
    assert_eq!(
        thief.expect_error(),
        "E_TOUCH_FAILED TOUCH ffffffffffffffff failed ID not in flight"
    );
    owner.send(Command::Fin(m.id));
    calm.still_served();

    // Partial frames, then disconnect, in every state.
    for partial in [
        &b"  V"[..],
        b"PUB t\n\x00\x00\x00\x10abc",
        b"MPUB t\n\x00\x00\x00\x20\x00\x00\x00\x02",
        b"SUB t",
    ] {
        let mut s = TcpStream::connect(d.tcp).unwrap();
        if partial != b"  V" {
            s.write_all(b"  V2").unwrap();
        }
        s.write_all(partial).unwrap();
        drop(s);
        calm.still_served();
    }

    // Slowloris HTTP: a request dribbled a byte at a time while others are served.
    let mut slow = TcpStream::connect(d.http).unwrap();
    for b in b"POST /pub?topic=slow HTTP/1.1\r\nHost: x\r\n" {
        slow.write_all(&[*b]).unwrap();
        calm.still_served_http(&d);
    }
    drop(slow);
    calm.still_served();
}

impl Bystander {
    fn still_served_http(&mut self, d: &Daemon) {
        assert_eq!(d.http("GET", "/ping", b""), (200, "OK".to_string()));
    }
}

#[test]
fn random_bytes_never_hurt_the_daemon() {
    let d = Daemon::start(&[]);
    let mut calm = Bystander::new(&d);
    let mut next = crate::harness::rng(0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id()));
    let verbs: &[&[u8]] = &[
        b"PUB ",
        b"MPUB ",
        b"SUB ",
        b"RDY ",
        b"FIN ",
        b"IDENTIFY\n",
        b"DPUB ",
        b"\n",
        b" ",
    ];
    let rounds = if std::env::var("RSQ_LONG_TESTS").is_ok() {
        2000
    } else {
        200
    };
    for round in 0..rounds {
        let mut input = b"  V2".to_vec();
        for _ in 0..(next() % 8) {
            if next().is_multiple_of(2) {
                input.extend_from_slice(verbs[(next() as usize) % verbs.len()]);
            }
            let len = (next() % 64) as usize;
            input.extend((0..len).map(|_| next() as u8));
        }
        let mut s = TcpStream::connect(d.tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let _ = s.write_all(&input);
        let mut sink = [0u8; 4096];
        let _ = s.read(&mut sink);
        drop(s);
        if round % 20 == 0 {
            calm.still_served();
        }
    }
    calm.still_served();
}

#[test]
fn random_http_requests_get_4xx_not_crashes() {
    let d = Daemon::start(&["--max-msg-size=512", "--max-body-size=2048"]);
    let mut calm = Bystander::new(&d);
    let mut next = crate::harness::rng(0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id()));
    let paths: Vec<&str> = rsqd::http::ROUTES
        .into_iter()
        .chain(["/config/x", "/nope"])
        .collect();
    let words = [
        "topic=t",
        "topic=",
        "topic=%ff",
        "channel=c",
        "channel=a%23ephemeral",
        "binary=true",
        "binary=maybe",
        "defer=-1",
        "defer=99999999999999",
        "format=json",
        "include_clients=x",
        "topic=t%00",
        "&&",
        "=",
        "topic=t&topic=u",
    ];
    let rounds = if std::env::var("RSQ_LONG_TESTS").is_ok() {
        3000
    } else {
        300
    };
    for round in 0..rounds {
        let path = paths[(next() as usize) % paths.len()];
        let query: Vec<&str> = (0..next() % 4)
            .map(|_| words[(next() as usize) % words.len()])
            .collect();
        let body: Vec<u8> = (0..(next() % 3000)).map(|_| next() as u8).collect();
        let method = if next().is_multiple_of(4) {
            "GET"
        } else {
            "POST"
        };
        let uri = format!("{path}?{}", query.join("&"));
        let (status, text) = d.http(method, &uri, &body);
        assert!(
            status < 500,
            "{method} {uri} with {} body bytes: {status} {text}",
            body.len()
        );
        if round % 50 == 0 {
            calm.still_served();
        }
    }
    calm.still_served();
}

#[test]
fn a_publisher_that_reads_no_answers_is_held_back_not_buffered() {
    // One PUB of a 1-byte body: 12 bytes in, a 10-byte OK out.
    const PUB: &[u8] = b"PUB held\n\x00\x00\x00\x01x";
    const PLANNED: usize = 4_000_000;
    let d = Daemon::start(&[]);
    let mut bystander = Bystander::new(&d);
    let mut s = TcpStream::connect(d.tcp).unwrap();
    s.write_all(b"  V2").unwrap();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let chunk = PUB.repeat(10_000);
    let mut written = 0;
    // Bounded: stops at the first write the daemon does not take in 3 s.
    while written < PLANNED * PUB.len() {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        written < PLANNED * PUB.len(),
        "the daemon read {written} bytes of commands without its answers being read"
    );
    bystander.still_served();
    // Every whole PUB it took is answered once the client reads. A slow
    // run may take past the 30 s heartbeat interval: a heartbeat among the
    // answers is skipped, anything else but OK fails.
    let accepted = written / PUB.len();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut oks = 0;
    let mut heartbeats = 0;
    while oks < accepted {
        let mut header = [0u8; 8];
        s.read_exact(&mut header).unwrap();
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut data = vec![0u8; size - 4];
        s.read_exact(&mut data).unwrap();
        assert_eq!(&header[4..], b"\x00\x00\x00\x00", "a response frame");
        match &data[..] {
            b"OK" => oks += 1,
            b"_heartbeat_" if heartbeats < 3 => heartbeats += 1,
            other => panic!("answer {} of {accepted}: {other:?}", oks + 1),
        }
    }
}
