//! Flags and the TOML config file, with nsqd's names, defaults and meanings.
//!
//! Precedence is nsqd's: a flag given on the command line wins over the
//! config file, which wins over the default: the file's options are placed
//! before the command line's and clap keeps the last occurrence.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use rsq_codec::parse_duration;
pub use rsq_service::hostname;
use rsq_service::{ListenAddr, LogFormat, parse_log_format, parse_log_level};

/// The version rsqd reports in IDENTIFY, `/info`, `/stats`, `nsqd.dat` and to
/// lookupd: the nsqd release whose behaviour it matches, with rsq's own
/// version as semver build metadata. Tools compare nsqd versions to choose
/// APIs (nsqadmin falls back to pre-1.0 endpoints for old nsqds), and build
/// metadata does not count in that comparison, so they treat rsqd as 1.3.0.
pub const VERSION: &str = concat!("1.3.0+rsq.", env!("CARGO_PKG_VERSION"));

/// `--data-path`'s default.
pub const DEFAULT_DATA_PATH: &str = "rsq-data";
/// `--max-msg-size`'s default (nsqd's).
pub const DEFAULT_MAX_MSG_SIZE: u64 = 1048576;
/// `--max-bytes-per-file`'s default (nsqd's).
pub const DEFAULT_MAX_BYTES_PER_FILE: u64 = 104857600;

/// What SIGTERM does (`--sigterm-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigtermMode {
    /// Write everything to disk and exit, as nsqd does.
    Flush,
    /// Drain: refuse publishes, serve consumers until nothing is left, exit.
    Drain,
}

pub use rsq_protocol::TlsRequired;

/// `--tls-min-version`: the oldest TLS version accepted. rustls speaks 1.2
/// and 1.3 only, so anything below 1.3 means 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
pub enum TlsMinVersion {
    /// `ssl3.0`.
    #[value(name = "ssl3.0")]
    #[serde(rename = "ssl3.0")]
    Ssl30,
    /// `tls1.0`, nsqd's default.
    #[value(name = "tls1.0")]
    #[serde(rename = "tls1.0")]
    Tls10,
    /// `tls1.1`.
    #[value(name = "tls1.1")]
    #[serde(rename = "tls1.1")]
    Tls11,
    /// `tls1.2`.
    #[value(name = "tls1.2")]
    #[serde(rename = "tls1.2")]
    Tls12,
    /// `tls1.3`.
    #[value(name = "tls1.3")]
    #[serde(rename = "tls1.3")]
    Tls13,
}

impl TlsMinVersion {
    /// The protocol versions rustls may negotiate at this minimum.
    pub fn rustls_versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        static TLS12_UP: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS12, &rustls::version::TLS13];
        match self {
            TlsMinVersion::Tls13 => &TLS13_ONLY,
            _ => &TLS12_UP,
        }
    }
}

/// `--tls-client-auth-policy`: whether TLS clients must present a
/// certificate, and whether it is checked. Any policy makes TLS required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum TlsClientAuthPolicy {
    /// No certificate asked for (`""`, nsqd's default).
    #[value(name = "")]
    #[serde(rename = "")]
    None,
    /// A certificate must be presented; its chain is not checked
    /// (Go's `RequireAnyClientCert`).
    #[value(name = "require")]
    #[serde(rename = "require")]
    Require,
    /// A certificate must chain to `--tls-root-ca-file`.
    #[value(name = "require-verify")]
    #[serde(rename = "require-verify")]
    RequireVerify,
}

/// `--auth-http-request-method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// Parameters in the query string, nsqd's default.
    Get,
    /// Parameters as a form body.
    Post,
}

/// Every option rsqd understands. Field names are nsqd's flag names with `-`
/// turned into `_`, which are also the keys of the TOML config file.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(
    name = "rsqd",
    version = VERSION,
    about = "rsqd: an NSQ-compatible realtime message daemon",
    args_override_self = true,
    after_help = "To go back to Go nsqd: stop rsqd, then run `rsqd downgrade --data-path=DIR` (see `rsqd downgrade --help`)."
)]
pub struct Options {
    /// Path to a TOML config file whose keys are flag names with `-` as `_`.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Log level: debug, info, warn, error or fatal.
    #[arg(long, default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
    /// Log line format: text (coloured only on a terminal, never with
    /// `NO_COLOR` set) or json (one object per line with timestamp, level,
    /// target, message and fields).
    #[arg(long, default_value = "text", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// Unique part of message ids, 0..1024 (default: derived from the hostname).
    #[arg(long = "node-id")]
    #[serde(rename = "id")]
    pub node_id: Option<u16>,
    /// `<addr>:<port>` or a unix socket path to listen on for TCP clients.
    #[arg(long, default_value = "0.0.0.0:4150")]
    pub tcp_address: ListenAddr,
    /// `<addr>:<port>` or a unix socket path to listen on for HTTP clients.
    #[arg(long, default_value = "0.0.0.0:4151")]
    pub http_address: ListenAddr,
    /// Address registered with lookupd (default: the hostname).
    #[arg(long)]
    pub broadcast_address: Option<String>,
    /// TCP port registered with lookupd (0: the port bound), for a daemon
    /// behind NAT or a port mapping.
    #[arg(long, default_value_t = 0)]
    pub broadcast_tcp_port: u16,
    /// HTTP port registered with lookupd and used in the statsd prefix
    /// (0: the port bound).
    #[arg(long, default_value_t = 0)]
    pub broadcast_http_port: u16,
    /// nsqlookupd TCP address to register with (`host:port`); repeatable.
    #[arg(long = "lookupd-tcp-address", value_name = "ADDR")]
    #[serde(rename = "nsqlookupd_tcp_addresses")]
    pub lookupd_tcp_address: Vec<String>,
    /// Directory for disk queues and `nsqd.dat` (created if missing).
    #[arg(long, default_value = DEFAULT_DATA_PATH)]
    pub data_path: PathBuf,
    /// Messages kept in memory per topic and per channel before spilling to disk.
    #[arg(long, default_value_t = 10000)]
    pub mem_queue_size: usize,
    /// Largest message body in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MSG_SIZE)]
    pub max_msg_size: u64,
    /// Largest MPUB, IDENTIFY or AUTH body in bytes.
    #[arg(long, default_value_t = 5242880)]
    pub max_body_size: u64,
    /// Bytes per disk queue segment file before rolling to the next.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES_PER_FILE)]
    pub max_bytes_per_file: u64,
    /// Most bytes all topic and channel queue segment files under
    /// `--data-path` may take together (rsq only); 0 (the default) is
    /// unbounded. At the bound publishes are refused (`DISK_FULL`) until
    /// consumers bring usage down to `LOW_WATER_PERCENT` of it.
    #[arg(long, default_value_t = 0)]
    pub max_disk_bytes: u64,
    /// Disk queue writes and reads between fsyncs.
    #[arg(long, default_value_t = 2500)]
    pub sync_every: u64,
    /// Longest time between fsyncs of a busy disk queue.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub sync_timeout: Duration,
    /// Time a message may stay in flight before it is requeued.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub msg_timeout: Duration,
    /// Largest client msg_timeout, and the cap on TOUCH.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub max_msg_timeout: Duration,
    /// Largest REQ delay, DPUB delay and HTTP `defer`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub max_req_timeout: Duration,
    /// Largest RDY count a client may ask for.
    #[arg(long, default_value_t = 2500)]
    pub max_rdy_count: u64,
    /// Largest heartbeat interval a client may ask for.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub max_heartbeat_interval: Duration,
    /// Largest output buffer a client may ask for, in bytes.
    #[arg(long, default_value_t = 65536)]
    pub max_output_buffer_size: u64,
    /// Largest output buffer flush timeout a client may ask for.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub max_output_buffer_timeout: Duration,
    /// Smallest output buffer flush timeout a client may ask for.
    #[arg(long, default_value = "25ms", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub min_output_buffer_timeout: Duration,
    /// Default output buffer flush timeout.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub output_buffer_timeout: Duration,
    /// Consumers allowed per channel; 0 means unlimited.
    #[arg(long, default_value_t = 0)]
    pub max_channel_consumers: usize,
    /// Deliveries a message gets (rsq only): a message REQueued or timed
    /// out on its N-th is published to its topic's dead-letter topic
    /// (`<topic>.dead`) instead of being delivered again. 0 (the default)
    /// never stops, as nsqd. A channel may set its own with
    /// `/channel/create?max_attempts=N`.
    #[arg(long, default_value_t = 0)]
    pub max_attempts: u16,
    /// Threads running connections, topics and channels (rsq only; Go's
    /// GOMAXPROCS is nsqd's). 0, the default, is one per core. Every
    /// message passes from a publisher's task to its topic's pump and on
    /// to a consumer's, and each hand-off to another thread costs a
    /// wake-up: on a host where the daemon shares a few cores with its
    /// clients, 1 costs about 40 % less CPU per message
    /// (docs/benchmarks.md, session 10).
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
    /// Answer a publish only once its message is fsynced (rsq only; off by
    /// default, as nsqd). Messages then skip the memory queues, every queue
    /// syncs each write (concurrent publishers share fsyncs), and a topic
    /// forgets a message only after its channels have stored it.
    #[arg(long, default_value_t = false)]
    pub durable: bool,
    // --- replicated topics (cluster/) ---
    /// The peer listener of this node's cluster (rsq only): other members
    /// send it consensus messages for replicated topics. Must be one of
    /// `--cluster-peers`. Unset: no cluster, every topic is a single
    /// node's, as nsqd.
    #[arg(long)]
    pub cluster_address: Option<String>,
    /// Every member's peer address, this node's included, the same list in
    /// the same order on every node (rsq only). A member's place in the
    /// list is its id in every replicated topic's group.
    #[arg(long, value_delimiter = ',')]
    pub cluster_peers: Vec<String>,
    /// Replicas of a topic that a publish creates (rsq only): 1, the
    /// default, is an ordinary topic; more makes it a replicated topic
    /// over that many members (this slice: all of `--cluster-peers`).
    /// `/topic/create?replicas=N` chooses per topic.
    #[arg(long, default_value_t = 1)]
    pub default_replicas: usize,
    /// What SIGTERM does: `flush` (nsqd's: write everything to disk and
    /// exit) or `drain` (rsq only: refuse publishes and keep serving
    /// consumers until every channel is empty, then exit; a second SIGTERM
    /// flushes at once). SIGINT always flushes.
    #[arg(long, value_enum, default_value_t = SigtermMode::Flush)]
    pub sigterm_mode: SigtermMode,
    /// Whether clients may negotiate snappy.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub snappy: bool,
    /// Whether clients may negotiate deflate.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub deflate: bool,
    /// Largest deflate level a client may ask for.
    #[arg(long, default_value_t = 6)]
    pub max_deflate_level: u8,
    // --- statsd push (statsd.rs) ---
    /// UDP `<addr>:<port>` of a statsd daemon; setting it enables the push.
    #[arg(long, default_value = "")]
    pub statsd_address: String,
    /// Prefix of every stat; `%s` is replaced by the host key of
    /// `<broadcast-address>:<http-port>`.
    #[arg(long, default_value = "nsq.%s")]
    pub statsd_prefix: String,
    /// Time between pushes to statsd.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub statsd_interval: Duration,
    /// Accepted for nsqd compatibility; rsqd has no Go runtime memory stats,
    /// so no `mem.*` stats are sent either way.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub statsd_mem_stats: bool,
    /// Largest UDP datagram sent to statsd, in bytes (a longer single line
    /// is sent alone).
    #[arg(long, default_value_t = 508)]
    pub statsd_udp_packet_size: usize,
    /// Leave topics and channels whose names end in `#ephemeral` out of the push.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub statsd_exclude_ephemeral: bool,
    // --- end-to-end latency (rsq-channel's E2eLatencyWindow) ---
    /// Publish-to-FIN latency quantiles to report per channel and topic, each
    /// in (0,1]; repeatable or a comma list, e.g. `0.99,0.95,0.5`. None by default.
    #[arg(long = "e2e-processing-latency-percentile", value_name = "QUANTILE", value_delimiter = ',', value_parser = parse_percentile, action = clap::ArgAction::Append)]
    #[serde(rename = "e2e_processing_latency_percentiles")]
    pub e2e_processing_latency_percentile: Vec<f64>,
    /// Window of finishes the percentiles cover (between half of it and all of it).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub e2e_processing_latency_window_time: Duration,
    // --- TLS, HTTPS and AUTH (tcp/tls.rs, auth.rs) ---
    /// Path to the PEM certificate chain; with `--tls-key` enables TLS and HTTPS.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Path to the PEM private key.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Path to a PEM file of CAs that client certificates must chain to (`require-verify`).
    #[arg(long)]
    pub tls_root_ca_file: Option<PathBuf>,
    /// Client certificates: `require` (any) or `require-verify` (checked against
    /// `--tls-root-ca-file`); setting one makes TLS required.
    #[arg(long, value_enum, default_value_t = TlsClientAuthPolicy::None)]
    pub tls_client_auth_policy: TlsClientAuthPolicy,
    /// TLS required: `false`/`0`, `tcp-https`/`1` (TCP and HTTPS, plain HTTP allowed)
    /// or `true`/`2` (everywhere).
    #[arg(long, default_value = "false", value_parser = parse_tls_required)]
    pub tls_required: TlsRequired,
    /// Oldest TLS version accepted: `tls1.0` to `tls1.3` (rustls speaks 1.2 and 1.3 only).
    #[arg(long, value_enum, default_value_t = TlsMinVersion::Tls10)]
    pub tls_min_version: TlsMinVersion,
    /// `<addr>:<port>` or a unix socket path for HTTPS, served only when TLS
    /// is configured.
    #[arg(long, default_value = "0.0.0.0:4152")]
    pub https_address: ListenAddr,
    /// Auth servers (`<addr>:<port>` or a full `http://` URL); repeatable. Enables AUTH.
    #[arg(long = "auth-http-address", alias = "auth-http-addresses")]
    #[serde(rename = "auth_http_addresses")]
    pub auth_http_addresses: Vec<String>,
    /// HTTP method for auth requests: `get` or `post`.
    #[arg(long, value_enum, default_value_t = AuthMethod::Get)]
    pub auth_http_request_method: AuthMethod,
    /// Connect timeout of the daemon's HTTP client (auth requests).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub http_client_connect_timeout: Duration,
    /// Request timeout of the daemon's HTTP client (auth requests).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "duration_ns")]
    pub http_client_request_timeout: Duration,
}

impl Options {
    /// Parses the command line and merges the config file beneath it.
    pub fn load() -> anyhow::Result<Options> {
        Self::load_from(std::env::args_os())
    }

    /// As [`Options::load`], from the given arguments (the first is the program name).
    pub fn load_from<I, T>(args: I) -> anyhow::Result<Options>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut opts = Options::try_parse_from(&args)?;
        if let Some(path) = opts.config.clone() {
            // The file's options go before the command line's: clap lets the
            // later occurrence win, which gives nsqd's precedence.
            let mut merged = vec![args.first().cloned().unwrap_or_else(|| "rsqd".into())];
            merged.extend(config_file_args(&path)?.into_iter().map(Into::into));
            merged.extend(args.iter().skip(1).cloned());
            opts = Options::try_parse_from(&merged)
                .with_context(|| format!("in config file {}", path.display()))?;
        }
        // Highest quantile first, as nsqd's list flag sorts itself.
        opts.e2e_processing_latency_percentile
            .sort_by(|a, b| b.total_cmp(a));
        opts.validate()?;
        Ok(opts)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(id) = self.node_id
            && id >= 1024
        {
            bail!("--node-id must be in [0,1024), got {id}");
        }
        if !(1..=9).contains(&self.max_deflate_level) {
            bail!("--max-deflate-level must be in [1,9]");
        }
        if self.max_rdy_count == 0 {
            bail!("--max-rdy-count must be positive");
        }
        if !self.statsd_address.is_empty() && self.statsd_interval.is_zero() {
            bail!("--statsd-interval must be positive");
        }
        for q in &self.e2e_processing_latency_percentile {
            // NaN is refused too (nsqd's comparisons let it through).
            if !(*q > 0.0 && *q <= 1.0) {
                bail!("invalid E2E processing latency percentile: {q}");
            }
        }
        self.validate_cluster()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("--tls-cert and --tls-key must be given together");
        }
        Ok(())
    }

    /// The node id, or one derived from the hostname as nsqd does (a hash mod 1024).
    pub fn effective_node_id(&self) -> u16 {
        self.node_id.unwrap_or_else(|| {
            let host = hostname();
            let crc = crc32fast::hash(host.as_bytes());
            (crc % 1024) as u16
        })
    }

    fn validate_cluster(&self) -> anyhow::Result<()> {
        let Some(me) = &self.cluster_address else {
            if !self.cluster_peers.is_empty() || self.default_replicas > 1 {
                bail!("--cluster-peers and --default-replicas need --cluster-address");
            }
            return Ok(());
        };
        if !self.cluster_peers.contains(me) {
            bail!("--cluster-address={me} must be one of --cluster-peers");
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = self.cluster_peers.iter().find(|p| !seen.insert(*p)) {
            bail!("--cluster-peers names {dup} twice");
        }
        if self.node_id.is_none() {
            bail!(
                "a cluster member needs its own --node-id: message ids must differ between members"
            );
        }
        if self.default_replicas != 1 && self.default_replicas != self.cluster_peers.len() {
            bail!(
                "--default-replicas must be 1 or the cluster's size ({})",
                self.cluster_peers.len()
            );
        }
        Ok(())
    }

    /// Messages kept in memory per queue: none under `--durable`, where
    /// every message goes to disk before it is acknowledged.
    pub fn effective_mem_queue_size(&self) -> usize {
        if self.durable { 0 } else { self.mem_queue_size }
    }

    /// The broadcast address, defaulting to the hostname.
    pub fn effective_broadcast_address(&self) -> String {
        self.broadcast_address.clone().unwrap_or_else(hostname)
    }
}

/// Turns a TOML config file into `--flag=value` arguments.
pub(crate) fn config_file_args(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("cannot parse config file {}", path.display()))?;
    let mut args = Vec::new();
    for (key, value) in &table {
        let flag = match key.as_str() {
            "id" => "node-id".to_string(),
            "nsqlookupd_tcp_addresses" => "lookupd-tcp-address".to_string(),
            "e2e_processing_latency_percentiles" => "e2e-processing-latency-percentile".to_string(),
            _ => key.replace('_', "-"),
        };
        if flag == "config" {
            bail!("a config file cannot name another config file");
        }
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                // A list option (nsqlookupd_tcp_addresses, or the e2e
                // percentiles' numbers): one flag per item.
                for item in items {
                    let item = match item {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Float(f) => f.to_string(),
                        toml::Value::Integer(i) => i.to_string(),
                        _ => bail!("option {key:?} must be a list of strings or numbers"),
                    };
                    args.push(format!("--{flag}={item}"));
                }
                continue;
            }
            other => bail!("option {key:?} has an unsupported value {other}"),
        };
        args.push(format!("--{flag}={value}"));
    }
    Ok(args)
}

/// One `--e2e-processing-latency-percentile` value; the range is checked
/// with the others at startup, with nsqd's message.
fn parse_percentile(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("Could not parse: {s}"))
}

/// `--tls-required`: nsqd's `false`/`tcp-https`/`true`, or its numbers 0/1/2.
fn parse_tls_required(s: &str) -> Result<TlsRequired, String> {
    match s {
        "false" | "0" => Ok(TlsRequired::No),
        "tcp-https" | "1" => Ok(TlsRequired::ExceptHttp),
        "true" | "2" => Ok(TlsRequired::Yes),
        _ => Err(format!(
            "invalid --tls-required {s:?}: use false, tcp-https or true"
        )),
    }
}

/// Durations appear in `/config` as nanoseconds, as Go's `time.Duration` marshals.
mod duration_ns {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_options_load_as_enums_and_show_as_nsqd_does() -> anyhow::Result<()> {
        let o = Options::load_from(["rsqd"])?;
        assert_eq!(o.tls_required, TlsRequired::No);
        assert_eq!(o.tls_min_version, TlsMinVersion::Tls10);
        assert_eq!(o.auth_http_request_method, AuthMethod::Get);
        assert_eq!(o.tls_client_auth_policy, TlsClientAuthPolicy::None);
        assert_eq!(serde_json::to_value(&o)?["tls_client_auth_policy"], "");
        let o = Options::load_from([
            "rsqd",
            "--tls-required=tcp-https",
            "--tls-min-version=tls1.3",
            "--auth-http-request-method=post",
            "--tls-client-auth-policy=require-verify",
        ])?;
        assert_eq!(o.tls_client_auth_policy, TlsClientAuthPolicy::RequireVerify);
        assert_eq!(o.tls_required, TlsRequired::ExceptHttp);
        assert_eq!(o.tls_min_version.rustls_versions().len(), 1);
        let config = serde_json::to_value(&o)?;
        assert_eq!(config["tls_required"], 1);
        assert_eq!(config["tls_min_version"], "tls1.3");
        assert_eq!(config["auth_http_request_method"], "post");
        assert_eq!(config["tls_client_auth_policy"], "require-verify");
        assert_eq!(
            Options::load_from(["rsqd", "--tls-required=2"])?.tls_required,
            TlsRequired::Yes
        );
        for bad in [
            "--tls-required=yes",
            "--tls-min-version=tls2",
            "--auth-http-request-method=put",
        ] {
            assert!(Options::load_from(["rsqd", bad]).is_err(), "{bad} accepted");
        }
        Ok(())
    }

    #[test]
    fn defaults_are_nsqds() -> anyhow::Result<()> {
        let o = Options::load_from(["rsqd"])?;
        assert_eq!(o.tcp_address.to_string(), "0.0.0.0:4150");
        assert_eq!(o.http_address.to_string(), "0.0.0.0:4151");
        assert_eq!(o.mem_queue_size, 10000);
        assert_eq!(o.max_msg_size, 1048576);
        assert_eq!(o.max_body_size, 5242880);
        assert_eq!(o.msg_timeout, Duration::from_secs(60));
        assert_eq!(o.max_msg_timeout, Duration::from_secs(900));
        assert_eq!(o.max_req_timeout, Duration::from_secs(3600));
        assert_eq!(o.max_rdy_count, 2500);
        assert_eq!(o.sync_every, 2500);
        assert_eq!(o.sync_timeout, Duration::from_secs(2));
        Ok(())
    }

    #[test]
    fn config_file_fills_in_but_flags_win() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rsqd.toml");
        std::fs::write(
            &path,
            "mem_queue_size = 7\nmsg_timeout = \"5s\"\nmax_rdy_count = 10\nid = 3\n",
        )?;
        let o = Options::load_from([
            "rsqd".to_string(),
            format!("--config={}", path.display()),
            "--max-rdy-count=20".to_string(),
        ])?;
        assert_eq!(o.mem_queue_size, 7);
        assert_eq!(o.msg_timeout, Duration::from_secs(5));
        assert_eq!(o.max_rdy_count, 20);
        assert_eq!(o.node_id, Some(3));
        assert_eq!(o.max_msg_size, 1048576);
        assert_eq!(o.max_disk_bytes, 0, "unbounded by default");
        Ok(())
    }

    #[test]
    fn max_disk_bytes_comes_from_the_flag_or_the_config_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rsqd.toml");
        std::fs::write(&path, "max_disk_bytes = 1048576\n")?;
        let o = Options::load_from(["rsqd".to_string(), format!("--config={}", path.display())])?;
        assert_eq!(o.max_disk_bytes, 1 << 20);
        let o = Options::load_from(["rsqd", "--max-disk-bytes=5000"])?;
        assert_eq!(o.max_disk_bytes, 5000);
        Ok(())
    }

    #[test]
    fn listen_addresses_take_unix_socket_paths_and_host_names() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rsqd.toml");
        std::fs::write(
            &path,
            "tcp_address = \"/run/rsqd/tcp.sock\"\nhttp_address = \"localhost:4151\"\n",
        )?;
        let o = Options::load_from([
            "rsqd".to_string(),
            format!("--config={}", path.display()),
            "--https-address=https.sock".to_string(),
        ])?;
        assert_eq!(o.tcp_address, ListenAddr::Unix("/run/rsqd/tcp.sock".into()));
        assert_eq!(o.tcp_address.port(), None);
        assert_eq!(o.http_address.to_string(), "localhost:4151");
        assert_eq!(o.https_address, ListenAddr::Unix("https.sock".into()));
        // `/config/tcp_address` answers the text.
        let json = serde_json::to_value(&o)?;
        assert_eq!(json["tcp_address"], "/run/rsqd/tcp.sock");
        assert_eq!(json["http_address"], "localhost:4151");
        let err =
            Options::load_from(["rsqd", "--tcp-address=localhost:http"]).expect_err("not a port");
        assert!(err.to_string().contains("port must be a number"), "{err}");
        Ok(())
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Options::load_from(["rsqd", "--msg-timeout=abc"]).is_err());
        assert!(Options::load_from(["rsqd", "--node-id=5000"]).is_err());
        assert!(Options::load_from(["rsqd", "--log-level=loud"]).is_err());
        assert!(Options::load_from(["rsqd", "--no-such-flag"]).is_err());
    }

    #[test]
    fn e2e_percentiles_are_a_repeatable_comma_list() -> anyhow::Result<()> {
        let o = Options::load_from(["rsqd"])?;
        assert!(o.e2e_processing_latency_percentile.is_empty());
        assert_eq!(
            o.e2e_processing_latency_window_time,
            Duration::from_secs(600)
        );
        let o = Options::load_from([
            "rsqd",
            "--e2e-processing-latency-percentile=0.5,0.99",
            "--e2e-processing-latency-percentile",
            "1.0",
            "--e2e-processing-latency-window-time=2m",
        ])?;
        // Highest first, as nsqd sorts them.
        assert_eq!(o.e2e_processing_latency_percentile, vec![1.0, 0.99, 0.5]);
        assert_eq!(
            o.e2e_processing_latency_window_time,
            Duration::from_secs(120)
        );
        Ok(())
    }

    #[test]
    fn e2e_percentiles_outside_zero_one_are_refused_as_nsqd_does() {
        for bad in ["0", "1.5", "-0.5", "NaN"] {
            let err = Options::load_from([
                "rsqd".to_string(),
                format!("--e2e-processing-latency-percentile=0.5,{bad}"),
            ])
            .expect_err(bad);
            assert_eq!(
                err.to_string(),
                format!("invalid E2E processing latency percentile: {bad}")
            );
        }
        let err = Options::load_from(["rsqd", "--e2e-processing-latency-percentile=high"])
            .expect_err("not a number");
        assert!(err.to_string().contains("Could not parse: high"), "{err}");
    }

    #[test]
    fn log_format_is_a_flag_and_a_config_key() -> anyhow::Result<()> {
        assert_eq!(Options::load_from(["rsqd"])?.log_format, LogFormat::Text);
        let o = Options::load_from(["rsqd", "--log-format=json"])?;
        assert_eq!(o.log_format, LogFormat::Json);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rsqd.toml");
        std::fs::write(&path, "log_format = \"json\"\n")?;
        let o = Options::load_from(["rsqd".to_string(), format!("--config={}", path.display())])?;
        assert_eq!(o.log_format, LogFormat::Json);
        assert!(Options::load_from(["rsqd", "--log-format=xml"]).is_err());
        Ok(())
    }

    #[test]
    fn e2e_percentiles_come_from_the_config_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rsqd.toml");
        std::fs::write(
            &path,
            "e2e_processing_latency_percentiles = [0.95, 1]\n\
             e2e_processing_latency_window_time = \"30s\"\n",
        )?;
        let o = Options::load_from(["rsqd".to_string(), format!("--config={}", path.display())])?;
        assert_eq!(o.e2e_processing_latency_percentile, vec![1.0, 0.95]);
        assert_eq!(
            o.e2e_processing_latency_window_time,
            Duration::from_secs(30)
        );
        Ok(())
    }
}
