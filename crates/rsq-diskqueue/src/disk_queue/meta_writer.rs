//! Writing the metadata file: snapshots carry versions so an older one is
//! never written over a newer, and under `--durable` the eager metadata
//! writer (a blocking-pool thread that runs only while commits arrive)
//! writes the committed read position soon after each commit, so a crash
//! replays little. With [`Offload::Inline`] that writer is a tokio task
//! running the same rounds, with no thread.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tracing::error;

use super::writer::WriteSide;
use super::{Inner, Offload};
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
    /// writes coalesce and never queue up. With [`Offload::Inline`] the
    /// writer is a tokio task instead (this is called from a plain function,
    /// which cannot wait for the writer lock), doing the same rounds with
    /// `lock().await` and pausing with `tokio::time::sleep`, so paused time
    /// drives it.
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
        if !start {
            return;
        }
        let inner = self.clone();
        match self.config.offload {
            Offload::BlockingPool => {
                tokio::task::spawn_blocking(move || inner.run_meta_writer());
            }
            Offload::Inline => {
                tokio::spawn(async move { inner.run_meta_writer_task().await });
            }
        }
    }

    /// The eager metadata writer on a blocking-pool thread.
    fn run_meta_writer(&self) {
        while self.meta_wanted_again() {
            if !self.meta_round(self.writer.blocking_lock()) {
                return;
            }
            // Commits arriving meanwhile are covered by the next write.
            std::thread::sleep(EAGER_META_GAP);
        }
    }

    /// The eager metadata writer as a task ([`Offload::Inline`]).
    async fn run_meta_writer_task(&self) {
        while self.meta_wanted_again() {
            if !self.meta_round(self.writer.lock().await) {
                return;
            }
            tokio::time::sleep(EAGER_META_GAP).await;
        }
    }

    /// Whether a commit asked for a write since the last round took the
    /// request; if not, the writer stops (a later commit starts a new one).
    fn meta_wanted_again(&self) -> bool {
        let mut eager = self.eager_meta();
        let wanted = std::mem::take(&mut eager.wanted);
        if !wanted {
            eager.running = false;
        }
        wanted
    }

    /// One round of the eager metadata writer, the writer lock just taken
    /// (both modes run this): takes the snapshot, lets the lock go and
    /// writes it. `false` (and the writer stops) once the queue is closed.
    fn meta_round(&self, ws: tokio::sync::MutexGuard<'_, WriteSide>) -> bool {
        // Every put is synced in the same writer-lock hold that flushed
        // it, so with the lock held nothing is flushed and unsynced: the
        // snapshot never points past fsynced data.
        let snapshot = {
            let ledger = self.ledger();
            (!ledger.closed).then(|| (self.meta_version(), ledger.meta_snapshot()))
        };
        drop(ws);
        let Some((version, meta)) = snapshot else {
            self.eager_meta().running = false;
            return false;
        };
        if let Err(e) = self.store_meta(version, &meta) {
            error!(queue = %self.config.name, error = %e, "writing the committed read position failed; the periodic sync retries");
        }
        true
    }
}
