//! Group commit for `sync_every = 1`: a put records the sequence number it
//! needs and waits; one blocking-pool thread, running only while puts wait,
//! writes and fdatasyncs everything pending and publishes how far it got,
//! so concurrent puts share one fsync with no hand-off between them.
//!
//! With [`Offload::Inline`] there is no thread: the waiting puts take turns
//! running the same round in their own tasks, one round at a time, taking
//! the writer lock with `lock().await` (a `blocking_lock` would panic in a
//! runtime, and on one thread deadlock).

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};

use tracing::error;

use super::writer::{SyncKind, WriteSide};
use super::{Inner, Offload};
use crate::QueueError;

/// What the committer has done, read by waiting puts.
#[derive(Debug, Clone, Default)]
pub(super) struct Committed {
    /// Every put up to this sequence is durable.
    synced: u64,
    /// Every put up to this sequence that is not synced got an error.
    failed_upto: u64,
    /// The last failure: path, kind and message (an `io::Error` cannot be
    /// cloned to each waiter).
    error: Option<(PathBuf, io::ErrorKind, String)>,
}

impl Committed {
    /// `Some` once put `seq` is durable (`Ok`) or failed.
    pub(super) fn outcome(&self, seq: u64) -> Option<Result<(), QueueError>> {
        if self.synced >= seq {
            return Some(Ok(()));
        }
        if self.failed_upto >= seq {
            let (path, kind, message) = self
                .error
                .clone()
                .unwrap_or_else(|| (PathBuf::new(), io::ErrorKind::Other, "sync failed".into()));
            return Some(Err(QueueError::Io {
                path,
                source: io::Error::new(kind, message),
            }));
        }
        None
    }
}

/// The committer's work list.
#[derive(Debug, Default)]
pub(super) struct CommitRequest {
    /// Highest put sequence a put waits to see synced.
    wanted: u64,
    /// A committer thread is running and will look at `wanted` again.
    running: bool,
}

impl Inner {
    fn commit_request(&self) -> MutexGuard<'_, CommitRequest> {
        self.commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn committed(&self) -> MutexGuard<'_, Committed> {
        // Each update is one field assignment: a poisoned lock is consistent.
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells waiting puts how far syncing got.
    pub(super) fn publish_synced(&self) {
        let synced = self.ledger().synced_seq;
        let changed = {
            let mut c = self.committed();
            let changed = synced > c.synced;
            c.synced = c.synced.max(synced);
            changed
        };
        if changed {
            self.committed_changed.notify_waiters();
        }
    }

    /// Makes put `seq` durable: asks the committer for it (starting one if
    /// none runs) and waits until it is synced or failed. With
    /// [`Offload::Inline`] the waiting put is the committer: it runs one
    /// round at a time itself (see [`Inner::commit_inline`]).
    pub(super) async fn commit(self: &Arc<Self>, seq: u64) -> Result<(), QueueError> {
        if self.config.offload == Offload::Inline {
            return self.commit_inline(seq).await;
        }
        let start = {
            let mut request = self.commit_request();
            request.wanted = request.wanted.max(seq);
            !std::mem::replace(&mut request.running, true)
        };
        if start {
            let inner = self.clone();
            tokio::task::spawn_blocking(move || inner.run_committer());
        }
        loop {
            // Registered before the check, so a change between the two
            // still wakes this put.
            let changed = self.committed_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(outcome) = self.committed().outcome(seq) {
                return outcome;
            }
            changed.await;
        }
    }

    /// [`Offload::Inline`]'s group commit, in the put's own task: while put
    /// `seq` is neither synced nor failed, the put either waits for the
    /// round another put runs or, when none runs, claims the turn, takes
    /// the writer lock with `lock().await` and runs one round itself
    /// ([`Inner::commit_round`], the blocking committer's round). It yields
    /// once before taking the lock, so the other tasks ready to put get
    /// their records in first, and the round covers every put pending when
    /// the lock was taken: puts at once still share one fsync. The turn is
    /// given back after each round, or by a put cancelled before its round,
    /// and every waiting put is woken then, so one of them goes on.
    async fn commit_inline(&self, seq: u64) -> Result<(), QueueError> {
        /// The claim to run a round; dropping it lets another put run one.
        struct Claim<'a>(&'a Inner);
        impl Drop for Claim<'_> {
            fn drop(&mut self) {
                self.0.commit_request().running = false;
                self.0.committed_changed.notify_waiters();
            }
        }
        loop {
            // Registered before the check, as in `commit`.
            let changed = self.committed_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(outcome) = self.committed().outcome(seq) {
                return outcome;
            }
            let claimed = {
                let mut request = self.commit_request();
                request.wanted = request.wanted.max(seq);
                !std::mem::replace(&mut request.running, true)
            };
            if !claimed {
                changed.await;
                continue;
            }
            let _claim = Claim(self);
            // On one thread a put never waits for the lock of an idle
            // queue: without this turn each put would get a round of its
            // own, while here the puts ready now join this one's.
            tokio::task::yield_now().await;
            let ws = self.writer.lock().await;
            self.commit_round(ws);
        }
    }

    /// The committer: writes and fsyncs everything pending, publishes, and
    /// goes round again until no put waits for more. Puts that arrive during
    /// an fsync are all covered by the next one.
    fn run_committer(&self) {
        /// Lets a later put start a new committer even if this one panics.
        struct Running<'a>(&'a Inner);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.commit_request().running = false;
                }
            }
        }
        let _running = Running(self);
        loop {
            {
                let mut request = self.commit_request();
                let done = {
                    let ledger = self.ledger();
                    ledger.synced_seq.max(self.committed().failed_upto)
                };
                if request.wanted <= done {
                    request.running = false;
                    return;
                }
            }
            self.commit_round(self.writer.blocking_lock());
        }
    }

    /// One group-commit round, the writer lock just taken (both modes run
    /// this): writes and fdatasyncs every pending put, lets the lock go,
    /// counts the commit and tells the waiting puts how it went.
    fn commit_round(&self, mut ws: tokio::sync::MutexGuard<'_, WriteSide>) {
        let (target, synced) = {
            let ledger = self.ledger();
            (ledger.last_put_seq(), ledger.synced_seq)
        };
        // Read for the commit figures only, never for behaviour.
        let started = std::time::Instant::now();
        let result = self.sync_blocking(&mut ws, SyncKind::Data);
        drop(ws);
        if let (Ok(()), Some(stats)) = (&result, &self.config.commit_stats)
            && target > synced
        {
            stats.record(started.elapsed(), target - synced);
        }
        if result.is_ok() {
            self.publish_synced();
        }
        if let Err(e) = result {
            error!(queue = %self.config.name, error = %e, "disk queue commit failed");
            let error = match &e {
                QueueError::Io { path, source } => {
                    (path.clone(), source.kind(), source.to_string())
                }
                other => (PathBuf::new(), io::ErrorKind::Other, other.to_string()),
            };
            {
                let mut c = self.committed();
                c.failed_upto = c.failed_upto.max(target);
                c.error = Some(error);
            }
            self.committed_changed.notify_waiters();
        }
    }
}
