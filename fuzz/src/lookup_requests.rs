//! Fuzz target: nsqlookupd's producer protocol as rsq-lookupd reads it
//! (`rsq_codec::lookup::RequestDecoder`), after the `"  V1"` magic.
//!
//! Input layout: byte 0 seeds the split points (0 = everything at once),
//! the rest is what a producer sends.
//!
//! Checked: no panic; decoding stops at the first error (all are fatal)
//! and a need for more bytes consumes nothing it has not decoded; how the
//! stream is split changes neither the requests nor the error; every
//! request decoded encodes (as rsqd's lookupd client encodes it) to bytes
//! that decode to the same request, unless the lossy reading of a line
//! that was not UTF-8 made its encoding longer than the line limit.

use bytes::BytesMut;
use rsq_codec::lookup::{MAX_LINE_LEN, Request, RequestDecoder};

use crate::split;

/// What the decoder made of a stream: its requests, then the error that
/// ended it, if any.
type Decoded = (Vec<Request>, Option<String>);

fn decode(pieces: &[&[u8]]) -> Decoded {
    let mut decoder = RequestDecoder::new();
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => {
                    assert!(buf.len() < before, "a request from no bytes");
                    requests.push(request);
                }
                Ok(None) => break,
                Err(e) => return (requests, Some(e.to_string())),
            }
        }
    }
    (requests, None)
}

/// Decodes `request`'s encoding back. A line that was not UTF-8 is read
/// lossily (each bad byte becomes U+FFFD, three bytes), so its encoding
/// can outgrow [`MAX_LINE_LEN`]; such a request is refused again, as too
/// long, and there is nothing to compare.
fn round_trip(request: &Request) {
    let mut wire = BytesMut::new();
    request.encode(&mut wire);
    let line = !matches!(request, Request::Identify { .. });
    if line && wire.len() > MAX_LINE_LEN {
        return;
    }
    let mut decoder = RequestDecoder::new();
    match decoder.decode(&mut wire) {
        Ok(Some(again)) => assert_eq!(&again, request, "re-encoded request changed"),
        other => panic!("{request:?} re-encoded to bytes that decode to {other:?}"),
    }
    assert!(wire.is_empty(), "re-encoded {request:?} left bytes");
}

/// Runs the target on one input; panics on a finding.
pub fn run(data: &[u8]) {
    let [seed, stream @ ..] = data else {
        return;
    };
    let whole = decode(&[stream]);
    assert_eq!(
        whole,
        decode(&split(stream, *seed)),
        "splitting changed what was decoded"
    );
    whole.0.iter().for_each(round_trip);
}
