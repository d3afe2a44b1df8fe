//! rsq-protocol: NSQ protocol V2 for one connection, with no IO.
//!
#![doc = include_str!("../README.md")]
//!
//! ## What is in it
//!
//! - [`Connection`]: the inbound state machine (commands in); [`Action`]
//!   is what it asks of its driver, answered with typed values
//!   ([`Failure`] for a publish, subscribe or upgrade that did not
//!   happen, [`SettleError`] for a FIN, REQ or TOUCH).
//! - [`Output`]: the outbound one: when responses, message frames and
//!   heartbeats leave, written into the driver's buffer, and which
//!   messages sampling keeps ([`Delivery`]).
//! - [`ProtocolConfig`]: the daemon's limits and offers, the only thing the
//!   machine knows of the daemon ([`TlsRequired`] among them).
//! - IDENTIFY negotiation ([`IdentifyRequest`], [`Negotiated`]) and the
//!   auth server's answer ([`AuthState`]) as the AUTH gate uses it.
//! - [`ClientState`]: the client states nsqd reports in `/stats`.
//! - [`Sampler`]: IDENTIFY's `sample_rate` as nsqd applies it, with a
//!   seeded random source.
//!
//! Depends on rsq-codec (commands and frames), rsq-compress (for the
//! compression kinds IDENTIFY negotiates), serde and regex; not on tokio.

mod auth;
mod client_state;
mod config;
mod connection;
mod identify;
mod output;
mod sampling;

pub use auth::{AuthState, Authorization, BadAuthResponse};
pub use client_state::ClientState;
pub use config::{ProtocolConfig, TlsRequired};
pub use connection::{Action, Connection, Failure, SettleError};
pub use identify::{
    DEFAULT_HEARTBEAT, DEFAULT_OUTPUT_BUFFER_SIZE, IdentifyRequest, IdentifyResponse, Negotiated,
    negotiate,
};
pub use output::{Delivery, Output};
pub use sampling::Sampler;
