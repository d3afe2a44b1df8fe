//! Protocol V2 for one TCP connection, as a state machine with no IO.
//!
//! The driver (rsqd's `tcp/session.rs`) puts the bytes it reads into [`Connection::input`]
//! and takes [`Action`]s from [`Connection::poll_action`]: frames to send,
//! and requests (publish, subscribe, FIN, AUTH, TLS...) that need the daemon
//! or the network. A request is answered with [`Connection::handle_done`] or
//! [`Connection::handle_auth`]; until then the connection decodes nothing
//! more, so replies leave in command order, as nsqd's do, and the bytes
//! after an IDENTIFY that upgrades the connection are never read as
//! commands. Time comes in as `now` (only AUTH expiry uses it).
//!
//! What lives here is everything nsqd decides from the bytes alone: the
//! command grammar (through `rsq-codec`), the client state rules, which
//! errors are fatal, IDENTIFY negotiation, the TLS-required and AUTH gates,
//! REQ clamping. Because it does no IO, a property test (`tests.rs` beside
//! this file) and a fuzz target drive it with arbitrary input and a
//! scripted daemon, and check nsqd's rules on every step.
//!
//! Errors follow nsqd's rule: only `E_FIN_FAILED`, `E_REQ_FAILED` and
//! `E_TOUCH_FAILED` leave the connection open; every other error frame is
//! followed by [`Action::Close`] and nothing else.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rsq_codec::{
    CLOSE_WAIT, Command, CommandDecoder, ErrorCode, Limits, MessageId, OK, ProtocolError, Verb,
    encode_error, encode_response,
};
use rsq_compress::Compression;

use crate::identify::{IdentifyRequest, Negotiated, negotiate};
use crate::{AuthState, ClientState, ProtocolConfig, TlsRequired};

/// What the connection asks of its driver, in the order it must happen.
#[derive(Debug)]
pub enum Action {
    /// Send this encoded frame (a response or an error).
    Send(Bytes),
    /// The client's protocol state changed (for `/stats`).
    State(ClientState),
    /// IDENTIFY succeeded: record the identity and hand the settings to the
    /// writer. The answer follows as [`Action::Send`].
    Identified {
        /// The client's IDENTIFY body.
        request: IdentifyRequest,
        /// The settings the connection now runs with.
        settings: Negotiated,
    },
    /// Run the TLS handshake; `unread` are bytes already read after
    /// IDENTIFY, the start of the handshake. Answer with `handle_done`.
    StartTls {
        /// Bytes read past IDENTIFY.
        unread: Bytes,
    },
    /// Compress both directions from here; `unread` are bytes already read
    /// after IDENTIFY, compressed ones. Answer with `handle_done`.
    Compress {
        /// The negotiated compression.
        kind: Compression,
        /// Bytes read past IDENTIFY (or past the TLS handshake).
        unread: Bytes,
    },
    /// Ask the auth server about `secret`. Answer with `handle_auth`.
    Authenticate {
        /// The client's secret.
        secret: String,
        /// Whether the connection runs over TLS.
        tls: bool,
    },
    /// AUTH succeeded: record who the client is.
    Authorized {
        /// The identity the auth server gave.
        identity: String,
        /// A URL about it.
        identity_url: String,
    },
    /// Publish these bodies to `topic`, with `defer` for DPUB. Answer with
    /// `handle_done`; the error text goes into `E_PUB_FAILED` and friends.
    Publish {
        /// A valid topic name.
        topic: String,
        /// One body for PUB and DPUB, one or more for MPUB.
        bodies: Vec<Bytes>,
        /// DPUB's deferral.
        defer: Option<Duration>,
    },
    /// Subscribe to `topic`/`channel` with this in-flight timeout, but do
    /// not deliver yet. Answer with `handle_done`.
    Subscribe {
        /// A valid topic name.
        topic: String,
        /// A valid channel name.
        channel: String,
        /// The client's negotiated message timeout.
        msg_timeout: Duration,
    },
    /// Start delivering from the subscription (after SUB's `OK` is sent).
    StartDelivery,
    /// Set the client's RDY count.
    Ready(u64),
    /// FIN these messages, in order: every FIN decoded in a row, so the
    /// daemon settles them under one lock. Not a request: decoding goes on
    /// while it waits, and `handle_finished` reports the failures.
    Finish(Vec<MessageId>),
    /// REQ a message with this (clamped) delay. Answer with `handle_done`.
    Requeue(MessageId, Duration),
    /// TOUCH a message. Answer with `handle_done`.
    Touch(MessageId),
    /// A fatal error was sent: flush and close. Nothing follows.
    Close,
}

impl Action {
    /// Whether this is a request: the connection decodes nothing more until
    /// the driver answers it (`handle_done`, or `handle_auth` for
    /// [`Action::Authenticate`]). FIN batches are not requests.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Action::Publish { .. }
                | Action::Subscribe { .. }
                | Action::Requeue(..)
                | Action::Touch(_)
                | Action::StartTls { .. }
                | Action::Compress { .. }
                | Action::Authenticate { .. }
        )
    }
}

/// The request the driver is carrying out; nothing is decoded until it
/// completes.
#[derive(Debug)]
enum Pending {
    Publish(Verb),
    Subscribe,
    Settle(Verb, MessageId),
    Tls {
        then: Option<Compression>,
    },
    Compress,
    /// AUTH with this secret, or a refresh of expired authorizations before
    /// running the command.
    Auth(AuthWait),
}

/// Why the connection asked the auth server.
#[derive(Debug)]
enum AuthWait {
    /// The client sent AUTH with this secret.
    Login(String),
    /// The authorizations expired; run this command once they are back.
    Refresh(Command),
}

/// What the AUTH gate says about a command.
enum Gate {
    Open,
    /// The authorizations expired: ask again, then retry.
    Refresh,
}

/// One V2 connection's protocol state.
pub struct Connection {
    config: Arc<ProtocolConfig>,
    decoder: CommandDecoder,
    input: BytesMut,
    state: ClientState,
    settings: Negotiated,
    tls: bool,
    compressed: bool,
    /// The AUTH secret and what it was last found to allow.
    auth: Option<(String, AuthState)>,
    pending: Option<Pending>,
    actions: VecDeque<Action>,
    closed: bool,
    /// When the driver last read from the socket; the read deadline runs
    /// from here.
    last_read: Option<Instant>,
}

/// Largest command line, as nsqd's 16 KiB read buffer.
const READ_BUFFER: usize = 16 * 1024;

/// Most FINs gathered into one [`Action::Finish`]: about two read buffers
/// of 21-byte FIN lines, so a batch never waits on more input than one
/// read brings.
const MAX_FIN_BATCH: usize = 1024;

/// A FIN on the wire: `FIN `, the 16-byte id, the newline.
const FIN_LINE: usize = 21;

impl Connection {
    /// A connection that was just accepted, under the daemon's settings.
    pub fn new(config: Arc<ProtocolConfig>) -> Self {
        let limits = Limits {
            max_msg_size: config.max_msg_size,
            max_body_size: config.max_body_size,
            max_rdy_count: config.max_rdy_count,
            max_req_timeout_ms: u64::try_from(config.max_req_timeout.as_millis())
                .unwrap_or(u64::MAX),
        };
        Connection {
            settings: Negotiated::defaults(&config),
            config,
            decoder: CommandDecoder::new(limits),
            input: BytesMut::with_capacity(READ_BUFFER),
            state: ClientState::Init,
            tls: false,
            compressed: false,
            auth: None,
            pending: None,
            actions: VecDeque::new(),
            closed: false,
            last_read: None,
        }
    }

    /// The buffer the driver reads the client's bytes into.
    pub fn input(&mut self) -> &mut BytesMut {
        &mut self.input
    }

    /// The settings the connection runs with now.
    pub fn settings(&self) -> &Negotiated {
        &self.settings
    }

    /// The driver read from the socket at `now` (call it once at accept
    /// too): the read deadline starts again.
    pub fn handle_read(&mut self, now: Instant) {
        self.last_read = Some(now);
    }

    /// When [`Connection::handle_timeout`] must be called: nsqd's read
    /// deadline, two heartbeat intervals after the last read. `None` while
    /// heartbeats are off, before the first read, or once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let interval = self.settings.heartbeat_interval?;
        match self.closed {
            true => None,
            false => self.last_read.map(|at| at + interval * 2),
        }
    }

    /// The clock reached `now`: a client that sent nothing for two
    /// heartbeat intervals is gone, so the connection closes ([`Action::Close`],
    /// with no error frame, as nsqd closes on a read timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            tracing::info!("V2: client missed heartbeats; closing");
            self.pending = None;
            self.closed = true;
            self.actions.push_back(Action::Close);
        }
    }

    /// Whether a fatal error closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next thing to do, or `None` when the connection needs more
    /// input or is waiting for the answer to a request.
    ///
    /// A FIN batch is held back while it is the last action, so the FINs
    /// that follow it in the input join it.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        let action = self.next_action(now);
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
        action
    }

    /// Panics unless the machine is consistent: a closed connection waits
    /// for no answer and queues nothing after its `Close`; at most one
    /// `Close` is queued, and last; FIN batches are non-empty and bounded;
    /// the client state is one the machine sets. Runs after every
    /// [`Connection::poll_action`] in debug builds (so in the property
    /// tests and the fuzz target).
    pub fn check_invariants(&self) {
        if self.closed {
            assert!(self.pending.is_none(), "closed with a request open");
        }
        let closes = self
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Close))
            .count();
        assert!(closes <= 1, "{closes} closes queued");
        if closes == 1 {
            assert!(self.closed, "Close queued on an open connection");
            assert!(
                matches!(self.actions.back(), Some(Action::Close)),
                "an action after Close"
            );
        }
        for action in &self.actions {
            if let Action::Finish(ids) = action {
                assert!(
                    !ids.is_empty() && ids.len() <= MAX_FIN_BATCH,
                    "FIN batch of {}",
                    ids.len()
                );
            }
        }
        assert!(
            matches!(
                self.state,
                ClientState::Init | ClientState::Subscribed | ClientState::Closing
            ),
            "state {:?} is not one the machine sets",
            self.state
        );
    }

    fn next_action(&mut self, now: Instant) -> Option<Action> {
        loop {
            if !self.gathering_fins()
                && let Some(action) = self.actions.pop_front()
            {
                return Some(action);
            }
            if self.closed || self.pending.is_some() {
                return self.actions.pop_front();
            }
            match self.decoder.decode(&mut self.input) {
                Ok(Some(cmd)) => {
                    if let Err(e) = self.execute(cmd, now, false) {
                        self.fail(&e);
                    }
                }
                Ok(None) => return self.actions.pop_front(),
                Err(e) => self.decode_failed(e),
            }
        }
    }

    /// Whether the only action waiting is a FIN batch with room left.
    fn gathering_fins(&self) -> bool {
        self.actions.len() == 1
            && matches!(self.actions.front(), Some(Action::Finish(ids)) if ids.len() < MAX_FIN_BATCH)
    }

    /// Answers an [`Action::Finish`]: each failed FIN, in order, with the
    /// daemon's reason. Their `E_FIN_FAILED` frames go out before anything
    /// decoded after the batch, as they would one FIN at a time.
    pub fn handle_finished(&mut self, failures: Vec<(MessageId, String)>) {
        for (id, e) in failures.into_iter().rev() {
            let e = ProtocolError::new(ErrorCode::FinFailed, format!("FIN {id} failed {e}"));
            debug_assert!(!e.is_fatal(), "E_FIN_FAILED closes nothing");
            let mut frame = BytesMut::new();
            encode_error(&e, &mut frame);
            self.actions.push_front(Action::Send(frame.freeze()));
        }
    }

    /// Answers the request in flight (anything but AUTH): `Err` carries the
    /// daemon's reason, which goes into nsqd's error for that command.
    pub fn handle_done(&mut self, result: Result<(), String>) {
        let Some(pending) = self.pending.take() else {
            debug_assert!(false, "the driver answered no request");
            tracing::warn!("V2: answer without a request");
            return;
        };
        let outcome = match pending {
            Pending::Publish(verb) => result.map(|()| self.respond(OK)).map_err(|e| {
                let code = match verb {
                    Verb::Mpub => ErrorCode::MpubFailed,
                    Verb::Dpub => ErrorCode::DpubFailed,
                    _ => ErrorCode::PubFailed,
                };
                ProtocolError::new(code, format!("{} failed {e}", verb.as_str()))
            }),
            Pending::Subscribe => match result {
                Ok(()) => {
                    self.set_state(ClientState::Subscribed);
                    self.respond(OK);
                    self.actions.push_back(Action::StartDelivery);
                    Ok(())
                }
                Err(e) => Err(ProtocolError::new(
                    ErrorCode::SubFailed,
                    format!("SUB failed {e}"),
                )),
            },
            Pending::Settle(verb, id) => result.map_err(|e| {
                let code = match verb {
                    Verb::Touch => ErrorCode::TouchFailed,
                    _ => ErrorCode::ReqFailed,
                };
                ProtocolError::new(code, format!("{} {id} failed {e}", verb.as_str()))
            }),
            Pending::Tls { then } => match result {
                Ok(()) => {
                    self.tls = true;
                    self.respond(OK);
                    if let Some(kind) = then {
                        self.compress(kind);
                    }
                    Ok(())
                }
                Err(e) => Err(upgrade_failed(&e)),
            },
            Pending::Compress => match result {
                Ok(()) => {
                    self.compressed = true;
                    self.respond(OK);
                    Ok(())
                }
                Err(e) => Err(upgrade_failed(&e)),
            },
            Pending::Auth(wait) => {
                // A request mix-up in the driver; keep waiting.
                debug_assert!(false, "the driver answered AUTH with handle_done");
                tracing::warn!("V2: AUTH answered as a plain request");
                self.pending = Some(Pending::Auth(wait));
                return;
            }
        };
        if let Err(e) = outcome {
            self.fail(&e);
        }
    }

    /// Answers a publish the daemon refuses for now (drain mode) rather
    /// than fails: the error is the one a failed publish gets
    /// (`E_PUB_FAILED` and friends, with `reason`), but the connection stays
    /// open, so the client can go on consuming or publish again later.
    pub fn handle_refused(&mut self, reason: &str) {
        let Some(Pending::Publish(verb)) = self.pending else {
            // Only publishes are refused; anything else is answered as a failure.
            self.handle_done(Err(reason.to_string()));
            return;
        };
        self.pending = None;
        let code = match verb {
            Verb::Mpub => ErrorCode::MpubFailed,
            Verb::Dpub => ErrorCode::DpubFailed,
            _ => ErrorCode::PubFailed,
        };
        let e = ProtocolError::new(code, format!("{} failed {reason}", verb.as_str()));
        let mut frame = BytesMut::new();
        encode_error(&e, &mut frame);
        self.actions.push_back(Action::Send(frame.freeze()));
    }

    /// Answers an [`Action::Authenticate`] with what the auth server said
    /// (`Err` when it could not be asked or refused).
    pub fn handle_auth(&mut self, result: Result<AuthState, String>, now: Instant) {
        let wait = match self.pending.take() {
            Some(Pending::Auth(wait)) => wait,
            other => {
                debug_assert!(
                    false,
                    "the driver answered a non-AUTH request with handle_auth"
                );
                tracing::warn!("V2: AUTH answer without an AUTH request");
                self.pending = other;
                return;
            }
        };
        let state = match result {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "AUTH failed");
                return self.fail(&ProtocolError::new(
                    ErrorCode::AuthFailed,
                    "AUTH failed".to_string(),
                ));
            }
        };
        let outcome = match wait {
            // Keep the secret, take the new authorizations, and run the
            // command that was waiting without asking again.
            AuthWait::Refresh(cmd) => {
                if let Some((_, old)) = self.auth.as_mut() {
                    *old = state;
                }
                self.execute(cmd, now, true)
            }
            AuthWait::Login(_) if state.authorizations.is_empty() => Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                "AUTH no authorizations found".to_string(),
            )),
            AuthWait::Login(secret) => {
                let body = serde_json::json!({
                    "identity": state.identity,
                    "identity_url": state.identity_url,
                    "permission_count": state.authorizations.len(),
                });
                self.actions.push_back(Action::Authorized {
                    identity: state.identity.clone(),
                    identity_url: state.identity_url.clone(),
                });
                self.auth = Some((secret, state));
                self.respond(body.to_string().as_bytes());
                Ok(())
            }
        };
        if let Err(e) = outcome {
            self.fail(&e);
        }
    }

    fn respond(&mut self, data: &[u8]) {
        let mut frame = BytesMut::with_capacity(8 + data.len());
        encode_response(data, &mut frame);
        self.actions.push_back(Action::Send(frame.freeze()));
    }

    /// Sends `e`; a fatal one closes the connection.
    fn fail(&mut self, e: &ProtocolError) {
        let mut frame = BytesMut::new();
        encode_error(e, &mut frame);
        self.actions.push_back(Action::Send(frame.freeze()));
        if e.is_fatal() {
            tracing::info!(error = %e, "V2: closing client after fatal error");
            self.actions.push_back(Action::Close);
            self.closed = true;
            self.pending = None;
        }
    }

    fn set_state(&mut self, state: ClientState) {
        self.state = state;
        self.actions.push_back(Action::State(state));
    }

    /// A command that did not parse. nsqd checks the client's state before
    /// a command's parameters, so a state error wins over a parse error,
    /// and a RDY after CLS is ignored however it is written.
    fn decode_failed(&mut self, e: ProtocolError) {
        let e = match self
            .decoder
            .current_verb()
            .filter(|_| !self.decoder.is_failed())
        {
            Some(verb) => match self.check_state(verb) {
                Ok(true) => e,
                Ok(false) => return,
                Err(state_err) => state_err,
            },
            None => e,
        };
        self.fail(&e);
    }

    /// nsqd's per-command state rules: `Ok(false)` means drop the command
    /// silently (RDY after CLS).
    fn check_state(&self, verb: Verb) -> Result<bool, ProtocolError> {
        use ClientState::{Closing, Init, Subscribed};
        let state = self.state;
        let allowed = match verb {
            Verb::Identify | Verb::Auth | Verb::Sub => state == Init,
            Verb::Rdy if state == Closing => return Ok(false),
            Verb::Rdy | Verb::Cls => state == Subscribed,
            Verb::Fin | Verb::Req | Verb::Touch => matches!(state, Subscribed | Closing),
            Verb::Pub | Verb::Mpub | Verb::Dpub | Verb::Nop => true,
        };
        if allowed {
            Ok(true)
        } else {
            Err(state_error(verb, ""))
        }
    }

    /// Runs one decoded command; `refreshed` skips the AUTH expiry check
    /// right after a refresh.
    fn execute(
        &mut self,
        cmd: Command,
        now: Instant,
        refreshed: bool,
    ) -> Result<(), ProtocolError> {
        let verb = cmd.verb();
        if verb != Verb::Identify && !self.tls && self.config.tls_required > TlsRequired::No {
            return Err(state_error(verb, " (TLS required)"));
        }
        if !self.check_state(verb)? {
            return Ok(());
        }
        let (topic, channel) = match &cmd {
            Command::Pub { topic, .. }
            | Command::Mpub { topic, .. }
            | Command::Dpub { topic, .. } => (topic.as_str(), ""),
            Command::Sub { topic, channel } => (topic.as_str(), channel.as_str()),
            _ => ("", ""),
        };
        if verb == Verb::Sub && self.settings.heartbeat_interval.is_none() {
            return Err(ProtocolError::new(
                ErrorCode::Invalid,
                "cannot SUB with heartbeats disabled".to_string(),
            ));
        }
        if matches!(verb, Verb::Pub | Verb::Mpub | Verb::Dpub | Verb::Sub)
            && let Gate::Refresh = self.check_auth(verb, topic, channel, now, refreshed)?
        {
            let secret = self
                .auth
                .as_ref()
                .map(|(s, _)| s.clone())
                .unwrap_or_default();
            self.actions.push_back(Action::Authenticate {
                secret,
                tls: self.tls,
            });
            self.pending = Some(Pending::Auth(AuthWait::Refresh(cmd)));
            return Ok(());
        }
        match cmd {
            Command::Nop => {}
            Command::Identify(body) => self.identify(&body)?,
            Command::Auth(secret) => self.authenticate(&secret)?,
            Command::Sub { topic, channel } => {
                self.request(
                    Action::Subscribe {
                        topic,
                        channel,
                        msg_timeout: self.settings.msg_timeout,
                    },
                    Pending::Subscribe,
                );
            }
            Command::Pub { topic, body } => self.publish(topic, vec![body], None, verb),
            Command::Mpub { topic, bodies } => self.publish(topic, bodies, None, verb),
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => self.publish(
                topic,
                vec![body],
                Some(Duration::from_millis(defer_ms)),
                verb,
            ),
            Command::Rdy(count) => self.actions.push_back(Action::Ready(count)),
            Command::Fin(id) => match self.actions.back_mut() {
                Some(Action::Finish(ids)) if ids.len() < MAX_FIN_BATCH => ids.push(id),
                _ => {
                    // Room for every FIN the input may still hold, so a
                    // batch is one allocation, not one per doubling.
                    let room = (1 + self.input.len() / FIN_LINE).min(MAX_FIN_BATCH);
                    let mut ids = Vec::with_capacity(room);
                    ids.push(id);
                    self.actions.push_back(Action::Finish(ids));
                }
            },
            Command::Req { id, timeout_ms } => {
                let max = self.config.max_req_timeout;
                let mut delay = Duration::from_millis(timeout_ms);
                if delay > max {
                    tracing::info!(requested = ?delay, ?max, "REQ timeout clamped");
                    delay = max;
                }
                self.request(Action::Requeue(id, delay), Pending::Settle(verb, id));
            }
            Command::Touch(id) => self.request(Action::Touch(id), Pending::Settle(verb, id)),
            Command::Cls => {
                self.actions.push_back(Action::Ready(0));
                self.set_state(ClientState::Closing);
                self.respond(CLOSE_WAIT);
            }
        }
        Ok(())
    }

    fn request(&mut self, action: Action, pending: Pending) {
        self.actions.push_back(action);
        self.pending = Some(pending);
    }

    fn publish(&mut self, topic: String, bodies: Vec<Bytes>, defer: Option<Duration>, verb: Verb) {
        self.request(
            Action::Publish {
                topic,
                bodies,
                defer,
            },
            Pending::Publish(verb),
        );
    }

    fn identify(&mut self, body: &[u8]) -> Result<(), ProtocolError> {
        let (request, settings, response) = negotiate(body, &self.config)?;
        let (tls, compression) = match &response {
            Some(r) => (
                r.tls_v1,
                if r.snappy {
                    Some(Compression::Snappy)
                } else if r.deflate {
                    Some(Compression::Deflate(
                        u32::try_from(r.deflate_level).unwrap_or(6),
                    ))
                } else {
                    None
                },
            ),
            None => (false, None),
        };
        let upgrades = tls || compression.is_some();
        if upgrades && (self.tls || self.compressed) {
            return Err(ProtocolError::new(
                ErrorCode::IdentifyFailed,
                "IDENTIFY cannot upgrade a connection twice".to_string(),
            ));
        }
        let answer = match response {
            Some(json) => serde_json::to_vec(&json).map_err(|e| {
                ProtocolError::new(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}"))
            })?,
            None => OK.to_vec(),
        };
        self.settings = settings.clone();
        self.actions
            .push_back(Action::Identified { request, settings });
        self.respond(&answer);
        if tls {
            let unread = self.input.split().freeze();
            self.request(
                Action::StartTls { unread },
                Pending::Tls { then: compression },
            );
        } else if let Some(kind) = compression {
            self.compress(kind);
        }
        Ok(())
    }

    fn compress(&mut self, kind: Compression) {
        let unread = self.input.split().freeze();
        self.request(Action::Compress { kind, unread }, Pending::Compress);
    }

    /// AUTH, as nsqd: once per connection, only when enabled.
    fn authenticate(&mut self, secret: &[u8]) -> Result<(), ProtocolError> {
        if self.auth.is_some() {
            return Err(ProtocolError::new(
                ErrorCode::Invalid,
                "AUTH already set".to_string(),
            ));
        }
        if !self.config.auth_required {
            return Err(ProtocolError::new(
                ErrorCode::AuthDisabled,
                "AUTH disabled".to_string(),
            ));
        }
        let secret = String::from_utf8_lossy(secret).into_owned();
        self.request(
            Action::Authenticate {
                secret: secret.clone(),
                tls: self.tls,
            },
            Pending::Auth(AuthWait::Login(secret)),
        );
        Ok(())
    }

    /// nsqd's `CheckAuth`: with AUTH enabled, `verb` on `topic`/`channel`
    /// (`""` for publishing) must be authorized; expired authorizations are
    /// fetched again first (unless they were just fetched).
    fn check_auth(
        &self,
        verb: Verb,
        topic: &str,
        channel: &str,
        now: Instant,
        refreshed: bool,
    ) -> Result<Gate, ProtocolError> {
        if !self.config.auth_required {
            return Ok(Gate::Open);
        }
        let cmd = verb.as_str();
        let Some((_, state)) = &self.auth else {
            return Err(ProtocolError::new(
                ErrorCode::AuthFirst,
                format!("AUTH required before {cmd}"),
            ));
        };
        if !refreshed && state.is_expired(now) {
            return Ok(Gate::Refresh);
        }
        if state.is_allowed(topic, channel) {
            Ok(Gate::Open)
        } else {
            Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                format!("AUTH failed for {cmd} on {topic:?} {channel:?}"),
            ))
        }
    }
}

fn state_error(verb: Verb, why: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Invalid,
        format!("cannot {} in current state{why}", verb.as_str()),
    )
}

fn upgrade_failed(e: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}"))
}

#[cfg(test)]
mod tests;
