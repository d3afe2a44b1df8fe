//! raft-rs logs through `slog`; rsq logs through `tracing`. This drain
//! forwards one to the other, so a replica's elections and refusals appear
//! in the daemon's log with everything else.

use std::fmt::{self, Write as _};

use slog::{Drain, KV, Level, Never, OwnedKVList, Record};

/// A `slog` drain that writes each record to `tracing` under the target
/// `raft`, its key-value pairs appended to the message. raft-rs's info
/// lines (every election, every vote) go to debug, so a healthy cluster
/// stays quiet at the default level.
#[derive(Debug, Clone, Copy)]
struct TracingDrain;

struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        // Writing into a String cannot fail.
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), Never> {
        let mut pairs = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let msg = record.msg();
        let pairs = pairs.0;
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg}{pairs}"),
            Level::Warning => tracing::warn!(target: "raft", "{msg}{pairs}"),
            Level::Info | Level::Debug => tracing::debug!(target: "raft", "{msg}{pairs}"),
            Level::Trace => tracing::trace!(target: "raft", "{msg}{pairs}"),
        }
        Ok(())
    }
}

/// The logger a replica hands raft-rs.
pub(crate) fn logger(group: &str, id: u64) -> slog::Logger {
    slog::Logger::root(
        TracingDrain,
        slog::o!("group" => group.to_string(), "node" => id),
    )
}
