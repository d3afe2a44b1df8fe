//! Fuzz target: the client-side frame reader and the message layout.
//!
//! Input layout: byte 0 picks the `FrameDecoder` size limit, byte 1 seeds
//! the split points (0 = feed everything at once), the rest is a byte stream
//! from a server. The same rest is also handed whole to `Message::decode`,
//! `Message::from_record` and `ProtocolError::from_frame_body`.
//!
//! Checked: no panic; errors are sticky and consume nothing; every frame
//! re-encodes to the exact bytes it was read from and decodes back equal;
//! splitting the stream never changes what is decoded; a message decoded
//! from bytes (plain or as a disk record, deferred or not) encodes back to
//! exactly those bytes; an error body that parses re-parses to itself.

use bytes::{Bytes, BytesMut};
use rsq_codec::{
    CodecError, DEFAULT_MAX_FRAME_SIZE, DEFERRED_RECORD_TAG, FRAME_HEADER_LEN, Frame, FrameDecoder,
    MESSAGE_HEADER_LEN, Message, ProtocolError,
};

fn max_frame_size(preset: u8) -> u32 {
    match preset & 3 {
        0 => 64,
        1 => 4 + MESSAGE_HEADER_LEN as u32,
        2 => DEFAULT_MAX_FRAME_SIZE,
        _ => u32::from(preset),
    }
}

fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![stream];
    }
    let mut x = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (1 + (x % 32) as usize).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

fn check_frame(frame: &Frame, raw: &[u8], max: u32) {
    let mut wire = BytesMut::new();
    frame.encode(&mut wire);
    assert_eq!(&wire[..], raw, "{frame:?} re-encodes differently");
    let mut dec = FrameDecoder::new(max);
    assert_eq!(dec.decode(&mut wire).as_ref(), Ok(&Some(frame.clone())));
    assert!(wire.is_empty());
    if let Frame::Message(msg) = frame {
        assert_eq!(msg.deferred, None);
        assert_eq!(msg.encoded_len() + FRAME_HEADER_LEN, raw.len());
    }
}

fn decode_all(pieces: &[&[u8]], max: u32) -> (Vec<Frame>, Option<CodecError>) {
    let mut dec = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match dec.decode(&mut buf) {
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) consumed input");
                    break;
                }
                Ok(Some(frame)) => {
                    let used = before.len() - buf.len();
                    assert!(used >= FRAME_HEADER_LEN);
                    check_frame(&frame, &before[..used], max);
                    frames.push(frame);
                }
                Err(err) => {
                    // Sticky: the same error again, whatever follows.
                    buf.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0]);
                    let len = buf.len();
                    assert_eq!(dec.decode(&mut buf), Err(err.clone()));
                    assert_eq!(buf.len(), len);
                    return (frames, Some(err));
                }
            }
        }
    }
    (frames, None)
}

fn check_message(data: &[u8]) {
    let src = Bytes::copy_from_slice(data);
    match Message::decode(src.clone()) {
        Ok(msg) => {
            assert_eq!(msg.to_bytes(), src);
            assert_eq!(msg.deferred, None);
        }
        Err(CodecError::MessageTooShort { len, min }) => {
            assert_eq!((len, min), (data.len(), MESSAGE_HEADER_LEN));
        }
        Err(other) => panic!("Message::decode failed with {other:?}"),
    }
    match Message::from_record(src.clone()) {
        Ok(msg) => {
            assert_eq!(msg.to_record(), src, "{msg:?}");
            assert_eq!(
                msg.deferred.is_some(),
                data.starts_with(DEFERRED_RECORD_TAG)
            );
        }
        Err(CodecError::MessageTooShort { len, .. }) => assert_eq!(len, data.len()),
        Err(other) => panic!("Message::from_record failed with {other:?}"),
    }
    if let Some(err) = ProtocolError::from_frame_body(data) {
        let text = err.to_string();
        assert_eq!(text.len(), err.wire_len());
        assert_eq!(ProtocolError::from_frame_body(text.as_bytes()), Some(err));
    }
}

/// Runs the target on one input; panics on a finding.
pub fn run(data: &[u8]) {
    let [preset, seed, stream @ ..] = data else {
        return;
    };
    let max = max_frame_size(*preset);
    let whole = decode_all(&[stream], max);
    if *seed != 0 {
        let split = decode_all(&chunks(stream, *seed), max);
        assert_eq!(split, whole, "splitting the stream changed the result");
    }
    check_message(stream);
}
