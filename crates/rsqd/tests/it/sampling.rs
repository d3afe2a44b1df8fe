//! `sample_rate`: a consumer gets about that share of a channel's messages;
//! the rest are finished for it by the server, so the channel drains.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_codec::{Command, Frame};

use crate::harness::{Daemon, channel_stats};

#[test]
fn sample_rate_delivers_about_that_share() {
    const N: usize = 3000;
    let d = Daemon::start(&[]);
    let mut p = d.connect();
    for chunk in 0..(N / 500) {
        p.send(Command::Mpub {
            topic: "sampled".into(),
            bodies: (0..500)
                .map(|i| Bytes::from(format!("{}", chunk * 500 + i)))
                .collect(),
        });
        p.expect_ok();
    }
    let mut c = d.connect();
    match c.identify(r#"{"feature_negotiation": true, "sample_rate": 29}"#) {
        Frame::Response(body) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["sample_rate"], 29);
        }
        other => panic!("{other:?}"),
    }
    c.send(Command::Sub {
        topic: "sampled".into(),
        channel: "c".into(),
    });
    c.expect_ok();
    c.send(Command::Rdy(100));
    let mut received = 0usize;
    // Everything is delivered or finished by the server: stop once the
    // channel is empty and nothing arrives for a while.
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "sampling did not drain");
        match c.try_frame() {
            Some(Frame::Message(m)) => {
                received += 1;
                c.send(Command::Fin(m.id));
            }
            Some(_) => {}
            None => {
                let s = d.stats();
                let ch = channel_stats(&s, "sampled", "c").unwrap();
                if ch["depth"] == 0 && ch["in_flight_count"] == 0 {
                    assert_eq!(ch["message_count"], N as u64);
                    assert_eq!(ch["clients"][0]["sample_rate"], 29);
                    break;
                }
            }
        }
    }
    // nsqd keeps a message when a draw from 0..100 is <= the rate: 30 %.
    // Binomial(3000, 0.3) has a standard deviation of about 25.
    let expected = N * 30 / 100;
    assert!(
        received.abs_diff(expected) < 150,
        "received {received} of {N}, expected about {expected}"
    );
}
