//! The scaling curve of idle topics: for each count, one keep-alive HTTP
//! client creates that many topics with a channel each, the daemon idles,
//! and a clean restart is timed until it serves them all again.
//!
//! What it reports per count: creation rate, idle CPU, RSS (and RSS per
//! pair above the empty daemon's), shutdown and restart time. Deployments
//! with a topic per tenant or device live on this curve.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::BenchError;
use crate::daemon::{ManagedDaemon, http_request};
use crate::process::{CLOCK_TICKS_PER_SEC, parse_status_kib, read_cpu_ticks, read_status};

/// Longest a shutdown or a restart may take before the run fails.
pub const RESTART_BOUND: Duration = Duration::from_secs(300);

/// Pause after creating, before idle is measured, so creation's
/// background work (metadata writes) is over.
const SETTLE: Duration = Duration::from_secs(2);

/// One point of the curve.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleRow {
    /// Topics created, each with one channel.
    pub topics: usize,
    /// How long creating them took.
    pub create: Duration,
    /// Daemon CPU while idle, in percent of one core.
    pub idle_cpu_percent: f64,
    /// RSS while idle.
    pub rss_kib: u64,
    /// RSS of the same daemon with no topics.
    pub empty_rss_kib: u64,
    /// SIGTERM until the process exited.
    pub shutdown: Duration,
    /// Start until the daemon answered again.
    pub restart: Duration,
    /// Topics with their channel in `/stats` after the restart.
    pub served_after_restart: usize,
}

impl ScaleRow {
    /// Topic+channel pairs created per second.
    pub fn pairs_per_sec(&self) -> f64 {
        self.topics as f64 / self.create.as_secs_f64().max(1e-9)
    }

    /// RSS per pair above the empty daemon's, in bytes.
    pub fn rss_per_pair(&self) -> f64 {
        (self.rss_kib.saturating_sub(self.empty_rss_kib) * 1024) as f64 / self.topics.max(1) as f64
    }
}

/// One HTTP/1.1 connection kept alive across requests (hyper's client).
struct KeepAlive {
    sender: SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
}

impl KeepAlive {
    async fn connect(addr: SocketAddr) -> Result<KeepAlive, BenchError> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| BenchError::io(format!("connect to {addr}"), e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Daemon(format!("HTTP handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "HTTP connection ended");
            }
        });
        Ok(KeepAlive { sender, addr })
    }

    /// POSTs `path` and fails unless the answer is 200.
    async fn post(&mut self, path: &str) -> Result<(), BenchError> {
        let failed = |what: String| BenchError::Daemon(format!("POST {path}: {what}"));
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        if status != hyper::StatusCode::OK {
            return Err(failed(format!(
                "{status} {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(())
    }
}

fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    read_status(pid)
        .and_then(|s| parse_status_kib(&s, "VmRSS"))
        .ok_or_else(|| BenchError::Daemon(format!("cannot read /proc/{pid}/status")))
}

fn cpu_ticks(pid: u32) -> Result<u64, BenchError> {
    read_cpu_ticks(pid).ok_or_else(|| BenchError::Daemon(format!("cannot read /proc/{pid}/stat")))
}

/// Topics in `/stats` that have channel `c`.
fn served(http: SocketAddr) -> Result<usize, BenchError> {
    let (status, body) =
        http_request(http, "GET", "/stats?format=json&include_clients=false", b"")?;
    if status != 200 {
        return Err(BenchError::Daemon(format!("/stats answered {status}")));
    }
    let stats: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| BenchError::Daemon(format!("/stats is not JSON: {e}")))?;
    let topics = stats["topics"].as_array().map_or(&[][..], Vec::as_slice);
    Ok(topics
        .iter()
        .filter(|t| {
            t["channels"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["channel_name"] == "c"))
        })
        .count())
}

/// Measures one point: a fresh daemon, `topics` pairs, `idle` of idling.
pub async fn measure(
    binary: &Path,
    flags: &[String],
    topics: usize,
    idle: Duration,
) -> Result<ScaleRow, BenchError> {
    let mut daemon = ManagedDaemon::start(binary, flags)?;
    let pid = daemon.pid();
    let empty_rss_kib = rss_kib(pid)?;
    let mut client = KeepAlive::connect(daemon.http).await?;
    let started = Instant::now();
    for n in 0..topics {
        client
            .post(&format!("/topic/create?topic=scale{n}"))
            .await?;
        client
            .post(&format!("/channel/create?topic=scale{n}&channel=c"))
            .await?;
    }
    let create = started.elapsed();
    drop(client);
    tokio::time::sleep(SETTLE).await;
    let before = cpu_ticks(pid)?;
    tokio::time::sleep(idle).await;
    let ticks = cpu_ticks(pid)?.saturating_sub(before);
    let idle_cpu_percent =
        ticks as f64 / CLOCK_TICKS_PER_SEC as f64 / idle.as_secs_f64().max(1e-9) * 100.0;
    let rss_kib = rss_kib(pid)?;
    let (shutdown, restart) = tokio::task::block_in_place(|| daemon.restart(RESTART_BOUND))?;
    let served_after_restart = tokio::task::block_in_place(|| served(daemon.http))?;
    daemon.stop();
    Ok(ScaleRow {
        topics,
        create,
        idle_cpu_percent,
        rss_kib,
        empty_rss_kib,
        shutdown,
        restart,
        served_after_restart,
    })
}

/// The rows as a Markdown table.
pub fn table(rows: &[ScaleRow]) -> String {
    let mut out = String::from(
        "| topics+channels | create (pairs/s) | idle CPU (% of a core) | RSS (MiB) | RSS per pair (B) | shutdown (s) | restart (s) | served after restart |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.1} | {:.0} | {:.2} | {:.2} | {} |\n",
            r.topics,
            r.pairs_per_sec(),
            r.idle_cpu_percent,
            r.rss_kib as f64 / 1024.0,
            r.rss_per_pair(),
            r.shutdown.as_secs_f64(),
            r.restart.as_secs_f64(),
            r.served_after_restart,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_derive_rates_and_per_pair_memory() {
        let row = ScaleRow {
            topics: 1000,
            create: Duration::from_millis(500),
            idle_cpu_percent: 0.1,
            rss_kib: 10_000,
            empty_rss_kib: 6_000,
            shutdown: Duration::from_millis(20),
            restart: Duration::from_millis(30),
            served_after_restart: 1000,
        };
        assert_eq!(row.pairs_per_sec(), 2000.0);
        assert_eq!(row.rss_per_pair(), 4096.0);
        let t = table(&[row]);
        assert!(
            t.contains("| 1000 | 2000 | 0.10 | 9.8 | 4096 | 0.02 | 0.03 | 1000 |"),
            "{t}"
        );
    }
}
