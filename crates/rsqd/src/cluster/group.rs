//! One replicated topic on one member: the task that drives its
//! [`Replica`], applies its committed entries, and, while this member
//! leads, delivers its messages through an ordinary local topic.
//!
//! Every member applies every committed entry to a [`TopicState`]: the
//! messages not yet finished on every channel, and per channel the ones it
//! has not finished. Only the leader delivers: when it takes over (and has
//! applied everything committed before its term), it fills a local topic's
//! channels with exactly their unfinished messages and from then on puts
//! each committed publish into the topic. FINs on the leader's channels
//! are batched for [`FIN_BATCH`] and committed as one entry, so a new
//! leader delivers again only what was in flight or finished within the
//! last batch window. A member that stops leading deletes its local
//! topic: its consumers are disconnected and find the new leader through
//! nsqlookupd.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rsq_codec::{Message, MessageId};
use rsq_replica::{Replica, ReplicaError, Role, Transmit};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::entry::{self, TopicEntry};
use super::peer::PeerFrame;
use crate::nsqd::Nsqd;
use crate::world::World;

/// The replica's logical clock: election after 10-20 ticks, heartbeats
/// every 2 (see `rsq_replica::ELECTION_TICKS`).
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// How long FINs on the leader wait to be committed together: the bound
/// on what a new leader delivers again after a failover.
pub(crate) const FIN_BATCH: Duration = Duration::from_millis(10);

/// How long a publish waits for its entry to commit before it fails with
/// `E_PUB_FAILED` (the client may retry; a retry may duplicate).
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Commands queued to one group's task before senders wait.
pub(crate) const COMMAND_QUEUE: usize = 4096;

/// Peer messages handled between two persists.
const INBOUND_BATCH: usize = 256;

/// What the rest of the daemon asks of a group.
pub(crate) enum GroupCommand {
    /// Commit `entry`, then answer `done` once a publish entry whose first
    /// message is `first` has been applied here.
    Publish {
        entry: Vec<u8>,
        first: MessageId,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// A channel was created on the leader.
    Channel(String),
    /// Messages finished on the leader's channel.
    Finished(String, Vec<MessageId>),
    /// Stand for election now (the member that created the group).
    Campaign,
}

/// A group as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupStatus {
    /// This member's role.
    pub role: Role,
    /// The leader's member id, if known.
    pub leader: Option<u64>,
    /// The latest term.
    pub term: u64,
    /// Highest committed index known here.
    pub commit: u64,
    /// Whether this member delivers the topic now.
    pub delivering: bool,
    /// Why the replica stopped, if it did.
    pub stopped: Option<String>,
}

/// The handle the daemon keeps for a group.
#[derive(Clone)]
pub(crate) struct GroupHandle {
    /// Proposals, FINs and channel creations for the group's task.
    pub commands: mpsc::Sender<GroupCommand>,
    /// Peers' consensus messages for the group's replica.
    pub inbound: mpsc::Sender<Vec<u8>>,
    /// The group's role, leader and progress, for `/stats` and refusals.
    pub status: watch::Receiver<GroupStatus>,
}

/// A publish waiting for its entry to be applied here.
pub(crate) struct Waiter {
    deadline: Instant,
    entry: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Message ids applied lately, at most [`RECENT_IDS`]: a publish proposed
/// again after a leader change may commit twice, and its second copy is
/// dropped here.
#[derive(Debug, Default)]
pub(crate) struct RecentIds {
    order: std::collections::VecDeque<MessageId>,
    ids: HashSet<MessageId>,
}

/// Message ids remembered for deduplication: far more than a failover's
/// worth of retried publishes.
pub(crate) const RECENT_IDS: usize = 1 << 16;

impl RecentIds {
    /// Remembers `id`; `false` if it was already there.
    fn insert(&mut self, id: MessageId) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

/// Committed, unfinished messages and who has not finished them.
#[derive(Debug, Default)]
pub(crate) struct TopicState {
    /// Each message with its position in the log and how many channels
    /// (or the channel-less backlog) still hold it.
    messages: HashMap<MessageId, (u64, Message, usize)>,
    /// Unfinished message ids per channel.
    channels: BTreeMap<String, HashSet<MessageId>>,
    /// Messages published while the topic had no channel: the first
    /// channel takes them, as an nsqd topic's first channel does.
    orphans: Vec<MessageId>,
    /// Messages applied so far, for their order.
    seq: u64,
}

impl TopicState {
    fn publish(&mut self, msgs: &[Message]) {
        for msg in msgs {
            self.seq += 1;
            let holders = if self.channels.is_empty() {
                self.orphans.push(msg.id);
                1
            } else {
                for unfinished in self.channels.values_mut() {
                    unfinished.insert(msg.id);
                }
                self.channels.len()
            };
            self.messages
                .insert(msg.id, (self.seq, msg.clone(), holders));
        }
    }

    fn channel(&mut self, name: String) {
        if self.channels.contains_key(&name) {
            return;
        }
        let unfinished = if self.channels.is_empty() {
            std::mem::take(&mut self.orphans).into_iter().collect()
        } else {
            HashSet::new()
        };
        self.channels.insert(name, unfinished);
    }

    fn finished(&mut self, channel: &str, ids: &[[u8; 16]]) {
        let Some(unfinished) = self.channels.get_mut(channel) else {
            return;
        };
        for id in ids {
            let id = MessageId(*id);
            if unfinished.remove(&id)
                && let Some(entry) = self.messages.get_mut(&id)
            {
                entry.2 -= 1;
                if entry.2 == 0 {
                    self.messages.remove(&id);
                }
            }
        }
    }

    /// The messages of `ids`, in log order.
    fn in_order<'a>(&self, ids: impl Iterator<Item = &'a MessageId>) -> Vec<Message> {
        let mut msgs: Vec<(u64, Message)> = ids
            .filter_map(|id| self.messages.get(id).map(|(seq, m, _)| (*seq, m.clone())))
            .collect();
        msgs.sort_by_key(|(seq, _)| *seq);
        msgs.into_iter().map(|(_, m)| m).collect()
    }

    /// Messages held for the topic, for `/stats`.
    pub(crate) fn depth(&self) -> usize {
        self.messages.len()
    }
}

/// The group's task and everything it owns.
pub(crate) struct Group {
    /// The replicated topic's name.
    pub name: String,
    /// This member's id in the group.
    pub id: u64,
    /// The replica; `None` only while it is being persisted.
    pub replica: Option<Replica>,
    /// The daemon, for the leader's local topic.
    pub nsqd: Weak<Nsqd>,
    /// Where blocking IO runs (inline in a simulation).
    pub world: World,
    /// Senders to each member by id (this member's own slot unused).
    pub peers: Arc<BTreeMap<u64, mpsc::Sender<PeerFrame>>>,
    /// Committed, unfinished messages: what a new leader delivers.
    pub state: TopicState,
    /// Published for `GroupHandle::status`.
    pub status: watch::Sender<GroupStatus>,
    /// Publishes waiting for their entry, by first message id.
    pub waiters: HashMap<MessageId, Waiter>,
    /// The leader the last persist saw: when it changes, waiting
    /// publishes are proposed again, since the old leader may have lost
    /// them (a repeat that commits twice is dropped at apply).
    pub last_leader: Option<u64>,
    /// Ids of the latest applied messages, to drop a publish applied twice.
    pub recent: RecentIds,
    /// Proposals waiting for a leader to be known.
    pub queued: Vec<(Instant, Vec<u8>)>,
    /// FINs not yet proposed, per channel.
    pub fins: BTreeMap<String, Vec<[u8; 16]>>,
    /// When the pending FINs are proposed (`FIN_BATCH` after the first).
    pub fin_deadline: Option<Instant>,
    /// The index a new leader must have applied before it delivers: its
    /// own first entry.
    pub lead_from: Option<u64>,
    /// The highest index applied here.
    pub applied: u64,
}

impl Group {
    /// Runs the group until the daemon stops (`stop`) or the replica stops
    /// (then it stops delivering too).
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<GroupCommand>,
        mut inbound: mpsc::Receiver<Vec<u8>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let fin_deadline = self.fin_deadline;
            tokio::select! {
                // The daemon stops: its shutdown closes the local topic,
                // and the next start drops it (the log rebuilds it).
                _ = stop.changed() => return,
                _ = tick.tick() => {
                    self.with_replica(|r| r.handle_tick());
                    self.retry_queued();
                    self.expire_waiters();
                }
                Some(bytes) = inbound.recv() => {
                    self.with_replica(|r| r.handle_message(&bytes));
                    for _ in 0..INBOUND_BATCH {
                        let Ok(bytes) = inbound.try_recv() else { break };
                        self.with_replica(|r| r.handle_message(&bytes));
                    }
                }
                Some(command) = commands.recv() => {
                    self.command(command);
                    for _ in 0..INBOUND_BATCH {
                        let Ok(command) = commands.try_recv() else { break };
                        self.command(command);
                    }
                }
                () = sleep_until(fin_deadline), if fin_deadline.is_some() => self.flush_fins(),
            }
            if !self.persist().await {
                break;
            }
            self.follow_role().await;
        }
        self.stop_delivering().await;
    }

    fn with_replica(&mut self, f: impl FnOnce(&mut Replica) -> Result<(), ReplicaError>) {
        if let Some(replica) = self.replica.as_mut()
            && let Err(e) = f(replica)
        {
            tracing::debug!(topic = %self.name, error = %e, "replica refused a step");
        }
    }

    fn command(&mut self, command: GroupCommand) {
        match command {
            GroupCommand::Publish { entry, first, done } => {
                let deadline = Instant::now() + PUBLISH_TIMEOUT;
                self.propose(deadline, &entry);
                self.waiters.insert(
                    first,
                    Waiter {
                        deadline,
                        entry,
                        done,
                    },
                );
            }
            GroupCommand::Channel(name) => {
                if !self.state.channels.contains_key(&name) {
                    match (TopicEntry::Channel { name }).encode() {
                        Ok(entry) => self.propose(Instant::now() + PUBLISH_TIMEOUT, &entry),
                        Err(e) => {
                            tracing::error!(topic = %self.name, error = %e, "cannot encode a channel entry")
                        }
                    }
                }
            }
            GroupCommand::Campaign => self.with_replica(Replica::campaign),
            GroupCommand::Finished(channel, ids) => {
                self.fins
                    .entry(channel)
                    .or_default()
                    .extend(ids.iter().map(|id| id.0));
                if self.fin_deadline.is_none() {
                    self.fin_deadline = Some(Instant::now() + FIN_BATCH);
                }
            }
        }
    }

    fn propose(&mut self, deadline: Instant, entry: &[u8]) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        match replica.propose_anywhere(entry.to_vec()) {
            Ok(_) => {}
            Err(ReplicaError::NotLeader { leader: None }) => {
                self.queued.push((deadline, entry.to_vec()));
            }
            Err(e) => tracing::debug!(topic = %self.name, error = %e, "proposal refused"),
        }
    }

    /// A new leader may not have what was proposed through the old one:
    /// every waiting publish is proposed again.
    fn repropose_after_leader_change(&mut self) {
        let leader = self.replica.as_ref().and_then(Replica::leader);
        if leader == self.last_leader {
            return;
        }
        self.last_leader = leader;
        if leader.is_none() {
            return;
        }
        // Taken out while proposing, which never touches the waiters.
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters.values() {
            self.propose(w.deadline, &w.entry);
        }
        self.waiters = waiters;
    }

    fn retry_queued(&mut self) {
        let now = Instant::now();
        for (deadline, entry) in std::mem::take(&mut self.queued) {
            if deadline > now {
                self.propose(deadline, &entry);
            }
        }
    }

    fn expire_waiters(&mut self) {
        let now = Instant::now();
        self.waiters
            .retain(|_, w| w.deadline > now && !w.done.is_closed());
    }

    fn flush_fins(&mut self) {
        self.fin_deadline = None;
        for (channel, ids) in std::mem::take(&mut self.fins) {
            match (TopicEntry::Finished { channel, ids }).encode() {
                Ok(entry) => self.propose(Instant::now() + PUBLISH_TIMEOUT, &entry),
                Err(e) => {
                    tracing::error!(topic = %self.name, error = %e, "cannot encode a FIN entry")
                }
            }
        }
    }

    /// Persists what the replica has ready (the fsync off the runtime's
    /// threads), sends, and applies. `false` once the replica stopped.
    async fn persist(&mut self) -> bool {
        let Some(mut replica) = self.replica.take() else {
            return false;
        };
        if !replica.has_ready() {
            self.replica = Some(replica);
            return true;
        }
        let (peers, name, id) = (&self.peers, &self.name, self.id);
        let result = persist_here(&self.world, &mut replica, |t| send(peers, name, id, t));
        while let Some(t) = replica.poll_transmit() {
            send(&self.peers, &self.name, self.id, t);
        }
        let mut applied = Vec::new();
        while let Some(a) = replica.poll_applied() {
            applied.push(a);
        }
        while replica.poll_outcome().is_some() {}
        self.applied = replica.applied_index();
        let stopped = replica.stopped().map(str::to_string);
        self.replica = Some(replica);
        for a in applied {
            self.apply(&a.data).await;
        }
        if let Err(e) = result {
            tracing::error!(topic = %self.name, error = %e, "replicated topic stops on this member");
        }
        self.publish_status(stopped.clone());
        self.repropose_after_leader_change();
        stopped.is_none()
    }

    async fn apply(&mut self, data: &[u8]) {
        let entry = match TopicEntry::decode(data) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(topic = %self.name, error = %e, "undecodable entry in the topic's log skipped");
                return;
            }
        };
        match entry {
            TopicEntry::Publish { records } => {
                let (msgs, bad) = entry::messages(records);
                if bad > 0 {
                    tracing::error!(topic = %self.name, bad, "undecodable messages in the topic's log skipped");
                }
                if let Some(first) = msgs.first()
                    && let Some(waiter) = self.waiters.remove(&first.id)
                {
                    let _ = waiter.done.send(Ok(()));
                }
                let msgs: Vec<Message> = msgs
                    .into_iter()
                    .filter(|m| self.recent.insert(m.id))
                    .collect();
                self.state.publish(&msgs);
                if self.delivering() {
                    self.deliver(msgs).await;
                }
            }
            TopicEntry::Channel { name } => self.state.channel(name),
            TopicEntry::Finished { channel, ids } => self.state.finished(&channel, &ids),
        }
    }

    fn delivering(&self) -> bool {
        self.status.borrow().delivering
    }

    async fn deliver(&self, msgs: Vec<Message>) {
        let Some(nsqd) = self.nsqd.upgrade() else {
            return;
        };
        match nsqd.get_or_create_topic(&self.name).await {
            Ok(topic) => {
                if let Err(e) = topic.put_many(msgs).await {
                    tracing::error!(topic = %self.name, error = %e, "leader could not deliver committed messages");
                }
            }
            Err(e) => tracing::error!(topic = %self.name, error = %e, "leader has no local topic"),
        }
    }

    fn publish_status(&self, stopped: Option<String>) {
        let Some(replica) = self.replica.as_ref() else {
            return;
        };
        let delivering = self.status.borrow().delivering;
        let status = GroupStatus {
            role: replica.role(),
            leader: replica.leader(),
            term: replica.term(),
            commit: replica.commit_index(),
            delivering,
            stopped,
        };
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    /// Starts delivering once leading with everything before this term
    /// applied; stops when no longer leading.
    async fn follow_role(&mut self) {
        let Some(replica) = self.replica.as_ref() else {
            return;
        };
        let leading = replica.role() == Role::Leader;
        let delivering = self.delivering();
        if !leading {
            self.lead_from = None;
            if delivering {
                self.stop_delivering().await;
            }
            return;
        }
        let lead_from = *self.lead_from.get_or_insert(replica.last_index());
        if !delivering && self.applied >= lead_from {
            self.start_delivering().await;
        }
    }

    async fn start_delivering(&mut self) {
        let Some(nsqd) = self.nsqd.upgrade() else {
            return;
        };
        self.status.send_modify(|s| s.delivering = true);
        tracing::info!(topic = %self.name, held = self.state.depth(), "this member leads the replicated topic and delivers it");
        let topic = match nsqd.get_or_create_topic(&self.name).await {
            Ok(topic) => topic,
            Err(e) => {
                tracing::error!(topic = %self.name, error = %e, "leader cannot create its local topic");
                return;
            }
        };
        if let Err(e) = topic.empty().await {
            tracing::error!(topic = %self.name, error = %e, "leader cannot empty its stale local topic");
        }
        let channels: Vec<(String, Vec<Message>)> = self
            .state
            .channels
            .iter()
            .map(|(name, ids)| (name.clone(), self.state.in_order(ids.iter())))
            .collect();
        for (name, msgs) in channels {
            match nsqd.get_or_create_channel(&self.name, &name).await {
                Ok((_, channel)) => {
                    let _ = channel.empty().await;
                    if let Err(e) = channel.put_many(msgs).await {
                        tracing::error!(topic = %self.name, channel = %name, error = %e, "leader cannot refill a channel");
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %self.name, channel = %name, error = %e, "leader cannot create a channel")
                }
            }
        }
        let orphans = self.state.in_order(self.state.orphans.iter());
        if !orphans.is_empty()
            && let Err(e) = topic.put_many(orphans).await
        {
            tracing::error!(topic = %self.name, error = %e, "leader cannot refill its topic");
        }
    }

    async fn stop_delivering(&mut self) {
        if !self.delivering() {
            return;
        }
        self.status.send_modify(|s| s.delivering = false);
        tracing::info!(topic = %self.name, "this member no longer leads the replicated topic");
        if let Some(nsqd) = self.nsqd.upgrade()
            && let Err(e) = nsqd.delete_topic(&self.name).await
        {
            tracing::warn!(topic = %self.name, error = %e, "former leader cannot remove its local topic");
        }
    }
}

/// Runs the replica's persist (its fsync) in this task: a hand-off to
/// the blocking pool and back costs two thread wake-ups per batch, more
/// than the fsync itself on a fast disk. On a multi-thread runtime the
/// worker first hands its other tasks to another thread
/// (`block_in_place`), so no connection waits behind the fsync.
/// A leader's appends leave through `send` before its own fsync.
fn persist_here(
    world: &World,
    replica: &mut Replica,
    send: impl FnMut(Transmit),
) -> Result<(), ReplicaError> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if world.offload == rsq_diskqueue::Offload::BlockingPool && multi_thread {
        tokio::task::block_in_place(|| replica.persist_sending(send))
    } else {
        replica.persist_sending(send)
    }
}

/// Queues `t` for its peer; dropped when that peer's queue is full, which
/// Raft tolerates.
fn send(peers: &BTreeMap<u64, mpsc::Sender<PeerFrame>>, group: &str, from: u64, t: Transmit) {
    if let Some(peer) = peers.get(&t.to) {
        let _ = peer.try_send(PeerFrame {
            group: group.to_string(),
            from,
            bytes: t.bytes,
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
