//! Replicated topics: a cluster of rsqd members, and one consensus group
//! (an `rsq_replica::Replica` per member) per replicated topic.
//!
//! A member is started with `--cluster-address` (its peer listener) and
//! `--cluster-peers` (every member's, in the same order everywhere; a
//! member's id in every group is its place in that list, from 1). A topic
//! created with `replicas=N` (this slice: `N` is the cluster's size) is a
//! group over all members. Its log lives in the data dir's storage (the
//! `World` seam) as `replica.<topic>.log.NNNNNNNN.dat`, one
//! `rsq_diskqueue::RecordLog`; a member that meets a message for a group it
//! does not have creates it, so creation on one member reaches the others
//! with the first election.
//!
//! - `entry`: what the topic's log holds.
//! - `group`: the task per group: drives the replica, applies entries,
//!   delivers while leading.
//! - `peer`: the peer protocol over TCP.
//!
//! A publish on any member is proposed there (a follower's proposal is
//! forwarded to the leader by raft-rs) and answered `OK` only once its
//! entry has been applied on that member, which it is only after a
//! quorum fsynced it: a quorum-acknowledged publish, wherever it was
//! sent. Only the leader has a local topic, so only it registers the topic
//! with nsqlookupd and only it delivers; a SUB elsewhere is refused with
//! the leader's name.

pub(crate) mod entry;
mod group;
mod peer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

use rsq_codec::{Message, MessageId};
use rsq_replica::{Replica, ReplicaConfig, Role};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::NsqdError;
use crate::nsqd::{Nsqd, lock};
use crate::world::World;
pub(crate) use group::GroupHandle;
pub(crate) use group::GroupStatus;
use group::{Group, GroupCommand, PUBLISH_TIMEOUT, TopicState};
use peer::{PEER_QUEUE, PeerFrame};

/// Prefix of every replica log's files in the data dir.
const LOG_PREFIX: &str = "replica.";

/// Peer messages queued for one group before more are dropped (Raft
/// resends what it needs).
const GROUP_INBOUND: usize = 4096;

/// The cluster this member belongs to.
pub(crate) struct Cluster {
    /// This member's id (its place in `members`, from 1).
    id: u64,
    /// Every member's peer address, by id - 1.
    members: Vec<String>,
    peers: Arc<BTreeMap<u64, mpsc::Sender<PeerFrame>>>,
    groups: Mutex<HashMap<String, GroupHandle>>,
    /// Topics whose log could not be opened here: not retried for every
    /// frame a peer sends (the error was logged once).
    unopenable: Mutex<BTreeSet<String>>,
    nsqd: Weak<Nsqd>,
    world: World,
    stop: watch::Receiver<bool>,
    /// When the cluster started, for `heard`.
    started: std::time::Instant,
    /// Per member (by id - 1): milliseconds after `started` of its last
    /// frame (0: never), for `GET /cluster`.
    heard: Vec<std::sync::atomic::AtomicU64>,
}

/// One member as `GET /cluster` shows it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct MemberReport {
    /// Its id in every group (its place in `--cluster-peers`, from 1).
    pub id: u64,
    /// Its peer address.
    pub address: String,
    /// Whether it is this member.
    pub this_member: bool,
    /// Milliseconds since a frame from it arrived; `None` if none has
    /// (or for this member). Members exchange frames only while they share
    /// a replicated topic.
    pub heard_ms_ago: Option<u64>,
}

impl Cluster {
    /// Joins the cluster the options describe, if any: binds the peer
    /// listener, starts a sender per peer, and reopens every replicated
    /// topic found in the data dir (dropping the local topic a former
    /// leader left behind: it is rebuilt from the log when this member
    /// leads again).
    pub(crate) async fn start(
        nsqd: &Arc<Nsqd>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Arc<Cluster>>> {
        let Some(address) = nsqd.opts.cluster_address.clone() else {
            return Ok(None);
        };
        let members = nsqd.opts.cluster_peers.clone();
        let id = members
            .iter()
            .position(|m| *m == address)
            .map(|i| i as u64 + 1)
            .ok_or_else(|| anyhow::anyhow!("--cluster-address is not in --cluster-peers"))?;
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for cluster peers on {address}: {e}"))?;
        let mut peers = BTreeMap::new();
        for (i, addr) in members.iter().enumerate() {
            let peer = i as u64 + 1;
            if peer == id {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            tokio::spawn(peer::send_to(addr.clone(), rx, stop.clone()));
            peers.insert(peer, tx);
        }
        let cluster = Arc::new(Cluster {
            id,
            members: members.clone(),
            peers: Arc::new(peers),
            groups: Mutex::new(HashMap::new()),
            unopenable: Mutex::new(BTreeSet::new()),
            nsqd: Arc::downgrade(nsqd),
            world: nsqd.world().clone(),
            stop: stop.clone(),
            started: std::time::Instant::now(),
            heard: members.iter().map(|_| Default::default()).collect(),
        });
        for topic in cluster.stored_groups()? {
            if nsqd.topic(&topic).is_some() {
                nsqd.delete_topic(&topic).await?;
            }
            // A log that cannot be opened (damaged, see
            // `QueueError::Damaged`) keeps that topic down on this member
            // only; the files stay as they are for an operator.
            if let Err(e) = cluster.open_group(&topic) {
                tracing::error!(topic, error = %e, "replicated topic not served by this member: its log cannot be opened");
                lock(&cluster.unopenable).insert(topic);
            }
        }
        let weak = Arc::downgrade(&cluster);
        let route: peer::Route = Arc::new(move |frame| {
            if let Some(cluster) = weak.upgrade() {
                cluster.route(frame);
            }
        });
        tokio::spawn(peer::listen(listener, route, stop));
        tracing::info!(id, %address, members = cluster.members.len(), "cluster member serving peers");
        Ok(Some(cluster))
    }

    /// Names of the replicated topics whose logs are in the data dir.
    fn stored_groups(&self) -> anyhow::Result<BTreeSet<String>> {
        let logs = rsq_diskqueue::RecordLog::names(self.world.storage.as_ref(), LOG_PREFIX)?;
        Ok(logs
            .iter()
            .filter_map(|log| log.strip_prefix(LOG_PREFIX).map(str::to_string))
            .collect())
    }

    /// The group of `topic`, if it is replicated.
    pub(crate) fn group(&self, topic: &str) -> Option<GroupHandle> {
        lock(&self.groups).get(topic).cloned()
    }

    /// How many replicas a new replicated topic has: the cluster's size.
    pub(crate) fn size(&self) -> usize {
        self.members.len()
    }

    /// Makes `topic` replicated over every member (idempotent) and waits,
    /// bounded, until its group has a leader: by then a quorum of members
    /// has it, and the rest learn of it from the leader's first heartbeat.
    pub(crate) async fn create(&self, topic: &str) -> Result<(), NsqdError> {
        let group = match self.group(topic) {
            Some(group) => group,
            None => {
                let group = self
                    .open_group(topic)
                    .map_err(|e| NsqdError::Replication(e.to_string()))?;
                let _ = group.commands.send(GroupCommand::Campaign).await;
                group
            }
        };
        let mut status = group.status.clone();
        match tokio::time::timeout(PUBLISH_TIMEOUT, status.wait_for(|s| s.leader.is_some())).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(NsqdError::Replication(format!(
                "the replicated topic elected no leader within {PUBLISH_TIMEOUT:?}"
            ))),
        }
    }

    fn open_group(&self, topic: &str) -> Result<GroupHandle, rsq_replica::ReplicaError> {
        let mut groups = lock(&self.groups);
        if let Some(handle) = groups.get(topic) {
            return Ok(handle.clone());
        }
        let config = ReplicaConfig {
            group: format!("{LOG_PREFIX}{topic}"),
            id: self.id,
            voters: (1..=self.members.len() as u64).collect(),
            election_ticks: None,
        };
        let replica = Replica::open(self.world.storage.clone(), config)?;
        let (commands_tx, commands_rx) = mpsc::channel(group::COMMAND_QUEUE);
        let (inbound_tx, inbound_rx) = mpsc::channel(GROUP_INBOUND);
        let (status_tx, status_rx) = watch::channel(GroupStatus {
            role: Role::Follower,
            leader: None,
            term: replica.term(),
            commit: replica.commit_index(),
            delivering: false,
            stopped: None,
        });
        let group = Group {
            name: topic.to_string(),
            id: self.id,
            replica: Some(replica),
            nsqd: self.nsqd.clone(),
            world: self.world.clone(),
            peers: self.peers.clone(),
            state: TopicState::default(),
            status: status_tx,
            waiters: HashMap::new(),
            last_leader: None,
            recent: Default::default(),
            queued: Vec::new(),
            fins: BTreeMap::new(),
            fin_deadline: None,
            lead_from: None,
            applied: 0,
        };
        tokio::spawn(group.run(commands_rx, inbound_rx, self.stop.clone()));
        let handle = GroupHandle {
            commands: commands_tx,
            inbound: inbound_tx,
            status: status_rx,
        };
        groups.insert(topic.to_string(), handle.clone());
        tracing::info!(
            topic,
            replicas = self.members.len(),
            "replicated topic opened"
        );
        Ok(handle)
    }

    /// Hands a peer's frame to its group, creating a group a member
    /// announces (its first election reaches every member).
    fn route(&self, frame: PeerFrame) {
        if self.member(frame.from).is_none() || frame.from == self.id {
            tracing::warn!(from = frame.from, "cluster frame from a non-member ignored");
            return;
        }
        if let Some(heard) = usize::try_from(frame.from - 1)
            .ok()
            .and_then(|i| self.heard.get(i))
        {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            heard.store(ms.max(1), std::sync::atomic::Ordering::Relaxed);
        }
        let topic = frame.group.as_str();
        if !rsq_codec::is_valid_name(topic) || rsq_codec::is_ephemeral(topic) {
            tracing::warn!(group = %frame.group, "cluster frame for an invalid topic name ignored");
            return;
        }
        let group = match self.group(topic) {
            Some(group) => group,
            None if lock(&self.unopenable).contains(topic) => return,
            None => match self.open_group(topic) {
                Ok(group) => group,
                Err(e) => {
                    tracing::error!(topic, error = %e, "cannot open a replicated topic a peer announced");
                    lock(&self.unopenable).insert(topic.to_string());
                    return;
                }
            },
        };
        let _ = group.inbound.try_send(frame.bytes);
    }

    /// The peer address of member `id`, for messages naming the leader.
    pub(crate) fn member(&self, id: u64) -> Option<&str> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.members.get(i).map(String::as_str)
    }

    /// Every member, for `GET /cluster`.
    pub(crate) fn members(&self) -> Vec<MemberReport> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.members
            .iter()
            .enumerate()
            .map(|(i, address)| {
                let id = i as u64 + 1;
                let heard = self.heard[i].load(std::sync::atomic::Ordering::Relaxed);
                MemberReport {
                    id,
                    address: address.clone(),
                    this_member: id == self.id,
                    heard_ms_ago: (heard > 0 && id != self.id).then(|| now.saturating_sub(heard)),
                }
            })
            .collect()
    }

    /// Every replicated topic's status, by name.
    pub(crate) fn statuses(&self) -> BTreeMap<String, GroupStatus> {
        lock(&self.groups)
            .iter()
            .map(|(name, h)| (name.clone(), h.status.borrow().clone()))
            .collect()
    }

    /// Why this member cannot serve consumers of `topic`, naming its
    /// leader, or `None` if it delivers the topic now.
    pub(crate) fn refuse_consumers(&self, group: &GroupHandle) -> Option<String> {
        let status = group.status.borrow();
        if status.delivering {
            return None;
        }
        Some(match status.leader.and_then(|id| self.member(id)) {
            Some(leader) if status.leader != Some(self.id) => {
                format!("NOT_LEADER: this replicated topic is led by the member at {leader}")
            }
            _ => "NOT_LEADER: this replicated topic has no leader yet".to_string(),
        })
    }
}

/// Publishes `msgs` to a replicated topic through its group: `Ok` once
/// the entry is applied on this member, so fsynced on a quorum.
pub(crate) async fn publish(group: &GroupHandle, msgs: &[Message]) -> Result<(), NsqdError> {
    let Some(first) = msgs.first().map(|m| m.id) else {
        return Ok(());
    };
    let entry = entry::TopicEntry::publish(msgs)
        .encode()
        .map_err(NsqdError::Replication)?;
    let (done, answer) = oneshot::channel();
    group
        .commands
        .send(GroupCommand::Publish { entry, first, done })
        .await
        .map_err(|_| NsqdError::Replication("the replicated topic is stopped".to_string()))?;
    match tokio::time::timeout(PUBLISH_TIMEOUT, answer).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(why))) => Err(NsqdError::Replication(why)),
        Ok(Err(_)) | Err(_) => Err(NsqdError::Replication(format!(
            "no quorum of replicas stored the message within {PUBLISH_TIMEOUT:?}"
        ))),
    }
}

/// Tells a replicated topic's group that its leader's channel finished
/// `ids`, to be committed with the next FIN batch.
pub(crate) fn finished(group: &GroupHandle, channel: &str, ids: Vec<MessageId>) {
    if !ids.is_empty() {
        let _ = group
            .commands
            .try_send(GroupCommand::Finished(channel.to_string(), ids));
    }
}

/// Tells a replicated topic's group that its leader created `channel`.
pub(crate) fn channel_created(group: &GroupHandle, channel: &str) {
    let _ = group
        .commands
        .try_send(GroupCommand::Channel(channel.to_string()));
}
