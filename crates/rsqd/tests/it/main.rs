//! Integration tests: the real `rsqd` binary on loopback ports, driven by
//! rsq's own V2 client, raw HTTP, and the third-party clients `tokio-nsq`
//! and `pynsq`; and rsqd's lookupd peer client in process against the real
//! rsq-lookupd (`lookup_peer`).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod auth;
mod cluster;
mod compression;
mod crash;
mod dead_letters;
mod dirlock;
mod disk_full;
mod drain;
mod e2e_latency;
mod harness;
mod hostile;
mod http_api;
mod lifecycle;
mod logs;
mod lookup_peer;
mod metrics;
mod overload;
mod pprof;
mod pynsq;
mod replicated;
mod sampling;
mod statsd;
mod takeover;
mod third_party;
mod tls;
mod unix_socket;
mod v2;
