//! nsq's log levels and the process's `tracing` logger, whose level can
//! change while running (`PUT /config/log_level`), as nsqd's can.
//!
//! [`init`] installs the logger and keeps its reload handle; [`set_level`]
//! validates a level and applies it. Without [`init`] (a daemon's library
//! driven by tests in process) levels are only recorded, never applied.
//! The state is process-wide because the logger it steers is.

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::ServiceError;

/// The installed logger's filter, swapped by [`set_level`].
static RELOAD: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The level in force, empty before [`init`] or [`set_level`].
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// Parses one of nsq's log levels (`debug`, `info`, `warn`, `error`,
/// `fatal`, any case) to its lower-case name. Fits clap's `value_parser`.
pub fn parse_log_level(s: &str) -> Result<String, ServiceError> {
    match s.to_ascii_lowercase().as_str() {
        l @ ("debug" | "info" | "warn" | "error" | "fatal") => Ok(l.to_string()),
        _ => Err(ServiceError::InvalidLogLevel(s.to_string())),
    }
}

/// nsq's `fatal` has no `tracing` level of its own: it logs errors only.
fn filter_for(level: &str) -> &str {
    match level {
        "fatal" => "error",
        other => other,
    }
}

/// Installs the process's logger: lines to stderr, filtered by `RUST_LOG`
/// if set and valid, else by `level` (an nsq level, as
/// [`parse_log_level`] returns). Fails if a logger is already installed.
pub fn init(level: &str) -> Result<(), ServiceError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter_for(level)));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init()
        .map_err(ServiceError::LogInit)?;
    if RELOAD.set(handle).is_ok() {
        *lock_current() = level.to_string();
    }
    Ok(())
}

/// The level in force, or `None` before [`init`] or [`set_level`].
pub fn current() -> Option<String> {
    let level = lock_current().clone();
    (!level.is_empty()).then_some(level)
}

/// Validates `level` as `--log-level` does and applies it to the logger
/// [`init`] installed (replacing any `RUST_LOG` filter); returns the level
/// now in force.
pub fn set_level(level: &str) -> Result<String, ServiceError> {
    let level = parse_log_level(level)?;
    if let Some(handle) = RELOAD.get() {
        handle
            .reload(EnvFilter::new(filter_for(&level)))
            .map_err(ServiceError::LogReload)?;
    }
    *lock_current() = level.clone();
    Ok(level)
}

fn lock_current() -> std::sync::MutexGuard<'static, String> {
    // A String is never left half-written, so a poisoned lock is still good.
    CURRENT.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Option<&str>) {
        assert_eq!(parse_log_level(input).ok().as_deref(), expected);
    }

    #[test]
    fn nsq_levels_any_case() {
        check("debug", Some("debug"));
        check("INFO", Some("info"));
        check("Warn", Some("warn"));
        check("error", Some("error"));
        check("fatal", Some("fatal"));
        check("loud", None);
        check("", None);
        check(" info", None);
        check("warning", None);
    }

    #[test]
    fn invalid_level_says_what_is_valid() {
        let err = parse_log_level("loud").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(r#"invalid log level "loud": use debug, info, warn, error or fatal"#)
        );
    }

    #[test]
    fn fatal_filters_errors() {
        assert_eq!(filter_for("fatal"), "error");
        assert_eq!(filter_for("debug"), "debug");
    }

    #[test]
    fn set_level_without_a_logger_records() {
        assert!(matches!(
            set_level("loud"),
            Err(ServiceError::InvalidLogLevel(s)) if s == "loud"
        ));
        assert_eq!(set_level("WARN").ok().as_deref(), Some("warn"));
        // Another test may install the logger (and record its level)
        // meanwhile, so only presence is certain.
        assert!(current().is_some());
    }
}
