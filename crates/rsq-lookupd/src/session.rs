//! One producer connection's protocol state, with no IO.
//!
//! A [`Session`] knows whether its producer has identified and applies each
//! decoded [`Request`] to the [`Registry`] the way nsqlookupd's protocol V1
//! does, returning the reply's data or the error to send before closing.
//! The TCP server only moves bytes and holds the registry lock around
//! [`Session::handle`].

use std::time::Instant;

use rsq_codec::{ProtocolError, is_valid_name};

use crate::registry::{PeerId, PeerInfo, Registry};
use rsq_codec::lookup::Request;

/// What this lookupd says about itself in reply to IDENTIFY.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerInfo {
    /// The port the producer protocol listens on.
    pub tcp_port: u16,
    /// The port the HTTP API listens on.
    pub http_port: u16,
    /// This lookupd's version.
    pub version: String,
    /// `--broadcast-address`.
    pub broadcast_address: String,
    /// The machine's hostname.
    pub hostname: String,
}

/// The fields of an IDENTIFY body; all are required (non-empty, non-zero).
#[derive(Debug, Default, serde::Deserialize)]
struct IdentifyBody {
    #[serde(default)]
    broadcast_address: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    tcp_port: u16,
    #[serde(default)]
    http_port: u16,
    #[serde(default)]
    version: String,
}

/// One producer connection. See the module documentation.
#[derive(Debug)]
pub struct Session {
    remote_address: String,
    /// Set once IDENTIFY succeeded: the producer's registry key.
    peer: Option<PeerId>,
}

impl Session {
    /// A new connection from `remote_address` (which becomes the producer's
    /// id and `remote_address` once it identifies).
    pub fn new(remote_address: String) -> Session {
        Session {
            remote_address,
            peer: None,
        }
    }

    /// Whether IDENTIFY has succeeded.
    pub fn is_identified(&self) -> bool {
        self.peer.is_some()
    }

    /// Applies one request at `now`, returning the reply data (`OK`, or
    /// IDENTIFY's JSON). Every error is fatal: the caller sends it and
    /// closes the connection (then calls [`Session::handle_close`]).
    pub fn handle(
        &mut self,
        request: Request,
        registry: &mut Registry,
        server: &ServerInfo,
        now: Instant,
    ) -> Result<Vec<u8>, ProtocolError> {
        match request {
            Request::Ping => {
                // A PING before IDENTIFY is answered but records nothing.
                if let Some(id) = &self.peer {
                    registry.handle_ping(id, now);
                }
                Ok(b"OK".to_vec())
            }
            Request::Identify { body } => self.identify(&body, registry, server, now),
            Request::Register { params } => {
                let id = self.identified()?;
                let (topic, channel) = topic_channel("REGISTER", &params)?;
                registry.handle_register(id, topic, channel);
                tracing::info!(client = %id, topic, channel, "REGISTER");
                Ok(b"OK".to_vec())
            }
            Request::Unregister { params } => {
                let id = self.identified()?;
                let (topic, channel) = topic_channel("UNREGISTER", &params)?;
                let unexpected = registry.handle_unregister(id, topic, channel);
                if unexpected > 0 {
                    tracing::warn!(
                        client = %id,
                        topic,
                        channels = unexpected,
                        "topic UNREGISTER also removed channel registrations"
                    );
                }
                tracing::info!(client = %id, topic, channel, "UNREGISTER");
                Ok(b"OK".to_vec())
            }
        }
    }

    fn identified(&self) -> Result<&str, ProtocolError> {
        self.peer
            .as_deref()
            .ok_or_else(|| ProtocolError::invalid("client must IDENTIFY"))
    }

    fn identify(
        &mut self,
        body: &[u8],
        registry: &mut Registry,
        server: &ServerInfo,
        now: Instant,
    ) -> Result<Vec<u8>, ProtocolError> {
        if self.peer.is_some() {
            return Err(ProtocolError::invalid("cannot IDENTIFY again"));
        }
        let body: IdentifyBody = serde_json::from_slice(body)
            .map_err(|_| ProtocolError::bad_body("IDENTIFY failed to decode JSON body"))?;
        if body.broadcast_address.is_empty()
            || body.tcp_port == 0
            || body.http_port == 0
            || body.version.is_empty()
        {
            return Err(ProtocolError::bad_body("IDENTIFY missing fields"));
        }
        let info = PeerInfo {
            id: self.remote_address.clone(),
            remote_address: self.remote_address.clone(),
            hostname: body.hostname,
            broadcast_address: body.broadcast_address,
            tcp_port: body.tcp_port,
            http_port: body.http_port,
            version: body.version,
        };
        tracing::info!(
            client = %info.id,
            broadcast_address = %info.broadcast_address,
            tcp_port = info.tcp_port,
            http_port = info.http_port,
            version = %info.version,
            "IDENTIFY"
        );
        if !registry.handle_identify(info, now) {
            // Two live connections cannot share a remote address; this
            // would be a leftover from a connection not yet cleaned up.
            return Err(ProtocolError::invalid("cannot IDENTIFY again"));
        }
        self.peer = Some(self.remote_address.clone());
        serde_json::to_vec(server).map_err(|_| ProtocolError::invalid("IDENTIFY reply failed"))
    }

    /// The connection is gone: its producer leaves every registration.
    pub fn handle_close(&mut self, registry: &mut Registry) {
        if let Some(id) = self.peer.take() {
            registry.handle_close(&id);
            tracing::info!(client = %id, "producer gone, registrations removed");
        }
    }
}

/// nsqlookupd's parameter check for REGISTER and UNREGISTER: a valid topic,
/// then an optional valid channel (an empty one counts as absent).
fn topic_channel<'a>(
    command: &str,
    params: &'a [String],
) -> Result<(&'a str, Option<&'a str>), ProtocolError> {
    let Some(topic) = params.first() else {
        return Err(ProtocolError::invalid(format!(
            "{command} insufficient number of params"
        )));
    };
    if !is_valid_name(topic) {
        return Err(ProtocolError::bad_topic(format!(
            "{command} topic name '{topic}' is not valid"
        )));
    }
    let channel = params.get(1).map(String::as_str).filter(|c| !c.is_empty());
    if let Some(channel) = channel
        && !is_valid_name(channel)
    {
        return Err(ProtocolError::bad_channel(format!(
            "{command} channel name '{channel}' is not valid"
        )));
    }
    Ok((topic, channel))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn server() -> ServerInfo {
        ServerInfo {
            tcp_port: 4160,
            http_port: 4161,
            version: "0.1.0".into(),
            broadcast_address: "lookupd".into(),
            hostname: "lookupd-host".into(),
        }
    }

    fn identify(json: &str) -> Request {
        Request::Identify {
            body: Bytes::copy_from_slice(json.as_bytes()),
        }
    }

    const GOOD: &str = r#"{"version":"1.3.0","tcp_port":4150,"http_port":4151,"hostname":"h","broadcast_address":"b"}"#;

    fn register(params: &[&str]) -> Request {
        Request::Register {
            params: params.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Runs `requests` on a fresh session; returns each reply as text.
    #[track_caller]
    fn run(requests: Vec<Request>) -> (Vec<String>, Registry) {
        let mut registry = Registry::new();
        let mut session = Session::new("127.0.0.1:5000".into());
        let now = Instant::now();
        let replies = requests
            .into_iter()
            .map(|r| match session.handle(r, &mut registry, &server(), now) {
                Ok(data) => String::from_utf8(data).expect("utf8"),
                Err(e) => e.to_string(),
            })
            .collect();
        (replies, registry)
    }

    #[test]
    fn identify_then_register() {
        let (replies, registry) = run(vec![
            Request::Ping,
            identify(GOOD),
            register(&["t", "c"]),
            register(&["u"]),
            register(&["v", ""]),
            Request::Ping,
        ]);
        assert_eq!(replies[0], "OK");
        let reply: serde_json::Value = serde_json::from_str(&replies[1]).expect("json");
        assert_eq!(
            reply,
            serde_json::json!({"tcp_port": 4160, "http_port": 4161, "version": "0.1.0",
                               "broadcast_address": "lookupd", "hostname": "lookupd-host"})
        );
        assert_eq!(replies[2..], ["OK", "OK", "OK", "OK"]);
        assert_eq!(registry.topics(), ["t", "u", "v"]);
        assert_eq!(registry.channels("t"), ["c"]);
        assert_eq!(
            registry
                .peer("127.0.0.1:5000")
                .map(|p| p.remote_address.as_str()),
            Some("127.0.0.1:5000")
        );
    }

    #[test]
    fn errors_are_nsqlookupds() {
        let (r, _) = run(vec![register(&["t"])]);
        assert_eq!(r, ["E_INVALID client must IDENTIFY"]);
        let (r, _) = run(vec![Request::Unregister { params: vec![] }]);
        assert_eq!(r, ["E_INVALID client must IDENTIFY"]);
        let (r, _) = run(vec![identify(GOOD), register(&[])]);
        assert_eq!(r[1], "E_INVALID REGISTER insufficient number of params");
        let (r, _) = run(vec![identify(GOOD), register(&["bad topic!"])]);
        assert_eq!(
            r[1],
            "E_BAD_TOPIC REGISTER topic name 'bad topic!' is not valid"
        );
        let (r, _) = run(vec![identify(GOOD), register(&["t", "c*"])]);
        assert_eq!(
            r[1],
            "E_BAD_CHANNEL REGISTER channel name 'c*' is not valid"
        );
        let (r, _) = run(vec![identify(GOOD), identify(GOOD)]);
        assert_eq!(r[1], "E_INVALID cannot IDENTIFY again");
        let (r, _) = run(vec![identify("{not json")]);
        assert_eq!(r, ["E_BAD_BODY IDENTIFY failed to decode JSON body"]);
        let (r, _) = run(vec![identify(
            r#"{"version":"1","tcp_port":1,"http_port":2}"#,
        )]);
        assert_eq!(r, ["E_BAD_BODY IDENTIFY missing fields"]);
        let (r, _) = run(vec![identify(r#"{"version":"1","tcp_port":"x"}"#)]);
        assert_eq!(r, ["E_BAD_BODY IDENTIFY failed to decode JSON body"]);
    }

    #[test]
    fn close_removes_registrations() {
        let mut registry = Registry::new();
        let mut session = Session::new("127.0.0.1:5000".into());
        let now = Instant::now();
        let reply = session.handle(identify(GOOD), &mut registry, &server(), now);
        assert!(reply.is_ok() && session.is_identified());
        session
            .handle(register(&["t", "c"]), &mut registry, &server(), now)
            .expect("register");
        session.handle_close(&mut registry);
        assert!(registry.peer("127.0.0.1:5000").is_none());
        let lookup = registry
            .lookup(
                "t",
                now,
                crate::registry::Liveness {
                    inactive_producer_timeout: std::time::Duration::from_secs(1),
                    tombstone_lifetime: std::time::Duration::from_secs(1),
                },
            )
            .expect("topic stays");
        assert!(lookup.producers.is_empty());
        registry.assert_consistent();
    }
}
