//! Integration tests of rsq-codec through its public API: byte-exact
//! fixtures from NSQ's TCP protocol spec, and property tests.

#![allow(clippy::unwrap_used)]

mod fixtures;
mod lookup_props;
mod props;
