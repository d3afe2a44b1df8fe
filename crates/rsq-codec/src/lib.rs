//! rsq-codec: the bytes of NSQ, and nothing else.
//!
#![doc = include_str!("../README.md")]
//!
//! ## What is in it
//!
//! This crate turns bytes into values and values into bytes for nsqd's TCP
//! protocol V2, its disk format and nsqlookupd's producer protocol V1:
//!
//! - [`Message`] and [`MessageId`]: the message layout shared by message
//!   frames and disk-queue records, and [`IdGenerator`], which issues ids in
//!   nsqd's snowflake format from a caller-supplied time;
//! - [`Command`] with its client-side encoder, and [`CommandDecoder`], the
//!   incremental server-side parser that enforces [`Limits`] and reports
//!   every malformed input as nsqd's exact [`ProtocolError`];
//! - frames: [`encode_response`], [`encode_error`], [`encode_message_frame`]
//!   for the server and [`FrameDecoder`] for clients;
//! - the topic and channel name rules ([`is_valid_name`], [`is_ephemeral`]);
//! - [`lookup`]: nsqlookupd's producer protocol V1, both directions (the
//!   producer's requests and lookupd's replies, encoders and decoders);
//! - Go-style durations as NSQ's flags write them ([`parse_duration`]).
//!
//! It does no IO, spawns nothing, holds no locks and never reads the clock:
//! callers feed it bytes and timestamps. Decoders check every size field
//! against a limit before buffering what it announces. It depends only on
//! `bytes` and `thiserror`.

mod command;
mod decoder;
mod duration;
mod error;
mod frame;
mod id;
pub mod lookup;
mod message;
mod names;
mod protocol_error;
mod size_field;

pub use command::{Command, MAGIC_V2, Verb};
pub use decoder::{CommandDecoder, Limits, MAX_LINE_LEN};
pub use duration::parse_duration;
pub use error::CodecError;
pub use frame::{
    CLOSE_WAIT, DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_LEN, Frame, FrameDecoder, FrameType,
    HEARTBEAT, OK, encode_error, encode_frame, encode_message_frame, encode_response,
};
pub use id::{GUID_EPOCH, IdGenerator, MAX_NODE_ID};
pub use message::{DEFERRED_RECORD_TAG, MESSAGE_HEADER_LEN, Message, MessageId};
pub use names::{EPHEMERAL_SUFFIX, MAX_NAME_LEN, is_ephemeral, is_valid_name};
pub use protocol_error::{ErrorCode, ProtocolError};
