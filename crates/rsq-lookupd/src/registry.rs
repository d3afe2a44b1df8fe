//! The registration database: which producers (nsqd peers) are connected and
//! which topics and channels each of them has, as plain data.
//!
//! This module does no IO and never reads the clock: every call that needs
//! the time takes `now`, so inactivity and tombstone expiry are tested by
//! passing later instants. The servers hold one [`Registry`] behind a mutex
//! and translate protocol commands and HTTP requests into these calls.
//!
//! The model is nsqlookupd's: a registration is a topic or a (topic, channel)
//! pair, and each has a set of producers. A registration may exist with no
//! producers (created over HTTP, or left behind when its last producer
//! unregistered), and stays until it is deleted, except that ephemeral
//! (`#ephemeral`) registrations vanish with their last producer. Producers
//! are never removed for being inactive; they are only filtered out of the
//! answers, as nsqlookupd does, and come back with their next PING.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rsq_codec::is_ephemeral;

/// A producer's identity: the remote address of its TCP connection, which
/// is unique among open connections.
pub type PeerId = String;

/// What a producer told us about itself in IDENTIFY, plus where it
/// connected from. Serializes to the producer objects of `/lookup`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    /// The connection's remote address; the registry key.
    #[serde(skip)]
    pub id: PeerId,
    /// The connection's remote address, as `/lookup` reports it.
    pub remote_address: String,
    /// The producer's hostname.
    pub hostname: String,
    /// The address clients should connect to.
    pub broadcast_address: String,
    /// The producer's TCP (protocol V2) port.
    pub tcp_port: u16,
    /// The producer's HTTP port.
    pub http_port: u16,
    /// The producer's version string.
    pub version: String,
}

impl PeerInfo {
    /// `broadcast_address:http_port`, the `node` of `/topic/tombstone`.
    pub fn http_node(&self) -> String {
        format!("{}:{}", self.broadcast_address, self.http_port)
    }
}

/// The two durations that decide which producers are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// A producer not heard from for longer than this is left out of answers.
    pub inactive_producer_timeout: Duration,
    /// A tombstoned producer is left out of `/lookup` for this long.
    pub tombstone_lifetime: Duration,
}

/// A connected producer.
#[derive(Debug, Clone)]
struct Peer {
    info: PeerInfo,
    last_update: Instant,
}

/// The producers of one registration; the value is when the producer was
/// tombstoned for it, if it was.
type Producers = BTreeMap<PeerId, Option<Instant>>;

/// One producer as `/nodes` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// Who it is.
    #[serde(flatten)]
    pub info: PeerInfo,
    /// For each of `topics`, whether this producer is tombstoned for it.
    pub tombstones: Vec<bool>,
    /// The topics it has registered, sorted.
    pub topics: Vec<String>,
}

/// What `/lookup` answers for a known topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lookup {
    /// The topic's channels, sorted.
    pub channels: Vec<String>,
    /// The topic's active, not tombstoned producers.
    pub producers: Vec<PeerInfo>,
}

/// The registration database. See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    peers: BTreeMap<PeerId, Peer>,
    topics: BTreeMap<String, Producers>,
    /// topic -> channel -> producers.
    channels: BTreeMap<String, BTreeMap<String, Producers>>,
}

fn tombstoned(at: Option<Instant>, now: Instant, lifetime: Duration) -> bool {
    at.is_some_and(|at| now.saturating_duration_since(at) < lifetime)
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a producer that has just identified itself (nsqlookupd's
    /// `client` registration). Returns `false`, changing nothing, if a peer
    /// with that id is already known.
    pub fn handle_identify(&mut self, info: PeerInfo, now: Instant) -> bool {
        if self.peers.contains_key(&info.id) {
            return false;
        }
        self.peers.insert(
            info.id.clone(),
            Peer {
                info,
                last_update: now,
            },
        );
        true
    }

    /// Records that the producer was heard from (PING).
    pub fn handle_ping(&mut self, id: &str, now: Instant) {
        if let Some(peer) = self.peers.get_mut(id) {
            peer.last_update = now;
        }
    }

    /// The producer `id`, if it is connected and identified.
    pub fn peer(&self, id: &str) -> Option<&PeerInfo> {
        self.peers.get(id).map(|p| &p.info)
    }

    /// REGISTER: adds the producer to the topic and, with `channel`, to the
    /// channel. An existing producer keeps its tombstone. Returns `false`
    /// for an unknown peer, which changes nothing.
    pub fn handle_register(&mut self, id: &str, topic: &str, channel: Option<&str>) -> bool {
        if !self.peers.contains_key(id) {
            return false;
        }
        if let Some(channel) = channel {
            self.channels
                .entry(topic.to_string())
                .or_default()
                .entry(channel.to_string())
                .or_default()
                .entry(id.to_string())
                .or_insert(None);
        }
        self.topics
            .entry(topic.to_string())
            .or_default()
            .entry(id.to_string())
            .or_insert(None);
        true
    }

    /// UNREGISTER: with `channel`, removes the producer from that channel;
    /// without, from the topic and every channel of the topic. Ephemeral
    /// registrations left without producers are removed. Returns how many
    /// channel registrations a topic-only UNREGISTER removed the producer
    /// from (nsqd unregisters channels first, so more than zero is unusual
    /// and worth a warning).
    pub fn handle_unregister(&mut self, id: &str, topic: &str, channel: Option<&str>) -> usize {
        match channel {
            Some(channel) => {
                self.remove_channel_producer(topic, channel, id);
                0
            }
            None => {
                let names: Vec<String> = self
                    .channels
                    .get(topic)
                    .map(|chans| chans.keys().cloned().collect())
                    .unwrap_or_default();
                let removed = names
                    .iter()
                    .filter(|c| self.remove_channel_producer(topic, c, id))
                    .count();
                self.remove_topic_producer(topic, id);
                removed
            }
        }
    }

    /// Removes `id` from one channel; drops an ephemeral channel left empty.
    fn remove_channel_producer(&mut self, topic: &str, channel: &str, id: &str) -> bool {
        let Some(chans) = self.channels.get_mut(topic) else {
            return false;
        };
        let Some(producers) = chans.get_mut(channel) else {
            return false;
        };
        let removed = producers.remove(id).is_some();
        if producers.is_empty() && is_ephemeral(channel) {
            chans.remove(channel);
            if chans.is_empty() {
                self.channels.remove(topic);
            }
        }
        removed
    }

    /// Removes `id` from one topic; drops an ephemeral topic left empty.
    fn remove_topic_producer(&mut self, topic: &str, id: &str) -> bool {
        let Some(producers) = self.topics.get_mut(topic) else {
            return false;
        };
        let removed = producers.remove(id).is_some();
        if producers.is_empty() && is_ephemeral(topic) {
            self.topics.remove(topic);
        }
        removed
    }

    /// The producer's connection closed: it leaves every registration, and
    /// is forgotten. Ephemeral registrations left empty go too.
    pub fn handle_close(&mut self, id: &str) {
        if self.peers.remove(id).is_none() {
            return;
        }
        let topics: Vec<String> = self.topics.keys().cloned().collect();
        for topic in &topics {
            self.remove_topic_producer(topic, id);
        }
        let pairs: Vec<(String, String)> = self
            .channels
            .iter()
            .flat_map(|(t, chans)| chans.keys().map(move |c| (t.clone(), c.clone())))
            .collect();
        for (topic, channel) in &pairs {
            self.remove_channel_producer(topic, channel, id);
        }
    }

    /// `/topic/create`: the topic exists, with whatever producers it has.
    pub fn create_topic(&mut self, topic: &str) {
        self.topics.entry(topic.to_string()).or_default();
    }

    /// `/channel/create`: the channel and its topic exist.
    pub fn create_channel(&mut self, topic: &str, channel: &str) {
        self.channels
            .entry(topic.to_string())
            .or_default()
            .entry(channel.to_string())
            .or_default();
        self.create_topic(topic);
    }

    /// `/topic/delete`: the topic and all its channels are forgotten,
    /// whoever produces them. Returns whether anything was there.
    pub fn delete_topic(&mut self, topic: &str) -> bool {
        let had_channels = self.channels.remove(topic).is_some();
        let had_topic = self.topics.remove(topic).is_some();
        had_channels || had_topic
    }

    /// `/channel/delete`: the channel is forgotten. Returns `false` if it
    /// was not registered.
    pub fn delete_channel(&mut self, topic: &str, channel: &str) -> bool {
        let Some(chans) = self.channels.get_mut(topic) else {
            return false;
        };
        let found = chans.remove(channel).is_some();
        if chans.is_empty() {
            self.channels.remove(topic);
        }
        found
    }

    /// `/topic/tombstone`: every producer of `topic` whose
    /// `broadcast_address:http_port` is `node` is tombstoned for it from
    /// `now`. Returns how many were.
    pub fn tombstone(&mut self, topic: &str, node: &str, now: Instant) -> usize {
        let Some(producers) = self.topics.get_mut(topic) else {
            return 0;
        };
        let mut count = 0;
        for (id, at) in producers.iter_mut() {
            if self
                .peers
                .get(id)
                .is_some_and(|p| p.info.http_node() == node)
            {
                *at = Some(now);
                count += 1;
            }
        }
        count
    }

    /// Every registered topic, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }

    /// The channels registered for `topic`, sorted (empty if none).
    pub fn channels(&self, topic: &str) -> Vec<String> {
        self.channels
            .get(topic)
            .map(|chans| chans.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn is_active(&self, peer: &Peer, now: Instant, liveness: Liveness) -> bool {
        now.saturating_duration_since(peer.last_update) <= liveness.inactive_producer_timeout
    }

    /// `/lookup`: the topic's channels and its producers that are active and
    /// not tombstoned; `None` if the topic is not registered.
    pub fn lookup(&self, topic: &str, now: Instant, liveness: Liveness) -> Option<Lookup> {
        let producers = self.topics.get(topic)?;
        let producers = producers
            .iter()
            .filter(|(_, at)| !tombstoned(**at, now, liveness.tombstone_lifetime))
            .filter_map(|(id, _)| self.peers.get(id))
            .filter(|peer| self.is_active(peer, now, liveness))
            .map(|peer| peer.info.clone())
            .collect();
        Some(Lookup {
            channels: self.channels(topic),
            producers,
        })
    }

    /// `/nodes`: every active producer (tombstoned ones included) with its
    /// topics and, per topic, whether it is tombstoned for it.
    pub fn nodes(&self, now: Instant, liveness: Liveness) -> Vec<Node> {
        self.peers
            .values()
            .filter(|peer| self.is_active(peer, now, liveness))
            .map(|peer| {
                let mut topics = Vec::new();
                let mut tombstones = Vec::new();
                for (topic, producers) in &self.topics {
                    if let Some(at) = producers.get(&peer.info.id) {
                        topics.push(topic.clone());
                        tombstones.push(tombstoned(*at, now, liveness.tombstone_lifetime));
                    }
                }
                Node {
                    info: peer.info.clone(),
                    tombstones,
                    topics,
                }
            })
            .collect()
    }

    /// Checks the registry's invariants, panicking on a violation: every
    /// producer of every registration is a known peer, and no topic is left
    /// with an empty channel map. For tests.
    pub fn assert_consistent(&self) {
        let all = self
            .topics
            .iter()
            .map(|(t, p)| (t.as_str(), None, p))
            .chain(self.channels.iter().flat_map(|(t, chans)| {
                chans
                    .iter()
                    .map(move |(c, p)| (t.as_str(), Some(c.as_str()), p))
            }));
        for (topic, channel, producers) in all {
            for id in producers.keys() {
                assert!(
                    self.peers.contains_key(id),
                    "{topic}/{channel:?} has unknown producer {id}"
                );
            }
        }
        for chans in self.channels.values() {
            assert!(!chans.is_empty(), "empty channel map left behind");
        }
    }
}

#[cfg(test)]
mod tests;
