//! The publishing side: one connection sending PUB or MPUB commands, each
//! body stamped with its send time, with up to a window of commands
//! waiting for their `OK`s in order (one, by default).
//!
//! Commands are encoded once per topic; before each send only the stamps
//! are rewritten in place, so the client spends its time on the socket, not
//! on building bodies. A writer stops at its deadline or its message bound,
//! whichever comes first, and every answer it waits for is bounded.

use std::collections::VecDeque;
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

/// Encodes the command for `topic` with `count` stamped bodies (PUB for
/// one, MPUB for more).
fn prepare(topic: &str, count: usize, body_size: usize) -> Result<Prepared, BenchError> {
    let body = Bytes::from(stamped_body(body_size, 0));
    let command = if count == 1 {
        Command::Pub {
            topic: topic.to_string(),
            body,
        }
    } else {
        Command::Mpub {
            topic: topic.to_string(),
            bodies: vec![body; count],
        }
    };
    let mut bytes = BytesMut::new();
    command.encode(&mut bytes);
    let stamps = stamp_offsets(&bytes);
    if stamps.len() != count {
        return Err(BenchError::Invalid(format!(
            "found {} stamps in a command of {count} bodies",
            stamps.len()
        )));
    }
    Ok(Prepared { bytes, stamps })
}

/// A writer's commands: one of `batch` bodies per topic, sent in turn, and
/// the shorter last one when its bound is not a whole number of batches
/// (so a writer bound to N messages publishes exactly N).
struct Commands {
    full: Vec<Prepared>,
    short: Option<Prepared>,
    next_topic: usize,
}

impl Commands {
    fn new(cfg: &WriterConfig) -> Result<Commands, BenchError> {
        let full = cfg
            .topics
            .iter()
            .map(|t| prepare(t, cfg.batch, cfg.body_size))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Commands {
            full,
            short: None,
            next_topic: 0,
        })
    }

    /// The next topic's command of `count` bodies (at most `cfg.batch`),
    /// its stamps set to now.
    fn next(&mut self, cfg: &WriterConfig, count: usize) -> Result<&[u8], BenchError> {
        let topic = self.next_topic;
        self.next_topic = (topic + 1) % self.full.len();
        let command = if count == cfg.batch {
            &mut self.full[topic]
        } else {
            self.short
                .insert(prepare(&cfg.topics[topic], count, cfg.body_size)?)
        };
        let now_ns = unix_now_ns();
        for &at in &command.stamps {
            write_stamp(&mut command.bytes[at..at + STAMP_LEN], now_ns);
        }
        Ok(&command.bytes)
    }
}

/// Publishes on a new connection to `addr` until `deadline` or
/// `cfg.max_msgs`, counting acknowledged messages into `progress`. Up to
/// `cfg.window` commands are in flight; with a rate, each is sent when the
/// pace says it is due (counted from `start`), so a late one is caught up.
pub async fn run_writer(
    addr: SocketAddr,
    cfg: &WriterConfig,
    start: Instant,
    deadline: Instant,
    progress: Arc<Progress>,
) -> Result<WriterOutcome, BenchError> {
    cfg.validate()?;
    let mut commands = Commands::new(cfg)?;
    let mut conn = ClientConnection::connect(addr).await?;
    if let Some(kind) = cfg.compression {
        conn.negotiate(kind).await?;
    }
    let batch = cfg.batch as u64;
    // Messages of each command sent and not yet acknowledged, oldest first.
    let mut in_flight: VecDeque<u64> = VecDeque::with_capacity(cfg.window);
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut last_ack = start;
    loop {
        // Send while the window, the deadline, the bound and the pace allow.
        while in_flight.len() < cfg.window && sent < cfg.max_msgs {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Some(rate) = cfg.rate_msgs_per_sec {
                let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                if due > now {
                    if !in_flight.is_empty() {
                        break;
                    }
                    tokio::time::sleep_until(due.min(deadline)).await;
                    continue;
                }
            }
            let count = (cfg.max_msgs - sent).min(batch);
            // `count` is at most `batch`, a usize.
            let bytes = commands.next(cfg, count as usize)?;
            conn.send(bytes).await?;
            sent += count;
            in_flight.push_back(count);
        }
        let Some(&count) = in_flight.front() else {
            if Instant::now() >= deadline || sent >= cfg.max_msgs {
                break;
            }
            continue;
        };
        let answer_by = Instant::now() + SETUP_TIMEOUT;
        match conn.next_frame(answer_by).await? {
            Some(Frame::Response(body)) if body.as_ref() == OK => {
                in_flight.pop_front();
                acked += count;
                progress.add_published(count);
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

#[cfg(test)]
mod tests;
