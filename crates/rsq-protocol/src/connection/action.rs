//! What the V2 machine asks of its driver ([`Action`]), and the request
//! it waits on meanwhile.

use std::time::Duration;

use bytes::Bytes;
use rsq_codec::{Command, MessageId, Verb};
use rsq_compress::Compression;

#[cfg(doc)]
use super::Connection;
use crate::ClientState;
use crate::identify::{IdentifyRequest, Negotiated};

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
    /// IDENTIFY, the start of the handshake. Answer with
    /// [`Connection::handle_upgraded`].
    StartTls {
        /// Bytes read past IDENTIFY.
        unread: Bytes,
    },
    /// Compress both directions from here; `unread` are bytes already read
    /// after IDENTIFY, compressed ones. Answer with
    /// [`Connection::handle_upgraded`].
    Compress {
        /// The negotiated compression.
        kind: Compression,
        /// Bytes read past IDENTIFY (or past the TLS handshake).
        unread: Bytes,
    },
    /// Ask the auth server about `secret`. Answer with
    /// [`Connection::handle_auth`].
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
    /// [`Connection::handle_published`]; a failure's reason goes into
    /// `E_PUB_FAILED` and friends.
    Publish {
        /// A valid topic name.
        topic: String,
        /// One body for PUB and DPUB, one or more for MPUB.
        bodies: Vec<Bytes>,
        /// DPUB's deferral.
        defer: Option<Duration>,
    },
    /// Subscribe to `topic`/`channel` with this in-flight timeout, but do
    /// not deliver yet. Answer with [`Connection::handle_subscribed`].
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
    /// while it waits, and [`Connection::handle_finished`] reports the
    /// failures.
    Finish(Vec<MessageId>),
    /// REQ a message with this (clamped) delay. Answer with
    /// [`Connection::handle_settled`].
    Requeue(MessageId, Duration),
    /// TOUCH a message. Answer with [`Connection::handle_settled`].
    Touch(MessageId),
    /// A fatal error was sent: flush and close. Nothing follows.
    Close,
}

impl Action {
    /// Whether this is a request: the connection decodes nothing more until
    /// the driver answers it (each variant names its `handle_*`). FIN
    /// batches are not requests.
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
pub(super) enum OpenRequest {
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
pub(super) enum AuthWait {
    /// The client sent AUTH with this secret.
    Login(String),
    /// The authorizations expired; run this command once they are back.
    Refresh(Command),
}

/// What the AUTH gate says about a command.
pub(super) enum Gate {
    Open,
    /// The authorizations expired: ask again, then retry.
    Refresh,
}
