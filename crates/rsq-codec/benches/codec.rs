//! Micro-benchmark of the hot codec paths: decoding and encoding PUB
//! commands (what publishers send) and message frames (what consumers
//! receive), for 100-byte and 1 KiB bodies. Prints messages and wire
//! megabytes per second.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rsq_codec::{
    Command, CommandDecoder, Frame, FrameDecoder, Limits, Message, MessageId, encode_message_frame,
};

/// Commands or frames per batch; a batch is one timed unit of work.
const BATCH: usize = 10_000;
/// How long each case runs.
const RUN_FOR: Duration = Duration::from_millis(1200);

/// Runs `batch` repeatedly for about [`RUN_FOR`] and prints the rate.
/// `batch` returns the number of wire bytes it processed.
fn bench(name: &str, mut batch: impl FnMut() -> usize) {
    // Warm up caches and the allocator.
    for _ in 0..3 {
        black_box(batch());
    }
    let start = Instant::now();
    let mut msgs = 0u64;
    let mut bytes = 0u64;
    while start.elapsed() < RUN_FOR {
        bytes += batch() as u64;
        msgs += BATCH as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "rsq-codec {name}: {:.2} M msgs/s, {:.0} MB/s",
        msgs as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6
    );
}

fn pub_command(size: usize) -> Command {
    Command::Pub {
        topic: "bench_topic".into(),
        body: Bytes::from(vec![b'x'; size]),
    }
}

fn message(size: usize) -> Message {
    let mut msg = Message::new(
        MessageId(*b"0123456789abcdef"),
        1_700_000_000_000_000_000,
        Bytes::from(vec![b'x'; size]),
    );
    msg.attempts = 1;
    msg
}

fn main() {
    for (label, size) in [("100B", 100), ("1KiB", 1024)] {
        let cmd = pub_command(size);
        let mut wire = BytesMut::new();
        for _ in 0..BATCH {
            cmd.encode(&mut wire);
        }
        let wire = wire.freeze();

        // Decode: each batch copies the wire bytes into a fresh read buffer
        // (as a socket read would) and decodes every PUB from it.
        bench(&format!("decode PUB {label}"), || {
            let mut dec = CommandDecoder::without_magic(Limits::default());
            let mut buf = BytesMut::from(&wire[..]);
            let mut n = 0;
            while let Some(c) = dec.decode(&mut buf).unwrap() {
                black_box(c);
                n += 1;
            }
            assert_eq!(n, BATCH);
            wire.len()
        });

        let mut out = BytesMut::with_capacity(wire.len());
        bench(&format!("encode PUB {label}"), || {
            out.clear();
            for _ in 0..BATCH {
                black_box(&cmd).encode(&mut out);
            }
            black_box(&out);
            out.len()
        });

        let msg = message(size);
        let mut frames = BytesMut::new();
        for _ in 0..BATCH {
            encode_message_frame(&msg, &mut frames);
        }
        let frames = frames.freeze();

        let mut out = BytesMut::with_capacity(frames.len());
        bench(&format!("encode message frame {label}"), || {
            out.clear();
            for _ in 0..BATCH {
                encode_message_frame(black_box(&msg), &mut out);
            }
            black_box(&out);
            out.len()
        });

        bench(&format!("decode message frame {label}"), || {
            let mut dec = FrameDecoder::default();
            let mut buf = BytesMut::from(&frames[..]);
            let mut n = 0;
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                assert!(matches!(f, Frame::Message(_)));
                black_box(f);
                n += 1;
            }
            assert_eq!(n, BATCH);
            frames.len()
        });
    }
}
