//! The publishing side: one connection sending PUB or MPUB commands, each
//! body stamped with its send time, waiting for each `OK` in order.
//!
//! Commands are encoded once per topic; before each send only the stamps
//! are rewritten in place, so the client spends its time on the socket, not
//! on building bodies. A writer stops at its deadline or its message bound,
//! whichever comes first, and every answer it waits for is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsq_codec::{Command, Frame, OK};
use tokio::time::Instant;

use crate::BenchError;
use crate::connection::{ClientConnection, SETUP_TIMEOUT};
use crate::latency::{STAMP_LEN, stamp_offsets, stamped_body, unix_now_ns, write_stamp};
use crate::progress::Progress;

/// How one writer connection publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Topics published to in turn, one command each.
    pub topics: Vec<String>,
    /// Messages per command: 1 sends PUB, more sends MPUB.
    pub batch: usize,
    /// Body size in bytes (at least [`STAMP_LEN`]).
    pub body_size: usize,
    /// Commands sent before waiting for the oldest `OK` (1 = synchronous,
    /// as `bench_writer` and a blocking producer do).
    pub window: usize,
    /// Target publish rate of this writer in msgs/s; `None` is as fast as
    /// the daemon answers.
    pub rate_msgs_per_sec: Option<u64>,
    /// Upper bound on messages this writer sends.
    pub max_msgs: u64,
    /// snappy or deflate, negotiated in IDENTIFY; `None` for plain bytes.
    pub compression: Option<rsq_compress::Compression>,
}

impl WriterConfig {
    /// A synchronous, unthrottled writer to one topic.
    pub fn new(topic: impl Into<String>, batch: usize, body_size: usize) -> WriterConfig {
        WriterConfig {
            topics: vec![topic.into()],
            batch,
            body_size,
            window: 1,
            rate_msgs_per_sec: None,
            max_msgs: 100_000_000,
            compression: None,
        }
    }

    /// Checks the settings a run depends on.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.topics.is_empty() {
            return Err(BenchError::Invalid("a writer needs a topic".into()));
        }
        if self.batch == 0 || self.window == 0 {
            return Err(BenchError::Invalid(
                "batch and window must be at least 1".into(),
            ));
        }
        if self.body_size < STAMP_LEN {
            return Err(BenchError::Invalid(format!(
                "message size must be at least {STAMP_LEN} bytes (the latency stamp)"
            )));
        }
        if self.rate_msgs_per_sec == Some(0) {
            return Err(BenchError::Invalid("a rate must be positive".into()));
        }
        Ok(())
    }
}

/// What one writer achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterOutcome {
    /// Messages the daemon acknowledged.
    pub published: u64,
    /// From the start to the last acknowledgement.
    pub elapsed: Duration,
}

/// One encoded command and where its stamps are.
struct Prepared {
    bytes: BytesMut,
    stamps: Vec<usize>,
}

/// Encodes the command for `topic` with `cfg.batch` stamped bodies.
fn prepare(topic: &str, cfg: &WriterConfig) -> Result<Prepared, BenchError> {
    let body = Bytes::from(stamped_body(cfg.body_size, 0));
    let command = if cfg.batch == 1 {
        Command::Pub {
            topic: topic.to_string(),
            body,
        }
    } else {
        Command::Mpub {
            topic: topic.to_string(),
            bodies: vec![body; cfg.batch],
        }
    };
    let mut bytes = BytesMut::new();
    command.encode(&mut bytes);
    let stamps = stamp_offsets(&bytes);
    if stamps.len() != cfg.batch {
        return Err(BenchError::Invalid(format!(
            "found {} stamps in a command of {} bodies",
            stamps.len(),
            cfg.batch
        )));
    }
    Ok(Prepared { bytes, stamps })
}

/// Publishes on a new connection to `addr` until `deadline` or
/// `cfg.max_msgs`, counting acknowledged messages into `progress`.
pub async fn run_writer(
    addr: SocketAddr,
    cfg: &WriterConfig,
    start: Instant,
    deadline: Instant,
    progress: Arc<Progress>,
) -> Result<WriterOutcome, BenchError> {
    cfg.validate()?;
    let mut prepared = cfg
        .topics
        .iter()
        .map(|t| prepare(t, cfg))
        .collect::<Result<Vec<_>, _>>()?;
    let mut conn = ClientConnection::connect(addr).await?;
    if let Some(kind) = cfg.compression {
        conn.negotiate(kind).await?;
    }
    let batch = cfg.batch as u64;
    let mut next_topic = 0;
    let (mut sent, mut acked, mut outstanding) = (0u64, 0u64, 0usize);
    let mut last_ack = start;
    loop {
        // Send while the window, the deadline, the bound and the pace allow.
        while outstanding < cfg.window && sent + batch <= cfg.max_msgs {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Some(rate) = cfg.rate_msgs_per_sec {
                let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                if due > now {
                    if outstanding > 0 {
                        break;
                    }
                    tokio::time::sleep_until(due.min(deadline)).await;
                    continue;
                }
            }
            let command = &mut prepared[next_topic];
            let now_ns = unix_now_ns();
            for &at in &command.stamps {
                write_stamp(&mut command.bytes[at..at + STAMP_LEN], now_ns);
            }
            conn.send(&command.bytes).await?;
            next_topic = (next_topic + 1) % prepared.len();
            sent += batch;
            outstanding += 1;
        }
        if outstanding == 0 {
            if Instant::now() >= deadline || sent + batch > cfg.max_msgs {
                break;
            }
            continue;
        }
        let answer_by = Instant::now() + SETUP_TIMEOUT;
        match conn.next_frame(answer_by).await? {
            Some(Frame::Response(body)) if body.as_ref() == OK => {
                outstanding -= 1;
                acked += batch;
                progress.add_published(batch);
                last_ack = Instant::now();
            }
            Some(frame) => return Err(conn.unexpected(&frame)),
            None => return Err(BenchError::Timeout("a publish acknowledgement".into())),
        }
    }
    Ok(WriterOutcome {
        published: acked,
        elapsed: last_ack.saturating_duration_since(start),
    })
}
