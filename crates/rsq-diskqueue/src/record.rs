//! The on-disk record format: `[u32 BE payload length][u32 BE CRC32][payload]`.
//!
//! The CRC covers the four length bytes and the payload, so a zero-filled
//! region (what a file system may leave after a crash that extended a file)
//! never decodes as a valid empty record, and a flipped length byte is caught
//! as surely as a flipped payload byte.

#[cfg(test)]
use bytes::{BufMut, Bytes, BytesMut};

/// Bytes before the payload: length and CRC.
pub(crate) const HEADER_LEN: usize = 8;

/// The largest payload the 32-bit length field can state.
pub(crate) const PAYLOAD_LEN_MAX: usize = u32::MAX as usize;

// The header is the length field and the CRC, both 32-bit.
const _: () = assert!(HEADER_LEN == 2 * size_of::<u32>());
// Lengths up to the field's limit are `usize`s on every target rsq builds for.
const _: () = assert!(usize::BITS >= u32::BITS);

/// The header that goes before `payload`: length and CRC. Kept apart from
/// the payload until the write, so a put costs no copy of its payload.
///
/// # Panics
///
/// If `payload` is longer than [`PAYLOAD_LEN_MAX`]. Every caller checked
/// that already: a put against `max_record_size`, which
/// `DiskQueueConfig::validate` keeps within the field, and a takeover
/// because its payloads' lengths came from a 32-bit field of their own.
pub(crate) fn header(payload: &[u8]) -> [u8; HEADER_LEN] {
    let Ok(len) = u32::try_from(payload.len()) else {
        panic!(
            "a record payload of {} bytes does not fit the 32-bit length field; the caller must check it against max_record_size",
            payload.len()
        );
    };
    let mut out = [0u8; HEADER_LEN];
    out[..4].copy_from_slice(&len.to_be_bytes());
    out[4..].copy_from_slice(&checksum(len, payload).to_be_bytes());
    out
}

/// Encodes one record, header included.
#[cfg(test)]
pub(crate) fn encode(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
    buf.put_slice(&header(payload));
    buf.put_slice(payload);
    buf.freeze()
}

fn checksum(len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_be_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// In debug builds, checks that `encoded` (header and payload as they are
/// about to be written) decodes back as one whole record of
/// `payload_len` bytes within `min..=max`, CRC and length included:
/// validated before its first write, as it is after every read.
pub(crate) fn debug_check_encoded(encoded: &[u8], payload_len: usize, min: usize, max: usize) {
    debug_assert_eq!(
        decode(encoded, min, max),
        Decoded::Record {
            total: HEADER_LEN + payload_len
        },
        "a record about to be written does not decode back"
    );
}

/// What a buffer holds at the position a record should start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole, valid record: the payload is `buf[HEADER_LEN..total]`.
    Record {
        /// Header plus payload.
        total: usize,
    },
    /// The buffer ends before the record does; `needed` bytes would be
    /// enough to decide, if the file has them.
    Incomplete {
        /// Bytes from the record start needed to decode it.
        needed: usize,
    },
    /// The bytes cannot be a record written by this queue.
    Corrupt(Corruption),
}

/// Why bytes were rejected as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Corruption {
    /// The length field is outside the queue's accepted record sizes.
    Length(u32),
    /// The checksum does not match the length and payload.
    Checksum,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::Length(len) => write!(f, "impossible record length {len}"),
            Corruption::Checksum => f.write_str("CRC32 mismatch"),
        }
    }
}

/// Decodes the record at the start of `buf`, accepting payloads of
/// `min..=max` bytes.
pub(crate) fn decode(buf: &[u8], min: usize, max: usize) -> Decoded {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Decoded::Incomplete { needed: HEADER_LEN };
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let len_usize = len as usize;
    if len_usize < min || len_usize > max {
        return Decoded::Corrupt(Corruption::Length(len));
    }
    let total = HEADER_LEN + len_usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Decoded::Incomplete { needed: total };
    };
    if checksum(len, payload) != crc {
        return Decoded::Corrupt(Corruption::Checksum);
    }
    Decoded::Record { total }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn check(buf: &[u8], expected: Decoded) {
        assert_eq!(decode(buf, 0, 1024), expected);
    }

    #[test]
    fn round_trip_and_edges() {
        let rec = encode(b"hello");
        check(&rec, Decoded::Record { total: 13 });
        check(&rec[..12], Decoded::Incomplete { needed: 13 });
        check(&rec[..3], Decoded::Incomplete { needed: HEADER_LEN });
        check(&[0u8; 16], Decoded::Corrupt(Corruption::Checksum));
        check(
            &encode(&[7u8; 2000]),
            Decoded::Corrupt(Corruption::Length(2000)),
        );
        let empty = encode(b"");
        check(&empty, Decoded::Record { total: 8 });
        assert_eq!(
            decode(&empty, 1, 10),
            Decoded::Corrupt(Corruption::Length(0))
        );
    }

    #[test]
    fn a_written_record_is_checked_against_its_header() {
        let rec = encode(b"hello");
        debug_check_encoded(&rec, 5, 0, 1024);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "does not decode back")]
    fn a_payload_that_does_not_match_its_header_is_caught_before_the_write() {
        let mut rec = header(b"hello").to_vec();
        rec.extend_from_slice(b"hellp");
        debug_check_encoded(&rec, 5, 0, 1024);
    }

    proptest! {
        #[test]
        fn any_single_byte_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..64), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut rec = encode(&payload).to_vec();
            let i = pos.index(rec.len());
            rec[i] ^= 1 << bit;
            let whole = matches!(decode(&rec, 0, 1024), Decoded::Record { total } if total == rec.len());
            prop_assert!(!whole);
        }
    }
}
