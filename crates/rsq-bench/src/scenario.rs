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
use crate::reader::{ReaderConfig, ReaderOutcome, Subscriber};
use crate::report::Row;
use crate::writer::{WriterConfig, WriterOutcome, run_writer};

mod build;

pub use build::{PIPELINE_WINDOW, scenario};

/// Longest time readers keep consuming after the writers stop.
pub const DRAIN_MAX: Duration = Duration::from_secs(3);

/// Longest a phase with a message bound (the `nsq` scenario's with
/// `--backlog`) may take to publish or to consume them all; a daemon that
/// slow is reported with what it did by then.
pub const BACKLOG_TIME_MAX: Duration = Duration::from_secs(300);

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
    /// Messages the `nsq` scenario writes, then reads (so every daemon
    /// drains the same backlog); 0 writes for `duration` and drains what
    /// that left, as before `--backlog`.
    pub backlog: u64,
}

/// One phase: clients running at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Row label when a scenario has several phases.
    pub label: &'static str,
    /// How long it may run instead of the suite's duration: a phase with
    /// a message bound ends when its clients reach it, or at this limit.
    pub duration: Option<Duration>,
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
    "paced1k",
    "paced10k",
    "paced50k",
    "fanout",
    "topics",
    "topics-pipelined",
    "disk",
    "conns",
    "publishers",
    "durable",
    "snappy",
    "deflate",
];

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
    let deadline = start + phase.duration.unwrap_or(cfg.duration);
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
    join_writers(&mut writer_tasks, &mut row, &mut first_error).await;
    if !phase.writers.is_empty() {
        progress.set_consume_target(progress.published() * phase.deliveries_per_message);
        let bound: u64 = phase.writers.iter().map(|w| w.max_msgs).sum();
        if phase.duration.is_some() && row.published < bound {
            tracing::warn!(
                bound,
                published = row.published,
                "the phase ended before its bound"
            );
        }
    }
    let latency = join_readers(&mut reader_tasks, &mut row, &mut first_error).await;
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

/// Adds the writers' outcomes to `row`, keeping the first error.
async fn join_writers(
    tasks: &mut JoinSet<Result<WriterOutcome, BenchError>>,
    row: &mut Row,
    first_error: &mut Option<BenchError>,
) {
    while let Some(joined) = tasks.join_next().await {
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
}

/// Adds the readers' outcomes to `row`, keeping the first error; their
/// delays merged.
async fn join_readers(
    tasks: &mut JoinSet<Result<ReaderOutcome, BenchError>>,
    row: &mut Row,
    first_error: &mut Option<BenchError>,
) -> LatencyRecorder {
    let mut latency = LatencyRecorder::new();
    while let Some(joined) = tasks.join_next().await {
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
    latency
}

#[cfg(test)]
mod tests;
