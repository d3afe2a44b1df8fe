//! The one error type of rsq-replica.

/// Everything a replica can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// This replica does not lead its group; `leader` is the one it last
    /// heard of (`None` during an election). Proposals go there.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The current leader's node id, if known.
        leader: Option<u64>,
    },
    /// An earlier write or fsync failed: the replica stopped, neither
    /// voting nor acknowledging, so nothing it did not make durable is
    /// ever counted in a quorum. Restart it to recover from its log.
    #[error("replica stopped after a storage failure: {reason}")]
    Stopped {
        /// The failure that stopped it.
        reason: String,
    },
    /// The configuration cannot work.
    #[error("invalid replica configuration: {0}")]
    Config(String),
    /// Bytes from a peer or the log are not what this crate writes.
    #[error("undecodable replica data: {0}")]
    Decode(String),
    /// A value could not be encoded.
    #[error("cannot encode replica data: {0}")]
    Encode(String),
    /// The log's files failed or are damaged.
    #[error(transparent)]
    Log(#[from] rsq_diskqueue::QueueError),
    /// raft-rs refused a step or a proposal.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}
