//! rsq-channel: one named stream of a topic's messages, shared by consumers.
//!
//! Depends on rsq-codec for the message type and rsq-diskqueue for the
//! backend a channel overflows into. Time comes from a [`Clock`].

mod clock;

pub use clock::{Clock, ManualClock, SystemClock};
