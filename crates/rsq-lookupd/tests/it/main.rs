//! Integration tests: an in-process rsq-lookupd on loopback ports, driven
//! over real TCP by a producer speaking protocol V1 (through the shared
//! `rsq_codec::lookup` module) and over HTTP by a raw client. rsqd's peer
//! client is tested against this daemon in rsqd's own tests
//! (`crates/rsqd/tests/it/lookup_peer.rs`).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod binary;
mod harness;
mod http_api;
mod liveness;
mod producer_protocol;
