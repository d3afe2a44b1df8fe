//! The `rsq-bench` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::BenchError;
use crate::daemon::Target;
use crate::latency::STAMP_LEN;
use crate::scenario::{SCENARIO_NAMES, SuiteConfig};

/// Benchmarks an NSQ-compatible daemon over protocol V2: publish and
/// consume throughput, end-to-end latency, and the daemon's memory and CPU.
#[derive(Debug, Clone, Parser)]
#[command(name = "rsq-bench", version)]
pub struct Options {
    /// Start this daemon binary (rsqd, or nsqd: both take nsqd's flag names)
    /// for every scenario, on free loopback ports with a temporary data dir.
    #[arg(long, value_name = "PATH", conflicts_with = "addr", required_unless_present_any = ["addr", "list"])]
    pub daemon_bin: Option<PathBuf>,
    /// Extra flag for every daemon started with --daemon-bin (repeatable),
    /// e.g. --daemon-flag=--sync-every=10000.
    #[arg(long, value_name = "FLAG", allow_hyphen_values = true)]
    pub daemon_flag: Vec<String>,
    /// Benchmark the daemon already running at this TCP address instead;
    /// scenarios needing other daemon flags are skipped.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// HTTP address of the --addr daemon, to delete each scenario's topics.
    #[arg(long, value_name = "HOST:PORT")]
    pub http_addr: Option<SocketAddr>,
    /// Process id of the --addr daemon, to sample its memory and CPU.
    #[arg(long)]
    pub pid: Option<u32>,
    /// How long each phase publishes: `10`, `10s` or `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Connections of the `nsq` scenario's writer and reader (nsq's bench
    /// tools use one per core); default: this machine's cores.
    #[arg(long)]
    pub nsq_workers: Option<usize>,
    /// Messages the `nsq` scenario publishes, then drains, so every daemon
    /// drains the same backlog (a faster one would otherwise leave itself a
    /// longer one); 0 publishes for --duration and drains what that left.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u64,
    /// Run only this scenario (repeatable); see --list.
    #[arg(long, value_name = "NAME")]
    pub scenario: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Instead of the suite, measure the idle-topic scaling curve at these
    /// topic counts (comma-separated, e.g. 1000,10000,100000): creation
    /// rate, idle CPU, RSS per pair and restart time. Needs --daemon-bin.
    #[arg(long, value_name = "COUNTS", value_delimiter = ',')]
    pub scale: Vec<usize>,
    /// How long the scaling curve measures idle CPU at each count.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub scale_idle: Duration,
}

/// The `nsq` scenario's backlog unless `--backlog` says otherwise: about
/// two seconds of rsqd's publishing or draining here, and under 15 s of
/// nsqd's, so one run compares both on the same messages.
pub const DEFAULT_BACKLOG: u64 = 2_000_000;

/// `10`, `2.5`, `10s` or `500ms` as a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (use 10, 10s or 500ms)"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("a duration must be positive: {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

impl Options {
    /// Which daemon to measure.
    pub fn target(&self) -> Result<Target, BenchError> {
        match (&self.daemon_bin, self.addr) {
            (Some(_), None) if self.pid.is_some() || self.http_addr.is_some() => Err(
                BenchError::Invalid("--pid and --http-addr go with --addr".into()),
            ),
            (Some(binary), None) => Ok(Target::Managed {
                binary: binary.clone(),
                flags: self.daemon_flag.clone(),
            }),
            (None, Some(tcp)) => {
                if !self.daemon_flag.is_empty() {
                    return Err(BenchError::Invalid(
                        "--daemon-flag needs --daemon-bin".into(),
                    ));
                }
                Ok(Target::External {
                    tcp,
                    http: self.http_addr,
                    pid: self.pid,
                })
            }
            _ => Err(BenchError::Invalid(
                "give exactly one of --daemon-bin and --addr".into(),
            )),
        }
    }

    /// The settings every scenario shares; `run_id` prefixes topic names.
    pub fn suite_config(&self, run_id: String) -> Result<SuiteConfig, BenchError> {
        if self.size < STAMP_LEN {
            return Err(BenchError::Invalid(format!(
                "--size must be at least {STAMP_LEN} (the latency stamp)"
            )));
        }
        for name in &self.scenario {
            if !SCENARIO_NAMES.contains(&name.as_str()) {
                return Err(BenchError::Invalid(format!(
                    "unknown scenario {name:?} (known: {})",
                    SCENARIO_NAMES.join(", ")
                )));
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let nsq_workers = self.nsq_workers.unwrap_or(cores).max(1);
        Ok(SuiteConfig {
            duration: self.duration,
            body_size: self.size,
            nsq_workers,
            run_id,
            backlog: self.backlog,
        })
    }
}

#[cfg(test)]
mod tests;
