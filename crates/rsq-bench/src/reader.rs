//! The consuming side: one connection subscribed to a channel with a RDY
//! count, finishing every message and recording its end-to-end delay.
//!
//! FINs for everything decoded from one read are sent in one write, as a
//! real client batching its acknowledgements would. A reader stops when the
//! phase's readers together have everything they wait for, or at its hard
//! deadline; it checks the first every `check_interval`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rsq_codec::{Command, Frame};
use tokio::time::Instant;

use crate::BenchError;
use crate::connection::ClientConnection;
use crate::latency::{LatencyRecorder, unix_now_ns};
use crate::progress::Progress;

/// How one reader connection consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Topic subscribed to.
    pub topic: String,
    /// Channel subscribed to.
    pub channel: String,
    /// RDY count sent after subscribing (`bench_reader` uses 2500).
    pub rdy: u64,
    /// How often a waiting reader checks whether the phase is over.
    pub check_interval: Duration,
    /// snappy or deflate, negotiated in IDENTIFY; `None` for plain bytes.
    pub compression: Option<rsq_compress::Compression>,
}

impl ReaderConfig {
    /// A reader of `topic`/`channel` with RDY `rdy`.
    pub fn new(topic: impl Into<String>, channel: impl Into<String>, rdy: u64) -> ReaderConfig {
        ReaderConfig {
            topic: topic.into(),
            channel: channel.into(),
            rdy,
            check_interval: Duration::from_millis(100),
            compression: None,
        }
    }
}

/// What one reader received.
#[derive(Debug, Clone, Default)]
pub struct ReaderOutcome {
    /// Messages received (and finished).
    pub consumed: u64,
    /// From the start to the last message received.
    pub elapsed: Duration,
    /// End-to-end delays of stamped messages.
    pub latency: LatencyRecorder,
}

/// A connection that has subscribed and is ready to consume.
pub struct Subscriber {
    conn: ClientConnection,
    cfg: ReaderConfig,
}

impl Subscriber {
    /// Connects to `addr` and subscribes (waiting for `OK`); sends no RDY yet,
    /// so nothing flows until [`Subscriber::run`].
    pub async fn subscribe(addr: SocketAddr, cfg: ReaderConfig) -> Result<Subscriber, BenchError> {
        let mut conn = ClientConnection::connect(addr).await?;
        if let Some(kind) = cfg.compression {
            conn.negotiate(kind).await?;
        }
        conn.request_ok(&Command::Sub {
            topic: cfg.topic.clone(),
            channel: cfg.channel.clone(),
        })
        .await?;
        Ok(Subscriber { conn, cfg })
    }

    /// Sends RDY and consumes until `progress` says the phase's readers are
    /// done or `hard_deadline` passes. Time is measured from `start`.
    pub async fn run(
        mut self,
        start: Instant,
        hard_deadline: Instant,
        progress: Arc<Progress>,
    ) -> Result<ReaderOutcome, BenchError> {
        let conn = &mut self.conn;
        conn.send_command(&Command::Rdy(self.cfg.rdy)).await?;
        let mut outcome = ReaderOutcome::default();
        let mut fins = BytesMut::with_capacity(64 * 1024);
        let mut last_message = None;
        loop {
            let now = Instant::now();
            if now >= hard_deadline || progress.consume_done() {
                break;
            }
            let wait_until = (now + self.cfg.check_interval).min(hard_deadline);
            if !conn.fill(wait_until).await? {
                continue;
            }
            let received_ns = unix_now_ns();
            let mut got = 0u64;
            while let Some(frame) = conn.try_frame()? {
                match frame {
                    Frame::Message(msg) => {
                        outcome.latency.record_body(&msg.body, received_ns);
                        Command::Fin(msg.id).encode(&mut fins);
                        got += 1;
                    }
                    other => {
                        if !conn.answer_heartbeat(&other).await? {
                            return Err(conn.unexpected(&other));
                        }
                    }
                }
            }
            if !fins.is_empty() {
                conn.send(&fins).await?;
                fins.clear();
            }
            if got > 0 {
                outcome.consumed += got;
                progress.add_consumed(got);
                last_message = Some(Instant::now());
            }
        }
        outcome.elapsed =
            last_message.map_or(Duration::ZERO, |t| t.saturating_duration_since(start));
        Ok(outcome)
    }
}
