//! Fuzz target: rsq-compress's decoding of what a client sends once
//! IDENTIFY granted snappy or deflate (`Decompressor`), and its round trip
//! with `Compressor`.
//!
//! Input layout: byte 0 picks the compression (bit 0: snappy or deflate;
//! bits 1..4: the deflate level, 1..=9), byte 1 seeds the split points (0
//! = everything at once), the rest is the client's compressed bytes, and
//! also, for the round trip, plain bytes to compress.
//!
//! Checked: no panic; every `decompress` call is bounded (at most about
//! `MAX_DECODE_STEP` bytes out) and a driver that calls it until it makes
//! no progress stops; how the bytes are split changes neither the plain
//! bytes nor whether they are corrupt; plain bytes decoded from the input
//! compress and decode back to themselves; and the rest, compressed in
//! batches as rsqd's writer does, decodes to itself however it is split.

use bytes::BytesMut;
use rsq_compress::{Compression, Compressor, Decompressor, MAX_DECODE_STEP};

use crate::split;

/// Most output one call may add: the step, plus one inflate window of the
/// last pass (deflate) or one chunk (snappy).
const STEP_SLACK: usize = 256 * 1024;

/// The input was found corrupt. Which words the backend uses for it may
/// depend on where the input was cut (zlib-rs reports a bad distance
/// once, then "repeated call with bad state"), so only the fact is
/// compared; the driver closes the connection either way.
#[derive(Debug, PartialEq, Eq)]
struct Corrupt;

/// Decodes `pieces` in order as a driver does: each piece appended, then
/// `decompress` until it neither consumes nor produces.
fn decode(kind: Compression, pieces: &[&[u8]]) -> Result<Vec<u8>, Corrupt> {
    let mut decoder = Decompressor::new(kind);
    let mut input = BytesMut::new();
    let mut plain = BytesMut::new();
    for piece in pieces {
        input.extend_from_slice(piece);
        // Every pass but the last consumes input or produces output, so
        // the passes are bounded by the bytes moved.
        let (start_in, start_out) = (input.len(), plain.len());
        let mut passes = 0usize;
        loop {
            let (before_in, before_out) = (input.len(), plain.len());
            decoder
                .decompress(&mut input, &mut plain)
                .map_err(|_| Corrupt)?;
            let made = plain.len() - before_out;
            assert!(
                made <= MAX_DECODE_STEP + STEP_SLACK,
                "one call made {made} bytes"
            );
            assert!(input.len() <= before_in, "input grew");
            if made == 0 && input.len() == before_in {
                break;
            }
            passes += 1;
            let moved = (start_in - input.len()) + (plain.len() - start_out);
            assert!(passes <= moved, "{passes} passes moved {moved} bytes");
        }
    }
    Ok(plain.to_vec())
}

/// Compresses `plain` in batches of the sizes `pieces` has, each flushed
/// as the writer flushes a batch.
fn encode(kind: Compression, batches: &[&[u8]]) -> Vec<u8> {
    let mut encoder = Compressor::new(kind);
    let mut wire = Vec::new();
    for batch in batches {
        encoder
            .compress(batch, &mut wire)
            .expect("compressing into memory cannot fail");
    }
    wire
}

/// Runs the target on one input; panics on a finding.
pub fn run(data: &[u8]) {
    let [mode, seed, stream @ ..] = data else {
        return;
    };
    let kind = match mode & 1 {
        0 => Compression::Snappy,
        _ => Compression::Deflate(1 + u32::from(mode >> 1) % 9),
    };
    let whole = decode(kind, &[stream]);
    let pieces = split(stream, *seed);
    assert_eq!(
        whole,
        decode(kind, &pieces),
        "splitting changed what was decoded"
    );
    if let Ok(plain) = &whole {
        let again = decode(kind, &[&encode(kind, &[plain])]);
        assert_eq!(again.as_ref(), Ok(plain), "decoded bytes do not round-trip");
    }
    let wire = encode(kind, &pieces);
    let split_wire = split(&wire, seed.wrapping_add(1));
    assert_eq!(
        decode(kind, &split_wire).as_deref(),
        Ok(stream),
        "compressed batches do not decode to themselves"
    );
}
