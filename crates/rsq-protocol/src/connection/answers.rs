//! The daemon's answers to the machine's requests, as typed values, and
//! how the machine turns them into nsqd's frames.
//!
//! The driver never writes error text: a publish, subscribe or upgrade
//! that did not happen is a [`Failure`] (fatal) or a refusal (not fatal),
//! a FIN, REQ or TOUCH that did not settle is a [`SettleError`]. The one
//! table from a command to its `E_*_FAILED` code is [`failed_code`], and
//! [`failed`] builds nsqd's exact description around the reason.

use std::fmt::Display;

use bytes::BytesMut;
use rsq_codec::{ErrorCode, MessageId, OK, ProtocolError, Verb, encode_error};

use super::Connection;
use super::action::{Action, AuthWait, OpenRequest};
use crate::{AuthState, ClientState};

/// Why the daemon did not carry out a publish, a subscribe or a
/// connection upgrade. The `Display` is the reason as the daemon put it,
/// which goes after `<VERB> failed ` in the command's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Not now, rather than not at all: the daemon is draining or its disk
    /// is full. A publish gets its usual error frame (`E_PUB_FAILED` and
    /// friends) but the connection stays open, so the client can go on
    /// consuming or publish again later. Any other request refused is
    /// answered as [`Failure::Failed`].
    #[error("{0}")]
    Refused(String),
    /// The request failed: its error frame, then the connection closes,
    /// as nsqd does.
    #[error("{0}")]
    Failed(String),
}

/// Why a FIN, REQ or TOUCH did not settle its message. The `Display`
/// texts are nsqd's, so the client reads `E_FIN_FAILED FIN <id> failed ID
/// not in flight` as it would from nsqd. Never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The message is not in flight: never delivered, already finished,
    /// requeued or timed out.
    #[error("ID not in flight")]
    NotInFlight,
    /// Another consumer holds the message.
    #[error("client does not own message")]
    NotOwner,
    /// The channel is closing or deleted.
    #[error("exiting")]
    Exiting,
    /// The connection has no subscription to settle in.
    #[error("not subscribed")]
    NotSubscribed,
}

/// The error code a command gets when the daemon did not carry it out:
/// the one table from command to `E_*_FAILED`. Commands the daemon is
/// never asked about (RDY, CLS, NOP) get `E_INVALID`.
pub(super) fn failed_code(verb: Verb) -> ErrorCode {
    match verb {
        Verb::Pub => ErrorCode::PubFailed,
        Verb::Mpub => ErrorCode::MpubFailed,
        Verb::Dpub => ErrorCode::DpubFailed,
        Verb::Sub => ErrorCode::SubFailed,
        Verb::Fin => ErrorCode::FinFailed,
        Verb::Req => ErrorCode::ReqFailed,
        Verb::Touch => ErrorCode::TouchFailed,
        Verb::Identify => ErrorCode::IdentifyFailed,
        Verb::Auth => ErrorCode::AuthFailed,
        Verb::Rdy | Verb::Cls | Verb::Nop => ErrorCode::Invalid,
    }
}

/// nsqd's error for `verb` that did not happen: `<VERB> failed <reason>`,
/// or `<VERB> <id> failed <reason>` for a message that did not settle.
pub(super) fn failed(verb: Verb, id: Option<&MessageId>, reason: &dyn Display) -> ProtocolError {
    let desc = match id {
        Some(id) => format!("{} {id} failed {reason}", verb.as_str()),
        None => format!("{} failed {reason}", verb.as_str()),
    };
    ProtocolError::new(failed_code(verb), desc)
}

/// Which request an answer is for, to check it against the open one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    Publish,
    Subscribe,
    Settle,
    Upgrade,
    Auth,
}

impl OpenRequest {
    fn answered_by(&self) -> Answered {
        match self {
            OpenRequest::Publish(_) => Answered::Publish,
            OpenRequest::Subscribe => Answered::Subscribe,
            OpenRequest::Settle(..) => Answered::Settle,
            OpenRequest::Tls { .. } | OpenRequest::Compress => Answered::Upgrade,
            OpenRequest::Auth(_) => Answered::Auth,
        }
    }
}

impl Connection {
    /// Takes the open request if `answer` is the kind that answers it. An
    /// answer to no request, or of the wrong kind, is the driver's bug: a
    /// debug assertion, and in release the request stays open.
    fn take_pending(&mut self, answer: Answered) -> Option<OpenRequest> {
        match self.pending.take() {
            Some(pending) if pending.answered_by() == answer => Some(pending),
            other => {
                debug_assert!(false, "the driver answered {other:?} as {answer:?}");
                tracing::warn!(?answer, open = ?other, "V2: answer to a request not asked");
                self.pending = other;
                None
            }
        }
    }

    /// Answers an [`Action::Publish`]: `OK`, or the command's error
    /// (`E_PUB_FAILED`, `E_MPUB_FAILED`, `E_DPUB_FAILED`), fatal unless
    /// the daemon only refused it.
    pub fn handle_published(&mut self, result: Result<(), Failure>) {
        let Some(OpenRequest::Publish(verb)) = self.take_pending(Answered::Publish) else {
            return;
        };
        match result {
            Ok(()) => self.respond(OK),
            Err(Failure::Refused(reason)) => {
                let e = failed(verb, None, &reason);
                self.send_error(&e);
            }
            Err(Failure::Failed(reason)) => self.fail(&failed(verb, None, &reason)),
        }
    }

    /// Answers an [`Action::Subscribe`]: `OK` and then
    /// [`Action::StartDelivery`], or a fatal `E_SUB_FAILED` (a refusal
    /// too: nsqd has no SUB that is only refused).
    pub fn handle_subscribed(&mut self, result: Result<(), Failure>) {
        if self.take_pending(Answered::Subscribe).is_none() {
            return;
        }
        match result {
            Ok(()) => {
                self.set_state(ClientState::Subscribed);
                self.respond(OK);
                self.actions.push_back(Action::StartDelivery);
            }
            Err(e) => self.fail(&failed(Verb::Sub, None, &e)),
        }
    }

    /// Answers an [`Action::Requeue`] or [`Action::Touch`]: nothing, or
    /// the non-fatal `E_REQ_FAILED` / `E_TOUCH_FAILED`.
    pub fn handle_settled(&mut self, result: Result<(), SettleError>) {
        let Some(OpenRequest::Settle(verb, id)) = self.take_pending(Answered::Settle) else {
            return;
        };
        if let Err(e) = result {
            self.fail(&failed(verb, Some(&id), &e));
        }
    }

    /// Answers an [`Action::Finish`]: each failed FIN, in order, with why.
    /// Their `E_FIN_FAILED` frames go out before anything decoded after
    /// the batch, as they would one FIN at a time.
    pub fn handle_finished(&mut self, failures: Vec<(MessageId, SettleError)>) {
        for (id, e) in failures.into_iter().rev() {
            let e = failed(Verb::Fin, Some(&id), &e);
            debug_assert!(!e.is_fatal(), "E_FIN_FAILED closes nothing");
            let mut frame = BytesMut::new();
            encode_error(&e, &mut frame);
            self.actions.push_front(Action::Send(frame.freeze()));
        }
    }

    /// Answers an [`Action::StartTls`] or [`Action::Compress`]: `OK` over
    /// the upgraded connection (then the compression that follows TLS, if
    /// negotiated), or a fatal `E_IDENTIFY_FAILED`.
    pub fn handle_upgraded(&mut self, result: Result<(), Failure>) {
        let Some(pending) = self.take_pending(Answered::Upgrade) else {
            return;
        };
        if let Err(e) = result {
            return self.fail(&failed(Verb::Identify, None, &e));
        }
        match pending {
            OpenRequest::Tls { then } => {
                self.tls = true;
                self.respond(OK);
                if let Some(kind) = then {
                    self.compress(kind);
                }
            }
            _ => {
                self.compressed = true;
                self.respond(OK);
            }
        }
    }

    /// Answers an [`Action::Authenticate`] with what the auth server said
    /// (`Err` when it could not be asked or refused; its text is only
    /// logged, as nsqd sends a bare `AUTH failed`).
    pub fn handle_auth(&mut self, result: Result<AuthState, String>, now: std::time::Instant) {
        let Some(OpenRequest::Auth(wait)) = self.take_pending(Answered::Auth) else {
            return;
        };
        let state = match result {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "AUTH failed");
                let code = failed_code(Verb::Auth);
                return self.fail(&ProtocolError::new(code, "AUTH failed".to_string()));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(verb: Verb, id: Option<u64>, reason: &dyn Display, expected: &str) {
        let id = id.map(MessageId::from_u64);
        assert_eq!(failed(verb, id.as_ref(), reason).to_string(), expected);
    }

    #[test]
    fn failures_get_nsqds_texts() {
        let id = Some(0xab);
        check(
            Verb::Pub,
            None,
            &"exiting",
            "E_PUB_FAILED PUB failed exiting",
        );
        check(Verb::Mpub, None, &"x", "E_MPUB_FAILED MPUB failed x");
        check(Verb::Dpub, None, &"x", "E_DPUB_FAILED DPUB failed x");
        check(Verb::Sub, None, &"x", "E_SUB_FAILED SUB failed x");
        check(
            Verb::Fin,
            id,
            &SettleError::NotInFlight,
            "E_FIN_FAILED FIN 00000000000000ab failed ID not in flight",
        );
        check(
            Verb::Req,
            id,
            &SettleError::NotOwner,
            "E_REQ_FAILED REQ 00000000000000ab failed client does not own message",
        );
        check(
            Verb::Req,
            id,
            &SettleError::Exiting,
            "E_REQ_FAILED REQ 00000000000000ab failed exiting",
        );
        check(
            Verb::Touch,
            id,
            &SettleError::NotInFlight,
            "E_TOUCH_FAILED TOUCH 00000000000000ab failed ID not in flight",
        );
        check(
            Verb::Identify,
            None,
            &Failure::Failed("tls: bad".into()),
            "E_IDENTIFY_FAILED IDENTIFY failed tls: bad",
        );
    }

    #[test]
    fn only_settle_failures_are_not_fatal() {
        for verb in [Verb::Fin, Verb::Req, Verb::Touch] {
            assert!(!failed(verb, None, &"x").is_fatal(), "{verb:?}");
        }
        for verb in [Verb::Pub, Verb::Mpub, Verb::Dpub, Verb::Sub, Verb::Identify] {
            assert!(failed(verb, None, &"x").is_fatal(), "{verb:?}");
        }
    }
}
