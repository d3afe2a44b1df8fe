//! `/metrics`: the `/stats` snapshot in Prometheus' text exposition format,
//! so rsqd needs no exporter.
//!
//! Nothing is registered ahead: each scrape takes [`stats::collect`]'s
//! snapshot (the one `/stats` and the statsd push read, so the figures,
//! e2e percentiles included, are the same), hands it to a one-scrape
//! `prometheus_client` [`Registry`] as a [`Collector`], encodes it and drops
//! it, so no per-topic state outlives a scrape.
//!
//! Names: where lovoo's nsq_exporter has a metric for the same figure it
//! keeps its name, type (gauge) and labels (`topic`, `channel`, `paused`),
//! so its dashboards keep working; that is why `nsq_channel_message_count`,
//! `nsq_channel_requeue_count`, `nsq_channel_timeout_count` and
//! `nsq_topic_message_count` are gauges without `_total`, and its e2e
//! latency gauges are in nanoseconds. Every other counter ends in `_total`
//! and every other unit is in the name (`_seconds`, `_bytes`).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::options::VERSION;
use crate::stats::{self, Latency, Stats};

/// The `Content-Type` of the Prometheus text format, version 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which exposition format a scrape asked for (`/metrics?format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text, version 0.0.4 (the default; `format=text` or
    /// `format=prometheus`).
    Prometheus,
    /// OpenMetrics text 1.0 (`format=openmetrics`).
    OpenMetrics,
}

impl Format {
    /// The format named by a `format` query value; `None` for one not served.
    pub fn from_param(value: Option<&str>) -> Option<Format> {
        match value {
            None | Some("text" | "prometheus") => Some(Format::Prometheus),
            Some("openmetrics") => Some(Format::OpenMetrics),
            Some(_) => None,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Encodes `stats` (taken with [`stats::collect`] and no filter) as of
/// `now_unix` seconds in `format`.
pub fn render(stats: Stats, now_unix: i64, format: Format) -> Result<String, std::fmt::Error> {
    // About 100 bytes a line and some 30 lines a topic with one channel.
    let topics = stats.topics.as_ref().map_or(0, Vec::len);
    let mut out = String::with_capacity(4096 + topics * 3000);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { stats, now_unix }));
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

/// One scrape's snapshot, encoded as the registry's only collector.
#[derive(Debug)]
struct Snapshot {
    stats: Stats,
    now_unix: i64,
}

/// One metric family: its descriptor, then one sample per label set.
fn family<L, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> std::fmt::Result
where
    L: EncodeLabelSet,
    M: EncodeMetric,
{
    let mut family = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one unlabelled gauge.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl prometheus_client::encoding::EncodeGaugeValue,
) -> std::fmt::Result {
    let family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(family)
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn int(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(signed(v))
}

fn flag(v: bool) -> ConstGauge<i64> {
    ConstGauge::new(i64::from(v))
}

fn count(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn paused(p: bool) -> &'static str {
    if p { "true" } else { "false" }
}

/// The value of `quantile` in `latency`, if configured (nsq_exporter's
/// 99th and 95th percentile gauges).
fn percentile(latency: &Latency, quantile: f64) -> Option<i64> {
    latency
        .percentiles
        .iter()
        .flatten()
        .find(|p| p.quantile == quantile)
        .map(|p| p.value)
}

/// Encodes a histogram from per-bucket (not cumulative) counts.
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    sum: f64,
    buckets: &[(f64, u64)],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    let total = buckets.iter().map(|(_, n)| n).sum();
    encode_histogram(&mut metric, sum, total, buckets)
}

fn encode_histogram(
    metric: &mut MetricEncoder,
    sum: f64,
    count: u64,
    buckets: &[(f64, u64)],
) -> std::fmt::Result {
    metric.encode_histogram::<NoLabelSet>(sum, count, buckets, None)
}

/// nsq_exporter's topic labels.
fn tp(t: &stats::TopicReport) -> [(&'static str, &str); 2] {
    [
        ("topic", t.topic_name.as_str()),
        ("paused", paused(t.paused)),
    ]
}

/// A topic's own label.
fn t1(t: &stats::TopicReport) -> [(&'static str, &str); 1] {
    [("topic", t.topic_name.as_str())]
}

/// nsq_exporter's channel labels.
fn cp<'a>(
    (t, c): (&'a stats::TopicReport, &'a stats::ChannelReport),
) -> [(&'static str, &'a str); 3] {
    [
        ("topic", t.topic_name.as_str()),
        ("channel", c.channel_name.as_str()),
        ("paused", paused(c.paused)),
    ]
}

/// A channel's own labels.
fn c2<'a>(
    (t, c): (&'a stats::TopicReport, &'a stats::ChannelReport),
) -> [(&'static str, &'a str); 2] {
    [
        ("topic", t.topic_name.as_str()),
        ("channel", c.channel_name.as_str()),
    ]
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let topics: &[stats::TopicReport] = self.stats.topics.as_deref().unwrap_or(&[]);
        self.encode_daemon(&mut e, topics)?;
        encode_topic_exporter(&mut e, topics)?;
        encode_topic_rsq(&mut e, topics)?;
        encode_channel_exporter(&mut e, topics)?;
        encode_channel_rsq(&mut e, topics)?;
        if let Some(replicated) = &self.stats.replicated_topics {
            encode_replicated(&mut e, replicated)?;
        }
        self.encode_commits(&mut e)
    }
}

/// Replicated topics as this cluster member sees them (rsq only).
fn encode_replicated(
    e: &mut DescriptorEncoder,
    topics: &std::collections::BTreeMap<String, stats::ReplicatedTopicReport>,
) -> std::fmt::Result {
    let label = |name: &String| [("topic", name.clone())];
    family(
        e,
        "rsq_replicated_topic_leader",
        "1 while this member leads the replicated topic and delivers it.",
        None,
        MetricType::Gauge,
        topics.iter().map(|(n, r)| (label(n), flag(r.delivering))),
    )?;
    family(
        e,
        "rsq_replicated_topic_term",
        "The replicated topic's latest consensus term seen here.",
        None,
        MetricType::Gauge,
        topics.iter().map(|(n, r)| (label(n), int(r.term))),
    )?;
    family(
        e,
        "rsq_replicated_topic_commit_index",
        "The highest log index this member knows committed.",
        None,
        MetricType::Gauge,
        topics.iter().map(|(n, r)| (label(n), int(r.commit_index))),
    )?;
    family(
        e,
        "rsq_replicated_topic_stopped",
        "1 once this member's replica stopped after a storage failure.",
        None,
        MetricType::Gauge,
        topics
            .iter()
            .map(|(n, r)| (label(n), flag(r.stopped.is_some()))),
    )
}

/// Every channel with its topic.
fn channels_of(
    topics: &[stats::TopicReport],
) -> impl Iterator<Item = (&stats::TopicReport, &stats::ChannelReport)> {
    topics
        .iter()
        .flat_map(|t| t.channels.iter().map(move |c| (t, c)))
}

impl Snapshot {
    /// The daemon's own figures.
    fn encode_daemon(
        &self,
        e: &mut DescriptorEncoder,
        topics: &[stats::TopicReport],
    ) -> std::fmt::Result {
        let s = &self.stats;
        let d = &s.daemon;
        e.encode_descriptor("nsq_build", "rsqd's version.", None, MetricType::Info)?
            .encode_info(&[("version", VERSION)])?;
        gauge(
            e,
            "nsq_start_time",
            "When rsqd started, seconds since the epoch.",
            Some(&Unit::Seconds),
            s.start_time,
        )?;
        gauge(
            e,
            "nsq_uptime",
            "Seconds since rsqd started.",
            Some(&Unit::Seconds),
            self.now_unix.saturating_sub(s.start_time).max(0),
        )?;
        gauge(
            e,
            "nsq_healthy",
            "1 while rsqd is healthy, 0 once a disk queue failed (/ping then answers NOK).",
            None,
            i64::from(d.healthy),
        )?;
        gauge(
            e,
            "nsq_draining",
            "1 while drain mode refuses publishes (PUT /config/drain).",
            None,
            i64::from(s.draining),
        )?;
        gauge(
            e,
            "nsq_disk",
            "Bytes of every topic's and channel's queue segment files (--max-disk-bytes bounds them).",
            Some(&Unit::Bytes),
            signed(s.disk_bytes),
        )?;
        gauge(
            e,
            "nsq_disk_full",
            "1 while publishes are refused for a full disk (DISK_FULL).",
            None,
            i64::from(s.disk_full),
        )?;
        gauge(
            e,
            "nsq_connections",
            "Connected TCP clients.",
            None,
            signed(d.connections),
        )?;
        gauge(e, "nsq_topics", "Topics.", None, signed(d.topic_count))?;
        gauge(
            e,
            "nsq_channels",
            "Channels, all topics together.",
            None,
            signed(channels_of(topics).count() as u64),
        )?;

        Ok(())
    }

    /// Group commits under `--durable`.
    fn encode_commits(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let d = &self.stats.daemon;
        if d.durable {
            let c = &d.commits;
            let bounds = rsq_diskqueue::COMMIT_LATENCY_BOUNDS_MICROS
                .iter()
                .map(|&us| us as f64 / 1e6)
                .chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(c.latency_buckets).collect();
            histogram(
                e,
                "nsq_disk_commit_duration",
                "Time a --durable group commit took: writing the pending records and the fdatasync.",
                Some(&Unit::Seconds),
                c.latency_sum.as_secs_f64(),
                &buckets,
            )?;
            let bounds = rsq_diskqueue::COMMIT_RECORDS_BOUNDS
                .iter()
                .map(|&n| n as f64)
                .chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(c.records_buckets).collect();
            histogram(
                e,
                "nsq_disk_commit_records",
                "Records (puts) one --durable group commit made durable.",
                None,
                c.records_sum as f64,
                &buckets,
            )?;
        }
        Ok(())
    }
}

/// Topics: nsq_exporter's gauges, with its labels.
fn encode_topic_exporter(
    e: &mut DescriptorEncoder,
    topics: &[stats::TopicReport],
) -> std::fmt::Result {
    type TopicFigure = fn(&stats::TopicReport) -> u64;
    let exporter_topic: [(&str, &str, TopicFigure); 4] = [
        (
            "nsq_topic_depth",
            "Messages waiting at the topic, in memory and on disk.",
            |t| t.depth,
        ),
        (
            "nsq_topic_backend_depth",
            "Messages waiting at the topic on disk.",
            |t| t.backend_depth,
        ),
        (
            "nsq_topic_message_count",
            "Messages published to the topic (a counter, typed gauge as nsq_exporter's).",
            |t| t.message_count,
        ),
        ("nsq_topic_channel_count", "Channels of the topic.", |t| {
            t.channels.len() as u64
        }),
    ];
    for (name, help, figure) in exporter_topic {
        family(
            e,
            name,
            help,
            None,
            MetricType::Gauge,
            topics.iter().map(|t| (tp(t), int(figure(t)))),
        )?;
    }
    for (name, q) in [
        ("nsq_topic_e2e_latency_99_percentile", 0.99),
        ("nsq_topic_e2e_latency_95_percentile", 0.95),
    ] {
        family(
            e,
            name,
            "Publish-to-FIN latency of the topic's channels at this quantile, in nanoseconds (with --e2e-processing-latency-percentile).",
            None,
            MetricType::Gauge,
            topics.iter().filter_map(|t| {
                Some((
                    tp(t),
                    ConstGauge::new(percentile(&t.e2e_processing_latency, q)?),
                ))
            }),
        )?;
    }
    Ok(())
}

/// Topics: what nsq_exporter lacks.
fn encode_topic_rsq(e: &mut DescriptorEncoder, topics: &[stats::TopicReport]) -> std::fmt::Result {
    family(
        e,
        "nsq_topic_paused",
        "1 while the topic is paused.",
        None,
        MetricType::Gauge,
        topics.iter().map(|t| (t1(t), flag(t.paused))),
    )?;
    family(
        e,
        "nsq_topic_message",
        "Body bytes published to the topic.",
        Some(&Unit::Bytes),
        MetricType::Counter,
        topics.iter().map(|t| (t1(t), count(t.message_bytes))),
    )?;
    family(
        e,
        "nsq_topic_disk_corrupt_records",
        "Records the topic's disk queue found corrupt at open and no longer serves.",
        None,
        MetricType::Counter,
        topics
            .iter()
            .map(|t| (t1(t), count(t.disk.corrupt_records))),
    )?;
    family(
        e,
        "nsq_topic_disk_quarantined_files",
        "Files of the topic's disk queue moved aside as .bad at open.",
        None,
        MetricType::Counter,
        topics
            .iter()
            .map(|t| (t1(t), count(t.disk.quarantined_files))),
    )?;
    family(
        e,
        "nsq_topic_e2e_processing_latency",
        "Publish-to-FIN latency of the topic's channels over the window, by quantile (with --e2e-processing-latency-percentile).",
        Some(&Unit::Seconds),
        MetricType::Gauge,
        topics.iter().flat_map(|t| {
            t.e2e_processing_latency
                .percentiles
                .iter()
                .flatten()
                .map(move |p| {
                    (
                        [
                            ("topic", QuantileLabel::Name(&t.topic_name)),
                            ("quantile", QuantileLabel::Quantile(p.quantile)),
                        ],
                        ConstGauge::new(p.value as f64 / 1e9),
                    )
                })
        }),
    )?;
    family(
        e,
        "nsq_topic_e2e_processing_latency_samples",
        "Finishes the topic's e2e latency quantiles are computed over.",
        None,
        MetricType::Gauge,
        topics
            .iter()
            .filter(|t| t.e2e_processing_latency.percentiles.is_some())
            .map(|t| (t1(t), int(t.e2e_processing_latency.count))),
    )?;

    Ok(())
}

/// Channels: nsq_exporter's gauges, with its labels.
fn encode_channel_exporter(
    e: &mut DescriptorEncoder,
    topics: &[stats::TopicReport],
) -> std::fmt::Result {
    let channels = || channels_of(topics);
    type ChannelFigure = fn(&stats::ChannelReport) -> u64;
    let exporter_channel: [(&str, &str, ChannelFigure); 8] = [
        (
            "nsq_channel_depth",
            "Messages waiting in the channel, in memory and on disk.",
            |c| c.depth,
        ),
        (
            "nsq_channel_backend_depth",
            "Messages waiting in the channel on disk.",
            |c| c.backend_depth,
        ),
        (
            "nsq_channel_in_flight_count",
            "Messages delivered and not yet finished, requeued or timed out.",
            |c| c.in_flight_count,
        ),
        (
            "nsq_channel_deferred_count",
            "Messages waiting for their deferral to end.",
            |c| c.deferred_count,
        ),
        (
            "nsq_channel_message_count",
            "Messages that entered the channel (a counter, typed gauge as nsq_exporter's).",
            |c| c.message_count,
        ),
        (
            "nsq_channel_requeue_count",
            "Messages requeued (a counter, typed gauge as nsq_exporter's).",
            |c| c.requeue_count,
        ),
        (
            "nsq_channel_timeout_count",
            "Messages requeued because their deadline passed (a counter, typed gauge as nsq_exporter's).",
            |c| c.timeout_count,
        ),
        (
            "nsq_channel_client_count",
            "Consumers subscribed to the channel.",
            |c| c.client_count,
        ),
    ];
    for (name, help, figure) in exporter_channel {
        family(
            e,
            name,
            help,
            None,
            MetricType::Gauge,
            channels().map(|tc| (cp(tc), int(figure(tc.1)))),
        )?;
    }
    for (name, q) in [
        ("nsq_channel_e2e_latency_99p", 0.99),
        ("nsq_channel_e2e_latency_95p", 0.95),
    ] {
        family(
            e,
            name,
            "Publish-to-FIN latency of the channel at this quantile, in nanoseconds (with --e2e-processing-latency-percentile).",
            None,
            MetricType::Gauge,
            channels().filter_map(|tc| {
                Some((
                    cp(tc),
                    ConstGauge::new(percentile(&tc.1.e2e_processing_latency, q)?),
                ))
            }),
        )?;
    }
    Ok(())
}

/// Channels: what nsq_exporter lacks.
fn encode_channel_rsq(
    e: &mut DescriptorEncoder,
    topics: &[stats::TopicReport],
) -> std::fmt::Result {
    let channels = || channels_of(topics);
    family(
        e,
        "nsq_channel_paused",
        "1 while the channel is paused.",
        None,
        MetricType::Gauge,
        channels().map(|tc| (c2(tc), flag(tc.1.paused))),
    )?;
    family(
        e,
        "nsq_channel_dead_letter",
        "Messages moved to the topic's dead-letter topic after their last attempt (--max-attempts).",
        None,
        MetricType::Counter,
        channels().map(|tc| (c2(tc), count(tc.1.dead_letter_count))),
    )?;
    family(
        e,
        "nsq_channel_disk_corrupt_records",
        "Records the channel's disk queue found corrupt at open and no longer serves.",
        None,
        MetricType::Counter,
        channels().map(|tc| (c2(tc), count(tc.1.disk.corrupt_records))),
    )?;
    family(
        e,
        "nsq_channel_disk_quarantined_files",
        "Files of the channel's disk queue moved aside as .bad at open.",
        None,
        MetricType::Counter,
        channels().map(|tc| (c2(tc), count(tc.1.disk.quarantined_files))),
    )?;
    family(
        e,
        "nsq_channel_e2e_processing_latency",
        "Publish-to-FIN latency of the channel over the window, by quantile (with --e2e-processing-latency-percentile).",
        Some(&Unit::Seconds),
        MetricType::Gauge,
        channels().flat_map(|(t, c)| {
            c.e2e_processing_latency
                .percentiles
                .iter()
                .flatten()
                .map(move |p| {
                    (
                        [
                            ("topic", QuantileLabel::Name(&t.topic_name)),
                            ("channel", QuantileLabel::Name(&c.channel_name)),
                            ("quantile", QuantileLabel::Quantile(p.quantile)),
                        ],
                        ConstGauge::new(p.value as f64 / 1e9),
                    )
                })
        }),
    )?;
    family(
        e,
        "nsq_channel_e2e_processing_latency_samples",
        "Finishes the channel's e2e latency quantiles are computed over.",
        None,
        MetricType::Gauge,
        channels()
            .filter(|tc| tc.1.e2e_processing_latency.percentiles.is_some())
            .map(|tc| (c2(tc), int(tc.1.e2e_processing_latency.count))),
    )?;

    Ok(())
}

/// A label value that is a name or a quantile, so one label set type holds both.
enum QuantileLabel<'a> {
    Name(&'a str),
    Quantile(f64),
}

impl prometheus_client::encoding::EncodeLabelValue for QuantileLabel<'_> {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> std::fmt::Result {
        match self {
            QuantileLabel::Name(name) => name.encode(encoder),
            // As Go's client writes quantiles: `0.99`, `1`.
            QuantileLabel::Quantile(q) => std::fmt::Write::write_fmt(encoder, format_args!("{q}")),
        }
    }
}

#[cfg(test)]
mod tests;
