//! The suite: what each scenario runs, and the runner that starts (or
//! reaches) the daemon, runs each phase's clients and samples the daemon.
//!
//! A scenario is one or more phases; a phase runs its writers and readers
//! at once for a bounded time. Readers wait, after the writers stop, until
//! they have every delivery the writers caused (or a bounded drain time),
//! and a phase with readers only consumes what earlier phases published.
//! Topic names carry the scenario and a run id, so scenarios never see each
//! other's backlog even on a shared daemon, where their topics are deleted
//! afterwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::BenchError;
use crate::daemon::{ManagedDaemon, Target, http_request};
use crate::latency::LatencyRecorder;
use crate::process::ProcessSampler;
use crate::progress::Progress;
use crate::reader::{ReaderConfig, Subscriber};
use crate::report::Row;
use crate::writer::{WriterConfig, run_writer};

/// Longest time readers keep consuming after the writers stop.
pub const DRAIN_MAX: Duration = Duration::from_secs(3);

/// Connections opened at once while setting up a phase.
const CONNECT_PARALLELISM: usize = 64;

/// Settings shared by every scenario of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteConfig {
    /// How long each phase publishes (or, for a backlog phase, consumes).
    pub duration: Duration,
    /// Body size of every message, in bytes.
    pub body_size: usize,
    /// Connections of the scenario mirroring nsq's bench tools (they use
    /// one per core, `GOMAXPROCS`).
    pub nsq_workers: usize,
    /// Prefix of every topic name, unique per run.
    pub run_id: String,
}

/// One phase: clients running at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Row label when a scenario has several phases.
    pub label: &'static str,
    /// Publishing connections.
    pub writers: Vec<WriterConfig>,
    /// Consuming connections whose deliveries are counted.
    pub readers: Vec<ReaderConfig>,
    /// Subscribed connections that stay idle the whole phase.
    pub idle: Vec<ReaderConfig>,
    /// Deliveries each published message causes (channels per topic).
    pub deliveries_per_message: u64,
}

/// A named scenario of the suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Short name, used by `--scenario` and as the row name.
    pub name: &'static str,
    /// What it measures, for the table's legend.
    pub description: String,
    /// Daemon flags it needs; a daemon the suite does not start cannot
    /// get them, so the scenario is skipped there.
    pub daemon_flags: Vec<String>,
    /// Topics it creates (deleted afterwards on a shared daemon).
    pub topics: Vec<String>,
    /// Its phases, run in order against one daemon.
    pub phases: Vec<Phase>,
}

/// Names of every scenario, in suite order.
pub const SCENARIO_NAMES: &[&str] = &[
    "pub",
    "mpub100",
    "nsq",
    "pubsub",
    "latency",
    "fanout",
    "topics",
    "disk",
    "conns",
    "publishers",
    "durable",
    "snappy",
    "deflate",
];

fn topic(cfg: &SuiteConfig, scenario: &str) -> String {
    format!("{}-{scenario}", cfg.run_id)
}

fn readers(topic: &str, channel: &str, count: usize, rdy: u64) -> Vec<ReaderConfig> {
    (0..count)
        .map(|_| ReaderConfig::new(topic, channel, rdy))
        .collect()
}

fn pubsub_phase(topic: &str, size: usize) -> Phase {
    Phase {
        label: "",
        writers: vec![WriterConfig::new(topic, 200, size)],
        readers: readers(topic, "ch", 1, 2500),
        idle: Vec::new(),
        deliveries_per_message: 1,
    }
}

/// The scenario called `name`, if there is one.
pub fn scenario(name: &str, cfg: &SuiteConfig) -> Option<Scenario> {
    let name = SCENARIO_NAMES.iter().copied().find(|n| *n == name)?;
    let b = Builder {
        name,
        size: cfg.body_size,
        topic: topic(cfg, name),
        cfg,
    };
    Some(match name {
        "pub" => build_pub(&b),
        "mpub100" => build_mpub100(&b),
        "nsq" => build_nsq(&b),
        "pubsub" => build_pubsub(&b),
        "latency" => build_latency(&b),
        "fanout" => build_fanout(&b),
        "topics" => build_topics(&b),
        "publishers" | "durable" => build_publishers(&b),
        "snappy" | "deflate" => build_compressed(&b),
        "disk" => build_disk(&b),
        "conns" => build_conns(&b),
        _ => return None,
    })
}

/// What every scenario is built from: its name, body size, topic and the
/// suite's settings.
struct Builder<'a> {
    name: &'static str,
    size: usize,
    topic: String,
    cfg: &'a SuiteConfig,
}

impl Builder<'_> {
    /// A scenario of one phase on the builder's topic.
    fn single(&self, description: String, phase: Phase) -> Scenario {
        Scenario {
            name: self.name,
            description,
            daemon_flags: Vec::new(),
            topics: vec![self.topic.clone()],
            phases: vec![phase],
        }
    }
}

/// A phase of publishers alone.
fn publish_only(writers: Vec<WriterConfig>) -> Phase {
    Phase {
        label: "",
        writers,
        readers: Vec::new(),
        idle: Vec::new(),
        deliveries_per_message: 1,
    }
}

/// The `pub` scenario.
fn build_pub(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    b.single(
        format!("PUB {size} B on 4 connections, each waiting for its OK"),
        publish_only(vec![WriterConfig::new(&t, 1, size); 4]),
    )
}

/// The `mpub100` scenario.
fn build_mpub100(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    b.single(
        format!("MPUB of 100 x {size} B on 1 connection, each waiting for its OK"),
        publish_only(vec![WriterConfig::new(&t, 100, size)]),
    )
}

/// The `nsq` scenario.
fn build_nsq(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    let cfg = b.cfg;
    let n = cfg.nsq_workers;
    Scenario {
        name: "nsq",
        description: format!(
            "as nsq's bench_writer then bench_reader: {n} connections of MPUB 200 x {size} B, \
             then {n} consumers with RDY 2500 reading that backlog"
        ),
        daemon_flags: Vec::new(),
        topics: vec![t.clone()],
        phases: vec![
            Phase {
                label: "write",
                ..publish_only(vec![WriterConfig::new(&t, 200, size); n])
            },
            Phase {
                label: "read",
                writers: Vec::new(),
                readers: readers(&t, "ch", n, 2500),
                idle: Vec::new(),
                deliveries_per_message: 1,
            },
        ],
    }
}

/// The `pubsub` scenario.
fn build_pubsub(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    b.single(
        format!("MPUB 200 x {size} B and 1 consumer (RDY 2500) at once, unthrottled"),
        pubsub_phase(&t, size),
    )
}

/// The `latency` scenario.
fn build_latency(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    let mut writer = WriterConfig::new(&t, 1, size);
    writer.rate_msgs_per_sec = Some(10_000);
    b.single(
        format!("PUB {size} B paced at 10k msgs/s, 1 consumer (RDY 2500)"),
        Phase {
            writers: vec![writer],
            ..pubsub_phase(&t, size)
        },
    )
}

/// The `fanout` scenario.
fn build_fanout(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    let readers = (0..10)
        .map(|i| ReaderConfig::new(&t, format!("ch{i}"), 2500))
        .collect();
    b.single(
        format!("MPUB 200 x {size} B to 1 topic with 10 channels, 1 consumer each"),
        Phase {
            readers,
            deliveries_per_message: 10,
            ..pubsub_phase(&t, size)
        },
    )
}

/// The `topics` scenario.
fn build_topics(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    let topics: Vec<String> = (0..1000).map(|i| format!("{t}-{i}")).collect();
    let writers = (0..4)
        .map(|w| WriterConfig {
            topics: topics.iter().skip(w).step_by(4).cloned().collect(),
            ..WriterConfig::new("", 20, size)
        })
        .collect();
    let readers = topics
        .iter()
        .map(|topic| ReaderConfig::new(topic, "ch", 100))
        .collect();
    Scenario {
        name: "topics",
        description: format!(
            "1000 topics, 1 channel and consumer (RDY 100) each; 4 connections \
             MPUB 20 x {size} B to each topic in turn"
        ),
        daemon_flags: Vec::new(),
        topics,
        phases: vec![Phase {
            label: "",
            writers,
            readers,
            idle: Vec::new(),
            deliveries_per_message: 1,
        }],
    }
}

/// Acknowledged publish rate by publisher count, in nsqd's mode and
/// under --durable (every OK waits for fsync; group commit).
fn build_publishers(b: &Builder) -> Scenario {
    let name = b.name;
    let size = b.size;
    let t = b.topic.clone();
    let phase = |label: &'static str, count: usize, batch: usize| Phase {
        label,
        ..publish_only(vec![WriterConfig::new(&t, batch, size); count])
    };
    let durable = name == "durable";
    Scenario {
        daemon_flags: if durable {
            vec!["--durable".to_string()]
        } else {
            Vec::new()
        },
        phases: vec![
            phase("pub1", 1, 1),
            phase("pub8", 8, 1),
            phase("pub16", 16, 1),
            phase("mpub100x8", 8, 100),
        ],
        ..b.single(
            format!(
                "{}PUB {size} B by 1, 8 and 16 publishers, then MPUB 100 by 8, each waiting for its OK",
                if durable { "--durable: " } else { "" }
            ),
            publish_only(Vec::new()),
        )
    }
}

/// pubsub over compressed connections (both ways), as negotiated in
/// IDENTIFY by clients that ask for it.
fn build_compressed(b: &Builder) -> Scenario {
    let name = b.name;
    let size = b.size;
    let t = b.topic.clone();
    let kind = if name == "snappy" {
        rsq_compress::Compression::Snappy
    } else {
        rsq_compress::Compression::Deflate(6)
    };
    let mut phase = pubsub_phase(&t, size);
    for w in &mut phase.writers {
        w.compression = Some(kind);
    }
    for r in &mut phase.readers {
        r.compression = Some(kind);
    }
    b.single(format!("pubsub over {name} connections"), phase)
}

/// The `disk` scenario.
fn build_disk(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    Scenario {
        daemon_flags: vec!["--mem-queue-size=0".to_string()],
        ..b.single(
            "pubsub with --mem-queue-size=0: every message goes through disk".to_string(),
            pubsub_phase(&t, size),
        )
    }
}

/// The `conns` scenario.
fn build_conns(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    let idle_topic = format!("{t}-idle");
    let mut idle = readers(&idle_topic, "ch", 1000, 1);
    for reader in &mut idle {
        reader.check_interval = Duration::from_secs(1);
    }
    Scenario {
        topics: vec![t.clone(), idle_topic],
        ..b.single(
            "pubsub while 1000 more consumers (RDY 1) sit idle on another topic".to_string(),
            Phase {
                idle,
                ..pubsub_phase(&t, size)
            },
        )
    }
}

/// Every scenario, or those named in `only`.
pub fn suite(cfg: &SuiteConfig, only: &[String]) -> Result<Vec<Scenario>, BenchError> {
    for name in only {
        if !SCENARIO_NAMES.contains(&name.as_str()) {
            return Err(BenchError::Invalid(format!(
                "unknown scenario {name:?} (known: {})",
                SCENARIO_NAMES.join(", ")
            )));
        }
    }
    Ok(SCENARIO_NAMES
        .iter()
        .filter(|n| only.is_empty() || only.iter().any(|o| o == *n))
        .filter_map(|n| scenario(n, cfg))
        .collect())
}

/// Runs `scenarios` against `target`, one row per phase (or one skipped or
/// failed row per scenario).
pub async fn run_suite(target: &Target, cfg: &SuiteConfig, scenarios: &[Scenario]) -> Vec<Row> {
    let mut rows = Vec::new();
    for scenario in scenarios {
        tracing::info!(scenario = scenario.name, "starting");
        match target {
            Target::Managed { binary, flags } => {
                let mut all_flags = flags.clone();
                all_flags.extend(scenario.daemon_flags.iter().cloned());
                let daemon = match ManagedDaemon::start(binary, &all_flags) {
                    Ok(daemon) => daemon,
                    Err(e) => {
                        rows.push(Row::failed(scenario, e.to_string()));
                        continue;
                    }
                };
                let pid = daemon.pid();
                let tcp = daemon.tcp;
                rows.extend(run_scenario(tcp, Some(pid), true, cfg, scenario).await);
                daemon.stop();
            }
            Target::External { tcp, http, pid } => {
                if !scenario.daemon_flags.is_empty() {
                    rows.push(Row::skipped(
                        scenario,
                        format!(
                            "needs {} (the suite does not start this daemon)",
                            scenario.daemon_flags.join(" ")
                        ),
                    ));
                    continue;
                }
                rows.extend(run_scenario(*tcp, *pid, false, cfg, scenario).await);
                if let Some(http) = http {
                    delete_topics(*http, &scenario.topics);
                }
            }
        }
    }
    rows
}

/// Deletes a scenario's topics from a shared daemon; failures are logged.
fn delete_topics(http: SocketAddr, topics: &[String]) {
    for topic in topics {
        let path = format!("/topic/delete?topic={topic}");
        match http_request(http, "POST", &path, b"") {
            Ok((200, _)) => {}
            Ok((status, body)) => tracing::warn!(topic, status, body, "topic delete failed"),
            Err(e) => tracing::warn!(topic, error = %e, "topic delete failed"),
        }
    }
}

async fn run_scenario(
    tcp: SocketAddr,
    pid: Option<u32>,
    fresh_process: bool,
    cfg: &SuiteConfig,
    scenario: &Scenario,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut published_before = 0;
    for phase in &scenario.phases {
        let result = run_phase(tcp, pid, fresh_process, cfg, phase, published_before).await;
        match result {
            Ok(mut row) => {
                published_before += row.published;
                row.scenario = row_name(scenario, phase);
                row.description = scenario.description.clone();
                row.body_size = cfg.body_size;
                rows.push(row);
            }
            Err(e) => {
                let mut row = Row::failed(scenario, e.to_string());
                row.scenario = row_name(scenario, phase);
                rows.push(row);
                break;
            }
        }
    }
    rows
}

fn row_name(scenario: &Scenario, phase: &Phase) -> String {
    if phase.label.is_empty() {
        scenario.name.to_string()
    } else {
        format!("{}/{}", scenario.name, phase.label)
    }
}

/// Opens subscriptions `CONNECT_PARALLELISM` at a time, in order.
async fn subscribe_all(
    tcp: SocketAddr,
    configs: &[ReaderConfig],
) -> Result<Vec<Subscriber>, BenchError> {
    let mut subscribers = Vec::with_capacity(configs.len());
    for chunk in configs.chunks(CONNECT_PARALLELISM) {
        let mut set = JoinSet::new();
        for (i, cfg) in chunk.iter().enumerate() {
            let cfg = cfg.clone();
            set.spawn(async move { (i, Subscriber::subscribe(tcp, cfg).await) });
        }
        let mut opened: Vec<(usize, Subscriber)> = Vec::with_capacity(chunk.len());
        while let Some(joined) = set.join_next().await {
            let (i, subscriber) = joined.map_err(|e| BenchError::Daemon(format!("task: {e}")))?;
            opened.push((i, subscriber?));
        }
        opened.sort_by_key(|(i, _)| *i);
        subscribers.extend(opened.into_iter().map(|(_, s)| s));
    }
    Ok(subscribers)
}

/// Runs one phase; `backlog` is what earlier phases of the scenario
/// published, which a phase without writers consumes. CPU is sampled from
/// the start of the measured run (after connections are set up) and the
/// daemon's peak memory over its life (`fresh_process`) or the phase.
async fn run_phase(
    tcp: SocketAddr,
    pid: Option<u32>,
    fresh_process: bool,
    cfg: &SuiteConfig,
    phase: &Phase,
    backlog: u64,
) -> Result<Row, BenchError> {
    let progress = Arc::new(Progress::new());
    let setup_started = Instant::now();
    let idle = subscribe_all(tcp, &phase.idle).await?;
    let active = subscribe_all(tcp, &phase.readers).await?;
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let daemon_sampler = pid.map(ProcessSampler::start);
    let client_sampler = ProcessSampler::start(std::process::id());
    if phase.writers.is_empty() {
        progress.set_consume_target(backlog * phase.deliveries_per_message);
    }
    let start = Instant::now();
    let deadline = start + cfg.duration;
    // A backlog phase consumes for the phase's duration; readers of a
    // publishing phase may drain a little after the writers stop.
    let hard_deadline = if phase.writers.is_empty() {
        deadline
    } else {
        deadline + DRAIN_MAX
    };
    let mut idle_tasks = JoinSet::new();
    for subscriber in idle {
        let progress = Arc::clone(&progress);
        idle_tasks.spawn(subscriber.run(start, hard_deadline, progress));
    }
    let mut reader_tasks = JoinSet::new();
    for subscriber in active {
        let progress = Arc::clone(&progress);
        reader_tasks.spawn(subscriber.run(start, hard_deadline, progress));
    }
    let mut writer_tasks = JoinSet::new();
    for writer in &phase.writers {
        let writer = writer.clone();
        let progress = Arc::clone(&progress);
        writer_tasks
            .spawn(async move { run_writer(tcp, &writer, start, deadline, progress).await });
    }
    let mut row = Row {
        setup_secs,
        ..Row::default()
    };
    let mut first_error = None;
    while let Some(joined) = writer_tasks.join_next().await {
        match joined {
            Ok(Ok(outcome)) => {
                row.published += outcome.published;
                row.publish_secs = row.publish_secs.max(outcome.elapsed.as_secs_f64());
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(BenchError::Daemon(format!("writer task: {e}")));
            }
        }
    }
    if !phase.writers.is_empty() {
        progress.set_consume_target(progress.published() * phase.deliveries_per_message);
    }
    let mut latency = LatencyRecorder::new();
    while let Some(joined) = reader_tasks.join_next().await {
        match joined {
            Ok(Ok(outcome)) => {
                row.consumed += outcome.consumed;
                row.consume_secs = row.consume_secs.max(outcome.elapsed.as_secs_f64());
                latency.merge(&outcome.latency);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(BenchError::Daemon(format!("reader task: {e}")));
            }
        }
    }
    idle_tasks.abort_all();
    while let Some(joined) = idle_tasks.join_next().await {
        if let Ok(Err(e)) = joined {
            first_error.get_or_insert(e);
        }
    }
    row.daemon = daemon_sampler.and_then(|s| s.finish(fresh_process));
    row.client_cpu_percent = client_sampler.finish(false).map(|c| c.cpu_percent());
    if let Some(e) = first_error {
        return Err(e);
    }
    // Delays of a backlog are the backlog's age, not the daemon's latency.
    if !phase.writers.is_empty() {
        row.latency = latency.summary();
    }
    Ok(row)
}

#[cfg(test)]
mod tests;
