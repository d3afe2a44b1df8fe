//! A replica's durable log: raft-rs's entries and hard state, journalled
//! in an rsq-diskqueue [`RecordLog`] and held in raft-rs's in-memory
//! storage for reads.
//!
//! Each persist of a Ready writes at most one record of entries and one of
//! hard state, then one fsync: every proposal that arrived between two
//! persists shares that fsync (the group commit). At open the journal is
//! replayed in order; an entries record replaces whatever the log held
//! from its first index on, exactly as raft-rs's append does, so a
//! follower's truncated suffix stays truncated after a restart.

use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState};
use raft::storage::MemStorage as RaftMem;
use rsq_diskqueue::{RecordLog, RecordLogConfig, Storage};
use serde::{Deserialize, Serialize};

use crate::error::ReplicaError;
use crate::wire::{self, WireEntry, WireHardState};

/// Largest journal record: a Ready's entries. A Ready carries at most
/// raft-rs's `max_size_per_msg` of entries per message and the leader's
/// own appends, which rsq bounds by its proposal sizes; 64 MiB leaves
/// room for both.
pub(crate) const MAX_JOURNAL_RECORD: usize = 64 << 20;

/// Segment size of a replica's journal.
pub(crate) const JOURNAL_SEGMENT_BYTES: u64 = 64 << 20;

/// One record of the journal.
#[derive(Debug, Serialize, Deserialize)]
enum JournalRecord {
    /// The group's voters, written once when the log is created.
    Voters(Vec<u64>),
    /// Entries appended from `entries[0].index` on, replacing any there.
    Entries(Vec<WireEntry>),
    /// The hard state from here on.
    HardState(WireHardState),
}

/// raft-rs's storage with a journal under it; see the module documentation.
pub(crate) struct Journal {
    log: RecordLog,
    mem: RaftMem,
}

impl Journal {
    /// Opens (or creates, with `voters`) the journal `name` in `storage`.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        name: &str,
        voters: &[u64],
    ) -> Result<Journal, ReplicaError> {
        let config = RecordLogConfig {
            name: name.to_string(),
            max_segment_bytes: JOURNAL_SEGMENT_BYTES,
            max_record_bytes: MAX_JOURNAL_RECORD,
        };
        let (log, records) = RecordLog::open(storage, config)?;
        let mut journal = Journal {
            log,
            mem: RaftMem::new(),
        };
        if records.is_empty() {
            journal.write(&JournalRecord::Voters(voters.to_vec()))?;
            journal.log.sync()?;
            journal.set_voters(voters.to_vec());
            return Ok(journal);
        }
        for record in records {
            match wire::decode::<JournalRecord>(&record.payload)? {
                JournalRecord::Voters(voters) => journal.set_voters(voters),
                JournalRecord::Entries(entries) => {
                    let entries = entries
                        .into_iter()
                        .map(Entry::try_from)
                        .collect::<Result<Vec<_>, _>>()?;
                    journal.append_in_memory(&entries)?;
                }
                JournalRecord::HardState(hs) => journal.mem.wl().set_hardstate(hs.into()),
            }
        }
        Ok(journal)
    }

    fn set_voters(&mut self, voters: Vec<u64>) {
        self.mem
            .wl()
            .set_conf_state(ConfState::from((voters, Vec::<u64>::new())));
    }

    /// Writes `entries` and `hard_state` (either may be absent) and syncs:
    /// when this returns `Ok`, both survive any crash. A hard state whose
    /// term and vote are what was last made durable (only its commit index
    /// moved, which raft-rs never needs durable: `must_sync` false) costs
    /// no write and no fsync; it is written with the next entries.
    pub(crate) fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        must_sync: bool,
    ) -> Result<(), ReplicaError> {
        if entries.is_empty() && !must_sync {
            if let Some(hs) = hard_state {
                self.mem.wl().set_hardstate(hs.clone());
            }
            return Ok(());
        }
        if !entries.is_empty() {
            let wire = entries.iter().map(WireEntry::from).collect();
            self.write(&JournalRecord::Entries(wire))?;
        }
        let hs = hard_state
            .cloned()
            .unwrap_or_else(|| self.mem.rl().hard_state().clone());
        self.write(&JournalRecord::HardState((&hs).into()))?;
        self.log.sync()?;
        self.append_in_memory(entries)?;
        if let Some(hs) = hard_state {
            self.mem.wl().set_hardstate(hs.clone());
        }
        Ok(())
    }

    /// Notes a commit index learned after a persist. Not journalled: a
    /// restart that finds an older commit index learns it again from the
    /// leader, and raft-rs never needs it durable for safety.
    pub(crate) fn note_commit(&mut self, commit: u64) {
        let mut core = self.mem.wl();
        if commit > core.hard_state().commit {
            core.mut_hard_state().commit = commit;
        }
    }

    fn write(&mut self, record: &JournalRecord) -> Result<(), ReplicaError> {
        self.log.append(&wire::encode(record)?)?;
        Ok(())
    }

    /// Appends to the in-memory log, first checking what raft-rs's append
    /// would panic on, so a journal that is valid records but not a valid
    /// log is an error, never a panic.
    fn append_in_memory(&mut self, entries: &[Entry]) -> Result<(), ReplicaError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let contiguous = entries.windows(2).all(|w| w[1].index == w[0].index + 1);
        let (lo, hi) = {
            use raft::Storage as _;
            (self.mem.first_index()?, self.mem.last_index()?)
        };
        let mut core = self.mem.wl();
        if !contiguous || first.index < lo || first.index > hi + 1 {
            return Err(ReplicaError::Decode(format!(
                "entries from {} do not continue a log holding {lo}..={hi}",
                first.index
            )));
        }
        core.append(entries)?;
        Ok(())
    }
}

impl raft::Storage for Journal {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<raft::eraftpb::Snapshot> {
        self.mem.snapshot(request_index, to)
    }
}
