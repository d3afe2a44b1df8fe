//! Integration tests: an in-process rsq-lookupd on loopback ports, driven
//! over real TCP by a fake producer speaking protocol V1, over HTTP by a raw
//! client, and by rsqd's own lookupd peer client (`crates/rsqd/src/lookup.rs`,
//! compiled here by path so it is tested before the daemon wires it in).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod binary;
mod harness;
mod http_api;
mod liveness;
#[allow(dead_code, unreachable_pub)]
#[path = "../../../rsqd/src/lookup.rs"]
mod lookup;
mod peer;
mod producer_protocol;
