//! Server-to-client frames: `[4-byte size][4-byte type][data]`, big endian,
//! where size counts the type and the data.
//!
//! The server side writes frames straight into the connection's output
//! buffer ([`encode_response`], [`encode_error`], [`encode_message_frame`]);
//! the client side reads them back with the incremental [`FrameDecoder`].

use bytes::Bytes;
use bytes::{Buf, BufMut, BytesMut};

use crate::size_field::{bounded_size_field, field_len};
use crate::{CodecError, MESSAGE_HEADER_LEN, Message, ProtocolError};

/// Response body for a successful command.
pub const OK: &[u8] = b"OK";
/// Response body of a heartbeat; clients answer with `NOP`.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";
/// Response body to `CLS`.
pub const CLOSE_WAIT: &[u8] = b"CLOSE_WAIT";

/// Bytes before a frame's data: the size and the type.
pub const FRAME_HEADER_LEN: usize = 8;

/// Default [`FrameDecoder`] limit: a message frame carrying a body of nsqd's
/// default `--max-msg-size` (1 MiB), plus the message header and frame type.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1_048_576 + MESSAGE_HEADER_LEN as u32 + 4;

// The frame a default-limits server sends for the largest message it
// accepts is exactly what a default FrameDecoder takes, and both fit a
// size field.
const _: () = assert!(
    DEFAULT_MAX_FRAME_SIZE as usize
        == crate::decoder::DEFAULT_MAX_MSG_SIZE as usize + MESSAGE_HEADER_LEN + 4
);

/// The type field of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum FrameType {
    /// A reply: `OK`, `_heartbeat_`, `CLOSE_WAIT`, or IDENTIFY/AUTH JSON.
    Response = 0,
    /// An error: `"<E_CODE> <description>"`.
    Error = 1,
    /// A message for a consumer.
    Message = 2,
}

impl FrameType {
    /// The type with wire value `value`, if any.
    pub fn from_u32(value: u32) -> Option<FrameType> {
        match value {
            0 => Some(FrameType::Response),
            1 => Some(FrameType::Error),
            2 => Some(FrameType::Message),
            _ => None,
        }
    }
}

/// One decoded frame, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A response frame's data.
    Response(Bytes),
    /// An error frame's data (`"<E_CODE> <description>"`); see
    /// [`ProtocolError::from_frame_body`].
    Error(Bytes),
    /// A message frame, decoded.
    Message(Message),
}

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Response(_) => FrameType::Response,
            Frame::Error(_) => FrameType::Error,
            Frame::Message(_) => FrameType::Message,
        }
    }

    /// Appends the frame's wire bytes to `dst`.
    ///
    /// # Panics
    ///
    /// If the frame is 4 GiB or more, which its size field cannot state.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Response(data) => encode_frame(FrameType::Response, data, dst),
            Frame::Error(data) => encode_frame(FrameType::Error, data, dst),
            Frame::Message(msg) => encode_message_frame(msg, dst),
        }
    }
}

/// Writes a frame's size and type.
///
/// # Panics
///
/// If the frame (type and data) is 4 GiB or more. A frame's data is bounded
/// by the protocol's limits: a message body by `--max-msg-size`, whose V2
/// size field nsqd reads as signed (under 2 GiB); replies and errors are
/// the daemon's own short texts.
fn put_header(dst: &mut BytesMut, frame_type: FrameType, data_len: usize) {
    let size = bounded_size_field(data_len.saturating_add(4), "frame");
    dst.reserve(FRAME_HEADER_LEN + data_len);
    dst.put_u32(size);
    dst.put_u32(frame_type as u32);
}

/// Appends a frame of any type with `data` as its body.
///
/// # Panics
///
/// If the frame is 4 GiB or more, which its size field cannot state.
pub fn encode_frame(frame_type: FrameType, data: &[u8], dst: &mut BytesMut) {
    put_header(dst, frame_type, data.len());
    dst.put_slice(data);
}

/// Appends a response frame (e.g. [`OK`], [`HEARTBEAT`], IDENTIFY JSON).
///
/// # Panics
///
/// If the frame is 4 GiB or more, which its size field cannot state.
pub fn encode_response(data: &[u8], dst: &mut BytesMut) {
    encode_frame(FrameType::Response, data, dst);
}

/// Appends an error frame whose body is `"<CODE> <desc>"`, written in place.
///
/// # Panics
///
/// If the frame is 4 GiB or more, which its size field cannot state.
pub fn encode_error(err: &ProtocolError, dst: &mut BytesMut) {
    put_header(dst, FrameType::Error, err.wire_len());
    dst.put_slice(err.code.as_str().as_bytes());
    if !err.desc.is_empty() {
        dst.put_u8(b' ');
        dst.put_slice(err.desc.as_bytes());
    }
}

/// Appends a message frame: frame header, then the message layout
/// (timestamp, attempts, id, body), with no intermediate buffer.
///
/// # Panics
///
/// If the frame is 4 GiB or more, which its size field cannot state.
pub fn encode_message_frame(msg: &Message, dst: &mut BytesMut) {
    put_header(dst, FrameType::Message, msg.encoded_len());
    msg.encode(dst);
}

/// Incremental client-side frame reader.
///
/// A frame's size is checked against the limit as soon as its header
/// arrives, so an oversized or malformed frame is rejected before its data is
/// buffered. After an error the stream position is lost: the decoder keeps
/// returning that error.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_size: u32,
    failed: Option<CodecError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder that rejects frames whose size field (type + data) exceeds
    /// `max_frame_size`.
    pub fn new(max_frame_size: u32) -> Self {
        FrameDecoder {
            max_frame_size,
            failed: None,
        }
    }

    /// Consumes the next complete frame from the front of `buf`, or returns
    /// `Ok(None)` if `buf` does not hold one yet.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.decode_inner(buf) {
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
            ok => ok,
        }
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if size < 4 {
            return Err(CodecError::FrameTooShort { size });
        }
        if size > self.max_frame_size {
            return Err(CodecError::FrameTooLarge {
                size,
                max: self.max_frame_size,
            });
        }
        if buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let type_value = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let frame_type = FrameType::from_u32(type_value).ok_or(CodecError::UnknownFrameType {
            frame_type: type_value,
        })?;
        let data_len = field_len(size) - 4;
        if frame_type == FrameType::Message && data_len < MESSAGE_HEADER_LEN {
            return Err(CodecError::MessageTooShort {
                len: data_len,
                min: MESSAGE_HEADER_LEN,
            });
        }
        if buf.len() < FRAME_HEADER_LEN + data_len {
            buf.reserve(FRAME_HEADER_LEN + data_len - buf.len());
            return Ok(None);
        }
        buf.advance(FRAME_HEADER_LEN);
        let data = buf.split_to(data_len).freeze();
        Ok(Some(match frame_type {
            FrameType::Response => Frame::Response(data),
            FrameType::Error => Frame::Error(data),
            FrameType::Message => Frame::Message(Message::decode(data)?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, MessageId};

    #[test]
    fn ok_response_is_the_spec_bytes() {
        let mut dst = BytesMut::new();
        encode_response(OK, &mut dst);
        assert_eq!(&dst[..], &[0, 0, 0, 6, 0, 0, 0, 0, b'O', b'K']);
    }

    #[test]
    fn error_frame_body_is_code_space_desc() {
        let mut dst = BytesMut::new();
        encode_error(&ProtocolError::invalid("invalid command FOO"), &mut dst);
        let body = b"E_INVALID invalid command FOO";
        assert_eq!(&dst[..4], &((body.len() + 4) as u32).to_be_bytes());
        assert_eq!(&dst[4..8], &[0, 0, 0, 1]);
        assert_eq!(&dst[8..], body);
    }

    #[test]
    fn decodes_what_it_encodes() {
        let mut msg = Message::new(
            MessageId(*b"0123456789abcdef"),
            42,
            Bytes::from_static(b"hi"),
        );
        msg.attempts = 3;
        let frames = [
            Frame::Response(Bytes::from_static(HEARTBEAT)),
            Frame::Error(Bytes::from(
                ProtocolError::new(ErrorCode::FinFailed, "x").to_string(),
            )),
            Frame::Message(msg),
        ];
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let mut dec = FrameDecoder::default();
        for f in &frames {
            assert_eq!(dec.decode(&mut buf).as_ref(), Ok(&Some(f.clone())));
        }
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_headers_fail_before_the_data_arrives() {
        let mut dec = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 101][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(CodecError::FrameTooLarge {
                size: 101,
                max: 100
            })
        );
        // Sticky.
        assert_eq!(
            dec.decode(&mut BytesMut::new()),
            Err(CodecError::FrameTooLarge {
                size: 101,
                max: 100
            })
        );

        let mut dec = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(CodecError::FrameTooShort { size: 3 })
        );

        let mut dec = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 50, 0, 0, 0, 7][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(CodecError::UnknownFrameType { frame_type: 7 })
        );

        let mut dec = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 29, 0, 0, 0, 2][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(CodecError::MessageTooShort { len: 25, min: 26 })
        );
    }
}
