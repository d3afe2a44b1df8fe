//! The bytes a replica writes to its log and sends to its peers: postcard
//! encodings of mirrors of raft-rs's message types.
//!
//! raft-rs's types are protobuf structs. rsq never parses protobuf from a
//! peer or a disk: the mirrors here are plain serde structs with a
//! documented, versioned binary format (postcard 1.x), and a decode that
//! fails on anything that is not a message (an unknown message or entry
//! type included) instead of guessing. The conversions are total in the
//! direction out of raft-rs and checked in the direction into it.

use bytes::Bytes;
use raft::eraftpb::{
    ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
use serde::{Deserialize, Serialize};

use crate::error::ReplicaError;

/// Every entry type raft-rs has; a number outside them is damage.
const ENTRY_TYPES: [EntryType; 3] = [
    EntryType::EntryNormal,
    EntryType::EntryConfChange,
    EntryType::EntryConfChangeV2,
];

/// Every message type raft-rs has; a number outside them is damage.
const MESSAGE_TYPES: [MessageType; 19] = {
    use MessageType::*;
    [
        MsgHup,
        MsgBeat,
        MsgPropose,
        MsgAppend,
        MsgAppendResponse,
        MsgRequestVote,
        MsgRequestVoteResponse,
        MsgSnapshot,
        MsgHeartbeat,
        MsgHeartbeatResponse,
        MsgUnreachable,
        MsgSnapStatus,
        MsgCheckQuorum,
        MsgTransferLeader,
        MsgTimeoutNow,
        MsgReadIndex,
        MsgReadIndexResp,
        MsgRequestPreVote,
        MsgRequestPreVoteResponse,
    ]
};

/// The variant of `all` whose protobuf number is `n`.
fn by_number<T: Copy, const N: usize>(
    all: [T; N],
    n: i32,
    number: impl Fn(T) -> i32,
    what: &str,
) -> Result<T, ReplicaError> {
    all.into_iter()
        .find(|t| number(*t) == n)
        .ok_or_else(|| ReplicaError::Decode(format!("unknown {what} type {n}")))
}

/// A log entry as written and sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// raft-rs's entry type, as its protobuf number.
    pub entry_type: i32,
    /// The term the entry was proposed in.
    pub term: u64,
    /// Its position in the log.
    pub index: u64,
    /// What was proposed.
    pub data: Vec<u8>,
    /// raft-rs's proposal context.
    pub context: Vec<u8>,
}

/// The part of raft-rs's state that must survive a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHardState {
    /// The latest term seen.
    pub term: u64,
    /// Who this node voted for in `term` (0: nobody).
    pub vote: u64,
    /// The highest index known committed.
    pub commit: u64,
}

/// A snapshot's metadata (rsq sends no snapshot data yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSnapshot {
    /// The voters at the snapshot.
    pub voters: Vec<u64>,
    /// The learners at the snapshot.
    pub learners: Vec<u64>,
    /// The last index the snapshot covers.
    pub index: u64,
    /// That index's term.
    pub term: u64,
    /// The state machine's bytes.
    pub data: Vec<u8>,
}

/// A message between two replicas of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    /// raft-rs's message type, as its protobuf number.
    pub msg_type: i32,
    /// Receiver.
    pub to: u64,
    /// Sender.
    pub from: u64,
    /// Sender's term.
    pub term: u64,
    /// Term of the entry before `entries`.
    pub log_term: u64,
    /// Index of the entry before `entries`.
    pub index: u64,
    /// Entries to append.
    pub entries: Vec<WireEntry>,
    /// Sender's commit index.
    pub commit: u64,
    /// Term of the commit index.
    pub commit_term: u64,
    /// A snapshot, for `MsgSnapshot`.
    pub snapshot: Option<WireSnapshot>,
    /// Index a follower asks a snapshot from.
    pub request_snapshot: u64,
    /// Whether an append or vote was refused.
    pub reject: bool,
    /// Where a refusing follower's log ends.
    pub reject_hint: u64,
    /// raft-rs's context bytes.
    pub context: Vec<u8>,
    /// Election priority.
    pub priority: i64,
    /// The last index of the sender's log (rsq's own field): lets a
    /// leader see that a follower lost its log (a wiped data dir) and
    /// send it everything again, which raft-rs alone never does.
    pub sender_last_index: u64,
}

/// Journal and wire encoding of any of the types here.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ReplicaError> {
    postcard::to_stdvec(value).map_err(|e| ReplicaError::Encode(e.to_string()))
}

/// The inverse of [`encode`]; trailing bytes are an error.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ReplicaError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(ReplicaError::Decode(format!(
            "{} bytes after the value",
            rest.len()
        ))),
        Err(e) => Err(ReplicaError::Decode(e.to_string())),
    }
}

impl From<&Entry> for WireEntry {
    fn from(e: &Entry) -> Self {
        WireEntry {
            entry_type: e.entry_type as i32,
            term: e.term,
            index: e.index,
            data: e.data.to_vec(),
            context: e.context.to_vec(),
        }
    }
}

impl TryFrom<WireEntry> for Entry {
    type Error = ReplicaError;

    fn try_from(w: WireEntry) -> Result<Self, ReplicaError> {
        let entry_type = by_number(ENTRY_TYPES, w.entry_type, |t| t as i32, "entry")?;
        Ok(Entry {
            entry_type,
            term: w.term,
            index: w.index,
            data: Bytes::from(w.data),
            context: Bytes::from(w.context),
            ..Entry::default()
        })
    }
}

impl From<&HardState> for WireHardState {
    fn from(h: &HardState) -> Self {
        WireHardState {
            term: h.term,
            vote: h.vote,
            commit: h.commit,
        }
    }
}

impl From<WireHardState> for HardState {
    fn from(w: WireHardState) -> Self {
        HardState {
            term: w.term,
            vote: w.vote,
            commit: w.commit,
            ..HardState::default()
        }
    }
}

impl From<&Snapshot> for WireSnapshot {
    fn from(s: &Snapshot) -> Self {
        let meta = s.get_metadata();
        let conf = meta.get_conf_state();
        WireSnapshot {
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            index: meta.index,
            term: meta.term,
            data: s.data.to_vec(),
        }
    }
}

impl From<WireSnapshot> for Snapshot {
    fn from(w: WireSnapshot) -> Self {
        let conf = ConfState {
            voters: w.voters,
            learners: w.learners,
            ..ConfState::default()
        };
        let meta = SnapshotMetadata {
            conf_state: Some(conf).into(),
            index: w.index,
            term: w.term,
            ..SnapshotMetadata::default()
        };
        Snapshot {
            data: Bytes::from(w.data),
            metadata: Some(meta).into(),
            ..Snapshot::default()
        }
    }
}

impl From<&Message> for WireMessage {
    fn from(m: &Message) -> Self {
        WireMessage {
            msg_type: m.msg_type as i32,
            to: m.to,
            from: m.from,
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            entries: m.entries.iter().map(WireEntry::from).collect(),
            commit: m.commit,
            commit_term: m.commit_term,
            snapshot: m.snapshot.as_ref().map(WireSnapshot::from),
            request_snapshot: m.request_snapshot,
            reject: m.reject,
            reject_hint: m.reject_hint,
            context: m.context.to_vec(),
            priority: m.priority,
            sender_last_index: 0,
        }
    }
}

impl TryFrom<WireMessage> for Message {
    type Error = ReplicaError;

    fn try_from(w: WireMessage) -> Result<Self, ReplicaError> {
        let msg_type = by_number(MESSAGE_TYPES, w.msg_type, |t| t as i32, "message")?;
        let entries = w
            .entries
            .into_iter()
            .map(Entry::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Message {
            msg_type,
            to: w.to,
            from: w.from,
            term: w.term,
            log_term: w.log_term,
            index: w.index,
            entries: entries.into(),
            commit: w.commit,
            commit_term: w.commit_term,
            snapshot: w.snapshot.map(Snapshot::from).into(),
            request_snapshot: w.request_snapshot,
            reject: w.reject,
            reject_hint: w.reject_hint,
            context: Bytes::from(w.context),
            priority: w.priority,
            ..Message::default()
        })
    }
}

/// Encodes a message for a peer whose sender's log ends at `last_index`.
pub fn encode_message(message: &Message, last_index: u64) -> Result<Vec<u8>, ReplicaError> {
    let mut wire = WireMessage::from(message);
    wire.sender_last_index = last_index;
    encode(&wire)
}

/// Decodes a peer's message and its sender's last index; anything that
/// is not one is an error, never a panic.
pub fn decode_message(bytes: &[u8]) -> Result<(Message, u64), ReplicaError> {
    let wire = decode::<WireMessage>(bytes)?;
    let last = wire.sender_last_index;
    Ok((Message::try_from(wire)?, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message() -> impl Strategy<Value = WireMessage> {
        let entry = (
            0i32..3,
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(entry_type, term, index, data)| WireEntry {
                entry_type,
                term,
                index,
                data,
                context: Vec::new(),
            });
        (
            0i32..19,
            any::<[u64; 6]>(),
            proptest::collection::vec(entry, 0..4),
            any::<bool>(),
            any::<i64>(),
        )
            .prop_map(|(msg_type, n, entries, reject, priority)| WireMessage {
                msg_type,
                to: n[0],
                from: n[1],
                term: n[2],
                log_term: n[3],
                index: n[4],
                entries,
                commit: n[5],
                commit_term: n[2],
                snapshot: None,
                request_snapshot: 0,
                reject,
                reject_hint: n[3],
                context: Vec::new(),
                priority,
                sender_last_index: 0,
            })
    }

    proptest! {
        #[test]
        fn a_message_round_trips(wire in message()) {
            let m = Message::try_from(wire.clone()).expect("valid");
            let (back, last) = decode_message(&encode_message(&m, 7).expect("encode")).expect("decode");
            prop_assert_eq!(last, 7);
            prop_assert_eq!(WireMessage::from(&back), wire);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_message(&bytes);
        }
    }

    #[test]
    fn an_unknown_message_type_is_refused() {
        let mut wire = WireMessage::from(&Message::default());
        wire.msg_type = 99;
        let bytes = encode(&wire).expect("encode");
        assert!(matches!(
            decode_message(&bytes),
            Err(ReplicaError::Decode(_))
        ));
    }
}
