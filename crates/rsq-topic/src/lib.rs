//! rsq-topic: a topic receives published messages and its pump copies each
//! one into every channel.
//!
#![doc = include_str!("../README.md")]
//!
//! ## What is in it
//!
//! Depends on rsq-codec for messages and rsq-diskqueue for the backend it
//! overflows into; it reaches channels only as sinks, through the
//! [`TopicSink`] trait, so it does not depend on rsq-channel. The daemon
//! implements that trait (and [`SinkFactory`]) for the real channel.
//!
//! A [`Topic`] holds a bounded memory queue (`mem-queue-size`) that
//! overflows into its [`BackendQueue`](rsq_diskqueue::BackendQueue), and one
//! pump task. The pump does nothing until [`Topic::start`], then takes one
//! message at a time from memory or the backend and puts it into every
//! channel: the first channel gets the message, the others clones that share
//! its body bytes. It reads nothing while the topic is paused or has no
//! channels, so messages wait at the topic.

mod error;
mod mem_queue;
mod pump;
mod sink;
mod topic;
mod watch_cell;

pub use error::{SinkError, TopicError};
pub use rsq_codec::EPHEMERAL_SUFFIX;
pub use sink::{SinkFactory, TopicSink};
pub use topic::{DEFAULT_MEM_QUEUE_SIZE, Topic, TopicConfig, TopicStats};
