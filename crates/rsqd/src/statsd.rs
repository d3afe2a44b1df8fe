//! statsd push: every `--statsd-interval`, the `/stats` snapshot as statsd
//! lines over UDP, as nsqd's `statsdLoop` sends them.
//!
//! The formatting is pure: [`lines`] turns a snapshot and the counters of
//! the previous push into lines and the new counters, and [`packets`] packs
//! lines into datagrams. The task in [`run`] only collects, formats and
//! sends, so the delta arithmetic and packing are tested without sockets.
//!
//! Differences from nsqd, all deliberate: the datagrams of one push are sent
//! at once rather than spread over `interval - 1s`; no `mem.*` stats are
//! sent, since they are Go runtime (heap and GC) figures rsqd does not have;
//! and a counter that went down (its topic or channel was deleted and made
//! again between pushes) counts from zero instead of wrapping around.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rsq_codec::is_ephemeral;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::Nsqd;
use crate::stats::{self, Latency, StatsFilter, TopicReport};

/// Counter values at the last push, keyed by stat name (without prefix).
/// A stat missing here counts from zero, so the first push sends totals.
pub type Counters = HashMap<String, u64>;

/// nsqd's `statsd.HostKey`: `.` and `:` become `_`, so a `host:port` is one
/// component of a dotted stat name.
pub fn host_key(s: &str) -> String {
    s.replace(['.', ':'], "_")
}

/// The line prefix from `--statsd-prefix`: a `%s` is replaced by the
/// [`host_key`] of `broadcast_address:http_port` (bracketed if an IPv6
/// address, as Go's `net.JoinHostPort`), and a non-empty prefix gets a
/// trailing `.` if it has none.
pub fn prefix(template: &str, broadcast_address: &str, http_port: u16) -> String {
    let mut prefix = if template.contains("%s") {
        let host = if broadcast_address.contains(':') {
            format!("[{broadcast_address}]:{http_port}")
        } else {
            format!("{broadcast_address}:{http_port}")
        };
        template.replace("%s", &host_key(&host))
    } else {
        template.to_string()
    };
    if !prefix.is_empty() && !prefix.ends_with('.') {
        prefix.push('.');
    }
    prefix
}

/// Builds one push: counters as deltas against `previous` (`|c`), gauges as
/// current values (`|g`), for every topic and channel of `topics`, skipping
/// names ending in `#ephemeral` when `exclude_ephemeral` is set. Returns the
/// lines (each ending in `\n`) and the counters to pass to the next push.
pub fn lines(
    prefix: &str,
    topics: &[TopicReport],
    previous: &Counters,
    exclude_ephemeral: bool,
) -> (Vec<String>, Counters) {
    let mut out = Lines {
        prefix,
        previous,
        lines: Vec::new(),
        counters: Counters::new(),
    };
    for t in topics {
        if exclude_ephemeral && is_ephemeral(&t.topic_name) {
            continue;
        }
        let topic = format!("topic.{}", t.topic_name);
        out.counter(format!("{topic}.message_count"), t.message_count);
        out.counter(format!("{topic}.message_bytes"), t.message_bytes);
        out.gauge(format!("{topic}.depth"), t.depth);
        out.gauge(format!("{topic}.backend_depth"), t.backend_depth);
        out.latency(&topic, &t.e2e_processing_latency);
        for c in &t.channels {
            if exclude_ephemeral && is_ephemeral(&c.channel_name) {
                continue;
            }
            let chan = format!("{topic}.channel.{}", c.channel_name);
            out.counter(format!("{chan}.message_count"), c.message_count);
            out.counter(format!("{chan}.requeue_count"), c.requeue_count);
            out.counter(format!("{chan}.timeout_count"), c.timeout_count);
            out.gauge(format!("{chan}.depth"), c.depth);
            out.gauge(format!("{chan}.backend_depth"), c.backend_depth);
            out.gauge(format!("{chan}.in_flight_count"), c.in_flight_count);
            out.gauge(format!("{chan}.deferred_count"), c.deferred_count);
            out.gauge(format!("{chan}.clients"), c.client_count);
            out.latency(&chan, &c.e2e_processing_latency);
        }
    }
    (out.lines, out.counters)
}

/// The accumulator behind [`lines`].
struct Lines<'a> {
    prefix: &'a str,
    previous: &'a Counters,
    lines: Vec<String>,
    counters: Counters,
}

impl Lines<'_> {
    fn counter(&mut self, stat: String, value: u64) {
        let before = self.previous.get(&stat).copied().unwrap_or(0);
        // A smaller value means the object was deleted and made again since
        // the last push: its whole count is new.
        let delta = value.checked_sub(before).unwrap_or(value);
        self.lines
            .push(format!("{}{stat}:{delta}|c\n", self.prefix));
        self.counters.insert(stat, value);
    }

    fn gauge(&mut self, stat: String, value: u64) {
        self.lines
            .push(format!("{}{stat}:{value}|g\n", self.prefix));
    }

    /// nsqd names a percentile by `quantile * 100` rounded to an integer
    /// (`e2e_processing_latency_99`), its value in nanoseconds.
    fn latency(&mut self, base: &str, latency: &Latency) {
        for p in latency.percentiles.iter().flatten() {
            let name = format!("{base}.e2e_processing_latency_{:.0}", p.quantile * 100.0);
            self.lines
                .push(format!("{}{name}:{}|g\n", self.prefix, p.value));
        }
    }
}

/// Packs lines into datagrams of at most `max` bytes, in order. A line is
/// never split: one longer than `max` goes alone in its own datagram.
pub fn packets(lines: &[String], max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for line in lines {
        if !current.is_empty() && current.len() + line.len() > max {
            out.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(line.as_bytes());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Pushes stats to `--statsd-address` every `--statsd-interval` until `stop`
/// changes. The broadcast HTTP port (see [`crate::run`]) fills the
/// prefix's `%s`, as nsqd's does. Never fails: an unreachable or unresolvable address is logged (a warning
/// the first time, then at debug until a push succeeds) and retried at the
/// next interval.
pub async fn run(ctx: Arc<Nsqd>, mut stop: watch::Receiver<bool>) {
    let opts = &ctx.opts;
    let address = opts.statsd_address.clone();
    let prefix = prefix(
        &opts.statsd_prefix,
        &opts.effective_broadcast_address(),
        opts.broadcast_http_port,
    );
    let packet_size = opts.statsd_udp_packet_size;
    let exclude_ephemeral = opts.statsd_exclude_ephemeral;
    let period = opts.statsd_interval.max(Duration::from_millis(1));
    tracing::info!(address, prefix, ?period, "statsd: pushing stats");
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = Counters::new();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let snapshot = stats::collect(&ctx, &StatsFilter::default());
        let topics = snapshot.topics.unwrap_or_default();
        let (push, counters) = lines(&prefix, &topics, &previous, exclude_ephemeral);
        // Counters advance even when the send fails, as nsqd's do: a lost
        // push loses its deltas rather than doubling the next one.
        previous = counters;
        match send(&address, &packets(&push, packet_size)).await {
            Ok(()) => {
                if failing {
                    tracing::info!(address, "statsd: pushing again");
                }
                failing = false;
            }
            Err(e) if !failing => {
                tracing::warn!(address, error = %e, "statsd: push failed");
                failing = true;
            }
            Err(e) => tracing::debug!(address, error = %e, "statsd: push failed"),
        }
    }
    tracing::debug!("statsd: stopped");
}

/// Sends one push's datagrams from a fresh socket, as nsqd dials per push
/// (so a changed DNS answer is picked up).
async fn send(address: &str, datagrams: &[Vec<u8>]) -> std::io::Result<()> {
    let target = tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("address resolved to nothing"))?;
    let local: std::net::SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    for datagram in datagrams {
        socket.send(datagram).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
