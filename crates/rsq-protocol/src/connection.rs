//! Protocol V2 for one TCP connection, as a state machine with no IO.
//!
//! The driver (rsqd's `tcp/session.rs`) puts the bytes it reads into [`Connection::input`]
//! and takes [`Action`]s from [`Connection::poll_action`]: frames to send,
//! and requests (publish, subscribe, FIN, AUTH, TLS...) that need the daemon
//! or the network. A request is answered with the typed `handle_*` its
//! action names ([`Connection::handle_published`], `handle_subscribed`,
//! `handle_settled`, `handle_upgraded`, `handle_auth`); until then the
//! connection decodes nothing more, so replies leave in command order, as
//! nsqd's do, and the bytes after an IDENTIFY that upgrades the connection
//! are never read as commands. Time comes in as `now` (AUTH expiry and the
//! read deadline use it).
//!
//! What lives here is everything nsqd decides from the bytes alone: the
//! command grammar (through `rsq-codec`), the client state rules, which
//! errors are fatal, IDENTIFY negotiation, the TLS-required and AUTH gates,
//! REQ clamping, and the error text of every answer. Because it does no
//! IO, a property test (`tests.rs` beside this file) and a fuzz target
//! drive it with arbitrary input and a scripted daemon, and check nsqd's
//! rules on every step.
//!
//! The parts: `action.rs` is what the machine asks ([`Action`]) and the
//! request it waits on; `commands.rs` runs decoded commands through
//! nsqd's gates; `answers.rs` takes the daemon's typed answers
//! ([`Failure`], [`SettleError`]) and holds the one table from a command
//! to its `E_*_FAILED` error. This file is the machine's state, its
//! polling loop, the read deadline and the invariants.
//!
//! Errors follow nsqd's rule: only `E_FIN_FAILED`, `E_REQ_FAILED` and
//! `E_TOUCH_FAILED` leave the connection open (and a publish the daemon
//! only refused); every other error frame is followed by [`Action::Close`]
//! and nothing else.

mod action;
mod answers;
mod commands;

pub use action::Action;
pub use answers::{Failure, SettleError};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rsq_codec::{CommandDecoder, Limits, ProtocolError, encode_error, encode_response};

use crate::identify::Negotiated;
use crate::{AuthState, ClientState, ProtocolConfig};
use action::OpenRequest;

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
    pending: Option<OpenRequest>,
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
pub(super) const MAX_FIN_BATCH: usize = 1024;

/// A FIN on the wire: `FIN `, the 16-byte id, the newline.
pub(super) const FIN_LINE: usize = 21;

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

    fn respond(&mut self, data: &[u8]) {
        let mut frame = BytesMut::with_capacity(8 + data.len());
        encode_response(data, &mut frame);
        self.actions.push_back(Action::Send(frame.freeze()));
    }

    /// Sends `e` and leaves the connection open, whatever its code.
    fn send_error(&mut self, e: &ProtocolError) {
        let mut frame = BytesMut::new();
        encode_error(e, &mut frame);
        self.actions.push_back(Action::Send(frame.freeze()));
    }

    /// Sends `e`; a fatal one closes the connection.
    fn fail(&mut self, e: &ProtocolError) {
        self.send_error(e);
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
}

#[cfg(test)]
mod tests;
