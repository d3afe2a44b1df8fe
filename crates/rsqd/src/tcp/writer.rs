//! The writing half of a connection: frames from the session, messages from
//! the subscribed channel, heartbeats, and output buffering.
//!
//! Response and error frames are flushed at once; message frames are
//! buffered and flushed when the buffer reaches the client's output buffer
//! size, when its output buffer timeout passes, or as soon as the client
//! cannot take more messages (its in-flight count reached its RDY), as nsqd
//! does — so a batch goes out in one write, and a client with RDY 1 never
//! waits for a timer.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsq_channel::{Channel, Consumer};
use rsq_codec::{encode_message_frame, encode_response, HEARTBEAT};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use super::Negotiated;

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
    /// Flush and stop.
    Close,
}

struct Subscription {
    channel: Arc<Channel>,
    client: u64,
    consumer: Consumer,
}

/// Runs until the session says Close, the socket fails, or the channel the
/// client consumes is deleted; then flushes and marks `done`.
pub async fn run(
    mut socket: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    mut settings: Negotiated,
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
                    sub = Some(Subscription { channel, client, consumer });
                    Ok(true)
                }
                Some(Outbound::Close) | None => Ok(false),
            },
            msg = recv(&mut sub) => match msg {
                Some(msg) => {
                    encode_message_frame(&msg, &mut out);
                    buffered_message(&mut socket, &mut out, &settings, sub.as_ref(), &mut flush_at).await
                }
                // The channel was deleted or closed: nsqd closes such clients.
                None => Ok(false),
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

/// Decides when a buffered message frame goes out.
async fn buffered_message(
    socket: &mut OwnedWriteHalf,
    out: &mut BytesMut,
    settings: &Negotiated,
    sub: Option<&Subscription>,
    flush_at: &mut Option<Instant>,
) -> std::io::Result<bool> {
    let ready = sub.is_some_and(|s| s.channel.consumer_ready(s.client));
    let full = out.len() >= settings.output_buffer_size;
    match settings.output_buffer_timeout {
        Some(timeout) if ready && !full => {
            flush_at.get_or_insert_with(|| Instant::now() + timeout);
            Ok(true)
        }
        _ => {
            *flush_at = None;
            flush(socket, out).await.map(|()| true)
        }
    }
}

async fn flush(socket: &mut OwnedWriteHalf, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        socket.write_all(out).await?;
        out.clear();
    }
    Ok(())
}
