//! rsq-diskqueue: where a topic or channel keeps what does not fit in memory.
//!
//! [`BackendQueue`] is the interface topics and channels use; [`MemoryQueue`]
//! is the implementation for ephemeral topics and channels, which never touch
//! disk. The segment-file disk queue (CRC32 per record, fsync policy, crash
//! recovery) lives here too. This crate knows nothing about messages: records
//! are opaque bytes. It depends on tokio only for its `sync` primitives.

mod backend;
mod error;
mod memory;

pub use backend::{BackendQueue, BackendStats};
pub use error::QueueError;
pub use memory::MemoryQueue;
