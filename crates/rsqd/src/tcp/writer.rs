//! The writing half of a connection: the thin driver around the outbound
//! machine (`rsq_protocol::Output`). It carries frames from the session
//! and messages from the subscribed channel into the machine, writes the
//! buffer whenever the machine says so, and sleeps until the machine's
//! next timeout (heartbeat or held batch). When bytes leave, and which
//! messages sampling keeps, is the machine's (see its module doc); what
//! lives here is the socket, the channel subscription, and finishing
//! sampled-out messages on the client's behalf. Its instants come from
//! the daemon's `Clock`, as the session's do, so heartbeats follow paused
//! or simulated time.
//!
//! Bytes leave through a [`Sink`], which compresses and encrypts once the
//! connection is upgraded; [`Outbound::Handoff`] lends the transport to the
//! reader for the TLS handshake (see `stream.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use bytes::{Bytes, BytesMut};
use rsq_channel::{Channel, Clock, Consumer};
use rsq_codec::Message;
use rsq_compress::Compression;
use rsq_protocol::{Delivery, Output};
use tokio::sync::{oneshot, watch};

use super::outbound::OutboundRx;
use super::stream::{Sink, WriteHalf};
use super::{LazyTimer, Negotiated};

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
    /// The session finished a batch of commands while the writer held
    /// messages for it ([`ReadBatch`]): send them.
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

/// The handshake between the halves about the reader's batches of
/// commands. While the reader works through one, delivered messages wait
/// for its end (rsq-protocol's `Output` module doc); it then wakes the
/// writer with [`Outbound::Flush`], but only if the writer said it holds
/// messages, so a consumer's batch of FINs costs no writer wake-up.
///
/// Why no wait is missed: the writer marks `held` and then reads `busy`;
/// the reader clears `busy` and then takes `held`. In the single order of
/// these `SeqCst` operations, either the writer sees the batch over and
/// sends at once, or the reader sees `held` and sends the flush (both may
/// happen; the second finds nothing to do).
#[derive(Debug, Default)]
pub struct ReadBatch {
    busy: AtomicBool,
    held: AtomicBool,
}

impl ReadBatch {
    /// Reader: a batch of commands begins.
    pub fn begin(&self) {
        self.busy.store(true, SeqCst);
    }

    /// Reader: the batch is over; true when the writer holds messages
    /// for it and must be sent [`Outbound::Flush`].
    pub fn end(&self) -> bool {
        self.busy.store(false, SeqCst);
        self.held.swap(false, SeqCst)
    }

    /// Writer: whether the reader is mid-batch.
    fn busy(&self) -> bool {
        self.busy.load(SeqCst)
    }

    /// Writer: it holds messages until the batch's end; false when the
    /// batch is already over, and they must leave now.
    fn hold(&self) -> bool {
        self.held.store(true, SeqCst);
        self.busy.load(SeqCst)
    }
}

struct Subscription {
    channel: Arc<Channel>,
    client: u64,
    consumer: Consumer,
}

/// Runs until the session says Close, the socket fails, or the channel the
/// client consumes is deleted; then flushes and marks `done`.
pub async fn run(
    mut socket: Sink,
    mut rx: OutboundRx,
    settings: Negotiated,
    clock: Arc<dyn Clock>,
    batch: Arc<ReadBatch>,
    done: watch::Sender<bool>,
) {
    let mut out = BytesMut::with_capacity(settings.output_buffer_size.max(4096));
    // Sampling draws from a seed per connection (rsq-protocol's `Sampler`).
    let mut output = Output::new(settings, rand::random(), clock.now());
    let mut sub: Option<Subscription> = None;
    let mut timer = LazyTimer::default();
    loop {
        timer.arm(output.poll_timeout());
        let result: std::io::Result<bool> = tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(Outbound::Frame(frame)) => {
                    gather_frames(&frame, &mut rx, &mut output, &mut out);
                    Ok(true)
                }
                Some(Outbound::Settings(new)) => {
                    output.handle_settings(new, clock.now());
                    Ok(true)
                }
                Some(Outbound::Subscribe { channel, client, consumer }) => {
                    sub = Some(Subscription { channel, client, consumer });
                    Ok(true)
                }
                Some(Outbound::Flush) => {
                    if let Some(s) = sub.as_mut() {
                        s.drain(&mut output, &mut out);
                    }
                    output.handle_input_idle(&out);
                    Ok(true)
                }
                Some(Outbound::Handoff { give, take }) => {
                    output.handle_flush();
                    match transmit(&mut output, &mut socket, &mut out).await {
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
                    output.handle_flush();
                    let flushed = transmit(&mut output, &mut socket, &mut out).await;
                    socket.compress(kind);
                    flushed.map(|()| true)
                }
                Some(Outbound::Close) | None => Ok(false),
            },
            msg = recv(&mut sub) => match (msg, sub.as_mut()) {
                (Some(msg), Some(s)) => {
                    s.deliver(&msg, &mut output, &mut out);
                    s.drain(&mut output, &mut out);
                    output.handle_delivered(clock.now(), batch.busy(), &out);
                    Ok(true)
                }
                // The channel was deleted or closed: nsqd closes such clients.
                _ => Ok(false),
            },
            () = timer.fired() => {
                output.handle_timeout(clock.now());
                Ok(true)
            },
        };
        let written = match result {
            Ok(true) => transmit(&mut output, &mut socket, &mut out).await,
            Ok(false) => break,
            Err(e) => Err(e),
        };
        // Bytes left unwritten are held for the reader's batch: tell it,
        // unless that batch has already ended.
        let written = match written {
            Ok(()) if !out.is_empty() && !batch.hold() => {
                output.handle_input_idle(&out);
                transmit(&mut output, &mut socket, &mut out).await
            }
            other => other,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "write failed; closing connection");
            break;
        }
    }
    output.handle_flush();
    let _ = transmit(&mut output, &mut socket, &mut out).await;
    let _ = socket.shutdown().await;
    let _ = done.send(true);
}

/// Encodes `first` and every frame queued behind it, so the answers to
/// one read's commands leave in one write, not one each.
fn gather_frames(first: &[u8], rx: &mut OutboundRx, output: &mut Output, out: &mut BytesMut) {
    output.handle_frame(first, out);
    while let Some(frame) = rx.try_frame() {
        output.handle_frame(&frame, out);
    }
}

async fn recv(sub: &mut Option<Subscription>) -> Option<Message> {
    match sub {
        Some(s) => s.consumer.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes `out` whole if the machine says it is due.
async fn transmit(
    output: &mut Output,
    socket: &mut Sink,
    out: &mut BytesMut,
) -> std::io::Result<()> {
    if output.poll_transmit(out) {
        socket.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

impl Subscription {
    /// Hands `msg` to the machine; one that sampling drops is finished
    /// for the client (rsq-protocol's `Output` module doc).
    fn deliver(&self, msg: &Message, output: &mut Output, out: &mut BytesMut) {
        if output.handle_message(msg, out) == Delivery::SampledOut
            && let Err(e) = self.channel.finish(self.client, &msg.id)
        {
            tracing::debug!(client = self.client, error = %e, "sampled-out message already gone");
        }
    }

    /// Moves every message already delivered to this consumer into `out`,
    /// up to one output buffer's worth, so they leave in one write.
    fn drain(&mut self, output: &mut Output, out: &mut BytesMut) {
        while output.has_room(out) {
            match self.consumer.try_recv() {
                Some(msg) => self.deliver(&msg, output, out),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadBatch;

    #[test]
    fn a_hold_during_a_batch_is_flushed_by_its_end() {
        let batch = ReadBatch::default();
        batch.begin();
        assert!(batch.busy());
        assert!(batch.hold(), "mid-batch: the writer waits");
        assert!(batch.end(), "the reader owes the writer a flush");
        assert!(!batch.end(), "one flush per hold");
    }

    #[test]
    fn a_batch_without_a_hold_needs_no_flush() {
        let batch = ReadBatch::default();
        batch.begin();
        assert!(!batch.end());
        assert!(!batch.busy());
        assert!(!batch.hold(), "after the batch: the writer sends at once");
    }
}
