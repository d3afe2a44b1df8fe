//! The reading half of a connection: the thin driver around the V2 state
//! machine (`rsq_protocol::Connection`). It reads bytes into the machine, carries out
//! the machine's requests against the daemon (publish, subscribe, FIN, the
//! auth server, the TLS handshake) and hands frames to the writer.
//!
//! The protocol rules live in the machine, the read deadline among them
//! (`poll_timeout`/`handle_timeout`: two missed heartbeats); what lives
//! here is IO, sleeping until that deadline, and the daemon's shared
//! state: the subscription's channel and consumer, the client's `/stats` record, and
//! leaving the channel when the connection ends. Whatever one client sends,
//! other clients are unaffected: a session owns nothing shared but its own
//! subscription.
//!
//! The machine's requests are answered with its typed answers: the
//! daemon's `NsqdError` becomes a `Failure` (refused when
//! `is_refusal`), the channel's `ChannelError` a `SettleError`; the
//! machine writes nsqd's texts. Every `now` comes from the daemon's
//! `Clock` (`ctx.clock`), so under tokio's paused time, or a simulated
//! clock, the read deadline follows it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rsq_channel::{Channel, ChannelError, Consumer};
use rsq_codec::MessageId;
use rsq_compress::Compression;
use rsq_service::{PeerAddr, Stream};
use tokio::sync::{oneshot, watch};

use super::duplex;
use super::outbound::{self, OutboundTx};
use super::stream::{self, Source};
use super::writer::{self, Outbound, ReadBatch};
use super::{LazyTimer, Negotiated, TlsConfig};
use crate::NsqdError;
use crate::auth::AuthRequest;
use crate::client::{AuthIdentity, ClientInfo, ClientState};
use crate::nsqd::Nsqd;
use rsq_protocol::{Action, AuthState, Connection, Failure, ProtocolConfig, SettleError};

/// How long a closing connection's writer may take to write what is
/// queued before it is dropped.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// The daemon side of one connection.
struct Session {
    ctx: Arc<Nsqd>,
    info: Arc<ClientInfo>,
    out: OutboundTx,
    tls_config: TlsConfig,
    /// The subscribed channel and its topic's name.
    channel: Option<(String, Arc<Channel>)>,
    /// The consumer made by SUB, handed to the writer on
    /// [`Action::StartDelivery`].
    consumer: Option<Consumer>,
}

/// Whether the connection goes on after an action.
enum Flow {
    Continue,
    Close,
}

/// Serves one connection (TCP or unix socket) until the client leaves,
/// breaks the protocol, or the daemon shuts down.
pub async fn run(
    stream: Stream,
    addr: PeerAddr,
    ctx: Arc<Nsqd>,
    protocol: Arc<ProtocolConfig>,
    tls_config: TlsConfig,
    shutdown: watch::Receiver<bool>,
) {
    let id = ctx.next_client_id();
    let info = Arc::new(ClientInfo::new(
        id,
        addr,
        ctx.clock.unix_nanos() / 1_000_000_000,
    ));
    ctx.register_client(info.clone());
    tracing::debug!(client = id, %addr, "TCP: new client");

    let (reader, write_half) = stream::split(stream);
    let mut conn = Connection::new(protocol);
    conn.handle_read(ctx.clock.now());
    let (out_tx, out_rx) = outbound::outbound();
    let (done_tx, done_rx) = watch::channel(false);
    let batch = Arc::new(ReadBatch::default());
    let writer = writer::run(
        write_half,
        out_rx,
        conn.settings().clone(),
        ctx.clock.clone(),
        batch.clone(),
        done_tx,
    );
    let session = Session {
        ctx: ctx.clone(),
        info: info.clone(),
        out: out_tx,
        tls_config,
        channel: None,
        consumer: None,
    };
    let reader = session.serve(conn, reader, batch, done_rx, shutdown);
    // One task for both halves: an answer is written in the turn that
    // produced it, with no hand-off to another task (`duplex.rs`).
    let ended = duplex::run(reader, writer, CLOSE_LIMIT).await;
    if !ended.writer_finished {
        // A client that reads nothing left the writer blocked on its
        // socket: it was dropped mid-write. What it held is still in
        // flight, and leaving the channel requeues it.
        tracing::info!(
            client = id,
            "TCP: client reads nothing; closing without flushing"
        );
    }
    let mut session = ended.reader;
    session.leave_channel().await;
    info.set_state(ClientState::Disconnected);
    ctx.unregister_client(id);
    tracing::debug!(client = id, "TCP: client gone");
}

impl Session {
    /// The reading half: reads commands into the machine and carries out
    /// its actions until the client leaves, breaks the protocol, the
    /// writer ends or the daemon shuts down; then tells the writer to
    /// flush and stop, and returns itself for leaving the channel.
    async fn serve(
        mut self,
        mut conn: Connection,
        mut reader: Source,
        batch: Arc<ReadBatch>,
        mut done_rx: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Session {
        let id = self.info.id;
        let clock = self.ctx.clock.clone();
        let mut deadline = LazyTimer::default();
        // Made once: a watch's `changed` registers with the watch on its
        // first poll, and the shutdown watch is shared by every
        // connection, so one made per read would take that shared lock
        // twice per read.
        let stop = async {
            tokio::select! {
                _ = done_rx.changed() => {}
                _ = shutdown.changed() => {}
            }
        };
        tokio::pin!(stop);
        'conn: loop {
            batch.begin();
            while let Some(action) = conn.poll_action(clock.now()) {
                if let Flow::Close = self.perform(action, &mut conn, &mut reader).await {
                    break 'conn;
                }
            }
            if batch.end() {
                self.send(Outbound::Flush);
            }
            // A client that reads none of its answers: read no more of its
            // commands until the writer has caught up.
            if self.out.is_full() {
                tokio::select! {
                    () = self.out.drained() => {}
                    () = &mut stop => break,
                }
            }
            // The machine owns nsqd's read deadline; this only sleeps until it.
            deadline.arm(conn.poll_timeout());
            tokio::select! {
                r = reader.read_buf(conn.input()) => match r {
                    Ok(0) => break,
                    Ok(_) => conn.handle_read(clock.now()),
                    Err(e) => {
                        tracing::debug!(client = id, error = %e, "TCP: read failed");
                        break;
                    }
                },
                () = deadline.fired() => conn.handle_timeout(clock.now()),
                () = &mut stop => break,
            }
        }
        self.send(Outbound::Close);
        self
    }

    /// Carries out one action of the machine, answering it if it asks.
    async fn perform(
        &mut self,
        action: Action,
        conn: &mut Connection,
        reader: &mut Source,
    ) -> Flow {
        match action {
            Action::Send(frame) => self.send(Outbound::Frame(frame)),
            Action::State(state) => self.info.set_state(state),
            Action::Identified { request, settings } => self.identified(&request, settings),
            Action::StartTls { unread } => {
                let result = self.start_tls(reader, unread).await;
                conn.handle_upgraded(result.map_err(|e| Failure::Failed(e.to_string())));
            }
            Action::Compress { kind, unread } => {
                self.compress(reader, kind, unread);
                conn.handle_upgraded(Ok(()));
            }
            Action::Authenticate { secret, tls } => {
                let result = self.authenticate(&secret, tls).await;
                conn.handle_auth(result, self.ctx.clock.now());
            }
            Action::Authorized {
                identity,
                identity_url,
            } => self.authorized(identity, identity_url),
            Action::Publish {
                topic,
                bodies,
                defer,
            } => conn.handle_published(self.publish(&topic, bodies, defer).await),
            Action::Subscribe {
                topic,
                channel,
                msg_timeout,
            } => conn.handle_subscribed(self.subscribe(&topic, &channel, msg_timeout).await),
            Action::StartDelivery => self.start_delivery(),
            Action::Ready(count) => self.ready(count),
            Action::Finish(ids) => conn.handle_finished(self.finish(ids)),
            Action::Requeue(id, delay) => {
                conn.handle_settled(self.settle(&id, |c, client, id| c.requeue(client, id, delay)));
            }
            Action::Touch(id) => {
                conn.handle_settled(self.settle(&id, |c, client, id| c.touch(client, id)));
            }
            Action::Close => return Flow::Close,
        }
        Flow::Continue
    }

    /// Compression from here on: the reader switches at once (with the
    /// bytes it already read), the writer after what is queued.
    fn compress(&self, reader: &mut Source, kind: Compression, unread: Bytes) {
        reader.compress(kind, unread);
        self.send(Outbound::Compress(kind));
        let mut transport = self
            .info
            .transport
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match kind {
            Compression::Snappy => transport.snappy = true,
            Compression::Deflate(_) => transport.deflate = true,
        }
    }

    /// Asks the auth server about `secret` for this client.
    async fn authenticate(&self, secret: &str, tls: bool) -> Result<AuthState, String> {
        let common_name = self
            .info
            .transport()
            .tls
            .map(|t| t.common_name)
            .unwrap_or_default();
        let req = AuthRequest {
            // As nsqd: no IP for a unix socket client.
            remote_ip: self
                .info
                .remote_address
                .ip()
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            tls,
            secret,
            common_name: &common_name,
        };
        self.ctx.auth.query(&req).await.map_err(|e| e.to_string())
    }

    fn authorized(&self, identity: String, identity_url: String) {
        *self.info.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(AuthIdentity {
            identity,
            identity_url,
        });
    }

    /// PUB, MPUB or DPUB: stamps the bodies and hands them to the topic.
    async fn publish(
        &self,
        topic: &str,
        bodies: Vec<Bytes>,
        defer: Option<Duration>,
    ) -> Result<(), Failure> {
        let n = bodies.len() as u64;
        let mut msgs = self
            .ctx
            .new_messages(bodies)
            .await
            .map_err(|e| context_failure(&e))?;
        if defer.is_some() {
            msgs.iter_mut().for_each(|m| m.deferred = defer);
        }
        self.ctx
            .publish(topic, msgs)
            .await
            .map_err(|e| context_failure(&e))?;
        self.info.count_published(topic, n);
        Ok(())
    }

    /// After SUB's `OK`: the writer starts taking messages.
    fn start_delivery(&mut self) {
        if let (Some((_, channel)), Some(consumer)) = (&self.channel, self.consumer.take()) {
            self.send(Outbound::Subscribe {
                channel: channel.clone(),
                client: self.info.id,
                consumer,
            });
        }
    }

    fn ready(&self, count: u64) {
        if let Some((_, channel)) = &self.channel {
            channel.set_ready(self.info.id, count);
        }
    }

    /// A batch of FINs, under one channel lock; the failures, in order.
    fn finish(&self, ids: Vec<MessageId>) -> Vec<(MessageId, SettleError)> {
        match &self.channel {
            Some((topic, channel)) => {
                let failed = channel.finish_many(self.info.id, &ids);
                // A replicated topic's leader commits its FINs, so the
                // next leader does not deliver them again.
                if let Some(group) = self.ctx.replicated(topic) {
                    let done = ids
                        .iter()
                        .filter(|id| !failed.iter().any(|(f, _)| f == *id))
                        .copied()
                        .collect();
                    crate::cluster::finished(&group, channel.name(), done);
                }
                failed
                    .into_iter()
                    .map(|(id, e)| (id, settle_error(e)))
                    .collect()
            }
            None => ids
                .into_iter()
                .map(|id| (id, SettleError::NotSubscribed))
                .collect(),
        }
    }

    fn send(&self, outbound: Outbound) {
        // A closed writer means the connection is going away; the reader
        // notices through `done` on its next turn.
        let _ = self.out.send(outbound);
    }

    fn identified(&self, request: &super::IdentifyRequest, settings: Negotiated) {
        {
            let mut identity = self.info.identity.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(client_id) = request.client_id() {
                identity.client_id = client_id.to_string();
            }
            if let Some(hostname) = request.hostname() {
                identity.hostname = hostname.to_string();
            }
            identity.user_agent = request.user_agent().to_string();
            identity.sample_rate = settings.sample_rate;
        }
        self.send(Outbound::Settings(settings));
    }

    /// The TLS handshake, with the writer's half of the transport borrowed
    /// for it (the protocol is in `stream.rs`'s module doc).
    async fn start_tls(&self, reader: &mut Source, unread: Bytes) -> std::io::Result<()> {
        let gone = || std::io::Error::other("connection closing");
        let config = self
            .tls_config
            .clone()
            .ok_or_else(|| std::io::Error::other("TLS not configured"))?;
        let (give, taken) = oneshot::channel();
        let (hand_back, take) = oneshot::channel();
        self.out
            .send(Outbound::Handoff { give, take })
            .map_err(|_| gone())?;
        let write = taken.await.map_err(|_| gone())?;
        let (write, info) = reader.upgrade_tls(write, unread, config).await?;
        hand_back.send(write).map_err(|_| gone())?;
        tracing::debug!(client = self.info.id, version = %info.version, "TCP: TLS upgrade");
        self.info
            .transport
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tls = Some(info);
        Ok(())
    }

    /// SUB: joins the channel (creating it and its topic if needed) as a
    /// consumer that receives nothing until RDY.
    async fn subscribe(
        &mut self,
        topic: &str,
        channel: &str,
        msg_timeout: Duration,
    ) -> Result<(), Failure> {
        let (_, handle) = self
            .ctx
            .get_or_create_channel(topic, channel)
            .await
            .map_err(|e| context_failure(&e))?;
        let chan = handle.0.clone();
        // The channel checks --max-channel-consumers and adds under its one
        // lock; the text is nsqd's.
        let consumer = chan
            .add_consumer(self.info.id, msg_timeout)
            .map_err(|e| match e {
                ChannelError::TooManyConsumers { max } => Failure::Failed(format!(
                    "consumers for {topic}:{channel} exceeds limit of {max}"
                )),
                other => Failure::Failed(other.to_string()),
            })?;
        *self
            .info
            .subscription
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((topic.to_string(), chan.clone()));
        self.channel = Some((topic.to_string(), chan));
        self.consumer = Some(consumer);
        Ok(())
    }

    /// REQ or TOUCH on the subscribed channel.
    fn settle(
        &self,
        id: &MessageId,
        op: impl FnOnce(&Channel, u64, &MessageId) -> Result<(), ChannelError>,
    ) -> Result<(), SettleError> {
        match &self.channel {
            Some((_, channel)) => op(channel, self.info.id, id).map_err(settle_error),
            None => Err(SettleError::NotSubscribed),
        }
    }

    /// Leaves the subscribed channel, requeueing what this client held;
    /// an ephemeral channel left without consumers is deleted.
    async fn leave_channel(&mut self) {
        let Some((topic, chan)) = self.channel.take() else {
            return;
        };
        if chan.remove_consumer(self.info.id)
            && let Err(e) = self.ctx.delete_channel(&topic, chan.name()).await
        {
            tracing::debug!(topic, channel = chan.name(), error = %e, "ephemeral channel already gone");
        }
    }
}

/// The machine's answer for a publish or subscribe the daemon did not
/// carry out: draining and a full disk are refusals, anything else fails.
fn context_failure(e: &NsqdError) -> Failure {
    match e.is_refusal() {
        true => Failure::Refused(e.to_string()),
        false => Failure::Failed(e.to_string()),
    }
}

/// Why a channel did not settle a FIN, REQ or TOUCH, as the machine words
/// it. Settling fails only in the first three ways; anything else would
/// be a channel that cannot take the message back, which the client sees
/// as one closing.
fn settle_error(e: ChannelError) -> SettleError {
    match e {
        ChannelError::NotInFlight => SettleError::NotInFlight,
        ChannelError::NotOwner => SettleError::NotOwner,
        ChannelError::Exiting => SettleError::Exiting,
        other => {
            tracing::warn!(error = %other, "settling a message failed");
            SettleError::Exiting
        }
    }
}
