//! The one error type of rsq-codec, for bytes that are not a valid message,
//! frame or lookupd reply, and for lengths too large for their size field.
//!
//! Client mistakes in commands are not `CodecError`s: they are
//! [`crate::ProtocolError`]s, values nsqd sends back in error frames.

/// Everything that can go wrong while decoding messages, frames and
/// replies, or encoding a length its size field cannot state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A duration that is not in Go's syntax (`250ms`, `60s`, `15m`, `1h30m`).
    #[error("invalid duration {0:?} (use e.g. 250ms, 60s, 15m, 1h)")]
    InvalidDuration(String),
    /// A message record is shorter than its fixed 26-byte header.
    #[error("message too short: {len} bytes, need at least {min}")]
    MessageTooShort {
        /// Length of the input that was offered.
        len: usize,
        /// The minimum length of a valid message.
        min: usize,
    },
    /// A frame's size field is below 4, so it cannot even hold its type.
    #[error("frame size {size} is too small to hold a frame type")]
    FrameTooShort {
        /// The size field as received.
        size: u32,
    },
    /// A frame's size field exceeds the decoder's limit.
    #[error("frame size {size} exceeds the limit of {max}")]
    FrameTooLarge {
        /// The size field as received.
        size: u32,
        /// The decoder's limit.
        max: u32,
    },
    /// A lookupd reply's size field exceeds the decoder's limit.
    #[error("lookupd reply size {size} exceeds the limit of {max}")]
    ReplyTooLarge {
        /// The size field as received.
        size: u32,
        /// The decoder's limit.
        max: u32,
    },
    /// A length is larger than the 32-bit size field that must announce it
    /// (4 GiB or more): nothing was encoded.
    #[error("{what} of {len} bytes does not fit a 32-bit size field")]
    SizeFieldOverflow {
        /// What the length is of (for example `"PUB body"`).
        what: &'static str,
        /// The length that does not fit.
        len: usize,
    },
    /// A frame's type field is not 0, 1 or 2.
    #[error("unknown frame type {frame_type}")]
    UnknownFrameType {
        /// The type field as received.
        frame_type: u32,
    },
}
