//! The log level, changeable while running (`PUT /config/log_level`), as
//! nsqd's is.
//!
//! The binary installs the hook that swaps its `tracing` filter; the HTTP
//! handler calls [`set_level`]. Without a hook (the library used on its
//! own) the level is only recorded.

use std::sync::{Mutex, OnceLock};

/// Applies a level (`debug`, `info`, `warn`, `error`) to the running logger.
pub type LevelHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static HOOK: OnceLock<LevelHook> = OnceLock::new();
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// Installs the hook and records the starting level; later calls are ignored.
pub fn install(initial: &str, hook: LevelHook) {
    if HOOK.set(hook).is_ok() {
        *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = initial.to_string();
    }
}

/// The level in force, or `None` before [`install`].
pub fn current() -> Option<String> {
    let level = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (!level.is_empty()).then_some(level)
}

/// Validates `level` as nsqd's `--log-level` and applies it.
pub fn set_level(level: &str) -> Result<String, String> {
    let level = crate::options::parse_log_level(level)?;
    if let Some(hook) = HOOK.get() {
        hook(filter_for(&level))?;
    }
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = level.clone();
    Ok(level)
}

/// nsqd's `fatal` has no `tracing` level of its own: it logs errors only.
pub fn filter_for(level: &str) -> &str {
    match level {
        "fatal" => "error",
        other => other,
    }
}
