//! rsq-codec: the bytes of NSQ, and nothing else.
//!
//! This crate turns bytes into values and values into bytes: the message wire
//! format shared by protocol V2 and the disk queue, the V2 command parser and
//! encoder, response frames, and the topic and channel name rules. It does no
//! IO, spawns nothing and never reads the clock: callers feed it bytes and
//! timestamps. It depends only on `bytes` and `thiserror`.

mod error;
mod message;

pub use error::CodecError;
pub use message::{Message, MessageId, MESSAGE_HEADER_LEN};
