//! The scenarios themselves: one builder per scenario, each saying which
//! writers, readers and idle consumers its phases run.

use std::time::Duration;

use super::{BACKLOG_TIME_MAX, Phase, SCENARIO_NAMES, Scenario, SuiteConfig};
use crate::reader::ReaderConfig;
use crate::writer::WriterConfig;

/// Commands a pipelined publisher keeps in flight (sent, `OK` not yet
/// read): enough that the pace or the daemon, not the round trip, sets
/// the rate.
pub const PIPELINE_WINDOW: usize = 16;

/// The paced scenarios' names and rates (msgs/s).
const PACED: [(&str, u64); 3] = [
    ("paced1k", 1_000),
    ("paced10k", 10_000),
    ("paced50k", 50_000),
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
        duration: None,
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
        "topics" | "topics-pipelined" => build_topics(&b),
        "paced1k" | "paced10k" | "paced50k" => build_paced(&b),
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
        duration: None,
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

/// The `nsq` scenario: a timed write phase whose backlog the read phase
/// drains (`backlog` 0), or exactly `backlog` messages written, then read.
fn build_nsq(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    let n = b.cfg.nsq_workers;
    let backlog = b.cfg.backlog;
    let mut writers = vec![WriterConfig::new(&t, 200, size); n];
    let (limit, written, what) = if backlog == 0 {
        (None, String::new(), "that backlog".to_string())
    } else {
        for (i, w) in writers.iter_mut().enumerate() {
            w.max_msgs = share(backlog, n, i);
        }
        writers.retain(|w| w.max_msgs > 0);
        (
            Some(BACKLOG_TIME_MAX),
            format!(" until {backlog} messages are published"),
            format!("those {backlog}"),
        )
    };
    Scenario {
        name: "nsq",
        description: format!(
            "as nsq's bench_writer then bench_reader: {n} connections of MPUB 200 x {size} B{written}, \
             then {n} consumers with RDY 2500 reading {what}"
        ),
        daemon_flags: Vec::new(),
        topics: vec![t.clone()],
        phases: vec![
            Phase {
                label: "write",
                duration: limit,
                ..publish_only(writers)
            },
            Phase {
                label: "read",
                duration: limit,
                writers: Vec::new(),
                readers: readers(&t, "ch", n, 2500),
                idle: Vec::new(),
                deliveries_per_message: 1,
            },
        ],
    }
}

/// Writer `i`'s part of `total` messages split over `n` writers: equal
/// parts, the first `total % n` writers one more.
pub fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n.max(1) as u64;
    let i = i as u64;
    total / n + u64::from(i < total % n)
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

/// `paced1k`, `paced10k` and `paced50k`: PUB at a fixed rate with
/// [`PIPELINE_WINDOW`] in flight, so even 50 k msgs/s on one connection is
/// set by the pace and not by the round trip; one consumer (RDY 2500).
fn build_paced(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    let rate = PACED
        .iter()
        .find(|(name, _)| *name == b.name)
        .map_or(10_000, |(_, rate)| *rate);
    let mut writer = WriterConfig::new(&t, 1, size);
    writer.rate_msgs_per_sec = Some(rate);
    writer.window = PIPELINE_WINDOW;
    b.single(
        format!(
            "PUB {size} B paced at {rate} msgs/s ({PIPELINE_WINDOW} in flight), \
             1 consumer (RDY 2500)"
        ),
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

/// The `topics` scenario, and `topics-pipelined`: the same with
/// [`PIPELINE_WINDOW`] commands in flight per connection instead of one.
fn build_topics(b: &Builder) -> Scenario {
    let size = b.size;
    let t = b.topic.clone();
    let window = if b.name == "topics" {
        1
    } else {
        PIPELINE_WINDOW
    };
    let topics: Vec<String> = (0..1000).map(|i| format!("{t}-{i}")).collect();
    let writers = (0..4)
        .map(|w| WriterConfig {
            topics: topics.iter().skip(w).step_by(4).cloned().collect(),
            window,
            ..WriterConfig::new("", 20, size)
        })
        .collect();
    let readers = topics
        .iter()
        .map(|topic| ReaderConfig::new(topic, "ch", 100))
        .collect();
    let waiting = if window == 1 {
        "each waiting for its OK".to_string()
    } else {
        format!("{window} in flight per connection")
    };
    Scenario {
        name: b.name,
        description: format!(
            "1000 topics, 1 channel and consumer (RDY 100) each; 4 connections \
             MPUB 20 x {size} B to each topic in turn, {waiting}"
        ),
        daemon_flags: Vec::new(),
        topics,
        phases: vec![Phase {
            label: "",
            duration: None,
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
