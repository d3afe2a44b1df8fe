//! The commands the V2 machine decodes, run against nsqd's rules: the
//! client-state table, the TLS-required, heartbeat and AUTH gates, then
//! one step per command (most of which become a request for the driver).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rsq_codec::{CLOSE_WAIT, Command, ErrorCode, OK, ProtocolError, Verb};
use rsq_compress::Compression;

use super::action::{Action, AuthWait, Gate, OpenRequest};
use super::answers::failed;
use super::{Connection, FIN_LINE, MAX_FIN_BATCH};
use crate::identify::negotiate;
use crate::{ClientState, TlsRequired};

impl Connection {
    /// A command that did not parse. nsqd checks the client's state before
    /// a command's parameters, so a state error wins over a parse error,
    /// and a RDY after CLS is ignored however it is written.
    pub(super) fn decode_failed(&mut self, e: ProtocolError) {
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
    pub(super) fn execute(
        &mut self,
        cmd: Command,
        now: Instant,
        refreshed: bool,
    ) -> Result<(), ProtocolError> {
        let Some(cmd) = self.admit(cmd, now, refreshed)? else {
            return Ok(());
        };
        let verb = cmd.verb();
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
                    OpenRequest::Subscribe,
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
                self.request(Action::Requeue(id, delay), OpenRequest::Settle(verb, id));
            }
            Command::Touch(id) => self.request(Action::Touch(id), OpenRequest::Settle(verb, id)),
            Command::Cls => {
                self.actions.push_back(Action::Ready(0));
                self.set_state(ClientState::Closing);
                self.respond(CLOSE_WAIT);
            }
        }
        Ok(())
    }

    /// The gates a command passes before it runs, in nsqd's order: TLS
    /// required, the client state, SUB's heartbeats, AUTH. `None` when it
    /// does not run now: dropped (RDY after CLS), or waiting for expired
    /// authorizations to be fetched again.
    fn admit(
        &mut self,
        cmd: Command,
        now: Instant,
        refreshed: bool,
    ) -> Result<Option<Command>, ProtocolError> {
        let verb = cmd.verb();
        if verb != Verb::Identify && !self.tls && self.config.tls_required > TlsRequired::No {
            return Err(state_error(verb, " (TLS required)"));
        }
        if !self.check_state(verb)? {
            return Ok(None);
        }
        if verb == Verb::Sub && self.settings.heartbeat_interval.is_none() {
            return Err(ProtocolError::new(
                ErrorCode::Invalid,
                "cannot SUB with heartbeats disabled".to_string(),
            ));
        }
        let (topic, channel) = match &cmd {
            Command::Pub { topic, .. }
            | Command::Mpub { topic, .. }
            | Command::Dpub { topic, .. } => (topic.as_str(), ""),
            Command::Sub { topic, channel } => (topic.as_str(), channel.as_str()),
            _ => return Ok(Some(cmd)),
        };
        match self.check_auth(verb, topic, channel, now, refreshed)? {
            Gate::Open => Ok(Some(cmd)),
            Gate::Refresh => {
                let secret = self
                    .auth
                    .as_ref()
                    .map(|(s, _)| s.clone())
                    .unwrap_or_default();
                self.actions.push_back(Action::Authenticate {
                    secret,
                    tls: self.tls,
                });
                self.pending = Some(OpenRequest::Auth(AuthWait::Refresh(cmd)));
                Ok(None)
            }
        }
    }

    fn request(&mut self, action: Action, pending: OpenRequest) {
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
            OpenRequest::Publish(verb),
        );
    }

    fn identify(&mut self, body: &[u8]) -> Result<(), ProtocolError> {
        let (request, settings, response) = negotiate(body, &self.config)?;
        let (tls, compression) = response
            .as_ref()
            .map_or((false, None), |r| (r.tls_v1, r.compression()));
        let upgrades = tls || compression.is_some();
        if upgrades && (self.tls || self.compressed) {
            return Err(ProtocolError::new(
                ErrorCode::IdentifyFailed,
                "IDENTIFY cannot upgrade a connection twice".to_string(),
            ));
        }
        let answer = match response {
            Some(json) => {
                serde_json::to_vec(&json).map_err(|e| failed(Verb::Identify, None, &e))?
            }
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
                OpenRequest::Tls { then: compression },
            );
        } else if let Some(kind) = compression {
            self.compress(kind);
        }
        Ok(())
    }

    pub(super) fn compress(&mut self, kind: Compression) {
        let unread = self.input.split().freeze();
        self.request(Action::Compress { kind, unread }, OpenRequest::Compress);
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
            OpenRequest::Auth(AuthWait::Login(secret)),
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
