//! The one error type of rsq-codec.

/// Everything that can go wrong while decoding bytes in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A message record is shorter than its fixed 26-byte header.
    #[error("message too short: {len} bytes, need at least {min}")]
    MessageTooShort {
        /// Length of the input that was offered.
        len: usize,
        /// The minimum length of a valid message.
        min: usize,
    },
}
