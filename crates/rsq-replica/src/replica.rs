//! One member of a consensus group, without network IO: bytes from peers
//! and ticks go in (`handle_*`), a persist makes what is ready durable, and
//! bytes for peers, committed entries and proposal outcomes come out
//! (`poll_*`). Its driver owns the sockets and the timer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use raft::eraftpb::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use rsq_diskqueue::Storage;
use tracing::{error, info};

use crate::error::ReplicaError;
use crate::journal::Journal;
use crate::logger::logger;
use crate::wire;

/// Ticks without a leader's word before a follower stands for election.
/// With the daemon's 100 ms tick: an election within 1-2 s of a leader's
/// death (raft-rs randomises in `election..2*election`).
pub const ELECTION_TICKS: usize = 10;

/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;

/// Largest batch of entries in one append message.
pub const MAX_APPEND_BYTES: u64 = 1 << 20;

/// Append messages in flight to one follower before the leader waits.
pub const MAX_INFLIGHT_APPENDS: usize = 256;

// A heartbeat must come several times per election timeout, or followers
// would stand for election while their leader is healthy.
const _: () = assert!(HEARTBEAT_TICKS * 3 <= ELECTION_TICKS);

/// What a replica is and who its peers are.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The group's name, for logs and the journal's file names.
    pub group: String,
    /// This node's id in the group; never 0.
    pub id: u64,
    /// Every voter's id, this node's included, the same list on every
    /// member. Used only when the log is created; afterwards the log's own
    /// record of them counts.
    pub voters: Vec<u64>,
    /// Pins the election timeout to this many ticks (within
    /// `ELECTION_TICKS..2 * ELECTION_TICKS`) instead of raft-rs's own
    /// random pick in that range. `None` in production; a seeded
    /// simulation draws it from its seed, since raft-rs's pick is the one
    /// randomness in it that no seed reaches.
    pub election_ticks: Option<usize>,
}

/// Where a proposal will be in the log if it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket {
    /// The leader's term when it was proposed.
    pub term: u64,
    /// The index it was given.
    pub index: u64,
}

/// What became of a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// Committed: in the logs of a quorum, each fsynced, and it will never
    /// change. The only outcome on which a publish may be acknowledged.
    Committed,
    /// Another entry committed at its index: it never will.
    Lost,
    /// This replica stopped leading before the proposal's fate was known:
    /// the new leader may still commit it. Answer it as a failure the
    /// client may retry (a retry may duplicate, as NSQ's at-least-once
    /// delivery allows).
    Unknown,
}

/// A committed entry with data, in log order, for the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// What was proposed.
    pub data: Vec<u8>,
}

/// A replica's part in its group now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes proposals and replicates them.
    Leader,
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for votes.
    Candidate,
}

/// Bytes for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The receiving node's id.
    pub to: u64,
    /// An encoded message for its [`Replica::handle_message`].
    pub bytes: Vec<u8>,
}

/// One member of a group; see the module documentation.
pub struct Replica {
    node: RawNode<Journal>,
    group: String,
    /// Proposals this replica made as leader and has not resolved, by
    /// index, with the term they were proposed in.
    pending: BTreeMap<u64, u64>,
    outcomes: VecDeque<(Ticket, ProposalOutcome)>,
    applied: VecDeque<Applied>,
    transmits: VecDeque<Transmit>,
    role: Role,
    /// Why the replica stopped, once a storage operation failed.
    stopped: Option<String>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("group", &self.group)
            .field("id", &self.node.raft.id)
            .field("term", &self.node.raft.term)
            .field("role", &self.role)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens the replica's log in `storage` (creating it with the
    /// configured voters if it has none) and starts it as a follower.
    /// Entries committed before a restart come out of
    /// [`Replica::poll_applied`] again, from the first: the state machine
    /// is rebuilt from the log.
    pub fn open(storage: Arc<dyn Storage>, config: ReplicaConfig) -> Result<Replica, ReplicaError> {
        if config.id == 0 || !config.voters.contains(&config.id) {
            return Err(ReplicaError::Config(format!(
                "node id {} must be non-zero and one of the voters {:?}",
                config.id, config.voters
            )));
        }
        let journal = Journal::open(storage, &config.group, &config.voters)?;
        let raft_config = raft::Config {
            id: config.id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            max_size_per_msg: MAX_APPEND_BYTES,
            max_inflight_msgs: MAX_INFLIGHT_APPENDS,
            check_quorum: true,
            pre_vote: true,
            min_election_tick: config.election_ticks.unwrap_or(0),
            max_election_tick: config.election_ticks.map_or(0, |t| t + 1),
            ..raft::Config::default()
        };
        raft_config.validate()?;
        let node = RawNode::new(&raft_config, journal, &logger(&config.group, config.id))?;
        Ok(Replica {
            node,
            group: config.group,
            pending: BTreeMap::new(),
            outcomes: VecDeque::new(),
            applied: VecDeque::new(),
            transmits: VecDeque::new(),
            role: Role::Follower,
            stopped: None,
        })
    }

    /// One tick of the replica's logical clock (the driver's timer).
    pub fn handle_tick(&mut self) -> Result<(), ReplicaError> {
        self.check_running()?;
        self.guarded(|r| {
            r.node.tick();
            Ok(())
        })?;
        self.note_role();
        Ok(())
    }

    /// A message from a peer. Bytes that are not a message, or a message
    /// from outside the group, are an error; the replica is unchanged.
    pub fn handle_message(&mut self, bytes: &[u8]) -> Result<(), ReplicaError> {
        self.check_running()?;
        let (mut message, sender_last) = wire::decode_message(bytes)?;
        self.notice_lost_log(message.from, sender_last);
        // A follower that lost its log gets heartbeats whose commit index
        // its leader computed from what it once held; raft-rs would panic
        // on one past its last index. Entries up to its last index are a
        // prefix of what matched, so committing up to there is safe.
        if message.msg_type == raft::eraftpb::MessageType::MsgHeartbeat {
            message.commit = message.commit.min(self.last_index());
        }
        self.step(message)
    }

    /// As leader, resets what it believes `from` holds when `from` says its
    /// log is shorter: a member whose data dir was wiped is then sent its
    /// log again from where it ends, instead of never again.
    fn notice_lost_log(&mut self, from: u64, sender_last: u64) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.node.raft.mut_prs().get_mut(from) else {
            return;
        };
        if sender_last < progress.matched {
            tracing::warn!(group = %self.group, peer = from, held = progress.matched, now = sender_last, "a follower lost its log; sending it again");
            progress.matched = sender_last;
            progress.next_idx = sender_last + 1;
            progress.become_probe();
        }
    }

    fn step(&mut self, message: Message) -> Result<(), ReplicaError> {
        if raft::raw_node::is_local_msg(message.msg_type) {
            return Err(ReplicaError::Decode(format!(
                "a peer sent the local message {:?}",
                message.msg_type
            )));
        }
        self.guarded(|r| Ok(r.node.step(message)?))?;
        self.note_role();
        Ok(())
    }

    /// Proposes `data` for the log; only the leader takes proposals. Its
    /// [`ProposalOutcome`] comes out of [`Replica::poll_outcome`] with the ticket
    /// returned here.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Ticket, ReplicaError> {
        self.check_running()?;
        if self.role != Role::Leader {
            return Err(ReplicaError::NotLeader {
                leader: self.leader(),
            });
        }
        self.node
            .propose(Vec::new(), data)
            .map_err(|_| ReplicaError::NotLeader {
                leader: self.leader(),
            })?;
        let ticket = Ticket {
            term: self.node.raft.term,
            index: self.node.raft.raft_log.last_index(),
        };
        self.pending.insert(ticket.index, ticket.term);
        Ok(ticket)
    }

    /// Stands for election now instead of waiting for the timeout: the
    /// member that creates a group calls it, so the group has a leader
    /// (and every member has heard of it) within a round trip.
    pub fn campaign(&mut self) -> Result<(), ReplicaError> {
        self.check_running()?;
        self.guarded(|r| Ok(r.node.campaign()?))?;
        self.note_role();
        Ok(())
    }

    /// Proposes `data` wherever this replica stands: as leader, as
    /// [`Replica::propose`] does (`Some` ticket); as a follower that knows
    /// its leader, forwarded to it (`None`: the entry's commit shows in
    /// [`Replica::poll_applied`], here as everywhere). Without a known
    /// leader: [`ReplicaError::NotLeader`].
    pub fn propose_anywhere(&mut self, data: Vec<u8>) -> Result<Option<Ticket>, ReplicaError> {
        self.check_running()?;
        if self.role == Role::Leader {
            return self.propose(data).map(Some);
        }
        let Some(leader) = self.leader() else {
            return Err(ReplicaError::NotLeader { leader: None });
        };
        self.node
            .propose(Vec::new(), data)
            .map_err(|_| ReplicaError::NotLeader {
                leader: Some(leader),
            })?;
        Ok(None)
    }

    /// Makes what raft-rs has ready durable (one fsync for all of it),
    /// then queues its messages, committed entries and outcomes. A storage
    /// failure stops the replica for good: it neither votes nor
    /// acknowledges again until it is reopened from its log.
    pub fn persist(&mut self) -> Result<(), ReplicaError> {
        let mut early = Vec::new();
        let result = self.persist_sending(|t| early.push(t));
        for t in early.into_iter().rev() {
            self.transmits.push_front(t);
        }
        result
    }

    /// As [`Replica::persist`], handing `send` the messages that may leave
    /// before the fsync (a leader's appends and heartbeats: it counts
    /// itself only once its own write is durable) as soon as raft-rs has
    /// them, so the followers' writes overlap the leader's. Votes and
    /// append acknowledgements still wait for the fsync they vouch for, in
    /// [`Replica::poll_transmit`].
    pub fn persist_sending(&mut self, mut send: impl FnMut(Transmit)) -> Result<(), ReplicaError> {
        self.check_running()?;
        // A Ready's persist can commit entries that produce another Ready
        // (a single-node group commits its own appends); a few rounds
        // settle it, and what is left waits for the next call.
        for _ in 0..4 {
            if !self.node.has_ready() {
                break;
            }
            if let Err(e) = self.guarded(|r| r.persist_ready(&mut send)) {
                if self.stopped.is_none() {
                    let reason = e.to_string();
                    error!(group = %self.group, %reason, "replica stops: its log could not be made durable");
                    self.stop(reason);
                }
                return Err(e);
            }
        }
        self.note_role();
        Ok(())
    }

    fn persist_ready(&mut self, send: &mut dyn FnMut(Transmit)) -> Result<(), ReplicaError> {
        let mut ready = self.node.ready();
        // A leader's appends and heartbeats may leave before its own
        // write: the leader counts itself only once persisted.
        self.queue_messages(ready.take_messages())?;
        while let Some(t) = self.transmits.pop_front() {
            send(t);
        }
        if !ready.snapshot().is_empty() {
            return Err(ReplicaError::Config(
                "a snapshot arrived, and this replica cannot install one yet".to_string(),
            ));
        }
        let committed = ready.take_committed_entries();
        let must_sync = ready.must_sync();
        self.node
            .mut_store()
            .persist(ready.entries(), ready.hs(), must_sync)?;
        self.apply(committed);
        // Votes and append acknowledgements leave only after the write
        // they vouch for is durable.
        self.queue_messages(ready.take_persisted_messages())?;
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().note_commit(commit);
        }
        self.queue_messages(light.take_messages())?;
        self.apply(light.take_committed_entries());
        self.node.advance_apply();
        Ok(())
    }

    /// Whether [`Replica::persist`] has anything to do: a driver that runs
    /// it off its thread asks first.
    pub fn has_ready(&self) -> bool {
        self.stopped.is_none() && self.node.has_ready()
    }

    /// The next bytes to send to a peer.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next committed entry for the state machine.
    pub fn poll_applied(&mut self) -> Option<Applied> {
        self.applied.pop_front()
    }

    /// The next resolved proposal.
    pub fn poll_outcome(&mut self) -> Option<(Ticket, ProposalOutcome)> {
        self.outcomes.pop_front()
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.node.raft.id
    }

    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<u64> {
        match self.node.raft.leader_id {
            raft::INVALID_ID => None,
            id => Some(id),
        }
    }

    /// This replica's role now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The latest term this replica has seen.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The highest index this replica knows committed.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// The highest index handed to [`Replica::poll_applied`] (or skipped
    /// there as a leader's empty entry).
    pub fn applied_index(&self) -> u64 {
        self.node.raft.raft_log.applied
    }

    /// The last index of this replica's log.
    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    /// Why the replica stopped, if a storage failure stopped it.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Runs `f`, stopping the replica if raft-rs panics in it. raft-rs
    /// panics when what it is told breaks Raft's assumptions (a commit
    /// index past the end of a log that lost fsynced entries, for one): a
    /// replica in that state must not go on, but the daemon around it
    /// serves every other topic.
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Replica) -> Result<(), ReplicaError>,
    ) -> Result<(), ReplicaError> {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        match result {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                let reason = format!("raft-rs refused its state: {what}");
                error!(group = %self.group, %reason, "replica stops");
                self.stop(reason.clone());
                Err(ReplicaError::Stopped { reason })
            }
        }
    }

    /// Stops the replica for good: nothing queued leaves, nothing
    /// proposed is known.
    fn stop(&mut self, reason: String) {
        self.stopped = Some(reason);
        self.transmits.clear();
        self.resolve_all(ProposalOutcome::Unknown);
    }

    fn check_running(&self) -> Result<(), ReplicaError> {
        match &self.stopped {
            Some(reason) => Err(ReplicaError::Stopped {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn queue_messages(&mut self, messages: Vec<Message>) -> Result<(), ReplicaError> {
        let last = self.last_index();
        for message in messages {
            let bytes = wire::encode_message(&message, last)?;
            self.transmits.push_back(Transmit {
                to: message.to,
                bytes,
            });
        }
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if let Some(term) = self.pending.remove(&entry.index) {
                let ticket = Ticket {
                    term,
                    index: entry.index,
                };
                let outcome = if term == entry.term {
                    ProposalOutcome::Committed
                } else {
                    ProposalOutcome::Lost
                };
                self.outcomes.push_back((ticket, outcome));
            }
            // Every leader commits an empty entry of its own term first;
            // it carries nothing for the state machine.
            if entry.entry_type == EntryType::EntryNormal && !entry.data.is_empty() {
                self.applied.push_back(Applied {
                    index: entry.index,
                    term: entry.term,
                    data: entry.data.to_vec(),
                });
            }
        }
    }

    /// Follows raft-rs's role; a leader that steps down resolves what it
    /// proposed as unknown, since it can no longer learn their fate first.
    fn note_role(&mut self) {
        let role = match self.node.raft.state {
            StateRole::Leader => Role::Leader,
            StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
            StateRole::Follower => Role::Follower,
        };
        if role == self.role {
            return;
        }
        info!(group = %self.group, node = self.id(), term = self.term(), ?role, "replica changes role");
        if self.role == Role::Leader {
            self.resolve_all(ProposalOutcome::Unknown);
        }
        self.role = role;
    }

    fn resolve_all(&mut self, outcome: ProposalOutcome) {
        for (index, term) in std::mem::take(&mut self.pending) {
            self.outcomes.push_back((Ticket { term, index }, outcome));
        }
    }
}
