//! [`Offload`]: where a disk queue runs the file IO that may block (writes,
//! fsyncs, metadata replacement, segment removal), chosen once in
//! [`DiskQueueConfig`](super::DiskQueueConfig) and read at each of the
//! places that would otherwise call `spawn_blocking`. It is the seam the
//! deterministic simulation uses (issue 31): with [`Offload::Inline`] no
//! thread is started, so a single-threaded runtime with paused time runs a
//! queue the same way every time.
//!
//! Both modes call the same function for each piece of IO; only where it
//! runs, and how the writer lock is taken (`blocking_lock` on a pool thread,
//! `lock().await` in a task), differ.

use std::io;

use super::Inner;
use crate::QueueError;

/// Where a disk queue runs its blocking file IO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Offload {
    /// On tokio's blocking pool, off the runtime's threads: a sync, an
    /// empty or a delete runs on a pool thread, the group committer and the
    /// eager metadata writer are each a pool thread that runs while there
    /// is work. What a daemon wants, since an fsync can take milliseconds.
    #[default]
    BlockingPool,
    /// In the task that asks for it: a sync, an empty or a delete runs in
    /// the caller's task, a `sync_every = 1` put runs one group-commit
    /// round at a time in its own task, and the eager metadata writer is a
    /// tokio task pausing with `tokio::time::sleep`. No thread is started,
    /// so a current-thread runtime with paused time is deterministic; the
    /// IO blocks that runtime's thread while it runs, so this is for tests
    /// and simulations on in-memory storage, not for a daemon.
    Inline,
}

impl Offload {
    /// Runs `work` (blocking file IO) where this mode says: on tokio's
    /// blocking pool, waiting for it, or in the calling task. The one place
    /// the choice is made, for the disk queues and for what the daemon
    /// writes beside them (`nsqd.dat`, its id floor).
    pub async fn run<T, F>(self, work: F) -> Result<T, tokio::task::JoinError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Offload::BlockingPool => tokio::task::spawn_blocking(work).await,
            Offload::Inline => Ok(work()),
        }
    }
}

impl Inner {
    /// Runs `work` (blocking file IO) where [`Offload`] says. `what` names
    /// the operation in the error a pool task that panicked or was
    /// cancelled turns into.
    pub(super) async fn offload<T, F>(&self, what: &str, work: F) -> Result<T, QueueError>
    where
        F: FnOnce() -> Result<T, QueueError> + Send + 'static,
        T: Send + 'static,
    {
        self.config
            .offload
            .run(work)
            .await
            .map_err(|e| QueueError::Io {
                path: self.storage.dir().to_path_buf(),
                source: io::Error::other(format!("{what} task failed: {e}")),
            })?
    }
}
