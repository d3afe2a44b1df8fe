//! The one error type of this crate.

use crate::listen::ListenAddr;

/// What can go wrong at a daemon's edges.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A log level that is not one of nsq's (`debug`, `info`, `warn`,
    /// `error`, `fatal`); holds the value as given.
    #[error("invalid log level {0:?}: use debug, info, warn, error or fatal")]
    InvalidLogLevel(String),
    /// A `--log-format` that is neither `text` nor `json`; holds the value
    /// as given.
    #[error("invalid log format {0:?}: use text or json")]
    InvalidLogFormat(String),
    /// A listener could not be bound.
    #[error("cannot listen on {what} {addr}")]
    Bind {
        /// What the listener is for: `TCP`, `HTTP`, `HTTPS`.
        what: &'static str,
        /// The address asked for.
        addr: ListenAddr,
        /// Why the bind failed.
        #[source]
        source: std::io::Error,
    },
    /// Text that is not a listen address (see [`ListenAddr`]).
    #[error("invalid listen address {addr:?}: {reason}")]
    InvalidListenAddr {
        /// The text as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The logger could not be installed (a global one already was).
    #[error("cannot install the logger")]
    LogInit(#[source] tracing_subscriber::util::TryInitError),
    /// The running logger refused the new level.
    #[error("cannot change the log level")]
    LogReload(#[source] tracing_subscriber::reload::Error),
}
