//! The NSQ message: its fields and its wire layout.
//!
//! The same layout is used in message frames sent to consumers and in the
//! records a disk queue stores, so a message read from disk is decoded by the
//! same function that the protocol uses.

use std::fmt;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::CodecError;

/// Length of the fixed header before a message body: an 8-byte timestamp,
/// 2-byte attempts and a 16-byte id.
pub const MESSAGE_HEADER_LEN: usize = 8 + 2 + 16;

// Timestamp, attempts and id, as the layout writes them.
const _: () =
    assert!(MESSAGE_HEADER_LEN == size_of::<u64>() + size_of::<u16>() + size_of::<MessageId>());

/// First bytes of a disk record that carries a deferral: rsq's extension of
/// nsqd's layout, so a deferred message written to a queue (at shutdown, or
/// when no memory is free) keeps its delay. A plain record never starts with
/// `0xff`: its first byte is the top of a positive nanosecond timestamp.
pub const DEFERRED_RECORD_TAG: &[u8; 4] = b"\xffRDF";

/// A message id: 16 ASCII bytes, as nsqd sends them (lowercase hex).
///
/// Clients echo these 16 bytes back in FIN, REQ and TOUCH, so the type stores
/// them exactly as they travel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// The id as the 16 bytes sent on the wire.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Builds an id from wire bytes, or `None` if the slice is not 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(MessageId)
    }

    /// The id nsqd sends for the 64-bit GUID `value`: its 8 big-endian bytes
    /// as 16 lowercase hex digits.
    pub fn from_u64(value: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, byte) in value.to_be_bytes().into_iter().enumerate() {
            out[2 * i] = HEX[usize::from(byte >> 4)];
            out[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        MessageId(out)
    }

    /// The 64-bit value of an id made of 16 hex digits (either case), or
    /// `None` if any byte is not a hex digit. Ids from clients are opaque
    /// bytes; only ids this crate generated are guaranteed to parse.
    pub fn to_u64(&self) -> Option<u64> {
        self.0.iter().try_fold(0u64, |acc, &b| {
            let digit = (b as char).to_digit(16)?;
            Some(acc << 4 | u64::from(digit))
        })
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// One message as nsqd holds it: identity, publish time, delivery attempts,
/// body and an optional deferral.
///
/// Cloning is cheap: the body is reference-counted [`Bytes`], so a topic that
/// fans a message out to many channels shares one copy of the body bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    /// Unique id, assigned at publish.
    pub id: MessageId,
    /// Publish time in nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// How many times this message has been delivered; incremented before each delivery.
    pub attempts: u16,
    /// The payload, shared between copies.
    pub body: Bytes,
    /// Set for a DPUB: the message becomes visible to consumers only after this delay.
    /// Not part of the wire format.
    pub deferred: Option<Duration>,
}

impl Message {
    /// A fresh, undelivered, undeferred message.
    pub fn new(id: MessageId, timestamp_ns: i64, body: Bytes) -> Self {
        Message {
            id,
            timestamp_ns,
            attempts: 0,
            body,
            deferred: None,
        }
    }

    /// Number of bytes [`Message::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        MESSAGE_HEADER_LEN + self.body.len()
    }

    /// Appends the wire layout (timestamp, attempts, id, body; big endian) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_i64(self.timestamp_ns);
        dst.put_u16(self.attempts);
        dst.put_slice(&self.id.0);
        dst.put_slice(&self.body);
    }

    /// The wire layout as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut dst);
        dst.freeze()
    }

    /// The message as a disk record: nsqd's layout, or, when it is deferred,
    /// [`DEFERRED_RECORD_TAG`] and the deferral in milliseconds (u64, big
    /// endian) before it.
    ///
    /// A deferred message keeps its delay through a record; the wire
    /// layout ([`Message::to_bytes`]) has no room for it:
    ///
    /// ```
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use rsq_codec::{Message, MessageId};
    ///
    /// let mut msg = Message::new(MessageId::from_u64(7), 1_000, Bytes::from_static(b"later"));
    /// msg.deferred = Some(Duration::from_secs(5));
    ///
    /// let back = Message::from_record(msg.to_record()).unwrap();
    /// assert_eq!(back, msg);
    ///
    /// let wire = Message::decode(msg.to_bytes()).unwrap();
    /// assert_eq!((wire.body, wire.deferred), (msg.body, None));
    /// ```
    pub fn to_record(&self) -> Bytes {
        let Some(delay) = self.deferred else {
            return self.to_bytes();
        };
        let mut dst = BytesMut::with_capacity(12 + self.encoded_len());
        dst.put_slice(DEFERRED_RECORD_TAG);
        dst.put_u64(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self.encode(&mut dst);
        dst.freeze()
    }

    /// Decodes a disk record written by [`Message::to_record`] (or a plain
    /// nsqd record). The body is a slice of `src`, not a copy.
    pub fn from_record(src: Bytes) -> Result<Message, CodecError> {
        if !src.starts_with(DEFERRED_RECORD_TAG) {
            return Message::decode(src);
        }
        let tagged = DEFERRED_RECORD_TAG.len() + 8;
        if src.len() < tagged + MESSAGE_HEADER_LEN {
            return Err(CodecError::MessageTooShort {
                len: src.len(),
                min: tagged + MESSAGE_HEADER_LEN,
            });
        }
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&src[DEFERRED_RECORD_TAG.len()..tagged]);
        let mut rest = src;
        rest.advance(tagged);
        let mut msg = Message::decode(rest)?;
        msg.deferred = Some(Duration::from_millis(u64::from_be_bytes(ms)));
        Ok(msg)
    }

    /// Decodes the wire layout. The body is `src` advanced past the
    /// header: neither a copy nor a new slice, so a record read from disk
    /// into its own buffer costs no allocation beyond that buffer (slicing
    /// would allocate a shared header for every message). The deferral is
    /// not part of the layout and comes back as `None`.
    pub fn decode(src: Bytes) -> Result<Message, CodecError> {
        if src.len() < MESSAGE_HEADER_LEN {
            return Err(CodecError::MessageTooShort {
                len: src.len(),
                min: MESSAGE_HEADER_LEN,
            });
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&src[0..8]);
        let attempts = u16::from_be_bytes([src[8], src[9]]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&src[10..26]);
        let mut body = src;
        body.advance(MESSAGE_HEADER_LEN);
        Ok(Message {
            id: MessageId(id),
            timestamp_ns: i64::from_be_bytes(ts),
            attempts,
            body,
            deferred: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_nsqd_layout() {
        let msg = Message {
            id: MessageId(*b"0123456789abcdef"),
            timestamp_ns: 0x0102030405060708,
            attempts: 0x0a0b,
            body: Bytes::from_static(b"hi"),
            deferred: None,
        };
        let bytes = msg.to_bytes();
        assert_eq!(&bytes[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[8..10], &[0x0a, 0x0b]);
        assert_eq!(&bytes[10..26], b"0123456789abcdef");
        assert_eq!(&bytes[26..], b"hi");
        assert_eq!(Message::decode(bytes), Ok(msg));
    }

    #[test]
    fn ids_are_lowercase_hex_of_the_guid() {
        let id = MessageId::from_u64(0x0123_4567_89ab_cdef);
        assert_eq!(id.as_bytes(), b"0123456789abcdef");
        assert_eq!(id.to_u64(), Some(0x0123_4567_89ab_cdef));
        assert_eq!(
            MessageId::from_u64(u64::MAX).as_bytes(),
            b"ffffffffffffffff"
        );
        assert_eq!(
            MessageId(*b"0123456789ABCDEF").to_u64(),
            Some(0x0123_4567_89ab_cdef)
        );
        assert_eq!(MessageId(*b"0123456789abcdeg").to_u64(), None);
    }

    #[test]
    fn records_keep_a_deferral() {
        let mut msg = Message::new(MessageId(*b"0123456789abcdef"), 7, Bytes::from_static(b"x"));
        assert_eq!(msg.to_record(), msg.to_bytes());
        assert_eq!(Message::from_record(msg.to_record()), Ok(msg.clone()));
        msg.deferred = Some(Duration::from_millis(1500));
        let record = msg.to_record();
        assert!(record.starts_with(DEFERRED_RECORD_TAG));
        assert_eq!(Message::from_record(record.clone()), Ok(msg));
        assert!(Message::from_record(record.slice(..20)).is_err());
    }

    #[test]
    fn short_input_is_an_error() {
        assert_eq!(
            Message::decode(Bytes::from_static(&[0; 25])),
            Err(CodecError::MessageTooShort { len: 25, min: 26 })
        );
    }
}
