//! The daemon's shared state, `Nsqd`, and where each of its concerns lives.
//!
//! Both servers (TCP and HTTP) hold an `Arc<Nsqd>` and go through it to find
//! or create topics and channels, so the rules for creation, ephemeral
//! removal and metadata persistence live in one place. Its methods are cut
//! by concept into the child modules: `topics` (the registry: find, create,
//! delete), `publish` (stamping, publishing, health, a full disk), `drain`,
//! `persist` (`nsqd.dat` through [`MetadataWriter`]) and `clients`. The
//! locks they take are listed in ARCHITECTURE.md's `## Locks`.

mod clients;
mod drain;
mod id_floor;
mod persist;
mod publish;
mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use rsq_channel::Clock;
use rsq_codec::IdGenerator;
use rsq_diskqueue::{CommitSnapshot, DiskBudget};

use crate::auth::AuthClient;
use crate::channel_handle::DaemonTopic;
use crate::cluster::Cluster;
use crate::factory::Factory;
use crate::lookup::{LookupConfig, LookupPeers, PeerIdentity, Snapshot};
use crate::metadata::persist::MetadataWriter;
use crate::options::{Options, VERSION};
use crate::world::World;

pub(crate) use clients::ClientRegistry;
pub(crate) use id_floor::ID_FLOOR_FILE;

/// Topics closed at once at shutdown.
const CLOSE_PARALLELISM: usize = 64;

/// The daemon.
pub struct Nsqd {
    /// The options it was started with.
    pub(crate) opts: Arc<Options>,
    /// All time is read here.
    pub(crate) clock: Arc<dyn Clock>,
    /// Start time, seconds since the epoch.
    pub(crate) start_time: i64,
    ids: IdGenerator,
    /// The persisted lease above every id issued (`id_floor.rs`).
    id_floor: id_floor::IdFloor,
    /// By name; hashed, as every publish looks its topic up here. Held for
    /// one map operation, never across IO or an `.await`.
    topics: Mutex<HashMap<String, Arc<DaemonTopic>>>,
    /// Topics being created, by name: the second creator of a name waits
    /// for the first (so no two open the same files), creators of other
    /// names do not.
    creating: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    clients: ClientRegistry,
    loading: AtomicBool,
    exiting: AtomicBool,
    health: Mutex<Option<String>>,
    /// Mirrors `health.is_some()`, so a healthy publish takes no lock.
    unhealthy: AtomicBool,
    /// Whether the last publish found the disk full: a full disk is
    /// logged when this flips, not once per refused publish.
    disk_was_full: AtomicBool,
    /// Drain mode: publishes are refused until it is turned off.
    draining: AtomicBool,
    /// Woken when drain mode is turned on or off.
    drain_changed: tokio::sync::Notify,
    factory: Arc<Factory>,
    /// The clock, the data dir (every queue's files and `nsqd.dat`) and
    /// where blocking IO runs.
    world: World,
    /// `nsqd.dat` writes, one at a time and group-committed.
    metadata: MetadataWriter,
    /// The cluster, for replicated topics, set once at start when
    /// `--cluster-address` is given.
    cluster: OnceLock<Arc<Cluster>>,
    /// The lookupd connections, set by [`Nsqd::start_lookup`].
    lookup: OnceLock<LookupPeers>,
    /// The client of the auth servers, for AUTH.
    pub(crate) auth: AuthClient,
    /// This daemon, for the lookupd snapshot closure (no cycle).
    this: Weak<Nsqd>,
}

/// Locks one of `Nsqd`'s std mutexes. Every critical section behind them
/// is a single map or value operation that cannot leave it half-updated,
/// so a poisoned lock is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Nsqd {
    /// Creates the daemon state on `opts.data_path`; [`Nsqd::load_metadata`]
    /// then recreates topics.
    pub fn new(opts: Options, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Nsqd>> {
        let world = World::real(&opts.data_path, clock).map_err(|e| {
            anyhow::anyhow!("cannot read data path {}: {e}", opts.data_path.display())
        })?;
        Nsqd::in_world(opts, world)
    }

    /// Creates the daemon state in `world`: its clock, its data dir (every
    /// queue file and `nsqd.dat`) and where blocking IO runs, so a test or
    /// a simulated host runs the real daemon on a directory in memory and
    /// sees what a crash leaves (`MemStorage::crashed_copy`). `opts.data_path`
    /// then only names the data dir in logs.
    pub fn in_world(opts: Options, world: World) -> anyhow::Result<Arc<Nsqd>> {
        let clock = world.clock.clone();
        let auth = AuthClient::new(&opts)?;
        let opts = Arc::new(opts);
        let node_id = opts.effective_node_id();
        Ok(Arc::new_cyclic(|this| Nsqd {
            factory: Arc::new(Factory::new(opts.clone(), world.clone(), this.clone())),
            start_time: clock.unix_nanos() / 1_000_000_000,
            ids: IdGenerator::new(node_id),
            id_floor: id_floor::IdFloor::default(),
            metadata: MetadataWriter::new(world.clone()),
            world,
            opts,
            clock,
            topics: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashMap::new()),
            clients: ClientRegistry::default(),
            loading: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            health: Mutex::new(None),
            unhealthy: AtomicBool::new(false),
            disk_was_full: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_changed: tokio::sync::Notify::new(),
            lookup: OnceLock::new(),
            cluster: OnceLock::new(),
            auth,
            this: this.clone(),
        }))
    }

    /// Joins the cluster `--cluster-address` names, if any, and reopens its
    /// replicated topics. Call once, after metadata is loaded and before
    /// [`Nsqd::start_lookup`], so a former leader's local topic is gone
    /// before anything is registered.
    pub async fn start_cluster(
        self: &Arc<Self>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        if let Some(cluster) = Cluster::start(self, stop).await? {
            let _ = self.cluster.set(cluster);
        }
        Ok(())
    }

    /// The cluster, if this daemon is a member of one.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// The group of `topic` if it is a replicated topic.
    pub(crate) fn replicated(&self, topic: &str) -> Option<crate::cluster::GroupHandle> {
        self.cluster()?.group(topic)
    }

    /// The world the daemon runs in.
    pub(crate) fn world(&self) -> &World {
        &self.world
    }

    /// Starts registering with the configured lookupds, announcing the
    /// broadcast ports (see [`crate::run`]). Call once, after metadata is
    /// loaded.
    pub fn start_lookup(&self) {
        let identity = PeerIdentity {
            version: VERSION.to_string(),
            tcp_port: self.opts.broadcast_tcp_port,
            http_port: self.opts.broadcast_http_port,
            hostname: crate::options::hostname(),
            broadcast_address: self.opts.effective_broadcast_address(),
        };
        let this = self.this.clone();
        let snapshot: Snapshot = Arc::new(move || {
            this.upgrade()
                .map(|ctx| ctx.lookup_snapshot())
                .unwrap_or_default()
        });
        let peers = self
            .lookup
            .get_or_init(|| LookupPeers::new(identity, LookupConfig::default(), snapshot));
        peers.set_addresses(&self.opts.lookupd_tcp_address);
    }

    /// The lookupd peers, once started.
    pub(crate) fn lookup(&self) -> Option<&LookupPeers> {
        self.lookup.get()
    }

    /// Closes the lookupd connections (they then forget this daemon).
    pub(crate) async fn stop_lookup(&self) {
        if let Some(peers) = self.lookup.get() {
            peers.shutdown().await;
        }
    }

    /// Every topic with its channels, for (re)registering with lookupds.
    fn lookup_snapshot(&self) -> Vec<(String, Vec<String>)> {
        self.topics()
            .into_iter()
            .map(|t| {
                let channels = t.channels().into_iter().map(|(name, _)| name).collect();
                (t.name().to_string(), channels)
            })
            .collect()
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::SeqCst)
    }

    /// The shared byte count of every queue's segment files, with the
    /// `--max-disk-bytes` bound.
    pub fn disk_budget(&self) -> &DiskBudget {
        self.factory.budget()
    }

    /// The group commits of every `--durable` queue, counted together
    /// (all zero without `--durable`).
    pub(crate) fn commit_stats(&self) -> CommitSnapshot {
        self.factory.commit_stats()
    }

    /// Shutdown: refuse new work, close every topic (flushing memory,
    /// in-flight and deferred messages to disk), write metadata.
    pub async fn shutdown(&self) {
        self.exiting.store(true, Ordering::SeqCst);
        // What memory holds must reach disk whatever the bound says.
        self.disk_budget().lift();
        if let Err(e) = self.write_metadata(true).await {
            tracing::error!(error = %e, "cannot write metadata at shutdown");
        }
        let topics: Vec<_> = std::mem::take(&mut *lock(&self.topics))
            .into_values()
            .collect();
        // Several at once: each close mostly waits for its pump and channel
        // tasks to finish, so a hundred thousand one after the other take
        // seconds for nothing.
        let mut closing = tokio::task::JoinSet::new();
        let mut topics = topics.into_iter();
        loop {
            while closing.len() < CLOSE_PARALLELISM {
                let Some(topic) = topics.next() else { break };
                closing.spawn(async move {
                    if let Err(e) = topic.close().await {
                        tracing::error!(topic = topic.name(), error = %e, "closing topic");
                    }
                });
            }
            match closing.join_next().await {
                Some(Err(e)) => tracing::error!(error = %e, "topic close task failed"),
                Some(Ok(())) => {}
                None => break,
            }
        }
        tracing::info!("all topics closed");
    }
}

#[cfg(test)]
mod tests;
