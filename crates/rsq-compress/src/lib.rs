//! rsq-compress: snappy and deflate as sans-IO transforms of a protocol V2
//! connection's bytes, shared by the daemon (rsqd) and the load generator
//! (rsq-bench). Depends on `snap`, `flate2` (zlib-rs backend), `crc32c` and `bytes`; does no IO.
//!
#![doc = include_str!("../README.md")]
//!
//! ## How it is used
//!
//! A [`Compressor`] turns a batch of plain frames into bytes for the wire,
//! flushed so the peer can decode every frame of the batch at once (snappy
//! framing chunks; raw DEFLATE ended by a sync flush, as Go's
//! `flate.Writer.Flush`). A [`Decompressor`] consumes wire bytes and yields
//! plain command bytes, a bounded amount per call so a small
//! "decompression bomb" never becomes a large buffer. Neither does IO: the
//! caller (rsqd's `tcp/stream.rs`, rsq-bench's `connection.rs`) moves the
//! bytes.

use std::io;

use bytes::{Buf, BytesMut};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

/// Most plain bytes one [`Decompressor::decompress`] call produces.
pub const MAX_DECODE_STEP: usize = 1 << 20;

/// Most uncompressed bytes in one snappy chunk (the framing format's limit).
const SNAPPY_CHUNK: usize = 65536;
/// The framing format's stream identifier chunk.
const SNAPPY_STREAM_ID: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// A compression negotiated in IDENTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The snappy framing format.
    Snappy,
    /// Raw DEFLATE (RFC 1951) at this level, 1..=9.
    Deflate(u32),
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The sending side of a compressed connection.
pub struct Compressor(Encoder);

enum Encoder {
    Snappy {
        raw: Box<snap::raw::Encoder>,
        started: bool,
    },
    Deflate(Box<Compress>),
}

impl Compressor {
    /// A fresh compressed stream.
    pub fn new(kind: Compression) -> Self {
        Compressor(match kind {
            Compression::Snappy => Encoder::Snappy {
                raw: Box::new(snap::raw::Encoder::new()),
                started: false,
            },
            Compression::Deflate(level) => Encoder::Deflate(Box::new(Compress::new(
                flate2::Compression::new(level.clamp(1, 9)),
                false,
            ))),
        })
    }

    /// Appends the encoding of `input` to `out`, flushed: the peer can
    /// decode all of `input` from what has been appended so far.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.0 {
            Encoder::Snappy { raw, started } => {
                if !*started {
                    out.extend_from_slice(SNAPPY_STREAM_ID);
                    *started = true;
                }
                for chunk in input.chunks(SNAPPY_CHUNK) {
                    snappy_chunk(raw, chunk, out)?;
                }
                Ok(())
            }
            Encoder::Deflate(c) => {
                let mut rest = input;
                loop {
                    out.reserve(rest.len() / 2 + 64);
                    let before = c.total_in();
                    c.compress_vec(rest, out, FlushCompress::Sync)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    let used = usize::try_from(c.total_in() - before).unwrap_or(rest.len());
                    rest = &rest[used.min(rest.len())..];
                    // The flush is complete once all input is taken and the
                    // compressor stopped with room to spare.
                    if rest.is_empty() && out.len() < out.capacity() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn snappy_chunk(raw: &mut snap::raw::Encoder, chunk: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let crc = masked_crc32c(chunk);
    // Compressed straight into `out`, after room for the chunk header.
    let header_at = out.len();
    let data_at = header_at + 8;
    out.resize(data_at + snap::raw::max_compress_len(chunk.len()), 0);
    let n = raw
        .compress(chunk, &mut out[data_at..])
        .map_err(|e| io::Error::other(e.to_string()))?;
    // As the reference encoder: store chunks that do not shrink by 1/8.
    let kind = if n >= chunk.len() - chunk.len() / 8 {
        out.truncate(data_at);
        out.extend_from_slice(chunk);
        0x01
    } else {
        out.truncate(data_at + n);
        0x00
    };
    let len =
        u32::try_from(out.len() - data_at + 4).map_err(|_| corrupt("snappy chunk too long"))?;
    let header = &mut out[header_at..data_at];
    header[0] = kind;
    header[1..4].copy_from_slice(&len.to_le_bytes()[..3]);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The receiving side of a compressed connection.
///
/// A few KiB of DEFLATE can say "megabytes of zeros"; one call stops after
/// about [`MAX_DECODE_STEP`] of them, and the caller comes back for more:
///
/// ```
/// use bytes::BytesMut;
/// use rsq_compress::{Compression, Compressor, Decompressor, MAX_DECODE_STEP};
///
/// let zeros = vec![0u8; 3 * MAX_DECODE_STEP];
/// let mut wire = Vec::new();
/// Compressor::new(Compression::Deflate(9)).compress(&zeros, &mut wire).unwrap();
/// assert!(wire.len() < 16 * 1024);
///
/// let mut decoder = Decompressor::new(Compression::Deflate(9));
/// let mut input = BytesMut::from(&wire[..]);
/// let mut plain = BytesMut::new();
/// decoder.decompress(&mut input, &mut plain).unwrap();
/// assert!(plain.len() < 2 * MAX_DECODE_STEP);
///
/// let mut calls = 1;
/// loop {
///     let before = plain.len();
///     decoder.decompress(&mut input, &mut plain).unwrap();
///     if plain.len() == before {
///         break;
///     }
///     calls += 1;
/// }
/// assert_eq!(plain.len(), zeros.len());
/// assert!(calls >= 3);
/// ```
pub struct Decompressor(Decoder);

enum Decoder {
    Snappy(snap::raw::Decoder),
    Deflate {
        inner: Box<Decompress>,
        ended: bool,
        pending: bool,
    },
}

impl Decompressor {
    /// A fresh decoder for `kind`.
    pub fn new(kind: Compression) -> Self {
        Decompressor(match kind {
            Compression::Snappy => Decoder::Snappy(snap::raw::Decoder::new()),
            Compression::Deflate(_) => Decoder::Deflate {
                inner: Box::new(Decompress::new(false)),
                ended: false,
                pending: false,
            },
        })
    }

    /// Decodes what it can of `input` (removing what it used) into `out`,
    /// stopping after about [`MAX_DECODE_STEP`] bytes. Call it again, before
    /// reading more input, until `out` stops growing: output can be pending
    /// even when `input` is empty. Corrupt input is an error.
    pub fn decompress(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> io::Result<()> {
        match &mut self.0 {
            Decoder::Snappy(raw) => snappy_decode(raw, input, out),
            Decoder::Deflate {
                inner,
                ended,
                pending,
            } => {
                let start = out.len();
                while (!input.is_empty() || *pending) && out.len() - start < MAX_DECODE_STEP {
                    if *ended && !input.is_empty() {
                        return Err(corrupt("data after the end of the deflate stream"));
                    }
                    // Inflated in place, into room made at the end of `out`.
                    let room = (input.len() * 4).clamp(4096, 256 * 1024);
                    let at = out.len();
                    out.resize(at + room, 0);
                    let (before_in, before_out) = (inner.total_in(), inner.total_out());
                    let result = inner.decompress(input, &mut out[at..], FlushDecompress::None);
                    let used = usize::try_from(inner.total_in() - before_in).unwrap_or(0);
                    let made = usize::try_from(inner.total_out() - before_out).unwrap_or(0);
                    input.advance(used.min(input.len()));
                    // Cut the room not filled, on an error too: `out` holds
                    // only decoded bytes, never the zeros made room with.
                    out.truncate(at + made.min(room));
                    let status = result.map_err(|e| corrupt(&format!("deflate: {e}")))?;
                    // A full output chunk may leave more output inside.
                    *pending = made == room;
                    if status == Status::StreamEnd {
                        *ended = true;
                    }
                    if used == 0 && made == 0 {
                        break;
                    }
                }
                Ok(())
            }
        }
    }
}

fn snappy_decode(
    raw: &mut snap::raw::Decoder,
    input: &mut BytesMut,
    out: &mut BytesMut,
) -> io::Result<()> {
    let start = out.len();
    while input.len() >= 4 && out.len() - start < MAX_DECODE_STEP {
        let kind = input[0];
        let len = usize::from(input[1]) | usize::from(input[2]) << 8 | usize::from(input[3]) << 16;
        if matches!(kind, 0x00 | 0x01) && len > 4 + snap::raw::max_compress_len(SNAPPY_CHUNK) {
            return Err(corrupt("snappy chunk too long"));
        }
        if input.len() < 4 + len {
            break;
        }
        let body = &input[4..4 + len];
        match kind {
            0xff if body != &SNAPPY_STREAM_ID[4..] => {
                return Err(corrupt("bad snappy stream identifier"));
            }
            0xff => {}
            0x00 | 0x01 => {
                if len < 4 {
                    return Err(corrupt("snappy chunk too short"));
                }
                let crc = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                let data = &body[4..];
                let at = out.len();
                if kind == 0x00 {
                    let n = snap::raw::decompress_len(data)
                        .map_err(|e| corrupt(&format!("snappy: {e}")))?;
                    if n > SNAPPY_CHUNK {
                        return Err(corrupt("snappy chunk too long"));
                    }
                    out.resize(at + n, 0);
                    raw.decompress(data, &mut out[at..])
                        .map_err(|e| corrupt(&format!("snappy: {e}")))?;
                } else {
                    if data.len() > SNAPPY_CHUNK {
                        return Err(corrupt("snappy chunk too long"));
                    }
                    out.extend_from_slice(data);
                }
                if masked_crc32c(&out[at..]) != crc {
                    return Err(corrupt("snappy checksum mismatch"));
                }
            }
            0x02..=0x7f => return Err(corrupt("unskippable snappy chunk")),
            _ => {} // padding and skippable chunks
        }
        input.advance(4 + len);
    }
    Ok(())
}

/// The framing format's masked checksum.
fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(kind: Compression, batches: &[Vec<u8>]) {
        let mut c = Compressor::new(kind);
        let mut d = Decompressor::new(kind);
        let mut wire = BytesMut::new();
        let mut plain = BytesMut::new();
        let mut expected = Vec::new();
        for batch in batches {
            let mut out = Vec::new();
            c.compress(batch, &mut out)
                .unwrap_or_else(|e| panic!("{e}"));
            expected.extend_from_slice(batch);
            // Feed the wire a few bytes at a time: any split decodes the same.
            for piece in out.chunks(7) {
                wire.extend_from_slice(piece);
                loop {
                    let before = plain.len();
                    d.decompress(&mut wire, &mut plain)
                        .unwrap_or_else(|e| panic!("{e}"));
                    if plain.len() == before {
                        break;
                    }
                }
            }
            // Flushed: everything sent so far is decodable now.
            assert_eq!(&plain[..], &expected[..]);
        }
    }

    #[test]
    fn corrupt_deflate_leaves_only_decoded_bytes() {
        let mut d = Decompressor::new(Compression::Deflate(6));
        // A stored block header claiming 4 bytes whose length check fails.
        let mut wire = BytesMut::from(&b"\x00\x04\x00\x00\x00abcd"[..]);
        let mut plain = BytesMut::from(&b"before"[..]);
        assert!(d.decompress(&mut wire, &mut plain).is_err());
        assert_eq!(&plain[..], b"before", "no room left behind");
    }

    #[test]
    fn crc32c_known_answer() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn snappy_and_deflate_roundtrip_flushed_batches() {
        let batches = vec![
            b"OK".to_vec(),
            Vec::new(),
            vec![b'x'; 200_000],
            (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect(),
            b"tail".to_vec(),
        ];
        roundtrip(Compression::Snappy, &batches);
        roundtrip(Compression::Deflate(6), &batches);
        roundtrip(Compression::Deflate(1), &batches);
    }

    #[test]
    fn snappy_rejects_corruption() {
        let mut c = Compressor::new(Compression::Snappy);
        let mut out = Vec::new();
        c.compress(b"hello hello hello hello", &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        let last = out.len() - 1;
        out[last] ^= 0x55;
        let mut d = Decompressor::new(Compression::Snappy);
        let mut wire = BytesMut::from(&out[..]);
        let mut plain = BytesMut::new();
        assert!(d.decompress(&mut wire, &mut plain).is_err());
        let mut d = Decompressor::new(Compression::Snappy);
        let mut wire = BytesMut::from(&b"\x05\x01\x00\x00x"[..]);
        assert!(d.decompress(&mut wire, &mut plain).is_err());
    }

    #[test]
    fn deflate_output_is_bounded_per_call() {
        let mut c = Compressor::new(Compression::Deflate(9));
        let mut out = Vec::new();
        c.compress(&vec![0u8; 8 * MAX_DECODE_STEP], &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut d = Decompressor::new(Compression::Deflate(9));
        let mut wire = BytesMut::from(&out[..]);
        let mut plain = BytesMut::new();
        d.decompress(&mut wire, &mut plain)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(plain.len() < 2 * MAX_DECODE_STEP, "{}", plain.len());
        assert!(!wire.is_empty());
    }

    /// Bodies that compress (repeats) and that do not (a byte ramp mixed
    /// with the seed), across the 64 KiB chunk boundary.
    fn batch() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (0usize..150_000, any::<u8>(), any::<bool>()).prop_map(|(len, seed, repeat)| {
            (0..len)
                .map(|i| match repeat {
                    true => seed.wrapping_add((i % 13) as u8),
                    false => (i as u8).wrapping_mul(31) ^ seed ^ (i >> 8) as u8,
                })
                .collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Our streams decode with the `snap` and `flate2` crates' own
        /// stream readers, as any other client's implementation would.
        #[test]
        fn streams_decode_with_reference_readers(
            batches in proptest::collection::vec(batch(), 1..5),
        ) {
            use std::io::Read;
            let expected = batches.concat();
            for kind in [Compression::Snappy, Compression::Deflate(6)] {
                let mut c = Compressor::new(kind);
                let mut wire = Vec::new();
                for b in &batches {
                    c.compress(b, &mut wire).unwrap_or_else(|e| panic!("{e}"));
                }
                // A connection's deflate stream never ends, so read exactly
                // what was sent rather than to the end.
                let mut plain = vec![0; expected.len()];
                let read = match kind {
                    Compression::Snappy => {
                        snap::read::FrameDecoder::new(&wire[..]).read_exact(&mut plain)
                    }
                    Compression::Deflate(_) => {
                        flate2::read::DeflateDecoder::new(&wire[..]).read_exact(&mut plain)
                    }
                };
                read.unwrap_or_else(|e| panic!("{e}"));
                proptest::prop_assert_eq!(&plain, &expected);
            }
        }
    }
}
