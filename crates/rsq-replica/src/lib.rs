//! rsq-replica: one member of a replicated topic's consensus group.
//!
//! A topic created with `replicas=3` keeps its messages in a log that a
//! quorum of its replicas has fsynced before any publish is acknowledged.
//! Consensus is raft-rs (tikv/raft-rs, the engine under TiKV): a sans-IO
//! state machine, as `rsq-protocol` is, which rsq drives. [`Replica`]
//! wraps it: ticks and peer bytes go in (`handle_*`), [`Replica::persist`]
//! makes what is ready durable with one fsync for the whole batch, and
//! bytes for peers, committed entries and the outcomes of proposals come
//! out (`poll_*`). No sockets, no timers, no tasks: a driver owns those,
//! and a test can run a whole group from a seed in one thread.
//!
//! ## What is in it
//!
//! - `replica`: [`Replica`] and its vocabulary ([`Ticket`], [`ProposalOutcome`],
//!   [`Applied`], [`Transmit`], [`Role`]).
//! - `journal`: the durable log: raft-rs's entries and hard state as
//!   records of an rsq-diskqueue [`rsq_diskqueue::RecordLog`] (CRC32
//!   records, torn-tail cut, damage refused), replayed at open.
//! - [`wire`]: postcard mirrors of raft-rs's messages, for the journal and
//!   the peer protocol; rsq never parses protobuf.
//! - `logger`: raft-rs's `slog` records forwarded to `tracing`.
//!
//! ## Invariants
//!
//! - An [`ProposalOutcome::Committed`] is reported only for an entry a quorum has
//!   fsynced: a follower's acknowledgement leaves only after its persist
//!   returned, and the leader counts itself only after its own.
//! - After a storage failure a replica sends nothing and takes nothing:
//!   it cannot vote for or acknowledge what it may not have made durable.

mod error;
mod journal;
mod logger;
mod replica;
pub mod wire;

pub use error::ReplicaError;
pub use replica::{
    Applied, ELECTION_TICKS, HEARTBEAT_TICKS, MAX_APPEND_BYTES, MAX_INFLIGHT_APPENDS,
    ProposalOutcome, Replica, ReplicaConfig, Role, Ticket, Transmit,
};
