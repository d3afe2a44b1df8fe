//! The reading half of a connection: decode commands, check them against
//! the client's state as nsqd does, execute them, and hand replies to the
//! writer.
//!
//! Errors follow nsqd's rule: only `E_FIN_FAILED`, `E_REQ_FAILED` and
//! `E_TOUCH_FAILED` leave the connection open; every other error frame is
//! sent and then the connection is closed. Whatever one client sends, other
//! clients are unaffected: a session owns nothing shared but its own
//! subscription.
//!
//! IDENTIFY may upgrade the connection (TLS, then snappy or deflate); the
//! session performs the upgrade right after the IDENTIFY command, at that
//! exact point of the byte stream (see `stream.rs`). With
//! `--tls-required`, every command but IDENTIFY needs TLS first. With
//! `--auth-http-address`, PUB/MPUB/DPUB/SUB need a successful AUTH whose
//! authorizations cover them (see `auth.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rsq_channel::Channel;
use rsq_codec::{
    encode_error, encode_response, Command, CommandDecoder, ErrorCode, Limits, MessageId,
    ProtocolError, Verb, CLOSE_WAIT, OK,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::stream::{self, Source};
use super::tls::{tls_required, TlsRequired};
use super::writer::{self, Outbound};
use super::{negotiate, Negotiated, TlsConfig};
use crate::auth::{self, AuthRequest, AuthState};
use crate::client::{AuthIdentity, ClientInfo, ClientState};
use crate::context::Nsqd;
use rsq_compress::Compression;

/// Largest command line, as nsqd's 16 KiB read buffer.
const READ_BUFFER: usize = 16 * 1024;

struct Session {
    ctx: Arc<Nsqd>,
    info: Arc<ClientInfo>,
    settings: Negotiated,
    out: mpsc::UnboundedSender<Outbound>,
    channel: Option<(String, Arc<Channel>)>,
    tls_config: TlsConfig,
    /// What the last IDENTIFY granted, applied by the read loop.
    upgrade: Option<Upgrade>,
    /// Whether the connection runs over TLS.
    tls: bool,
    /// The AUTH secret and what it was last found to allow.
    auth: Option<(String, AuthState)>,
}

/// The upgrades an IDENTIFY granted.
struct Upgrade {
    tls: bool,
    compression: Option<Compression>,
}

/// Serves one TCP connection until the client leaves, breaks the protocol,
/// or the daemon shuts down.
pub async fn run(
    stream: TcpStream,
    addr: SocketAddr,
    ctx: Arc<Nsqd>,
    tls_config: TlsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let id = ctx.next_client_id();
    let info = Arc::new(ClientInfo::new(
        id,
        addr,
        ctx.clock.unix_nanos() / 1_000_000_000,
    ));
    ctx.register_client(info.clone());
    tracing::debug!(client = id, %addr, "TCP: new client");

    let (mut reader, write_half) = stream::split(stream);
    let settings = Negotiated::defaults(&ctx.opts);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = watch::channel(false);
    let busy = Arc::new(AtomicBool::new(false));
    let writer_task = tokio::spawn(writer::run(
        write_half,
        out_rx,
        settings.clone(),
        busy.clone(),
        done_tx,
    ));

    let mut session = Session {
        ctx: ctx.clone(),
        info: info.clone(),
        settings,
        out: out_tx,
        channel: None,
        tls_config,
        upgrade: None,
        tls: false,
        auth: None,
    };
    let limits = Limits {
        max_msg_size: ctx.opts.max_msg_size,
        max_body_size: ctx.opts.max_body_size,
        max_rdy_count: ctx.opts.max_rdy_count,
        max_req_timeout_ms: u64::try_from(ctx.opts.max_req_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let mut decoder = CommandDecoder::new(limits);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);

    'conn: loop {
        busy.store(true, Ordering::Release);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(cmd)) => {
                    if let Err(e) = session.exec(cmd).await {
                        session.send_error(&e);
                        if e.is_fatal() {
                            tracing::info!(client = id, error = %e, "TCP: closing client after fatal error");
                            break 'conn;
                        }
                    }
                    if let Some(upgrade) = session.upgrade.take() {
                        if let Err(e) = session.apply(upgrade, &mut reader, &mut buf).await {
                            tracing::info!(client = id, error = %e, "TCP: upgrade failed; closing client");
                            session.send_error(&ProtocolError::new(
                                ErrorCode::IdentifyFailed,
                                format!("IDENTIFY failed {e}"),
                            ));
                            break 'conn;
                        }
                    }
                }
                Ok(None) => {
                    busy.store(false, Ordering::Release);
                    let _ = session.out.send(Outbound::Flush);
                    break;
                }
                Err(e) => {
                    // nsqd checks the client's state before a command's
                    // parameters, so a state error wins over a parse error,
                    // and a RDY after CLS is ignored however it is written.
                    let e = match decoder.current_verb().filter(|_| !decoder.is_failed()) {
                        Some(verb) => match session.check_state(verb) {
                            Ok(Next::Ignore) => continue,
                            Ok(Next::Proceed) => e,
                            Err(state_err) => state_err,
                        },
                        None => e,
                    };
                    session.send_error(&e);
                    if e.is_fatal() {
                        tracing::info!(client = id, error = %e, "TCP: closing client after bad input");
                        break 'conn;
                    }
                }
            }
        }
        // nsqd's read deadline: a client that sends nothing for two
        // heartbeat intervals is gone.
        let deadline = session.settings.heartbeat_interval.map(|d| d * 2);
        let read = async {
            match deadline {
                Some(d) => tokio::time::timeout(d, reader.read_buf(&mut buf)).await,
                None => Ok(reader.read_buf(&mut buf).await),
            }
        };
        tokio::select! {
            r = read => match r {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(client = id, error = %e, "TCP: read failed");
                    break;
                }
                Err(_) => {
                    tracing::info!(client = id, "TCP: client missed heartbeats; closing");
                    break;
                }
            },
            _ = done_rx.changed() => break,
            _ = shutdown.changed() => break,
        }
    }

    let _ = session.out.send(Outbound::Close);
    if let Err(e) = writer_task.await {
        tracing::error!(client = id, error = %e, "writer task failed");
    }
    session.leave_channel().await;
    info.set_state(ClientState::Disconnected);
    ctx.unregister_client(id);
    tracing::debug!(client = id, "TCP: client gone");
}

fn state_error(verb: Verb) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Invalid,
        format!("cannot {} in current state", verb.as_str()),
    )
}

/// What the state check says about a command.
enum Next {
    /// Execute it.
    Proceed,
    /// Drop it silently (RDY after CLS).
    Ignore,
}

impl Session {
    fn send(&self, frame: BytesMut) {
        // A closed writer means the connection is going away; the reader
        // notices through `done` on its next turn.
        let _ = self.out.send(Outbound::Frame(frame.freeze()));
    }

    fn respond(&self, data: &[u8]) {
        let mut frame = BytesMut::with_capacity(8 + data.len());
        encode_response(data, &mut frame);
        self.send(frame);
    }

    fn send_error(&self, e: &ProtocolError) {
        let mut frame = BytesMut::new();
        encode_error(e, &mut frame);
        self.send(frame);
    }

    /// nsqd's per-command state rules.
    fn check_state(&self, verb: Verb) -> Result<Next, ProtocolError> {
        use ClientState::{Closing, Init, Subscribed};
        let state = self.info.state();
        let allowed = match verb {
            Verb::Identify | Verb::Auth | Verb::Sub => state == Init,
            Verb::Rdy if state == Closing => return Ok(Next::Ignore),
            Verb::Rdy | Verb::Cls => state == Subscribed,
            Verb::Fin | Verb::Req | Verb::Touch => matches!(state, Subscribed | Closing),
            Verb::Pub | Verb::Mpub | Verb::Dpub | Verb::Nop => true,
        };
        if allowed {
            Ok(Next::Proceed)
        } else {
            Err(state_error(verb))
        }
    }

    async fn exec(&mut self, cmd: Command) -> Result<(), ProtocolError> {
        let verb = cmd.verb();
        if verb != Verb::Identify && !self.tls && tls_required(&self.ctx.opts) > TlsRequired::No {
            return Err(ProtocolError::new(
                ErrorCode::Invalid,
                format!("cannot {} in current state (TLS required)", verb.as_str()),
            ));
        }
        if let Next::Ignore = self.check_state(verb)? {
            return Ok(());
        }
        match cmd {
            Command::Nop => Ok(()),
            Command::Identify(body) => self.identify(&body),
            Command::Auth(secret) => self.authenticate(&secret).await,
            Command::Sub { topic, channel } => self.sub(&topic, &channel).await,
            Command::Pub { topic, body } => {
                self.check_auth("PUB", &topic, "").await?;
                let msg = self.ctx.new_message(body);
                self.publish(&topic, vec![msg], ErrorCode::PubFailed, "PUB")
                    .await
            }
            Command::Mpub { topic, bodies } => {
                self.check_auth("MPUB", &topic, "").await?;
                let msgs = bodies
                    .into_iter()
                    .map(|b| self.ctx.new_message(b))
                    .collect();
                self.publish(&topic, msgs, ErrorCode::MpubFailed, "MPUB")
                    .await
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                self.check_auth("DPUB", &topic, "").await?;
                let mut msg = self.ctx.new_message(body);
                msg.deferred = Some(Duration::from_millis(defer_ms));
                self.publish(&topic, vec![msg], ErrorCode::DpubFailed, "DPUB")
                    .await
            }
            Command::Rdy(count) => {
                if let Some((_, chan)) = &self.channel {
                    chan.set_ready(self.info.id, count);
                }
                Ok(())
            }
            Command::Fin(id) => {
                let chan = self.consuming(Verb::Fin)?;
                chan.finish(self.info.id, &id)
                    .map_err(|e| failed(ErrorCode::FinFailed, "FIN", &id, e))
            }
            Command::Req { id, timeout_ms } => {
                let chan = self.consuming(Verb::Req)?;
                let max = self.ctx.opts.max_req_timeout;
                let mut delay = Duration::from_millis(timeout_ms);
                if delay > max {
                    tracing::info!(client = self.info.id, requested = ?delay, ?max, "REQ timeout clamped");
                    delay = max;
                }
                chan.requeue(self.info.id, &id, delay)
                    .map_err(|e| failed(ErrorCode::ReqFailed, "REQ", &id, e))
            }
            Command::Touch(id) => {
                let chan = self.consuming(Verb::Touch)?;
                chan.touch(self.info.id, &id)
                    .map_err(|e| failed(ErrorCode::TouchFailed, "TOUCH", &id, e))
            }
            Command::Cls => {
                if let Some((_, chan)) = &self.channel {
                    chan.set_ready(self.info.id, 0);
                }
                self.info.set_state(ClientState::Closing);
                self.respond(CLOSE_WAIT);
                Ok(())
            }
        }
    }

    /// The channel a FIN, REQ or TOUCH refers to, if the state allows one.
    fn consuming(&self, verb: Verb) -> Result<Arc<Channel>, ProtocolError> {
        match &self.channel {
            Some((_, chan)) => Ok(chan.clone()),
            None => Err(state_error(verb)),
        }
    }

    fn identify(&mut self, body: &[u8]) -> Result<(), ProtocolError> {
        let (req, negotiated, response) =
            negotiate(body, &self.ctx.opts, self.tls_config.is_some())?;
        let upgrade = response.as_ref().map_or(
            Upgrade {
                tls: false,
                compression: None,
            },
            |r| Upgrade {
                tls: r.tls_v1,
                compression: if r.snappy {
                    Some(Compression::Snappy)
                } else if r.deflate {
                    Some(Compression::Deflate(
                        u32::try_from(r.deflate_level).unwrap_or(6),
                    ))
                } else {
                    None
                },
            },
        );
        let transport = self.info.transport();
        let upgraded = transport.tls.is_some() || transport.snappy || transport.deflate;
        if upgraded && (upgrade.tls || upgrade.compression.is_some()) {
            return Err(ProtocolError::new(
                ErrorCode::IdentifyFailed,
                "IDENTIFY cannot upgrade a connection twice".to_string(),
            ));
        }
        {
            let mut identity = self.info.identity.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(client_id) = req.client_id.filter(|s| !s.is_empty()) {
                identity.client_id = client_id;
            }
            if let Some(hostname) = req.hostname.filter(|s| !s.is_empty()) {
                identity.hostname = hostname;
            }
            identity.user_agent = req.user_agent.unwrap_or_default();
            identity.sample_rate = negotiated.sample_rate;
        }
        self.settings = negotiated.clone();
        let _ = self.out.send(Outbound::Settings(negotiated));
        match response {
            Some(json) => {
                let body = serde_json::to_vec(&json).map_err(|e| {
                    ProtocolError::new(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}"))
                })?;
                self.respond(&body);
            }
            None => self.respond(OK),
        }
        if upgrade.tls || upgrade.compression.is_some() {
            self.upgrade = Some(upgrade);
        }
        Ok(())
    }

    /// Performs the upgrades IDENTIFY granted, at this point of the stream
    /// (the protocol is in `stream.rs`'s module doc). Errors are fatal.
    async fn apply(
        &mut self,
        upgrade: Upgrade,
        reader: &mut Source,
        buf: &mut BytesMut,
    ) -> std::io::Result<()> {
        let gone = || std::io::Error::other("connection closing");
        if upgrade.tls {
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
            let unread = buf.split().freeze();
            let (write, info) = reader.upgrade_tls(write, unread, config).await?;
            hand_back.send(write).map_err(|_| gone())?;
            tracing::debug!(client = self.info.id, version = %info.version, "TCP: TLS upgrade");
            self.info
                .transport
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .tls = Some(info);
            self.tls = true;
            self.respond(OK);
        }
        if let Some(kind) = upgrade.compression {
            reader.compress(kind, buf.split().freeze());
            self.out
                .send(Outbound::Compress(kind))
                .map_err(|_| gone())?;
            {
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
            self.respond(OK);
        }
        Ok(())
    }

    /// AUTH, as nsqd: once per connection, only when enabled.
    async fn authenticate(&mut self, secret: &[u8]) -> Result<(), ProtocolError> {
        if self.auth.is_some() {
            return Err(ProtocolError::new(
                ErrorCode::Invalid,
                "AUTH already set".to_string(),
            ));
        }
        if self.ctx.opts.auth_http_addresses.is_empty() {
            return Err(ProtocolError::new(
                ErrorCode::AuthDisabled,
                "AUTH disabled".to_string(),
            ));
        }
        let secret = String::from_utf8_lossy(secret).into_owned();
        let state = self.query_auth(&secret).await?;
        if state.authorizations.is_empty() {
            return Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                "AUTH no authorizations found".to_string(),
            ));
        }
        let body = serde_json::json!({
            "identity": state.identity,
            "identity_url": state.identity_url,
            "permission_count": state.authorizations.len(),
        });
        *self.info.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(AuthIdentity {
            identity: state.identity.clone(),
            identity_url: state.identity_url.clone(),
        });
        self.auth = Some((secret, state));
        self.respond(body.to_string().as_bytes());
        Ok(())
    }

    async fn query_auth(&self, secret: &str) -> Result<AuthState, ProtocolError> {
        let req = AuthRequest {
            remote_ip: self.info.remote_address.ip().to_string(),
            tls: self.tls,
            secret,
            common_name: "",
        };
        auth::query(&self.ctx.opts, &req).await.map_err(|e| {
            tracing::warn!(client = self.info.id, error = %e, "AUTH failed");
            ProtocolError::new(ErrorCode::AuthFailed, "AUTH failed".to_string())
        })
    }

    /// nsqd's `CheckAuth`: with AUTH enabled, `cmd` on `topic`/`channel`
    /// (`""` for publishing) must be authorized; expired authorizations are
    /// fetched again first.
    async fn check_auth(
        &mut self,
        cmd: &str,
        topic: &str,
        channel: &str,
    ) -> Result<(), ProtocolError> {
        if self.ctx.opts.auth_http_addresses.is_empty() {
            return Ok(());
        }
        let Some((secret, state)) = &self.auth else {
            return Err(ProtocolError::new(
                ErrorCode::AuthFirst,
                format!("AUTH required before {cmd}"),
            ));
        };
        if state.is_expired(Instant::now()) {
            let fresh = self.query_auth(secret).await?;
            if let Some((_, state)) = self.auth.as_mut() {
                *state = fresh;
            }
        }
        match &self.auth {
            Some((_, state)) if state.is_allowed(topic, channel) => Ok(()),
            _ => Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                format!("AUTH failed for {cmd} on {topic:?} {channel:?}"),
            )),
        }
    }

    async fn sub(&mut self, topic_name: &str, channel_name: &str) -> Result<(), ProtocolError> {
        if self.settings.heartbeat_interval.is_none() {
            return Err(ProtocolError::new(
                ErrorCode::Invalid,
                "cannot SUB with heartbeats disabled".to_string(),
            ));
        }
        self.check_auth("SUB", topic_name, channel_name).await?;
        let sub_failed = |e: &dyn std::fmt::Display| {
            ProtocolError::new(ErrorCode::SubFailed, format!("SUB failed {e}"))
        };
        let (_, handle) = self
            .ctx
            .get_or_create_channel(topic_name, channel_name)
            .await
            .map_err(|e| sub_failed(&e))?;
        let chan = handle.0.clone();
        let max = self.ctx.opts.max_channel_consumers;
        if max > 0 && chan.stats().client_count >= max as u64 {
            return Err(sub_failed(&format!(
                "consumers for {topic_name}:{channel_name} exceeds limit of {max}"
            )));
        }
        let consumer = chan
            .add_consumer(self.info.id, self.settings.msg_timeout)
            .map_err(|e| sub_failed(&e))?;
        self.info.set_state(ClientState::Subscribed);
        *self
            .info
            .subscription
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((topic_name.to_string(), chan.clone()));
        self.channel = Some((topic_name.to_string(), chan.clone()));
        self.respond(OK);
        let _ = self.out.send(Outbound::Subscribe {
            channel: chan,
            client: self.info.id,
            consumer,
        });
        Ok(())
    }

    async fn publish(
        &mut self,
        topic_name: &str,
        msgs: Vec<rsq_codec::Message>,
        code: ErrorCode,
        cmd: &str,
    ) -> Result<(), ProtocolError> {
        let n = msgs.len() as u64;
        self.ctx
            .publish(topic_name, msgs)
            .await
            .map_err(|e| ProtocolError::new(code, format!("{cmd} failed {e}")))?;
        self.info.count_published(topic_name, n);
        self.respond(OK);
        Ok(())
    }

    /// Leaves the subscribed channel, requeueing what this client held;
    /// an ephemeral channel left without consumers is deleted.
    async fn leave_channel(&mut self) {
        let Some((topic, chan)) = self.channel.take() else {
            return;
        };
        if chan.remove_consumer(self.info.id) {
            if let Err(e) = self.ctx.delete_channel(&topic, chan.name()).await {
                tracing::debug!(topic, channel = chan.name(), error = %e, "ephemeral channel already gone");
            }
        }
    }
}

fn failed(code: ErrorCode, cmd: &str, id: &MessageId, e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::new(code, format!("{cmd} {id} failed {e}"))
}
