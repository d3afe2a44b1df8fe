//! rsq-service: what every rsq daemon (rsqd, rsq-lookupd) shares at its
//! edges, so the two binaries differ only in what they serve.
//!
#![doc = include_str!("../README.md")]
//!
//! ## What is in it
//!
//! - [`http`]: the shapes of NSQ's HTTP API answers: `{"message": CODE}`
//!   errors ([`ApiError`]), JSON bodies, query parameters, the 404/405
//!   fallbacks and the `X-NSQ-Content-Type` header;
//! - [`logging`]: nsq's `--log-level` values, `--log-format` (text, or
//!   JSON lines) and a `tracing` logger whose level can change while
//!   running (`PUT /config/log_level`);
//! - [`listen`]: listen addresses (TCP or unix socket path), listeners,
//!   streams and peer addresses of either kind;
//! - [`process`]: the runtime around a daemon's `serve` future, its exit
//!   code, binding listeners and the shutdown signal;
//! - [`hostname`]: the machine's name, as daemons report it;
//! - [`allocator`]: glibc malloc limited to one arena, so freed message
//!   memory is reused by every thread.
//!
//! This crate never prints: it logs through `tracing`, and its fallible
//! calls return [`ServiceError`].

pub mod allocator;
pub mod error;
pub mod host;
pub mod http;
pub mod listen;
pub mod logging;
pub mod process;

pub use error::ServiceError;
pub use host::hostname;
pub use http::{ApiError, ApiResult};
pub use listen::{Bindable, ListenAddr, Listener, PeerAddr, SocketFile, Stream};
pub use logging::{LogFormat, parse_log_format, parse_log_level};
pub use process::{
    LISTEN_TARGET, StopSignal, announce, bind, follow_announcements, parse_announcement, run,
    shutdown_signal, stop_signals,
};
