//! `/stats`: nsqd's JSON shape (read by nsqadmin and nsq_stat) and its text form.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use std::sync::Arc;

use crate::Nsqd;
use crate::channel_handle::{ChannelHandle, DaemonTopic};
use crate::client::ClientInfo;
use crate::options::VERSION;

/// What `/stats` was asked for.
#[derive(Debug, Clone, Default)]
pub struct StatsFilter {
    /// Only this topic.
    pub topic: Option<String>,
    /// Only this channel (within each topic).
    pub channel: Option<String>,
    /// Include per-client stats.
    pub include_clients: bool,
    /// Include the memory block.
    pub include_mem: bool,
}

/// The top-level `/stats?format=json` object.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Daemon version.
    pub version: &'static str,
    /// `OK` or `NOK - <error>`.
    pub health: String,
    /// Start time, seconds since the epoch.
    pub start_time: i64,
    /// Drain mode is on (rsq only: publishes are refused).
    pub draining: bool,
    /// Bytes of every topic's and channel's queue segment files (rsq only;
    /// records accepted and not yet written included).
    pub disk_bytes: u64,
    /// Publishes are refused for a full disk (rsq only: `--max-disk-bytes`
    /// reached, or `ENOSPC`, until usage falls to the low-water mark).
    pub disk_full: bool,
    /// Topics sorted by name; `null` when the topic filter matches nothing.
    pub topics: Option<Vec<TopicReport>>,
    /// Process memory; omitted when `include_mem=false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Clients that published; `null` when `include_clients=false`.
    pub producers: Option<Vec<ClientStats>>,
    /// Replicated topics on this cluster member, by name (rsq only;
    /// omitted outside a cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated_topics: Option<BTreeMap<String, ReplicatedTopicReport>>,
    /// Daemon-wide figures beyond nsqd's JSON, for `/metrics`.
    #[serde(skip)]
    pub daemon: DaemonStats,
}

/// Every replicated topic as this cluster member sees it, by name;
/// `None` outside a cluster.
pub(crate) fn replicated_topics(ctx: &Nsqd) -> Option<BTreeMap<String, ReplicatedTopicReport>> {
    ctx.cluster().map(|cluster| {
        cluster
            .statuses()
            .into_iter()
            .map(|(name, s)| {
                let report = ReplicatedTopicReport {
                    replicas: cluster.size(),
                    role: match s.role {
                        rsq_replica::Role::Leader => "leader",
                        rsq_replica::Role::Follower => "follower",
                        rsq_replica::Role::Candidate => "candidate",
                    },
                    leader: s
                        .leader
                        .and_then(|id| cluster.member(id))
                        .map(str::to_string),
                    term: s.term,
                    commit_index: s.commit,
                    delivering: s.delivering,
                    stopped: s.stopped,
                };
                (name, report)
            })
            .collect()
    })
}

/// One replicated topic as this member sees it (rsq only).
#[derive(Debug, Clone, Serialize)]
pub struct ReplicatedTopicReport {
    /// Replicas in the topic's group.
    pub replicas: usize,
    /// `leader`, `follower` or `candidate`.
    pub role: &'static str,
    /// The leader's cluster peer address, if known.
    pub leader: Option<String>,
    /// The latest consensus term.
    pub term: u64,
    /// Highest log index known committed here.
    pub commit_index: u64,
    /// Whether this member delivers the topic now.
    pub delivering: bool,
    /// Why this member's replica stopped, if it did.
    pub stopped: Option<String>,
}

/// Daemon-wide figures `/metrics` reports and nsqd's `/stats` JSON has not.
#[derive(Debug, Clone, Default)]
pub struct DaemonStats {
    /// Connected TCP clients.
    pub connections: u64,
    /// Topics, whatever the filter.
    pub topic_count: u64,
    /// Whether the daemon is healthy (`health` is `OK`).
    pub healthy: bool,
    /// Whether it runs with `--durable` (the commit histograms apply).
    pub durable: bool,
    /// Every `--durable` queue's group commits, counted together.
    pub commits: rsq_diskqueue::CommitSnapshot,
}

/// A disk queue's damage counters (nsqd has none; `/metrics` reports them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// Whole records recovery found and no longer serves.
    pub corrupt_records: u64,
    /// Files recovery moved aside as `.bad`.
    pub quarantined_files: u64,
}

impl From<rsq_diskqueue::BackendStats> for DiskCounters {
    fn from(b: rsq_diskqueue::BackendStats) -> DiskCounters {
        DiskCounters {
            corrupt_records: b.corrupt_records,
            quarantined_files: b.quarantined_files,
        }
    }
}

/// nsqd's e2e latency block: publish-to-FIN percentiles over the
/// `--e2e-processing-latency-window-time` window.
#[derive(Debug, Serialize, Default)]
pub struct Latency {
    /// Samples in the window.
    pub count: u64,
    /// Quantiles and values in ns; `null` when not configured.
    pub percentiles: Option<Vec<Percentile>>,
}

impl Latency {
    /// The block for a channel's or topic's percentiles; `None` (no
    /// `--e2e-processing-latency-percentile`) gives nsqd's
    /// `{"count":0,"percentiles":null}`.
    pub fn from_snapshot(snapshot: Option<rsq_channel::E2eLatency>) -> Latency {
        let Some(snapshot) = snapshot else {
            return Latency::default();
        };
        Latency {
            count: snapshot.count,
            percentiles: Some(
                snapshot
                    .percentiles
                    .into_iter()
                    .map(|(quantile, ns)| Percentile {
                        quantile,
                        value: i64::try_from(ns).unwrap_or(i64::MAX),
                    })
                    .collect(),
            ),
        }
    }

    /// The text `/stats` form: each value in nsqd's human units
    /// (`NanoSecondToHuman`), joined by `, `.
    pub fn human(&self) -> String {
        let mut out = Vec::new();
        for p in self.percentiles.iter().flatten() {
            let v = p.value as f64;
            out.push(if v > 1e9 {
                format!("{:.1}s", v / 1e9)
            } else if v > 1e6 {
                format!("{:.1}ms", v / 1e6)
            } else if v > 1e3 {
                format!("{:.1}us", v / 1e3)
            } else {
                format!("{v:.1}ns")
            });
        }
        out.join(", ")
    }
}

/// One quantile of end-to-end latency.
#[derive(Debug, Serialize)]
pub struct Percentile {
    /// The quantile, e.g. 0.99.
    pub quantile: f64,
    /// Latency in nanoseconds.
    pub value: i64,
}

/// One topic.
#[derive(Debug, Serialize)]
pub struct TopicReport {
    /// Topic name.
    pub topic_name: String,
    /// Its channels sorted by name.
    pub channels: Vec<ChannelReport>,
    /// Messages waiting in memory and on disk.
    pub depth: u64,
    /// Messages waiting on disk.
    pub backend_depth: u64,
    /// Messages published.
    pub message_count: u64,
    /// Bytes published.
    pub message_bytes: u64,
    /// Whether the topic is paused.
    pub paused: bool,
    /// End-to-end latency.
    pub e2e_processing_latency: Latency,
    /// Its disk queue's damage counters.
    #[serde(skip)]
    pub disk: DiskCounters,
}

/// One channel.
#[derive(Debug, Serialize)]
pub struct ChannelReport {
    /// Channel name.
    pub channel_name: String,
    /// Messages waiting in memory and on disk.
    pub depth: u64,
    /// Messages waiting on disk.
    pub backend_depth: u64,
    /// Messages delivered and not yet finished.
    pub in_flight_count: u64,
    /// Messages waiting for their deferral to end.
    pub deferred_count: u64,
    /// Messages that entered the channel.
    pub message_count: u64,
    /// Messages requeued by REQ.
    pub requeue_count: u64,
    /// Messages requeued by timeout.
    pub timeout_count: u64,
    /// Messages moved to the dead-letter topic after their last attempt
    /// (rsq only; see [`crate::dead_letter`]).
    pub dead_letter_count: u64,
    /// The attempt limit in force, `0` for none (rsq only).
    pub max_attempts: u16,
    /// Consumers.
    pub client_count: u64,
    /// Per-consumer stats; `null` when `include_clients=false`.
    pub clients: Option<Vec<ClientStats>>,
    /// Whether the channel is paused.
    pub paused: bool,
    /// End-to-end latency.
    pub e2e_processing_latency: Latency,
    /// Its disk queue's damage counters.
    #[serde(skip)]
    pub disk: DiskCounters,
}

/// One client, as nsqd's `ClientV2Stats`.
#[derive(Debug, Serialize)]
pub struct ClientStats {
    /// Client-chosen id.
    pub client_id: String,
    /// Client hostname.
    pub hostname: String,
    /// Always `V2`.
    pub version: &'static str,
    /// Peer address.
    pub remote_address: String,
    /// Protocol state number.
    pub state: u8,
    /// Current RDY.
    pub ready_count: u64,
    /// Messages in flight to this client.
    pub in_flight_count: u64,
    /// Messages delivered to this client.
    pub message_count: u64,
    /// Messages finished by this client.
    pub finish_count: u64,
    /// Messages requeued by this client.
    pub requeue_count: u64,
    /// Connect time, seconds since the epoch.
    pub connect_ts: i64,
    /// Sample rate.
    pub sample_rate: i32,
    /// deflate in use.
    pub deflate: bool,
    /// snappy in use.
    pub snappy: bool,
    /// User agent.
    pub user_agent: String,
    /// Whether AUTH succeeded (omitted otherwise, as nsqd's omitempty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authed: Option<bool>,
    /// The AUTH identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_identity: Option<String>,
    /// The AUTH identity URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_identity_url: Option<String>,
    /// Messages published, per topic.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pub_counts: Vec<PubCount>,
    /// TLS in use.
    pub tls: bool,
    /// TLS cipher suite.
    pub tls_cipher_suite: String,
    /// TLS version.
    pub tls_version: String,
    /// ALPN protocol.
    pub tls_negotiated_protocol: String,
    /// Whether ALPN was mutual.
    pub tls_negotiated_protocol_is_mutual: bool,
}

/// Messages one producer published to one topic.
#[derive(Debug, Serialize)]
pub struct PubCount {
    /// Topic name.
    pub topic: String,
    /// Messages published.
    pub count: u64,
}

/// Process memory, in nsqd's field names (Go runtime figures have no Rust
/// equivalent; rsqd reports its resident set where nsqd reports heap use).
#[derive(Debug, Serialize, Default)]
pub struct MemoryStats {
    /// Not tracked.
    pub heap_objects: u64,
    /// Not tracked.
    pub heap_idle_bytes: u64,
    /// Resident set size in bytes.
    pub heap_in_use_bytes: u64,
    /// Not tracked.
    pub heap_released_bytes: u64,
    /// No GC: zero.
    pub gc_pause_usec_100: u64,
    /// No GC: zero.
    pub gc_pause_usec_99: u64,
    /// No GC: zero.
    pub gc_pause_usec_95: u64,
    /// No GC: zero.
    pub next_gc_bytes: u64,
    /// No GC: zero.
    pub gc_total_runs: u64,
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn client_stats(client: &ClientInfo, consumer: Option<&rsq_channel::ConsumerStats>) -> ClientStats {
    let identity = client.identity();
    let transport = client.transport();
    let tls = transport.tls;
    let auth = client.auth();
    let mut pub_counts: Vec<PubCount> = client
        .pub_counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(topic, count)| PubCount {
            topic: topic.clone(),
            count: *count,
        })
        .collect();
    pub_counts.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
    ClientStats {
        client_id: identity.client_id,
        hostname: identity.hostname,
        version: "V2",
        remote_address: client.remote_address.to_string(),
        state: client.state() as u8,
        ready_count: consumer.map_or(0, |c| c.ready_count),
        in_flight_count: consumer.map_or(0, |c| c.in_flight_count),
        message_count: consumer.map_or(0, |c| c.message_count),
        finish_count: consumer.map_or(0, |c| c.finish_count),
        requeue_count: consumer.map_or(0, |c| c.requeue_count),
        connect_ts: client.connect_ts,
        sample_rate: identity.sample_rate,
        deflate: transport.deflate,
        snappy: transport.snappy,
        user_agent: identity.user_agent,
        authed: auth.is_some().then_some(true),
        auth_identity: auth
            .as_ref()
            .map(|a| a.identity.clone())
            .filter(|s| !s.is_empty()),
        auth_identity_url: auth.map(|a| a.identity_url).filter(|s| !s.is_empty()),
        pub_counts,
        tls: tls.is_some(),
        tls_cipher_suite: tls
            .as_ref()
            .map(|t| t.cipher_suite.clone())
            .unwrap_or_default(),
        tls_version: tls.as_ref().map(|t| t.version.clone()).unwrap_or_default(),
        tls_negotiated_protocol: tls.map(|t| t.negotiated_protocol).unwrap_or_default(),
        tls_negotiated_protocol_is_mutual: false,
    }
}

/// Collects stats as nsqd's `GetStats` does, filters included.
pub fn collect(ctx: &Nsqd, filter: &StatsFilter) -> Stats {
    let clients = ctx.clients();
    let topics = match &filter.topic {
        Some(name) => ctx.topic(name).map(|t| vec![t]),
        None => Some(ctx.topics()),
    };
    let topics = topics.map(|topics| {
        topics
            .iter()
            .filter_map(|topic| topic_report(topic, filter, &clients))
            .collect()
    });
    let producers = (filter.include_clients && topics.is_some()).then(|| {
        clients
            .iter()
            .filter(|c| c.published.load(std::sync::atomic::Ordering::Relaxed) > 0)
            .map(|c| client_stats(c, None))
            .collect()
    });
    Stats {
        version: VERSION,
        health: match ctx.health() {
            None => "OK".to_string(),
            Some(e) => format!("NOK - {e}"),
        },
        start_time: ctx.start_time,
        draining: ctx.is_draining(),
        disk_bytes: ctx.disk_budget().used(),
        disk_full: ctx.disk_budget().is_full(),
        topics,
        memory: filter.include_mem.then(|| MemoryStats {
            heap_in_use_bytes: resident_bytes(),
            ..MemoryStats::default()
        }),
        producers,
        replicated_topics: replicated_topics(ctx),
        daemon: DaemonStats {
            connections: clients.len() as u64,
            topic_count: ctx.topic_count(),
            healthy: ctx.health().is_none(),
            durable: ctx.opts.durable,
            commits: ctx.commit_stats(),
        },
    }
}

/// One topic's report, its channels filtered; `None` when a channel
/// filter matches none of them.
fn topic_report(
    topic: &DaemonTopic,
    filter: &StatsFilter,
    clients: &[Arc<ClientInfo>],
) -> Option<TopicReport> {
    let ts = topic.stats();
    let all_channels = topic.channels();
    let channels: Vec<ChannelReport> = all_channels
        .iter()
        .filter(|(name, _)| filter.channel.as_ref().is_none_or(|c| c == name))
        .map(|(name, chan)| channel_report(name, chan, filter, clients))
        .collect();
    if filter.channel.is_some() && channels.is_empty() {
        return None;
    }
    // The topic's latency is all its channels' windows merged, whatever
    // the channel filter, as nsqd aggregates them.
    let topic_e2e = all_channels
        .iter()
        .filter_map(|(_, chan)| chan.e2e_latency_window())
        .reduce(|mut all, one| {
            all.merge(&one);
            all
        });
    Some(TopicReport {
        topic_name: topic.name().to_string(),
        channels,
        depth: ts.depth,
        backend_depth: ts.backend_depth,
        message_count: ts.message_count,
        message_bytes: ts.message_bytes,
        paused: ts.paused,
        e2e_processing_latency: Latency::from_snapshot(topic_e2e.map(|w| w.snapshot())),
        disk: ts.backend.into(),
    })
}

/// One channel's report, with its consumers when the filter asks.
fn channel_report(
    name: &str,
    chan: &ChannelHandle,
    filter: &StatsFilter,
    clients: &[Arc<ClientInfo>],
) -> ChannelReport {
    let cs = chan.stats();
    let client_list = filter.include_clients.then(|| {
        cs.clients
            .iter()
            .filter_map(|consumer| {
                clients
                    .iter()
                    .find(|c| c.id == consumer.client_id)
                    .map(|c| client_stats(c, Some(consumer)))
            })
            .collect()
    });
    ChannelReport {
        channel_name: name.to_string(),
        depth: cs.depth,
        backend_depth: cs.backend_depth,
        in_flight_count: cs.in_flight_count,
        deferred_count: cs.deferred_count,
        message_count: cs.message_count,
        requeue_count: cs.requeue_count,
        timeout_count: cs.timeout_count,
        dead_letter_count: cs.dead_letter_count,
        max_attempts: cs.max_attempts,
        client_count: cs.client_count,
        clients: client_list,
        paused: cs.paused,
        e2e_processing_latency: Latency::from_snapshot(cs.e2e_processing_latency),
        disk: cs.backend.into(),
    }
}

/// The text form of `/stats`, laid out as nsqd prints it.
pub fn render_text(stats: &Stats, now_unix: i64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "rsqd v{}", stats.version);
    let _ = writeln!(s, "start_time {}", stats.start_time);
    let _ = writeln!(s, "uptime {}s", now_unix - stats.start_time);
    let _ = writeln!(s, "\nHealth: {}", stats.health);
    if stats.draining {
        let _ = writeln!(s, "Draining: publishes are refused");
    }
    if stats.disk_full {
        let _ = writeln!(
            s,
            "Disk full: publishes are refused ({} bytes in queue files)",
            stats.disk_bytes
        );
    }
    if let Some(m) = &stats.memory {
        let _ = writeln!(s, "\nMemory:\n   [resident bytes] {}", m.heap_in_use_bytes);
    }
    match &stats.topics {
        Some(topics) if !topics.is_empty() => {
            for t in topics {
                let paused = if t.paused { "*P " } else { "" };
                let _ = writeln!(
                    s,
                    "\n{paused}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
                    t.topic_name,
                    t.depth,
                    t.backend_depth,
                    t.message_count,
                    t.e2e_processing_latency.human()
                );
                for c in &t.channels {
                    let paused = if c.paused { "*P " } else { "" };
                    let _ = writeln!(
                        s,
                        "    {paused}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
                        c.channel_name,
                        c.depth,
                        c.backend_depth,
                        c.in_flight_count,
                        c.deferred_count,
                        c.requeue_count,
                        c.timeout_count,
                        c.message_count,
                        c.e2e_processing_latency.human()
                    );
                    for cl in c.clients.iter().flatten() {
                        let _ = writeln!(
                            s,
                            "        [{} {:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {}s",
                            cl.version,
                            cl.client_id,
                            cl.state,
                            cl.in_flight_count,
                            cl.ready_count,
                            cl.finish_count,
                            cl.requeue_count,
                            cl.message_count,
                            now_unix - cl.connect_ts
                        );
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(s, "\nNO_TOPICS");
        }
    }
    if let Some(producers) = &stats.producers {
        let _ = writeln!(s, "\nProducers:");
        if producers.is_empty() {
            let _ = writeln!(s, "   None");
        }
        for p in producers {
            let _ = writeln!(
                s,
                "   [{} {:<21}] msgs: {:<8} connected: {}s",
                p.version,
                p.client_id,
                p.pub_counts.iter().map(|c| c.count).sum::<u64>(),
                now_unix - p.connect_ts
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_blocks_are_nsqds() {
        assert_eq!(
            serde_json::to_string(&Latency::from_snapshot(None)).ok(),
            Some(r#"{"count":0,"percentiles":null}"#.to_string())
        );
        let l = Latency::from_snapshot(Some(rsq_channel::E2eLatency {
            count: 4,
            percentiles: vec![
                (1.0, 2_500_000_000),
                (0.99, 1_500_000),
                (0.95, 1_001),
                (0.5, 1_000),
            ],
        }));
        assert_eq!(
            serde_json::to_string(&l).ok(),
            Some(
                r#"{"count":4,"percentiles":[{"quantile":1.0,"value":2500000000},{"quantile":0.99,"value":1500000},{"quantile":0.95,"value":1001},{"quantile":0.5,"value":1000}]}"#
                    .to_string()
            )
        );
        // nsqd's NanoSecondToHuman: strictly above each unit, one decimal.
        assert_eq!(l.human(), "2.5s, 1.5ms, 1.0us, 1000.0ns");
    }
}
