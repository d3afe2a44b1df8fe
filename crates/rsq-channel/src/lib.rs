//! rsq-channel: one named stream of a topic's messages, shared by consumers.
//!
#![doc = include_str!("../README.md")]
//!
//! ## What is in it
//!
//! Each message goes to one consumer and comes back if it is not finished
//! in time. [`ChannelState`] is the whole behaviour as a plain state machine
//! that never reads the clock and does no IO; [`Channel`] wraps it for the
//! daemon with a backend, a [`Clock`] and one small driver task.
//!
//! Depends on rsq-codec for the message type and rsq-diskqueue for the
//! backend a channel overflows into. Messages past their attempt limit go
//! to a [`DeadLetterSink`] the owner provides.

mod backend_reads;
mod channel;
mod clock;
mod config;
mod consumer;
mod dead_letter;
mod deferred;
mod e2e_latency;
mod error;
mod in_flight;
mod state;
mod stats;

pub use channel::{Channel, Consumer};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ChannelConfig, ClientId};
pub use dead_letter::DeadLetterSink;
pub use e2e_latency::E2eLatencyWindow;
pub use error::ChannelError;
pub use state::{ChannelState, DEBUG_CHECK_LIMIT, PutOutcome, READ_AHEAD};
pub use stats::{ChannelStats, ConsumerStats, E2eLatency};
