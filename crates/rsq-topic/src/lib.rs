//! rsq-topic: a topic receives published messages and its pump copies each
//! one into every channel.
//!
//! Depends on rsq-codec for messages and rsq-diskqueue for the backend it
//! overflows into; it reaches channels only through a trait, so it does not
//! depend on rsq-channel.
