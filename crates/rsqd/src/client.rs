//! What the daemon knows about one TCP client, for `/stats`.
//!
//! The connection task owns the protocol state; this is the part other tasks
//! (the HTTP stats handler) read, behind a small lock or atomics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rsq_channel::Channel;
use rsq_service::PeerAddr;

use crate::tcp::tls::TlsInfo;

pub use rsq_protocol::ClientState;

/// Fields set by IDENTIFY.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The client's chosen id (default: remote IP).
    pub client_id: String,
    /// The client's hostname (default: remote IP).
    pub hostname: String,
    /// The client library's user agent.
    pub user_agent: String,
    /// Negotiated sample rate.
    pub sample_rate: i32,
}

/// How a client's bytes travel, once upgraded in IDENTIFY.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// The TLS session, if the client upgraded.
    pub tls: Option<TlsInfo>,
    /// snappy in use.
    pub snappy: bool,
    /// deflate in use.
    pub deflate: bool,
}

/// Who the auth server says the client is, after a successful AUTH.
#[derive(Debug, Clone, Default)]
pub struct AuthIdentity {
    /// The identity.
    pub identity: String,
    /// A URL about it.
    pub identity_url: String,
}

/// One connected TCP client.
pub struct ClientInfo {
    /// Daemon-unique id.
    pub id: u64,
    /// Peer address (`@` in `/stats` for a unix socket client).
    pub remote_address: PeerAddr,
    /// Connect time, seconds since the epoch.
    pub connect_ts: i64,
    state: AtomicU8,
    /// Identity from IDENTIFY.
    pub identity: Mutex<Identity>,
    /// The channel this client consumes from, once subscribed.
    pub subscription: Mutex<Option<(String, Arc<Channel>)>>,
    /// Messages published per topic.
    pub pub_counts: Mutex<HashMap<String, u64>>,
    /// Total messages published.
    pub published: AtomicU64,
    /// TLS and compression.
    pub transport: Mutex<Transport>,
    /// Set once AUTH succeeded.
    pub auth: Mutex<Option<AuthIdentity>>,
}

impl ClientInfo {
    /// A client that just connected.
    /// Its client id and hostname start as the peer's IP, empty for a unix
    /// socket client (nsqd splits Go's `@` as `host:port`, which fails).
    pub fn new(id: u64, remote_address: PeerAddr, connect_ts: i64) -> Self {
        let ip = remote_address
            .ip()
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        ClientInfo {
            id,
            remote_address,
            connect_ts,
            state: AtomicU8::new(ClientState::Init as u8),
            identity: Mutex::new(Identity {
                client_id: ip.clone(),
                hostname: ip,
                ..Identity::default()
            }),
            subscription: Mutex::new(None),
            pub_counts: Mutex::new(HashMap::new()),
            published: AtomicU64::new(0),
            transport: Mutex::new(Transport::default()),
            auth: Mutex::new(None),
        }
    }

    /// The protocol state.
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Acquire) {
            0 => ClientState::Init,
            1 => ClientState::Disconnected,
            3 => ClientState::Subscribed,
            4 => ClientState::Closing,
            _ => ClientState::Connected,
        }
    }

    /// Moves to a new protocol state.
    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Counts `n` messages published to `topic`.
    pub fn count_published(&self, topic: &str, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
        let mut counts = self.pub_counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(topic) {
            Some(count) => *count += n,
            None => {
                counts.insert(topic.to_string(), n);
            }
        }
    }

    /// A copy of the identity fields.
    pub fn identity(&self) -> Identity {
        self.identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A copy of the transport fields.
    pub fn transport(&self) -> Transport {
        self.transport
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A copy of the AUTH identity, if authenticated.
    pub fn auth(&self) -> Option<AuthIdentity> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
