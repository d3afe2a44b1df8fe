//! The writing half of a connection: frames from the session, messages from
//! the subscribed channel, heartbeats, and output buffering.
//!
//! Response and error frames are flushed at once. Message frames are
//! gathered: every message already delivered to the client is encoded into
//! one buffer (up to its output buffer size), and the buffer is written as
//! soon as nothing more is waiting, instead of nsqd's way of holding it until
//! the output buffer timeout unless the client's RDY window is full. Under
//! load, messages pile up while a write is under way and still leave in
//! large batches; at low rates a message leaves at once rather than after up
//! to 250 ms (`cargo xtask bench daemon`, scenario `latency`: p99 7.5 ms
//! with nsqd's policy, 0.15 ms with this one, same throughput elsewhere).
//!
//! The one wait: while the session is still working through a batch of
//! commands it read (say 500 FINs, each freeing a slot that is refilled at
//! once), the buffer waits for the end of the batch, which the session
//! announces with [`Outbound::Flush`]; otherwise that client would get one
//! write per FIN. The output buffer timeout bounds that wait.
//!
//! Sampling (`sample_rate` in IDENTIFY): nsqd drops a sampled-out message
//! before it goes in flight. In rsq a message reaching the writer is already
//! in flight for this client, so the writer finishes it on the client's
//! behalf instead of sending it: it leaves the channel as nsqd's does, and
//! it counts in the client's `message_count` and `finish_count`, which
//! nsqd's does not. Which messages are kept is rsq-protocol's `Sampler`,
//! seeded at random per subscription.
//!
//! Bytes leave through a [`Sink`], which compresses and encrypts once the
//! connection is upgraded; [`Outbound::Handoff`] lends the transport to the
//! reader for the TLS handshake (see `stream.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsq_channel::{Channel, Consumer};
use rsq_codec::{encode_message_frame, encode_response, HEARTBEAT};
use rsq_protocol::Sampler;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use super::stream::{Sink, WriteHalf};
use super::Negotiated;
use rsq_compress::Compression;

/// What the session asks the writer to do.
pub enum Outbound {
    /// An encoded frame to send and flush now.
    Frame(Bytes),
    /// New settings after IDENTIFY.
    Settings(Negotiated),
    /// Start sending messages from this channel subscription.
    Subscribe {
        /// The channel, asked whether the client can take more.
        channel: Arc<Channel>,
        /// The client's id in that channel.
        client: u64,
        /// The message stream.
        consumer: Consumer,
    },
    /// The session finished a batch of commands: send what it made ready.
    Flush,
    /// Send everything queued, hand the transport half over through `give`
    /// and wait for its upgraded replacement on `take` (TLS handshake).
    Handoff {
        /// Where the current half goes.
        give: oneshot::Sender<WriteHalf>,
        /// Where the upgraded half comes from; dropped means the upgrade failed.
        take: oneshot::Receiver<WriteHalf>,
    },
    /// Compress everything written from now on.
    Compress(Compression),
    /// Flush and stop.
    Close,
}

struct Subscription {
    channel: Arc<Channel>,
    client: u64,
    consumer: Consumer,
    /// The client's `sample_rate`, seeded at random per subscription.
    sampler: Sampler,
}

/// Runs until the session says Close, the socket fails, or the channel the
/// client consumes is deleted; then flushes and marks `done`.
pub async fn run(
    mut socket: Sink,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    mut settings: Negotiated,
    session_busy: Arc<AtomicBool>,
    done: watch::Sender<bool>,
) {
    let mut out = BytesMut::with_capacity(settings.output_buffer_size.max(4096));
    let mut sub: Option<Subscription> = None;
    let mut next_heartbeat = settings.heartbeat_interval.map(|d| Instant::now() + d);
    let mut flush_at: Option<Instant> = None;
    let far = Duration::from_secs(86400 * 365);
    loop {
        let heartbeat_at = next_heartbeat.unwrap_or_else(|| Instant::now() + far);
        let result: std::io::Result<bool> = tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(Outbound::Frame(frame)) => {
                    out.extend_from_slice(&frame);
                    flush_at = None;
                    flush(&mut socket, &mut out).await.map(|()| true)
                }
                Some(Outbound::Settings(new)) => {
                    next_heartbeat = new.heartbeat_interval.map(|d| Instant::now() + d);
                    settings = new;
                    Ok(true)
                }
                Some(Outbound::Subscribe { channel, client, consumer }) => {
                    let sampler = Sampler::new(settings.sample_rate, rand::random());
                    sub = Some(Subscription { channel, client, consumer, sampler });
                    Ok(true)
                }
                Some(Outbound::Handoff { give, take }) => {
                    flush_at = None;
                    match flush(&mut socket, &mut out).await {
                        Ok(()) if give.send(socket.take()).is_ok() => match take.await {
                            Ok(upgraded) => {
                                socket.put(upgraded);
                                Ok(true)
                            }
                            Err(_) => Ok(false),
                        },
                        Ok(()) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
                Some(Outbound::Compress(kind)) => {
                    flush_at = None;
                    let flushed = flush(&mut socket, &mut out).await;
                    socket.compress(kind);
                    flushed.map(|()| true)
                }
                Some(Outbound::Flush) => {
                    let mut written = Ok(true);
                    if let Some(s) = sub.as_mut() {
                        drain(s, &mut out, settings.output_buffer_size);
                        written = decide(&mut socket, &mut out, &settings, false, &mut flush_at).await;
                    }
                    written
                }
                Some(Outbound::Close) | None => Ok(false),
            },
            msg = recv(&mut sub) => match (msg, sub.as_mut()) {
                (Some(msg), Some(s)) => {
                    if s.sampled_in(&msg) {
                        encode_message_frame(&msg, &mut out);
                    }
                    drain(s, &mut out, settings.output_buffer_size);
                    let busy = session_busy.load(Ordering::Acquire);
                    decide(&mut socket, &mut out, &settings, busy, &mut flush_at).await
                }
                // The channel was deleted or closed: nsqd closes such clients.
                _ => Ok(false),
            },
            _ = sleep_until(heartbeat_at), if next_heartbeat.is_some() => {
                next_heartbeat = settings.heartbeat_interval.map(|d| Instant::now() + d);
                encode_response(HEARTBEAT, &mut out);
                flush_at = None;
                flush(&mut socket, &mut out).await.map(|()| true)
            },
            _ = sleep_until(flush_at.unwrap_or_else(|| Instant::now() + far)), if flush_at.is_some() => {
                flush_at = None;
                flush(&mut socket, &mut out).await.map(|()| true)
            },
        };
        match result {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::debug!(error = %e, "write failed; closing connection");
                break;
            }
        }
    }
    let _ = flush(&mut socket, &mut out).await;
    let _ = socket.shutdown().await;
    let _ = done.send(true);
}

async fn recv(sub: &mut Option<Subscription>) -> Option<rsq_codec::Message> {
    match sub {
        Some(s) => s.consumer.recv().await,
        None => std::future::pending().await,
    }
}

/// Moves every message already delivered to this consumer into `out`,
/// up to about one buffer's worth, so they leave in one write.
fn drain(sub: &mut Subscription, out: &mut BytesMut, limit: usize) {
    while out.len() < limit {
        match sub.consumer.try_recv() {
            Some(msg) if sub.sampled_in(&msg) => encode_message_frame(&msg, out),
            Some(_) => {}
            None => break,
        }
    }
}

impl Subscription {
    /// Whether the client's sample rate keeps `msg` ([`Sampler`]); a
    /// dropped message is finished for the client (module doc).
    fn sampled_in(&mut self, msg: &rsq_codec::Message) -> bool {
        if self.sampler.keep() {
            return true;
        }
        if let Err(e) = self.channel.finish(self.client, &msg.id) {
            tracing::debug!(client = self.client, error = %e, "sampled-out message already gone");
        }
        false
    }
}

/// Writes the gathered message frames now, unless the session is mid-batch
/// (it will send `Flush`) and the buffer has room; the output buffer timeout
/// bounds that wait.
async fn decide(
    socket: &mut Sink,
    out: &mut BytesMut,
    settings: &Negotiated,
    session_busy: bool,
    flush_at: &mut Option<Instant>,
) -> std::io::Result<bool> {
    if out.is_empty() {
        return Ok(true);
    }
    let full = out.len() >= settings.output_buffer_size;
    match settings.output_buffer_timeout {
        Some(timeout) if session_busy && !full => {
            flush_at.get_or_insert_with(|| Instant::now() + timeout);
            Ok(true)
        }
        _ => {
            *flush_at = None;
            flush(socket, out).await.map(|()| true)
        }
    }
}

async fn flush(socket: &mut Sink, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        socket.write_all(out).await?;
        out.clear();
    }
    Ok(())
}
