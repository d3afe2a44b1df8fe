//! nsq's log levels and the process's `tracing` logger, whose level can
//! change while running (`PUT /config/log_level`), as nsqd's can.
//!
//! [`init`] installs the logger and keeps its reload handle; [`set_level`]
//! validates a level and applies it. Without [`init`] (a daemon's library
//! driven by tests in process) levels are only recorded, never applied.
//! The state is process-wide because the logger it steers is.
//!
//! Lines go to stderr as text ([`LogFormat::Text`], coloured only when
//! stderr is a terminal and `NO_COLOR` is unset or empty) or as JSON
//! ([`LogFormat::Json`]: one object a line with `timestamp`, `level`,
//! `target`, `message` and `fields`, see [`JsonLines`]).

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::ServiceError;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default), coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Parses `--log-format` (`text` or `json`, any case). Fits clap's
/// `value_parser`.
pub fn parse_log_format(s: &str) -> Result<LogFormat, ServiceError> {
    match s.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ServiceError::InvalidLogFormat(s.to_string())),
    }
}

/// Whether text lines get colour codes: only on a terminal, and not when
/// `NO_COLOR` holds anything (no-color.org: set and not empty).
pub fn use_color(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

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

/// Installs the process's logger: lines to stderr in `format`, filtered
/// by `RUST_LOG` if set and valid, else by `level` (an nsq level, as
/// [`parse_log_level`] returns). Fails if a logger is already installed.
pub fn init(level: &str, format: LogFormat) -> Result<(), ServiceError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter_for(level)));
    let (filter, handle) = reload::Layer::new(filter);
    let color = use_color(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(color)
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(JsonLines)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
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

/// The JSON line format: one object per event, `{"timestamp": RFC 3339 in
/// UTC, "level": "INFO", "target": "rsqd::context", "message": "...",
/// "fields": {...}}`, plus `"spans"` (outermost first) inside a span.
/// Field values keep their JSON type where they have one (numbers,
/// booleans, strings); anything else is its `Debug` text.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = JsonLine {
            timestamp: &timestamp,
            level: meta.level().as_str(),
            target: meta.target(),
            message: fields.message.as_deref().unwrap_or_default(),
            fields: &fields.fields,
            spans: ctx
                .event_scope()
                .map(|scope| scope.from_root().map(|span| span.name()).collect()),
        };
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// One JSON line, its keys in this order.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    timestamp: &'a str,
    level: &'a str,
    target: &'a str,
    message: &'a str,
    fields: &'a serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spans: Option<Vec<&'static str>>,
}

/// An event's fields, its `message` apart.
#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
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
    fn log_formats_any_case() {
        assert_eq!(parse_log_format("text").ok(), Some(LogFormat::Text));
        assert_eq!(parse_log_format("JSON").ok(), Some(LogFormat::Json));
        assert_eq!(
            parse_log_format("logfmt")
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some(r#"invalid log format "logfmt": use text or json"#)
        );
        assert_eq!(LogFormat::default(), LogFormat::Text);
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_color(true, None));
        assert!(
            use_color(true, Some(OsStr::new(""))),
            "empty NO_COLOR is unset"
        );
        assert!(!use_color(true, Some(OsStr::new("1"))));
        assert!(!use_color(false, None));
        assert!(!use_color(false, Some(OsStr::new("1"))));
    }

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_are_one_object_each_with_typed_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .event_format(JsonLines),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "rsq::test", topic = "orders", depth = 3u64, ok = true, "TOPIC created");
            let span = tracing::info_span!("session", client = 7);
            let _entered = span.enter();
            tracing::warn!(error = %"disk full", "a \"quoted\"\nmessage");
        });
        let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            text.starts_with(r#"{"timestamp":"#)
                && text.contains(
                    r#"","level":"INFO","target":"rsq::test","message":"TOPIC created","fields":{"#
                ),
            "keys in order: {text}"
        );
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["target"], "rsq::test");
        assert_eq!(first["message"], "TOPIC created");
        assert_eq!(
            first["fields"],
            serde_json::json!({"topic": "orders", "depth": 3, "ok": true})
        );
        let ts = first["timestamp"].as_str().unwrap_or_default();
        assert!(
            ts.len() > 20 && ts.ends_with('Z') && ts.contains('T'),
            "{ts}"
        );
        assert!(first.get("spans").is_none());
        let second = &lines[1];
        assert_eq!(second["level"], "WARN");
        assert_eq!(second["message"], "a \"quoted\"\nmessage");
        assert_eq!(second["fields"]["error"], "disk full");
        assert_eq!(second["spans"], serde_json::json!(["session"]));
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
