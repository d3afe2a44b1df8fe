//! Property tests of the lookupd producer protocol ([`rsq_codec::lookup`]):
//! what a producer encodes, lookupd decodes to the same request (and the
//! same for replies), decoding never depends on how the input is split,
//! and oversized sizes are refused from their headers.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use rsq_codec::lookup::{
    MAX_IDENTIFY_BODY, Request, RequestDecoder, ResponseDecoder, encode_response,
};
use rsq_codec::{CodecError, ProtocolError};

fn name() -> impl Strategy<Value = String> {
    ("[.a-zA-Z0-9_-]{1,54}", any::<bool>())
        .prop_map(|(stem, eph)| if eph { stem + "#ephemeral" } else { stem })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        vec(any::<u8>(), 0..300).prop_map(|b| Request::Identify {
            body: Bytes::from(b)
        }),
        (name(), proptest::option::of(name()))
            .prop_map(|(t, c)| Request::register(&t, c.as_deref())),
        (name(), proptest::option::of(name()))
            .prop_map(|(t, c)| Request::unregister(&t, c.as_deref())),
        // Any number of parameters travels as sent.
        vec(name(), 0..4).prop_map(|params| Request::Register { params }),
    ]
}

/// Cut points sorted and within `0..=len`, ending at `len`.
fn points(cuts: &[usize], len: usize) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    points.push(len);
    points.sort_unstable();
    points
}

/// Every request (and the error ending the stream, if any) decoded from
/// `input` fed in pieces cut at `cuts`.
fn decode_requests(input: &[u8], cuts: &[usize]) -> Vec<Result<Request, ProtocolError>> {
    let mut decoder = RequestDecoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    'feed: for p in points(cuts, input.len()) {
        buf.extend_from_slice(&input[fed..p]);
        fed = p;
        // Each pass consumes a request or ends the loop.
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break 'feed; // lookupd's errors are fatal.
                }
            }
        }
    }
    out
}

/// Every reply (and the error ending the stream) decoded from `input`.
fn decode_replies(input: &[u8], cuts: &[usize], max: usize) -> Vec<Result<Bytes, CodecError>> {
    let mut decoder = ResponseDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    'feed: for p in points(cuts, input.len()) {
        buf.extend_from_slice(&input[fed..p]);
        fed = p;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break 'feed;
                }
            }
        }
    }
    out
}

/// Input pieces: valid requests and noise, so streams reach every decoder
/// state and then go wrong in every way.
fn request_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => request().prop_map(|r| {
            let mut out = BytesMut::new();
            r.encode(&mut out);
            out.to_vec()
        }),
        1 => vec(any::<u8>(), 0..40),
        1 => vec(prop_oneof![Just(b'\n'), Just(b' '), Just(b'\r'), Just(0u8), Just(b'A')], 0..12),
        1 => any::<u32>().prop_map(|size| {
            let mut v = b"IDENTIFY\n".to_vec();
            v.extend_from_slice(&size.to_be_bytes());
            v
        }),
        1 => Just(vec![b'R'; 1100]),
    ];
    vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn requests_round_trip(requests in vec(request(), 1..8)) {
        let mut wire = BytesMut::new();
        for r in &requests {
            r.encode(&mut wire);
        }
        let got = decode_requests(&wire, &[]);
        let want: Vec<_> = requests.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn request_decoding_does_not_depend_on_splits(
        input in request_stream(),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        prop_assert_eq!(decode_requests(&input, &cuts), decode_requests(&input, &[]));
    }

    #[test]
    fn byte_by_byte_equals_all_at_once(input in request_stream()) {
        let every: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(decode_requests(&input, &every), decode_requests(&input, &[]));
    }

    #[test]
    fn oversized_identify_is_refused_from_its_header(size in (MAX_IDENTIFY_BODY as u32 + 1)..) {
        let mut wire = b"IDENTIFY\n".to_vec();
        wire.extend_from_slice(&size.to_be_bytes());
        let got = decode_requests(&wire, &[]);
        prop_assert_eq!(got.len(), 1);
        prop_assert!(got[0].is_err());
    }

    #[test]
    fn replies_round_trip_and_ignore_splits(
        replies in vec(vec(any::<u8>(), 0..100), 0..8),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        let mut wire = BytesMut::new();
        for r in &replies {
            encode_response(r, &mut wire);
        }
        let want: Vec<_> = replies.into_iter().map(|r| Ok(Bytes::from(r))).collect();
        prop_assert_eq!(&decode_replies(&wire, &[], 100), &want);
        prop_assert_eq!(&decode_replies(&wire, &cuts, 100), &want);
    }

    #[test]
    fn reply_decoding_of_noise_does_not_depend_on_splits(
        input in vec(any::<u8>(), 0..200),
        cuts in vec(any::<usize>(), 0..16),
        max in 0usize..64,
    ) {
        prop_assert_eq!(decode_replies(&input, &cuts, max), decode_replies(&input, &[], max));
    }
}
