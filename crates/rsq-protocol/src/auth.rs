//! The auth server's answer as the connection uses it: who the client is,
//! what it may publish and subscribe to, and until when. Parsing the JSON
//! and matching grants are pure; asking the server is the daemon's job.

use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;

/// The auth server's answer was not a valid authorization document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid auth server response: {0}")]
pub struct BadAuthResponse(pub String);

/// One grant of the auth server's answer.
#[derive(Debug, Clone)]
pub struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    subscribe: bool,
    publish: bool,
}

impl Authorization {
    /// nsqd's rule: `channel == ""` is a publish and needs `publish`,
    /// otherwise `subscribe`; the topic regex and one channel regex must match.
    pub fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        let permitted = if channel.is_empty() {
            self.publish
        } else {
            self.subscribe
        };
        permitted && self.topic.is_match(topic) && self.channels.iter().any(|c| c.is_match(channel))
    }
}

/// A client's authorizations as last fetched.
#[derive(Debug, Clone)]
pub struct AuthState {
    /// Who the auth server says the client is.
    pub identity: String,
    /// A URL about that identity.
    pub identity_url: String,
    /// The grants.
    pub authorizations: Vec<Authorization>,
    /// When to ask again.
    pub expires: Instant,
}

#[derive(Deserialize)]
struct RawState {
    ttl: i64,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    identity_url: String,
    #[serde(default)]
    authorizations: Vec<RawAuthorization>,
}

#[derive(Deserialize)]
struct RawAuthorization {
    topic: String,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

impl AuthState {
    /// Parses an auth server's JSON answer received at `now`.
    pub fn parse(body: &[u8], now: Instant) -> Result<AuthState, BadAuthResponse> {
        let raw: RawState =
            serde_json::from_slice(body).map_err(|e| BadAuthResponse(e.to_string()))?;
        if raw.ttl <= 0 {
            return Err(BadAuthResponse(format!("invalid ttl {}", raw.ttl)));
        }
        let regex =
            |s: &str| Regex::new(s).map_err(|e| BadAuthResponse(format!("bad regex {s:?}: {e}")));
        let mut authorizations = Vec::with_capacity(raw.authorizations.len());
        for a in raw.authorizations {
            let (mut subscribe, mut publish) = (false, false);
            for p in &a.permissions {
                match p.as_str() {
                    "subscribe" => subscribe = true,
                    "publish" => publish = true,
                    other => return Err(BadAuthResponse(format!("unknown permission {other:?}"))),
                }
            }
            authorizations.push(Authorization {
                topic: regex(&a.topic)?,
                channels: a
                    .channels
                    .iter()
                    .map(|c| regex(c))
                    .collect::<Result<_, _>>()?,
                subscribe,
                publish,
            });
        }
        Ok(AuthState {
            identity: raw.identity,
            identity_url: raw.identity_url,
            authorizations,
            expires: now + Duration::from_secs(u64::try_from(raw.ttl).unwrap_or(1)),
        })
    }

    /// Whether some grant allows `channel` of `topic` (`""`: publishing).
    pub fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        self.authorizations
            .iter()
            .any(|a| a.is_allowed(topic, channel))
    }

    /// Whether the TTL has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires
    }
}

#[cfg(test)]
mod tests;
