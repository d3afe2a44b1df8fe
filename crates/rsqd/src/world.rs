//! What the daemon takes from the world outside it, chosen once at start.
//!
//! A simulation (or a test) runs the real daemon in a world it controls by
//! handing [`Nsqd::in_world`](crate::Nsqd::in_world) another [`World`]:
//! this file is the one place that says what can be replaced: the clock,
//! the data dir and where blocking file IO runs. Sockets, the auth and
//! lookupd clients and randomness still reach the real world; the seeded
//! simulation (`crate::sim`) stays clear of them (ARCHITECTURE.md, Seams).

use std::sync::Arc;

use rsq_channel::{Clock, SystemClock};
use rsq_diskqueue::{DirIndex, FsStorage, MemStorage, Offload, Storage};

use crate::metadata::MetadataError;

/// The daemon's seams to the outside world.
#[derive(Clone)]
pub struct World {
    /// Where all time is read: timestamps, deadlines, timeouts.
    pub clock: Arc<dyn Clock>,
    /// The data dir: every queue's files and `nsqd.dat`.
    pub storage: Arc<dyn Storage>,
    /// Where disk queues and `nsqd.dat` writes run their blocking IO.
    pub offload: Offload,
}

impl World {
    /// The real world: tokio's clock, the directory `data_path` (its names
    /// read once, then kept in an index), fsyncs on tokio's blocking pool.
    pub fn real(data_path: &std::path::Path, clock: Arc<dyn Clock>) -> std::io::Result<World> {
        let files = DirIndex::load(data_path)?;
        Ok(World {
            clock,
            storage: Arc::new(FsStorage::with_index(files)),
            offload: Offload::BlockingPool,
        })
    }

    /// A world in one thread: tokio's clock (pause it and time is virtual),
    /// a data dir in memory that outlives the daemon (take its
    /// `crashed_copy` for a power loss), and all IO inline in the task that
    /// asks for it, so no thread but the runtime's runs daemon code.
    pub fn in_memory(disk: Arc<MemStorage>) -> World {
        World {
            clock: Arc::new(SystemClock),
            storage: disk,
            offload: Offload::Inline,
        }
    }

    /// Runs file IO on `file` of the data dir where this world runs
    /// blocking IO, a failed pool task becoming [`MetadataError::Io`].
    pub(crate) async fn file_io<T: Send + 'static>(
        &self,
        file: &str,
        io: impl FnOnce() -> Result<T, MetadataError> + Send + 'static,
    ) -> Result<T, MetadataError> {
        self.offload.run(io).await.map_err(|e| MetadataError::Io {
            what: "file task failed",
            path: self.storage.dir().join(file),
            source: std::io::Error::other(e),
        })?
    }
}
