//! Integration tests of rsq-topic: the pump, publishing, the topic's
//! lifecycle, and a property test over random operation sequences.
#![allow(clippy::unwrap_used)]

mod lifecycle;
mod property;
mod publish;
mod pump;
mod support;
