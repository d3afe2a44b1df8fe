//! Results: one [`Row`] per scenario phase, printed as a table or JSON.
//!
//! Rates use each side's own elapsed time (writers: start to last `OK`;
//! readers: start to last message). MiB/s counts message bodies only, in
//! MiB as nsq's bench tools do, so figures compare with theirs.

use serde::Serialize;

use crate::latency::LatencySummary;
use crate::process::ProcessSample;
use crate::scenario::Scenario;

/// The outcome of one phase of one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// Scenario name, with `/phase` when it has several.
    pub scenario: String,
    /// What the scenario measures.
    pub description: String,
    /// Body size in bytes.
    pub body_size: usize,
    /// Messages the daemon acknowledged.
    pub published: u64,
    /// Seconds from start to the last acknowledgement.
    pub publish_secs: f64,
    /// Deliveries received (over all channels).
    pub consumed: u64,
    /// Seconds from start to the last delivery.
    pub consume_secs: f64,
    /// End-to-end delays of the deliveries.
    pub latency: Option<LatencySummary>,
    /// Seconds spent connecting and subscribing before the phase started.
    pub setup_secs: f64,
    /// The daemon's peak memory and CPU, when it could be sampled.
    pub daemon: Option<ProcessSample>,
    /// CPU the benchmark client itself used, in percent of one core (it
    /// shares the machine with the daemon).
    pub client_cpu_percent: Option<f64>,
    /// Why the scenario did not run.
    pub skipped: Option<String>,
    /// Why the scenario stopped early.
    pub error: Option<String>,
}

impl Row {
    /// A row saying `scenario` was skipped and why.
    pub fn skipped(scenario: &Scenario, reason: String) -> Row {
        Row {
            scenario: scenario.name.to_string(),
            description: scenario.description.clone(),
            skipped: Some(reason),
            ..Row::default()
        }
    }

    /// A row saying `scenario` failed and how.
    pub fn failed(scenario: &Scenario, error: String) -> Row {
        Row {
            scenario: scenario.name.to_string(),
            description: scenario.description.clone(),
            error: Some(error),
            ..Row::default()
        }
    }

    /// Published messages per second.
    pub fn publish_rate(&self) -> f64 {
        rate(self.published, self.publish_secs)
    }

    /// Delivered messages per second.
    pub fn consume_rate(&self) -> f64 {
        rate(self.consumed, self.consume_secs)
    }

    /// The daemon's CPU time per message it handled (published plus
    /// delivered), in microseconds: the figure that moves least between
    /// runs on a shared machine.
    pub fn daemon_us_per_msg(&self) -> Option<f64> {
        let handled = self.published + self.consumed;
        let daemon = self.daemon?;
        (handled > 0).then(|| daemon.cpu_secs * 1e6 / handled as f64)
    }
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// `1.23 M`, `456 k` or `789`: a rate with three significant figures.
pub fn format_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M", per_sec / 1e6)
    } else if per_sec >= 1e4 {
        format!("{:.0} k", per_sec / 1e3)
    } else if per_sec >= 1e3 {
        format!("{:.1} k", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}")
    }
}

/// Body throughput in MiB/s, one decimal.
pub fn format_mib(per_sec: f64, body_size: usize) -> String {
    format!("{:.1}", per_sec * body_size as f64 / (1024.0 * 1024.0))
}

/// A delay in microseconds shown in milliseconds.
pub fn format_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

const HEADERS: [&str; 13] = [
    "scenario",
    "pub msgs/s",
    "pub MiB/s",
    "sub msgs/s",
    "sub MiB/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "peak RSS MiB",
    "CPU %",
    "CPU µs/msg",
    "bench CPU %",
];

fn cells(row: &Row) -> Vec<String> {
    let dash = || "-".to_string();
    let mut cells = vec![row.scenario.clone()];
    if let Some(reason) = row
        .skipped
        .as_ref()
        .map(|r| format!("skipped: {r}"))
        .or_else(|| row.error.as_ref().map(|e| format!("failed: {e}")))
    {
        cells.push(reason);
        return cells;
    }
    let publish = row.publish_rate();
    let consume = row.consume_rate();
    let (p, c) = (row.published > 0, row.consumed > 0);
    cells.push(if p { format_rate(publish) } else { dash() });
    cells.push(if p {
        format_mib(publish, row.body_size)
    } else {
        dash()
    });
    cells.push(if c { format_rate(consume) } else { dash() });
    cells.push(if c {
        format_mib(consume, row.body_size)
    } else {
        dash()
    });
    match &row.latency {
        Some(l) => {
            for us in [l.p50_us, l.p99_us, l.p999_us, l.max_us] {
                cells.push(format_ms(us));
            }
        }
        None => cells.extend((0..4).map(|_| dash())),
    }
    match &row.daemon {
        Some(d) => {
            cells.push(format!("{:.1}", d.peak_rss_kib as f64 / 1024.0));
            cells.push(format!("{:.0}", d.cpu_percent()));
        }
        None => cells.extend(["n/a".to_string(), "n/a".to_string()]),
    }
    cells.push(
        row.daemon_us_per_msg()
            .map_or_else(|| "n/a".to_string(), |us| format!("{us:.2}")),
    );
    cells.push(
        row.client_cpu_percent
            .map_or_else(|| "n/a".to_string(), |c| format!("{c:.0}")),
    );
    cells
}

/// The results as a Markdown table (aligned for a terminal), followed by a
/// legend of what each scenario does.
pub fn table(rows: &[Row]) -> String {
    let all: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.chars().count()).collect();
    for row in all.iter().filter(|r| r.len() == HEADERS.len()) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in all.iter().filter(|r| r.len() < HEADERS.len()) {
        widths[0] = widths[0].max(row[0].chars().count());
    }
    let line = |cells: &[String]| {
        let mut out = String::from("|");
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths.get(i).copied().unwrap_or(0);
            if i == 0 || cells.len() < HEADERS.len() {
                out.push_str(&format!(" {cell:<pad$} |"));
            } else {
                out.push_str(&format!(" {cell:>pad$} |"));
            }
        }
        out.push('\n');
        out
    };
    let headers: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    let mut out = line(&headers);
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        out.push_str(&if i == 0 {
            format!(" {dashes} |")
        } else {
            format!(" {}: |", &dashes[..w.saturating_sub(1)])
        });
    }
    out.push('\n');
    for row in &all {
        out.push_str(&line(row));
    }
    let mut seen = Vec::new();
    out.push('\n');
    for row in rows {
        let name = row.scenario.split('/').next().unwrap_or_default();
        if !seen.contains(&name) {
            seen.push(name);
            out.push_str(&format!("- {name}: {}\n", row.description));
        }
    }
    out
}

/// A row with its derived rates, as `--json` writes it.
#[derive(Debug, Serialize)]
pub struct JsonRow<'a> {
    /// The measured values.
    #[serde(flatten)]
    pub row: &'a Row,
    /// Published messages per second.
    pub publish_msgs_per_sec: f64,
    /// Delivered messages per second.
    pub consume_msgs_per_sec: f64,
    /// The daemon's CPU use in percent of one core, when sampled.
    pub daemon_cpu_percent: Option<f64>,
    /// The daemon's CPU time per message handled, in microseconds.
    pub daemon_cpu_us_per_msg: Option<f64>,
}

impl<'a> From<&'a Row> for JsonRow<'a> {
    fn from(row: &'a Row) -> Self {
        JsonRow {
            row,
            publish_msgs_per_sec: row.publish_rate(),
            consume_msgs_per_sec: row.consume_rate(),
            daemon_cpu_percent: row.daemon.map(|d| d.cpu_percent()),
            daemon_cpu_us_per_msg: row.daemon_us_per_msg(),
        }
    }
}

/// What `--json` writes: the run's settings and every row.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    /// The daemon measured (binary path or address).
    pub target: String,
    /// Seconds each phase ran.
    pub duration_secs: f64,
    /// Body size in bytes.
    pub body_size: usize,
    /// Every row, in suite order.
    pub rows: Vec<JsonRow<'a>>,
}

impl<'a> JsonReport<'a> {
    /// The report of `rows`.
    pub fn new(target: String, duration_secs: f64, body_size: usize, rows: &'a [Row]) -> Self {
        JsonReport {
            target,
            duration_secs,
            body_size,
            rows: rows.iter().map(JsonRow::from).collect(),
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests;
