//! The background sync task and the ledger guard that starts it. A task
//! exists only while a queue has unsynced changes: the [`LedgerGuard`]
//! whose drop leaves a synced ledger unsynced spawns it, and it ends when a
//! look finds nothing to sync, so an idle queue has no task and no timer.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::error;

use super::Inner;
use super::writer::SyncKind;
use crate::ledger::Ledger;

/// The task that syncs a queue `sync_timeout` after it changed, and
/// whenever asked, for as long as it keeps changing. It is spawned by the
/// change that leaves a synced ledger unsynced and ends once a look finds
/// nothing to sync, so an idle queue has no task and no timer.
async fn sync_task(weak: std::sync::Weak<Inner>, wanted: Arc<Notify>, timeout: Duration) {
    loop {
        tokio::select! {
            // In a fixed order, not tokio's random one, so a simulation
            // replays the same way; a request first, so one that came with
            // the timer is consumed rather than left to wake a second look.
            biased;
            _ = wanted.notified() => {}
            _ = tokio::time::sleep(timeout) => {}
        }
        let Some(inner) = weak.upgrade() else { return };
        {
            let ledger = inner.ledger();
            if ledger.closed || !ledger.needs_sync() {
                // Cleared with the ledger locked: a change after this spawns
                // a new task.
                inner.sync_armed.store(false, Ordering::Release);
                return;
            }
        }
        if let Err(e) = inner.clone().sync(SyncKind::Full, None).await {
            error!(queue = %inner.config.name, error = %e, "periodic disk queue sync failed");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the sync task see the queue is gone and end.
        self.sync_wanted.notify_one();
    }
}

/// The locked ledger. Dropping it starts a sync task if the ledger now
/// holds anything unsynced and none runs, so no change waits for a sync
/// that is not scheduled, whichever path made it.
pub(super) struct LedgerGuard<'a> {
    ledger: MutexGuard<'a, Ledger>,
    inner: &'a Inner,
}

impl std::ops::Deref for LedgerGuard<'_> {
    type Target = Ledger;
    fn deref(&self) -> &Ledger {
        &self.ledger
    }
}

impl std::ops::DerefMut for LedgerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }
}

impl Drop for LedgerGuard<'_> {
    fn drop(&mut self) {
        let inner = self.inner;
        let Some(runtime) = &inner.runtime else {
            return;
        };
        if !inner.sync_armed.load(Ordering::Relaxed)
            && !self.ledger.closed
            && self.ledger.needs_sync()
            && !inner.sync_armed.swap(true, Ordering::AcqRel)
        {
            runtime.spawn(sync_task(
                inner.this.clone(),
                inner.sync_wanted.clone(),
                inner.config.sync_timeout,
            ));
        }
    }
}

impl Inner {
    pub(super) fn ledger(&self) -> LedgerGuard<'_> {
        // Every ledger method leaves it consistent before it could panic, so
        // a poisoned lock is still usable.
        LedgerGuard {
            ledger: self.ledger.lock().unwrap_or_else(|e| e.into_inner()),
            inner: self,
        }
    }
}
