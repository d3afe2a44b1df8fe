//! Property tests: encoders and decoders are inverses, decoding does not
//! depend on how the input is split, and oversized sizes are rejected from
//! their headers alone.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use rsq_codec::{
    Command, CommandDecoder, ErrorCode, Frame, FrameDecoder, IdGenerator, Limits, MAGIC_V2,
    Message, MessageId, ProtocolError,
};

/// Small limits so generated inputs reach every limit check.
fn limits() -> Limits {
    Limits {
        max_msg_size: 64,
        max_body_size: 256,
        max_rdy_count: 2500,
        max_req_timeout_ms: 3_600_000,
    }
}

fn name() -> impl Strategy<Value = String> {
    ("[.a-zA-Z0-9_-]{1,54}", any::<bool>())
        .prop_map(|(stem, eph)| if eph { stem + "#ephemeral" } else { stem })
}

fn body(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 1..=max).prop_map(Bytes::from)
}

/// Ids are opaque bytes on the wire; anything but a separator round-trips.
fn id() -> impl Strategy<Value = MessageId> {
    proptest::array::uniform16(
        any::<u8>().prop_filter("separator", |b| !matches!(b, b' ' | b'\n' | b'\r')),
    )
    .prop_map(MessageId)
}

fn command() -> impl Strategy<Value = Command> {
    let l = limits();
    let msg = l.max_msg_size as usize;
    prop_oneof![
        body(200).prop_map(Command::Identify),
        body(200).prop_map(Command::Auth),
        (name(), name()).prop_map(|(topic, channel)| Command::Sub { topic, channel }),
        (name(), body(msg)).prop_map(|(topic, body)| Command::Pub { topic, body }),
        // At most 3 bodies of 64: 4 + 3 * 68 = 208 <= 256.
        (name(), vec(body(msg), 1..=3)).prop_map(|(topic, bodies)| Command::Mpub { topic, bodies }),
        (name(), 0..=l.max_req_timeout_ms, body(msg)).prop_map(|(topic, defer_ms, body)| {
            Command::Dpub {
                topic,
                defer_ms,
                body,
            }
        }),
        (0..=l.max_rdy_count).prop_map(Command::Rdy),
        id().prop_map(Command::Fin),
        (id(), any::<u64>()).prop_map(|(id, timeout_ms)| Command::Req { id, timeout_ms }),
        id().prop_map(Command::Touch),
        Just(Command::Cls),
        Just(Command::Nop),
    ]
}

/// Every result the decoder gives for `input`, fed in pieces cut at
/// `cuts` (byte offsets), then closed with `decode_eof`.
fn decode_all(
    mut dec: CommandDecoder,
    input: &[u8],
    cuts: &[usize],
) -> Vec<Result<Command, ProtocolError>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    'feed: for p in points {
        buf.extend_from_slice(&input[fed..p]);
        fed = p;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(c)) => out.push(Ok(c)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    if dec.is_failed() {
                        break 'feed;
                    }
                }
            }
        }
    }
    if !dec.is_failed() {
        loop {
            match dec.decode_eof(&mut buf) {
                Ok(Some(c)) => out.push(Ok(c)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    if dec.is_failed() {
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Input pieces: valid commands and raw noise, so that streams reach deep
/// decoder states and then go wrong in every way.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => command().prop_map(|c| c.to_bytes().to_vec()),
        1 => vec(any::<u8>(), 0..40),
        1 => vec(prop_oneof![Just(b'\n'), Just(b' '), Just(0u8), Just(0xffu8), Just(b'1')], 0..12),
        1 => (prop_oneof![Just("PUB t\n"), Just("MPUB t\n"), Just("DPUB t 5\n"), Just("IDENTIFY\n"), Just("AUTH\n")], any::<u32>())
            .prop_map(|(line, size)| {
                let mut v = line.as_bytes().to_vec();
                v.extend_from_slice(&size.to_be_bytes());
                v
            }),
    ];
    vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn commands_round_trip(cmds in vec(command(), 1..8)) {
        let mut wire = BytesMut::from(&MAGIC_V2[..]);
        for c in &cmds {
            c.encode(&mut wire);
        }
        let got = decode_all(CommandDecoder::new(limits()), &wire, &[]);
        let want: Vec<_> = cmds.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn commands_round_trip_split_anywhere(cmds in vec(command(), 1..6), cuts in vec(any::<usize>(), 0..20)) {
        let mut wire = BytesMut::new();
        for c in &cmds {
            c.encode(&mut wire);
        }
        let got = decode_all(CommandDecoder::without_magic(limits()), &wire, &cuts);
        let want: Vec<_> = cmds.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn splitting_never_changes_results(input in stream(), cuts in vec(any::<usize>(), 0..24), magic in any::<bool>()) {
        let make = || if magic { CommandDecoder::new(limits()) } else { CommandDecoder::without_magic(limits()) };
        let whole = decode_all(make(), &input, &[]);
        let split = decode_all(make(), &input, &cuts);
        prop_assert_eq!(&whole, &split);
        // Byte at a time, the harshest split.
        let every: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(&whole, &decode_all(make(), &input, &every));
    }

    #[test]
    fn oversize_bodies_fail_on_the_header_alone(
        verb in 0usize..5,
        size in prop_oneof![(257u32..=u32::MAX), Just(0x8000_0000u32), Just(u32::MAX)],
    ) {
        // max_msg_size is 64 and max_body_size 256: 257.. is too big for both
        // (and 0x80000000.. reads as a negative size, as in nsqd).
        let line: &[u8] = [&b"PUB t\n"[..], b"DPUB t 1\n", b"IDENTIFY\n", b"AUTH\n", b"MPUB t\n"][verb];
        let mut buf = BytesMut::from(line);
        buf.put_u32(size);
        let before = buf.capacity();
        let mut dec = CommandDecoder::without_magic(limits());
        let err = dec.decode(&mut buf).unwrap_err();
        prop_assert!(matches!(err.code, ErrorCode::BadMessage | ErrorCode::BadBody), "{}", err);
        prop_assert!(buf.capacity() <= before);
        prop_assert!(dec.is_failed());
    }

    #[test]
    fn oversize_mpub_parts_fail_on_their_headers(count in 52u32..=u32::MAX, msg_size in 65u32..=u32::MAX) {
        // (256 - 4) / 5 = 50 messages at most.
        let mut dec = CommandDecoder::without_magic(limits());
        let mut buf = BytesMut::from(&b"MPUB t\n"[..]);
        buf.put_u32(200);
        buf.put_u32(count);
        prop_assert!(dec.decode(&mut buf).is_err());

        let mut dec = CommandDecoder::without_magic(limits());
        let mut buf = BytesMut::from(&b"MPUB t\n"[..]);
        buf.put_u32(200);
        buf.put_u32(2);
        buf.put_u32(msg_size);
        let err = dec.decode(&mut buf).unwrap_err();
        prop_assert_eq!(err.code, ErrorCode::BadMessage);
    }

    #[test]
    fn ids_increase_whatever_the_clock_does(node in 0u16..1024, start in 0i64..i64::MAX / 2, steps in vec(-5_000_000_000i64..5_000_000_000, 1..200)) {
        let g = IdGenerator::new(node);
        let mut now = start;
        let mut prev: Option<MessageId> = None;
        for step in steps {
            now = now.saturating_add(step);
            let id = g.next(now);
            let value = id.to_u64().unwrap();
            prop_assert_eq!((value >> 12) & 0x3ff, u64::from(node));
            prop_assert!(id.as_bytes().iter().all(|b| b"0123456789abcdef".contains(b)));
            if let Some(p) = prev {
                // Fixed-width lowercase hex: byte order is numeric order.
                prop_assert!(id > p);
            }
            prev = Some(id);
        }
    }

    #[test]
    fn messages_round_trip(id in proptest::array::uniform16(any::<u8>()), ts in any::<i64>(), attempts in any::<u16>(), body in vec(any::<u8>(), 0..300)) {
        let msg = Message { id: MessageId(id), timestamp_ns: ts, attempts, body: Bytes::from(body), deferred: None };
        prop_assert_eq!(Message::decode(msg.to_bytes()), Ok(msg));
    }

    #[test]
    fn frames_round_trip_split_anywhere(
        frames in vec(frame(), 0..8),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let got = decode_frames(&wire, &cuts);
        let want: Vec<_> = frames.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn frame_decoding_ignores_splits(input in vec(any::<u8>(), 0..400), cuts in vec(any::<usize>(), 0..16)) {
        prop_assert_eq!(decode_frames(&input, &[]), decode_frames(&input, &cuts));
    }
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        vec(any::<u8>(), 0..100).prop_map(|d| Frame::Response(Bytes::from(d))),
        vec(any::<u8>(), 0..100).prop_map(|d| Frame::Error(Bytes::from(d))),
        (
            proptest::array::uniform16(any::<u8>()),
            any::<i64>(),
            any::<u16>(),
            vec(any::<u8>(), 0..100)
        )
            .prop_map(|(id, ts, attempts, body)| Frame::Message(Message {
                id: MessageId(id),
                timestamp_ns: ts,
                attempts,
                body: Bytes::from(body),
                deferred: None,
            })),
    ]
}

fn decode_frames(input: &[u8], cuts: &[usize]) -> Vec<Result<Frame, rsq_codec::CodecError>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut dec = FrameDecoder::new(200);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for p in points {
        buf.extend_from_slice(&input[fed..p]);
        fed = p;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}
