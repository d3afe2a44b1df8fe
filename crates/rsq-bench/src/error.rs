//! The one error type of the load generator.

use std::net::SocketAddr;

/// What can stop a benchmark client, a daemon or a scenario.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A socket or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The daemon sent bytes that are not a valid frame.
    #[error("bad frame from {addr}: {source}")]
    Codec {
        /// The daemon's address.
        addr: SocketAddr,
        /// The decoding error.
        source: rsq_codec::CodecError,
    },
    /// The daemon answered with an error frame (`E_*`) or an unexpected frame.
    #[error("daemon at {addr} answered {what}")]
    Protocol {
        /// The daemon's address.
        addr: SocketAddr,
        /// The frame, described.
        what: String,
    },
    /// The daemon closed the connection.
    #[error("daemon at {0} closed the connection")]
    Closed(SocketAddr),
    /// An answer did not come within its bound.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A daemon could not be started or did not become ready.
    #[error("daemon: {0}")]
    Daemon(String),
    /// A command-line value or scenario setting is invalid.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl BenchError {
    /// Wraps an IO error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> BenchError {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }
}
