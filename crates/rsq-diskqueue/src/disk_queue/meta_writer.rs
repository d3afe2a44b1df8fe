//! Writing the metadata file: snapshots carry versions so an older one is
//! never written over a newer, and under `--durable` the eager metadata
//! writer (a blocking-pool thread that runs only while commits arrive)
//! writes the committed read position soon after each commit, so a crash
//! replays little.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tracing::error;

use super::Inner;
use crate::QueueError;
use crate::metadata::QueueMeta;

/// The eager metadata writer's pause after each write (see
/// `Inner::request_meta_write`). It bounds how often a durable queue writes
/// its metadata, so a crash replays at most this long of commits plus one
/// write, and the writes' fsyncs take little from the puts' group commits
/// (durable pubsub without a pause: 13 % fewer publishes and 19 % fewer
/// deliveries; with 10 ms: within the run-to-run spread, 3-10 %).
const EAGER_META_GAP: Duration = Duration::from_millis(10);

/// Whether a committed read waits for the eager metadata writer, and
/// whether that writer runs.
#[derive(Debug, Default)]
pub(super) struct EagerMeta {
    wanted: bool,
    running: bool,
}

impl Inner {
    /// A version for a snapshot taken now. Called with the ledger locked, so
    /// versions follow the order of the states they describe.
    pub(super) fn meta_version(&self) -> u64 {
        self.meta_taken.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Writes a metadata snapshot unless a newer one is already in the file.
    pub(super) fn store_meta(&self, version: u64, meta: &QueueMeta) -> Result<(), QueueError> {
        let mut written = self.meta_written.lock().unwrap_or_else(|e| e.into_inner());
        if version <= *written {
            return Ok(());
        }
        let name = self.names.meta();
        self.storage
            .write_atomic(&name, &meta.encode())
            .map_err(|e| self.io_error(&name, e))?;
        *written = version;
        Ok(())
    }

    fn eager_meta(&self) -> MutexGuard<'_, EagerMeta> {
        self.meta_wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Under `--durable` (explicit commit, every put synced): asks for the
    /// committed read position to be written to the metadata file now, so a
    /// crash replays only what was committed during the last write and the
    /// pause after it ([`EAGER_META_GAP`]). One blocking-pool thread writes,
    /// off the put path, and goes round again while commits arrive, so
    /// writes coalesce and never queue up.
    pub(super) fn request_meta_write(self: &Arc<Self>) {
        if !(self.config.explicit_commit && self.config.sync_every == 1) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let start = {
            let mut eager = self.eager_meta();
            eager.wanted = true;
            !std::mem::replace(&mut eager.running, true)
        };
        if start {
            let inner = self.clone();
            tokio::task::spawn_blocking(move || inner.run_meta_writer());
        }
    }

    fn run_meta_writer(&self) {
        loop {
            {
                let mut eager = self.eager_meta();
                if !std::mem::take(&mut eager.wanted) {
                    eager.running = false;
                    return;
                }
            }
            // Every put is synced in the same writer-lock hold that flushed
            // it, so with the lock held nothing is flushed and unsynced: the
            // snapshot never points past fsynced data.
            let snapshot = {
                let _ws = self.writer.blocking_lock();
                let ledger = self.ledger();
                (!ledger.closed).then(|| (self.meta_version(), ledger.meta_snapshot()))
            };
            let Some((version, meta)) = snapshot else {
                self.eager_meta().running = false;
                return;
            };
            if let Err(e) = self.store_meta(version, &meta) {
                error!(queue = %self.config.name, error = %e, "writing the committed read position failed; the periodic sync retries");
            }
            // Commits arriving meanwhile are covered by the next write.
            std::thread::sleep(EAGER_META_GAP);
        }
    }
}
